//! Capturing linears' inputs during a forward pass: the public callback type ([`CaptureFn`]),
//! the wrapper that feeds it the unpadded input rows of each linear ([`Capturer`]), and the
//! forward cache that lets repeated passes over one block skip finished work ([`OutputMemo`]).

use crate::config::Activation;
use crate::error::{Error, Result};
use crate::tensors::{scatter_rows, token_rows};
use candle_core::{Module, Tensor, TensorId};
use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The capture callback: receives a linear's name and its input as `[tokens, in_features]`
/// with padding tokens already removed. Linears fed the same tensor one after the other (q, k,
/// v; gate, up) receive the very same rows tensor (equal [`Tensor::id`]). Returning an error
/// aborts the forward pass. A pass with a callback (or a forward cache) multiplies only the
/// real tokens' rows by each linear: the real positions of its output are those of a plain
/// forward bit for bit, the padded positions are not.
pub type CaptureFn<'a> = dyn FnMut(&str, &Tensor) -> Result<()> + 'a;

/// Wraps the optional capture callback (and forward cache) for the duration of one block
/// forward. Blocks apply their linears through [`Capturer::linear`], which takes the input
/// as a closure: a linear whose output the cache holds never computes its input.
pub(crate) struct Capturer<'a, 'b> {
    f: Option<&'a mut CaptureFn<'b>>,
    memo: Option<&'a mut OutputMemo>,
    /// The last input sent and its flattened rows: linears fed the same tensor (q, k, v) get
    /// the very same rows tensor, so callers can recognise shared inputs by tensor id.
    last: Option<(RowsKey, Tensor)>,
    /// The rows of the last activated output ([`Self::linear`] with an activation), which the
    /// next linear reads: kept apart from `last`, which must still name the input of the
    /// linears sharing it (gate, then up).
    activated: Option<(RowsKey, Tensor)>,
}

/// A tensor and the rows taken from it.
type RowsKey = (TensorId, Option<TensorId>);

impl<'a, 'b> Capturer<'a, 'b> {
    /// A capturer around `f`; without a callback nothing is reported.
    pub(crate) fn new(f: Option<&'a mut CaptureFn<'b>>) -> Self {
        Self::with_memo(f, None)
    }

    /// A capturer around `f` that also keeps and reuses what `memo` allows (one pass over
    /// the block: see [`OutputMemo`] for what a pass evicts when it ends).
    pub(crate) fn with_memo(
        f: Option<&'a mut CaptureFn<'b>>,
        memo: Option<&'a mut OutputMemo>,
    ) -> Self {
        Self {
            f,
            memo,
            last: None,
            activated: None,
        }
    }

    /// Applies the linear `name` (`layer`) to the input `input` computes, reporting that
    /// input (restricted to `rows`) to the callback first. With a forward cache: a kept output
    /// is returned at once (nothing is computed or reported), a kept input replaces `input`,
    /// and what the cache may keep is kept.
    ///
    /// With an activation `act` it returns `act(layer(x))`. In capture passes the activation
    /// runs on the real tokens' rows only, before they are put back among the padding: every
    /// [`Activation`] maps 0 to 0, so the result is the same bit for bit as activating the
    /// scattered output; and the next linear reading that result takes these rows as they
    /// are instead of gathering them again.
    pub(crate) fn linear(
        &mut self,
        name: &str,
        layer: &candle_nn::Linear,
        rows: Option<&Tensor>,
        act: Option<Activation>,
        input: impl FnOnce(&mut Self) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let weight = layer.weight().id();
        if let Some(y) = self.memo.as_mut().and_then(|m| m.output(name, weight)) {
            return Ok(y);
        }
        let x = match self.memo.as_mut().and_then(|m| m.input(name)) {
            Some(x) => x,
            None => {
                let x = input(self)?;
                if let Some(m) = self.memo.as_mut() {
                    m.keep_input(name, &x);
                }
                x
            }
        };
        let flat = self.emit(name, &x, rows)?;
        let y = match rows {
            // in capture passes (the pipeline's), padding tokens are not multiplied: their
            // rows of the output are zero. Attention masks them as keys and nothing else mixes
            // tokens, so the real tokens' values are the same bit for bit; plain forwards keep
            // every position as the reference models compute it.
            Some(r) if self.f.is_some() || self.memo.is_some() => {
                let flat = match flat {
                    Some(f) => f,
                    None => rows_of(&mut self.last, &self.activated, &x, Some(r))?,
                };
                let out = layer.forward(&flat)?;
                match act {
                    Some(act) => {
                        let out = act.forward(&out)?;
                        let y = scatter_rows(&out, r, x.dims())?;
                        self.activated = Some(((y.id(), Some(r.id())), out));
                        y
                    }
                    None => scatter_rows(&out, r, x.dims())?,
                }
            }
            _ => {
                let y = layer.forward(&x)?;
                match act {
                    Some(act) => act.forward(&y)?,
                    None => y,
                }
            }
        };
        if let Some(m) = self.memo.as_mut() {
            m.keep_output(name, weight, &y);
        }
        Ok(y)
    }

    /// Sends `x` (`[..., in]`, flattened to rows and restricted to `rows`) to the callback;
    /// returns those rows when it computed them.
    fn emit(&mut self, name: &str, x: &Tensor, rows: Option<&Tensor>) -> Result<Option<Tensor>> {
        let Some(f) = self.f.as_mut() else {
            return Ok(None);
        };
        let flat = rows_of(&mut self.last, &self.activated, x, rows)?;
        f(name, &flat).map_err(|e| match e {
            e @ (Error::Capture { .. } | Error::CaptureDone) => e,
            other => Error::Capture {
                linear: name.to_string(),
                msg: other.to_string(),
            },
        })?;
        Ok(Some(flat))
    }
}

/// The rows `rows` of `x` (`[..., in]` flattened; all of them for `None`): those a
/// [`Capturer`] keeps when `x` is the tensor they were taken from (`last`: the last gather,
/// for the linears reading the same tensor one after the other; `activated`: the last
/// activation's rows), else gathered and kept as `last`. Takes the two fields, not the
/// capturer, so that its callback can be borrowed beside them.
fn rows_of(
    last: &mut Option<(RowsKey, Tensor)>,
    activated: &Option<(RowsKey, Tensor)>,
    x: &Tensor,
    rows: Option<&Tensor>,
) -> Result<Tensor> {
    let key = (x.id(), rows.map(Tensor::id));
    let kept = [&*last, activated]
        .into_iter()
        .flatten()
        .find(|(k, _)| *k == key);
    if let Some((_, flat)) = kept {
        return Ok(flat.clone());
    }
    let flat = token_rows(x, rows)?;
    *last = Some((key, flat.clone()));
    Ok(flat)
}

impl Drop for Capturer<'_, '_> {
    /// The pass is over (finished, stopped early or failed): the memo evicts what it did not
    /// use.
    fn drop(&mut self) {
        if let Some(m) = self.memo.as_mut() {
            m.end_pass();
        }
    }
}

/// An input several linears read (q, k, v; gate, up), computed when the first of them needs
/// it — and not at all when the forward cache holds all their outputs.
#[derive(Default)]
pub(crate) struct SharedInput(OnceCell<Tensor>);

impl SharedInput {
    /// The input, computed by `f` on first use (later uses get the very same tensor).
    pub(crate) fn get(&self, f: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
        if let Some(t) = self.0.get() {
            return Ok(t.clone());
        }
        let t = f()?;
        Ok(self.0.get_or_init(|| t).clone())
    }
}

/// How many bytes all [`OutputMemo`]s sharing this budget may hold together.
#[derive(Debug)]
pub struct MemoBudget {
    total: usize,
    left: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoBudget {
    /// A budget of `bytes` (0: nothing is kept).
    pub fn new(bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            total: bytes,
            left: AtomicUsize::new(bytes),
            peak: AtomicUsize::new(0),
        })
    }

    /// Bytes still free.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Relaxed)
    }

    /// The most bytes held at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> bool {
        let taken = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                l.checked_sub(bytes)
            });
        match taken {
            Ok(before) => {
                let held = self.total - (before - bytes);
                self.peak.fetch_max(held, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    fn give(&self, bytes: usize) {
        self.left.fetch_add(bytes, Ordering::Relaxed);
    }
}

fn bytes_of(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// The forward cache of one block on one calibration batch: what repeated passes over the
/// block (a true-sequential pipeline runs it once per group of linears) need not recompute.
///
/// - Once a linear is [frozen](Self::freeze) — its weight final and, every linear upstream of
///   it being frozen too, its input fixed — the first pass that computes its output keeps it
///   and later passes reuse it without computing its input at all.
/// - Once a linear's input is [fixed](Self::fix_inputs) — every linear upstream of it frozen
///   — the first pass that computes the input keeps it, so the next pass (which needs the
///   linear's output with its new weight) starts from it instead of recomputing everything
///   before it.
///
/// Every linear and every operation between them is then computed about once over all the
/// passes over a block, and every result is bit for bit what recomputing gives. When a pass
/// ends, what it neither read nor kept is evicted: each pass reaches further into the block
/// than the one before, so what it no longer reads (q, k, v's outputs once o's input is kept)
/// is not needed again — and if it were, it would be recomputed; memory stays at about the
/// outputs of two groups. Kept outputs
/// remember the weight they were computed with and are recomputed if it changed. Memory comes
/// from a shared [`MemoBudget`]; past it, things are recomputed. Dropping the memo returns
/// its bytes. A linear whose kept output is reused is not reported to the capture callback.
#[derive(Debug)]
pub struct OutputMemo {
    frozen: HashSet<String>,
    fixed: HashSet<String>,
    outputs: HashMap<String, (TensorId, Tensor)>,
    inputs: HashMap<String, Tensor>,
    budget: Arc<MemoBudget>,
    held: usize,
    keeping: bool,
    /// Outputs and inputs read or kept in the current pass.
    used_outputs: HashSet<String>,
    used_inputs: HashSet<String>,
}

impl OutputMemo {
    /// An empty memo drawing on `budget`.
    pub fn new(budget: Arc<MemoBudget>) -> Self {
        Self {
            frozen: HashSet::new(),
            fixed: HashSet::new(),
            outputs: HashMap::new(),
            inputs: HashMap::new(),
            budget,
            held: 0,
            keeping: true,
            used_outputs: HashSet::new(),
            used_inputs: HashSet::new(),
        }
    }

    /// Marks `names` frozen: their weights will not change again and their inputs depend only
    /// on frozen linears (the caller's promise — true-sequential groups give it).
    pub fn freeze<S: AsRef<str>>(&mut self, names: impl IntoIterator<Item = S>) {
        self.frozen
            .extend(names.into_iter().map(|n| n.as_ref().to_string()));
    }

    /// Marks the inputs of `names` fixed: they depend only on frozen linears (the caller's
    /// promise: the group after the frozen ones).
    pub fn fix_inputs<S: AsRef<str>>(&mut self, names: impl IntoIterator<Item = S>) {
        self.fixed
            .extend(names.into_iter().map(|n| n.as_ref().to_string()));
    }

    /// From now on only reuses what it holds and keeps nothing new (before the last pass over
    /// a block, whose new results no later pass would read).
    pub fn stop_keeping(&mut self) {
        self.keeping = false;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.held
    }

    /// The kept output of `name` computed with the weight `weight`.
    fn output(&mut self, name: &str, weight: TensorId) -> Option<Tensor> {
        match self.outputs.get(name) {
            Some((w, y)) if *w == weight => {
                let y = y.clone();
                self.used_outputs.insert(name.to_string());
                Some(y)
            }
            _ => None,
        }
    }

    /// The kept input of `name`.
    fn input(&mut self, name: &str) -> Option<Tensor> {
        let x = self.inputs.get(name).cloned()?;
        self.used_inputs.insert(name.to_string());
        Some(x)
    }

    /// Ends a pass: evicts what it neither read nor kept.
    fn end_pass(&mut self) {
        let stale: Vec<String> = (self.outputs.keys())
            .filter(|n| !self.used_outputs.contains(*n))
            .cloned()
            .collect();
        for n in stale {
            if let Some((_, y)) = self.outputs.remove(&n) {
                let bytes = bytes_of(&y);
                self.held -= bytes;
                self.budget.give(bytes);
            }
        }
        let stale: Vec<String> = (self.inputs.keys())
            .filter(|n| !self.used_inputs.contains(*n))
            .cloned()
            .collect();
        for n in stale {
            self.drop_input(&n);
        }
        self.used_outputs.clear();
        self.used_inputs.clear();
    }

    /// Whether another kept input is the very tensor `x` (counted once).
    fn shares_input(&self, name: &str, x: &Tensor) -> bool {
        self.inputs
            .iter()
            .any(|(n, t)| n != name && t.id() == x.id())
    }

    /// Keeps `x` as the input of `name` when that input is fixed and the budget allows.
    fn keep_input(&mut self, name: &str, x: &Tensor) {
        if !self.keeping || !self.fixed.contains(name) || self.inputs.contains_key(name) {
            return;
        }
        let shared = self.shares_input(name, x);
        if !shared {
            let bytes = bytes_of(x);
            if !self.budget.take(bytes) {
                return;
            }
            self.held += bytes;
        }
        self.inputs.insert(name.to_string(), x.clone());
        self.used_inputs.insert(name.to_string());
    }

    /// Drops the kept input of `name` (returning its bytes unless another linear shares it).
    fn drop_input(&mut self, name: &str) {
        let Some(x) = self.inputs.remove(name) else {
            return;
        };
        if !self.shares_input(name, &x) {
            let bytes = bytes_of(&x);
            self.held -= bytes;
            self.budget.give(bytes);
        }
    }

    /// Keeps `y` as the output of `name` (weight `weight`) when `name` is frozen and the
    /// budget allows; its kept input is then no longer needed.
    fn keep_output(&mut self, name: &str, weight: TensorId, y: &Tensor) {
        if !self.keeping || !self.frozen.contains(name) {
            return;
        }
        if let Some((_, old)) = self.outputs.remove(name) {
            let bytes = bytes_of(&old);
            self.held -= bytes;
            self.budget.give(bytes);
        }
        let bytes = bytes_of(y);
        if self.budget.take(bytes) {
            self.held += bytes;
            self.outputs.insert(name.to_string(), (weight, y.clone()));
            self.used_outputs.insert(name.to_string());
            self.drop_input(name);
        }
    }
}

impl Drop for OutputMemo {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}
