//! Input capture: the one way the pipeline sees what a block's linears read.
//!
//! [`capture_batch`] runs a block on one batch with a capture callback, detects the linears fed
//! the very same tensor (q, k, v; gate, up) and stops the forward pass once the wanted inputs
//! were seen. On top of it: the sequential strategy streams each batch's inputs into Hessians
//! (`crate::sequential`), and [`capture_block`] keeps every linear's token rows over all
//! batches, with the block's outputs, for AWQ's searches.

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Tensor};
use faer::Mat;
use pmq_core::awq::activation_scale;
use pmq_core::hessian::HessianAccumulator;
use pmq_models::{with_f32_values, BlockModel, OutputMemo, State};
use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Token rows `[tokens, cols]` (row-major f32), tasks one after the other.
pub(crate) struct TokenRows {
    cols: usize,
    data: Vec<f32>,
    task_tokens: Vec<usize>,
    hessians: OnceCell<Vec<Mat<f64>>>,
    hessian_sum: OnceCell<Mat<f64>>,
}

impl TokenRows {
    fn new(cols: usize, tasks: usize) -> Self {
        Self {
            cols,
            data: Vec::new(),
            task_tokens: vec![0; tasks],
            hessians: OnceCell::new(),
            hessian_sum: OnceCell::new(),
        }
    }

    /// Total token rows.
    pub fn tokens(&self) -> usize {
        self.data.len() / self.cols.max(1)
    }

    /// Token rows per task.
    pub fn task_tokens(&self) -> &[usize] {
        &self.task_tokens
    }

    /// `x̄_c = mean_t |x_tc|` over all tokens ([`activation_scale`], in chunks).
    pub fn mean_abs(&self) -> Vec<f64> {
        const CHUNK: usize = 4096;
        let total = self.tokens();
        let mut sum = vec![0.0; self.cols];
        for start in (0..total).step_by(CHUNK) {
            let n = CHUNK.min(total - start);
            let chunk = self.rows((start..start + n).collect::<Vec<_>>().as_slice());
            for (s, m) in sum.iter_mut().zip(activation_scale(chunk.as_ref())) {
                *s += m * n as f64;
            }
        }
        sum.iter().map(|s| s / total.max(1) as f64).collect()
    }

    /// The rows `idx` as an f64 matrix `[idx.len(), cols]`.
    pub fn rows(&self, idx: &[usize]) -> Mat<f64> {
        let c = self.cols;
        Mat::from_fn(idx.len(), c, |i, j| self.data[idx[i] * c + j] as f64)
    }

    /// Task `i`'s Hessian `X_iᵀ X_i` (computed on each call; nothing kept).
    pub fn task_hessian(&self, i: usize) -> Mat<f64> {
        let start: usize = self.task_tokens[..i].iter().sum();
        let n = self.task_tokens[i];
        let mut acc = HessianAccumulator::new(self.cols);
        acc.add_rows_f32(&self.data[start * self.cols..(start + n) * self.cols]);
        acc.into_hessian()
    }

    /// One Hessian `X_iᵀ X_i` per task (computed once and kept: K Hessians; only for the
    /// per-task deviation split).
    pub fn hessians(&self) -> &[Mat<f64>] {
        self.hessians.get_or_init(|| {
            (0..self.task_tokens.len())
                .map(|i| self.task_hessian(i))
                .collect()
        })
    }

    /// `Σ_i X_iᵀ X_i` over all rows (computed once).
    pub fn hessian_sum(&self) -> &Mat<f64> {
        self.hessian_sum.get_or_init(|| {
            let mut acc = HessianAccumulator::new(self.cols);
            acc.add_rows_f32(&self.data);
            acc.into_hessian()
        })
    }
}

/// Every linear's captured inputs in one block.
pub(crate) struct BlockInputs {
    by_linear: HashMap<String, Rc<TokenRows>>,
}

impl BlockInputs {
    /// The inputs of linear `name`.
    pub fn get(&self, name: &str) -> Result<&Rc<TokenRows>> {
        self.by_linear
            .get(name)
            .ok_or_else(|| anyhow!("no inputs were captured for linear `{name}`"))
    }

    /// The one input that all `names` read; fails unless they share it.
    pub fn shared(&self, names: &[String]) -> Result<&Rc<TokenRows>> {
        let first = self.get(&names[0])?;
        for n in &names[1..] {
            if !Rc::ptr_eq(first, self.get(n)?) {
                bail!(
                    "`{}` and `{n}` are scaled together but do not read the same input",
                    names[0]
                );
            }
        }
        Ok(first)
    }
}

/// Which inputs one capture pass collects.
#[derive(Clone, Copy)]
pub(crate) enum Wanted<'a> {
    /// The inputs of these linears; the forward pass stops once all of them were seen.
    Linears(&'a HashSet<String>),
    /// The inputs of every linear of the block, and the block's output.
    Block,
}

/// The inputs one batch's forward pass showed the capture: `(linear, canonical linear, rows)`
/// in forward order, where the canonical linear is the first one reading the same tensor
/// (q, k, v; gate, up) and `rows` is given only for it.
pub(crate) type Captured = Vec<(String, String, Option<Tensor>)>;

/// One batch's capture: the inputs and, when the forward pass ran to its end, the block's
/// output.
pub(crate) struct BatchCapture {
    pub inputs: Captured,
    pub output: Option<State>,
}

impl BatchCapture {
    /// linear → canonical linear: which linears share an input.
    pub fn sharing(&self) -> HashMap<String, String> {
        self.inputs
            .iter()
            .map(|(n, c, _)| (n.clone(), c.clone()))
            .collect()
    }
}

/// Runs `block` on one batch (in f32) with input capture — the one capture primitive of the
/// pipeline: linears fed the very same tensor are detected here, by tensor identity. With a
/// `memo`, the outputs of frozen linears are kept in it and reused.
pub(crate) fn capture_batch(
    model: &dyn BlockModel,
    block: usize,
    wanted: Wanted<'_>,
    state: &State,
    memo: Option<&mut OutputMemo>,
) -> Result<BatchCapture> {
    let mut seen: HashMap<candle_core::TensorId, String> = HashMap::new();
    let mut got: Captured = Vec::new();
    let mut capture = |name: &str, x: &Tensor| -> pmq_models::Result<()> {
        if let Wanted::Linears(names) = wanted {
            if !names.contains(name) {
                return Ok(());
            }
        }
        match seen.get(&x.id()) {
            Some(src) => got.push((name.to_string(), src.clone(), None)),
            None => {
                seen.insert(x.id(), name.to_string());
                got.push((name.to_string(), name.to_string(), Some(x.clone())));
            }
        }
        match wanted {
            Wanted::Linears(names) if got.len() == names.len() => {
                Err(pmq_models::Error::CaptureDone)
            }
            _ => Ok(()),
        }
    };
    let state = state.with_hidden_dtype(DType::F32)?;
    let ran = match memo {
        Some(m) => model.block_forward_memo(block, &state, Some(&mut capture), m),
        None => model.block_forward(block, &state, Some(&mut capture)),
    };
    let output = match ran {
        Ok(out) => Some(out),
        Err(pmq_models::Error::CaptureDone) => None,
        Err(e) => return Err(e.into()),
    };
    if let Wanted::Linears(names) = wanted {
        if got.len() != names.len() {
            let mut missing: Vec<_> = names
                .iter()
                .filter(|n| !got.iter().any(|g| &g.0 == *n))
                .collect();
            missing.sort();
            bail!("block {block}: the forward pass never reached linears {missing:?}");
        }
    }
    Ok(BatchCapture {
        inputs: got,
        output,
    })
}

/// Checks that every batch shows the same linears sharing an input (fixed by the
/// architecture); the first batch sets the pattern.
pub(crate) fn same_sharing(
    pattern: &mut Option<HashMap<String, String>>,
    sharing: HashMap<String, String>,
    block: usize,
) -> Result<()> {
    match pattern {
        None => *pattern = Some(sharing),
        Some(p) if *p == sharing => {}
        Some(_) => bail!("block {block}: the linears sharing an input changed between batches"),
    }
    Ok(())
}

/// Adds each captured input's token rows (given only for the first linear reading a tensor) to
/// the Hessian of its canonical linear in `acc`.
pub(crate) fn add_to_hessians(
    acc: &mut HashMap<String, HessianAccumulator>,
    inputs: Captured,
) -> Result<()> {
    for (name, _, rows) in inputs {
        if let Some(x) = rows {
            with_rows_f32(&x, |cols, v| {
                acc.entry(name)
                    .or_insert_with(|| HessianAccumulator::new(cols))
                    .add_rows_f32(v)
            })?;
        }
    }
    Ok(())
}

/// Calls `f` with the column count and the row-major f32 values of captured rows (read in
/// place: [`with_f32_values`]).
pub(crate) fn with_rows_f32<R>(x: &Tensor, f: impl FnOnce(usize, &[f32]) -> R) -> Result<R> {
    let (_, cols) = x.dims2()?;
    Ok(with_f32_values(x, |v| f(cols, v))?)
}

/// The block's outputs on every calibration state exactly as [`capture_block`] computes them
/// (the same capture pass, the captured inputs dropped at once): a resumed AWQ run replays the
/// full-precision trajectory with it.
pub(crate) fn block_outputs(
    model: &dyn BlockModel,
    block: usize,
    states: &[Vec<State>],
) -> Result<Vec<Vec<State>>> {
    states
        .iter()
        .map(|task| {
            task.iter()
                .map(|s| {
                    capture_batch(model, block, Wanted::Block, s, None)?
                        .output
                        .ok_or_else(|| anyhow!("block {block}: the forward pass stopped early"))
                })
                .collect()
        })
        .collect()
}

/// Runs `block` once on every calibration state with input capture of every linear; returns
/// every linear's inputs (kept as token rows) and the block's outputs (the states entering the
/// next block).
pub(crate) fn capture_block(
    model: &dyn BlockModel,
    block: usize,
    states: &[Vec<State>],
) -> Result<(BlockInputs, Vec<Vec<State>>)> {
    let n_tasks = states.len();
    // canonical name → rows
    let mut rows: HashMap<String, TokenRows> = HashMap::new();
    let mut pattern: Option<HashMap<String, String>> = None;
    let mut next = Vec::with_capacity(n_tasks);
    for (t, task_states) in states.iter().enumerate() {
        let mut task_next = Vec::with_capacity(task_states.len());
        for s in task_states {
            let cap = capture_batch(model, block, Wanted::Block, s, None)?;
            let sharing = cap.sharing();
            for (name, _, x) in cap.inputs {
                if let Some(x) = x {
                    with_rows_f32(&x, |cols, v| {
                        let r = rows
                            .entry(name)
                            .or_insert_with(|| TokenRows::new(cols, n_tasks));
                        r.task_tokens[t] += v.len() / cols.max(1);
                        r.data.extend_from_slice(v);
                    })?;
                }
            }
            same_sharing(&mut pattern, sharing, block)?;
            task_next.push(
                cap.output
                    .ok_or_else(|| anyhow!("block {block}: the forward pass stopped early"))?,
            );
        }
        next.push(task_next);
    }
    let shared: HashMap<String, Rc<TokenRows>> =
        rows.into_iter().map(|(k, v)| (k, Rc::new(v))).collect();
    let by_linear = pattern
        .unwrap_or_default()
        .into_iter()
        .map(|(name, src)| (name, shared[&src].clone()))
        .collect();
    Ok((BlockInputs { by_linear }, next))
}
