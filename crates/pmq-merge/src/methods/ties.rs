//! TIES-merging (Yadav et al. 2023), following FusionBench's `ties_merging_utils.py`:
//!
//! 1. **Trim**: per task i keep τᵢ entries with |τᵢ| ≥ tᵢ, where tᵢ is the k-th smallest |τᵢ|,
//!    k = n − ⌊n·density⌋ over the n entries of task i — either all merged tensors flattened
//!    into one vector (`global`, FusionBench) or each tensor on its own (`tensor`). Ties at the
//!    threshold are all kept. k = 0 (density 1) keeps everything. `mergekit` trims as
//!    mergekit's `sparsify.magnitude` does: per tensor exactly the ⌊n·density⌋ entries of
//!    largest |τ| (mergekit takes them from a `torch.argsort`; among equal magnitudes here the
//!    lower index wins), everything for density ≥ 1, and an error when nothing would be kept.
//! 2. **Elect**: γ = sign(Σᵢ τ̂ᵢ) per entry; entries with γ = 0 take the majority sign
//!    sign(Σ γ) taken over the whole flattened model (global) or the tensor (tensor).
//! 3. **Disjoint merge**: over the tasks whose trimmed entry agrees with γ (τ̂ > 0 where γ > 0,
//!    τ̂ < 0 otherwise — FusionBench's `torch.where(γ > 0, τ̂ > 0, τ̂ < 0)`, so if the majority
//!    sign itself is 0, negative entries are taken), `sum` (FusionBench default) or `mean`
//!    (divided by the number of agreeing tasks, at least 1).
//! 4. **W = W₀ + λ·τ_m**.
//!
//! τ is computed in f32 (as a f32 PyTorch state dict would); sums are accumulated in f64.
//! Global thresholds are exact and found in two streaming passes (see [`crate::kth`]), so
//! memory stays O(K × one tensor).

use serde_json::{json, Value};

use super::{add_scaled, MergeMethod, Merged};
use crate::inputs::{Inputs, Loaded};
use crate::kth::{kth_smallest_abs, StreamingKth};
use crate::plan::TensorPlan;
use crate::progress::Progress;
use crate::{MergeError, TiesMerge, TiesOptions, TiesTrim};

/// Rank k (1-based) of the threshold among n magnitudes when keeping ⌊n·density⌋ of them;
/// 0 means "keep everything".
pub fn threshold_rank(n: u64, density: f64) -> u64 {
    let keep = ((n as f64) * density).floor() as u64;
    n - keep.min(n)
}

/// The trimming threshold of one in-memory task vector (0 when everything is kept).
pub fn tensor_threshold(tau: &[f32], density: f64) -> f32 {
    let k = threshold_rank(tau.len() as u64, density) as usize;
    kth_smallest_abs(tau, k).unwrap_or(0.0)
}

/// τ̂: the entries with |τ| ≥ t, zeros elsewhere.
pub fn trim(tau: &[f32], t: f32) -> Vec<f32> {
    tau.iter()
        .map(|&v| if v.abs() >= t { v } else { 0.0 })
        .collect()
}

/// mergekit's trim: τ with all but its ⌊n·density⌋ largest magnitudes zeroed (among equal
/// magnitudes the lower index is kept); `None` when that keeps nothing of a non-empty τ.
pub fn trim_top_k(tau: &[f32], density: f64) -> Option<Vec<f32>> {
    if density >= 1.0 {
        return Some(tau.to_vec());
    }
    let keep = ((tau.len() as f64) * density).floor() as usize;
    if keep == 0 {
        return tau.is_empty().then(Vec::new);
    }
    let mut order: Vec<u32> = (0..tau.len() as u32).collect();
    let by_size = |a: &u32, b: &u32| {
        let (x, y) = (tau[*a as usize].abs(), tau[*b as usize].abs());
        y.total_cmp(&x).then(a.cmp(b))
    };
    if keep < order.len() {
        order.select_nth_unstable_by(keep - 1, by_size);
    }
    let mut out = vec![0.0f32; tau.len()];
    for &i in &order[..keep] {
        out[i as usize] = tau[i as usize];
    }
    Some(out)
}

/// γ = sign(Σᵢ τ̂ᵢ) per entry, before zero resolution.
pub fn elect_signs(trimmed: &[Vec<f32>]) -> Vec<i8> {
    let n = trimmed.first().map_or(0, Vec::len);
    (0..n)
        .map(|j| sign(trimmed.iter().map(|t| t[j] as f64).sum()))
        .collect()
}

/// Σ γ over a sign vector (its sign is the majority sign).
pub fn sign_sum(signs: &[i8]) -> i64 {
    signs.iter().map(|&s| s as i64).sum()
}

/// Disjoint merge of the trimmed task vectors given the resolved signs γ.
pub fn disjoint_merge(trimmed: &[Vec<f32>], signs: &[i8], mode: TiesMerge) -> Vec<f64> {
    signs
        .iter()
        .enumerate()
        .map(|(j, &g)| {
            let (mut sum, mut count) = (0.0f64, 0u32);
            for t in trimmed {
                let v = t[j];
                if (g > 0 && v > 0.0) || (g <= 0 && v < 0.0) {
                    sum += v as f64;
                    count += 1;
                }
            }
            match mode {
                TiesMerge::Sum => sum,
                TiesMerge::Mean => sum / count.max(1) as f64,
            }
        })
        .collect()
}

/// TIES for one tensor given per-task thresholds. `majority`: the global majority sign, or
/// `None` to take it from this tensor (per-tensor mode).
pub fn ties_tensor(
    base: &[f32],
    taus: &[Vec<f32>],
    thresholds: &[f32],
    majority: Option<i8>,
    mode: TiesMerge,
    lambda: f64,
) -> Vec<f32> {
    let trimmed: Vec<Vec<f32>> = taus
        .iter()
        .zip(thresholds)
        .map(|(tau, &t)| trim(tau, t))
        .collect();
    ties_trimmed(base, &trimmed, majority, mode, lambda)
}

/// TIES for one tensor from already trimmed task vectors τ̂ (elect, disjoint merge, scale).
pub fn ties_trimmed(
    base: &[f32],
    trimmed: &[Vec<f32>],
    majority: Option<i8>,
    mode: TiesMerge,
    lambda: f64,
) -> Vec<f32> {
    let mut signs = elect_signs(trimmed);
    let majority = majority.unwrap_or_else(|| sign(sign_sum(&signs) as f64));
    for s in signs.iter_mut().filter(|s| **s == 0) {
        *s = majority;
    }
    add_scaled(base, lambda, &disjoint_merge(trimmed, &signs, mode))
}

fn sign(x: f64) -> i8 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}

pub(crate) struct Ties {
    opts: TiesOptions,
    /// Global mode: per-task thresholds, kept counts and sizes, and the majority sign.
    thresholds: Vec<f32>,
    kept: Vec<u64>,
    total: u64,
    majority: i8,
}

impl Ties {
    pub fn new(opts: TiesOptions) -> Self {
        Self {
            opts,
            thresholds: Vec::new(),
            kept: Vec::new(),
            total: 0,
            majority: 0,
        }
    }
}

impl MergeMethod for Ties {
    fn prepare(
        &mut self,
        inputs: &Inputs,
        merged: &[&TensorPlan],
        progress: &dyn Progress,
    ) -> Result<(), MergeError> {
        if self.opts.trim != TiesTrim::Global {
            return Ok(());
        }
        let k = inputs.k();
        // Pass 1: histogram of the high halves of |τᵢ|.
        let mut sel = vec![StreamingKth::new(); k];
        progress.phase("ties: magnitude histogram", merged.len());
        for plan in merged {
            let taus = inputs.load(plan.name())?.task_vectors();
            for (s, tau) in sel.iter_mut().zip(&taus) {
                s.observe_first(tau);
            }
            progress.tensor_done(plan.name());
        }
        self.total = sel.first().map_or(0, StreamingKth::count);
        let ranks: Vec<u64> = (0..k)
            .map(|_| threshold_rank(self.total, self.opts.density))
            .collect();
        let need_second = ranks.iter().any(|&r| r > 0);
        for (s, &r) in sel.iter_mut().zip(&ranks) {
            if r > 0 {
                s.start_second(r);
            }
        }
        // Pass 2: the low halves inside each task's threshold bin.
        if need_second {
            progress.phase("ties: exact threshold", merged.len());
            for plan in merged {
                let taus = inputs.load(plan.name())?.task_vectors();
                for (s, tau) in sel.iter_mut().zip(&taus) {
                    s.observe_second(tau);
                }
                progress.tensor_done(plan.name());
            }
        }
        self.thresholds = sel
            .iter()
            .zip(&ranks)
            .map(|(s, &r)| {
                if r == 0 {
                    0.0
                } else {
                    s.value().unwrap_or(0.0)
                }
            })
            .collect();
        // Pass 3: the majority sign over the whole flattened model.
        progress.phase("ties: sign election", merged.len());
        let mut sum = 0i64;
        self.kept = vec![0; k];
        for plan in merged {
            let taus = inputs.load(plan.name())?.task_vectors();
            let trimmed: Vec<Vec<f32>> = taus
                .iter()
                .zip(&self.thresholds)
                .map(|(tau, &t)| trim(tau, t))
                .collect();
            for (kept, (tau, &t)) in self.kept.iter_mut().zip(taus.iter().zip(&self.thresholds)) {
                *kept += tau.iter().filter(|v| v.abs() >= t).count() as u64;
            }
            sum += sign_sum(&elect_signs(&trimmed));
            progress.tensor_done(plan.name());
        }
        self.majority = sign(sum as f64);
        tracing::info!(
            thresholds = ?self.thresholds,
            majority_sign = self.majority,
            "TIES global trimming over {} entries per task",
            self.total
        );
        Ok(())
    }

    fn merge_tensor(&self, plan: &TensorPlan, data: &Loaded) -> Result<Merged, MergeError> {
        let taus = data.task_vectors();
        let o = &self.opts;
        Ok(match o.trim {
            TiesTrim::Global => Merged::plain(ties_tensor(
                &data.base,
                &taus,
                &self.thresholds,
                Some(self.majority),
                o.merge,
                o.lambda,
            )),
            TiesTrim::Tensor => {
                let thresholds: Vec<f32> = taus
                    .iter()
                    .map(|t| tensor_threshold(t, o.density))
                    .collect();
                let values = ties_tensor(&data.base, &taus, &thresholds, None, o.merge, o.lambda);
                Merged {
                    values,
                    detail: Some(json!({ "thresholds": thresholds })),
                }
            }
            TiesTrim::Mergekit => {
                let trimmed = taus
                    .iter()
                    .map(|t| trim_top_k(t, o.density))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        MergeError::option(
                            "density",
                            format!(
                                "{} keeps no entry of tensor `{}` ({} entries) under mergekit's trim",
                                o.density,
                                plan.name(),
                                data.base.len()
                            ),
                        )
                    })?;
                let kept: Vec<usize> = trimmed
                    .iter()
                    .map(|t| t.iter().filter(|v| **v != 0.0).count())
                    .collect();
                Merged {
                    values: ties_trimmed(&data.base, &trimmed, None, o.merge, o.lambda),
                    detail: Some(json!({ "kept_nonzero": kept })),
                }
            }
        })
    }

    fn details(&self) -> Value {
        if self.opts.trim != TiesTrim::Global {
            return Value::Null;
        }
        let frac: Vec<f64> = self
            .kept
            .iter()
            .map(|&k| k as f64 / self.total.max(1) as f64)
            .collect();
        json!({
            "entries_per_task": self.total,
            "thresholds": self.thresholds,
            "kept_fraction": frac,
            "majority_sign": self.majority,
        })
    }
}
