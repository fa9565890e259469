//! The inputs of every linear of a block over all calibration batches, captured in one forward
//! per batch (which also yields the block's outputs). Linears fed the very same tensor (q, k,
//! v; gate, up) share one buffer.

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Tensor};
use faer::Mat;
use pmq_core::awq::activation_scale;
use pmq_core::hessian::HessianAccumulator;
use pmq_models::{BlockModel, State};
use std::cell::OnceCell;
use std::collections::HashMap;
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

/// Runs `block` once on every calibration state with input capture; returns every linear's
/// inputs and the block's outputs (the states entering the next block).
pub(crate) fn capture_block(
    model: &dyn BlockModel,
    block: usize,
    states: &[Vec<State>],
) -> Result<(BlockInputs, Vec<Vec<State>>)> {
    let n_tasks = states.len();
    // canonical name → rows; name → canonical name (fixed by the architecture)
    let mut rows: HashMap<String, TokenRows> = HashMap::new();
    let mut canonical: Option<HashMap<String, String>> = None;
    let mut next = Vec::with_capacity(n_tasks);
    for (t, task_states) in states.iter().enumerate() {
        let mut task_next = Vec::with_capacity(task_states.len());
        for s in task_states {
            let mut seen: HashMap<candle_core::TensorId, String> = HashMap::new();
            let mut names: HashMap<String, String> = HashMap::new();
            let mut capture = |name: &str, x: &Tensor| -> pmq_models::Result<()> {
                if let Some(src) = seen.get(&x.id()) {
                    names.insert(name.to_string(), src.clone());
                    return Ok(());
                }
                seen.insert(x.id(), name.to_string());
                names.insert(name.to_string(), name.to_string());
                let (_, cols) = x.dims2()?;
                let v: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let r = rows
                    .entry(name.to_string())
                    .or_insert_with(|| TokenRows::new(cols, n_tasks));
                r.task_tokens[t] += v.len() / cols.max(1);
                r.data.extend_from_slice(&v);
                Ok(())
            };
            task_next.push(model.block_forward(block, s, Some(&mut capture))?);
            match &canonical {
                None => canonical = Some(names),
                Some(c) if *c == names => {}
                Some(_) => {
                    bail!("block {block}: the linears sharing an input changed between batches")
                }
            }
        }
        next.push(task_next);
    }
    let shared: HashMap<String, Rc<TokenRows>> =
        rows.into_iter().map(|(k, v)| (k, Rc::new(v))).collect();
    let by_linear = canonical
        .unwrap_or_default()
        .into_iter()
        .map(|(name, src)| (name, shared[&src].clone()))
        .collect();
    Ok((BlockInputs { by_linear }, next))
}
