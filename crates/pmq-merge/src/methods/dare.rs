//! DARE (Yu et al. 2023), "drop and rescale", then task arithmetic:
//!
//! **τ̃ᵢ = mᵢ ⊙ τᵢ · r**, mᵢ ~ Bernoulli(1 − p) per entry, with r = 1/(1 − p) (`inverse`, the
//! paper and FusionBench), r = ‖τᵢ‖₁ / ‖mᵢ ⊙ τᵢ‖₁ per tensor (`l1`, mergekit; no rescaling when
//! either norm is below 1e-7), or r = 1 (`none`); then **W = W₀ + λ Σᵢ τ̃ᵢ**.
//!
//! An entry survives when its uniform draw u ∈ [0, 1) satisfies u ≥ p (so p = 0 keeps all).
//! Draws come from [`crate::rng::tensor_rng`]`(seed, tensor name, expert index)`, one per entry
//! in row-major order, so results do not depend on traversal order or threads.

use rand::Rng;

use super::{add_scaled, MergeMethod, Merged};
use crate::inputs::Loaded;
use crate::plan::TensorPlan;
use crate::rng::tensor_rng;
use crate::{DareOptions, DareRescale, MergeError};

/// Drops and rescales one task vector with the stream of (seed, name, expert).
pub fn dare_drop(
    tau: &[f32],
    p: f64,
    rescale: DareRescale,
    seed: u64,
    name: &str,
    expert: usize,
) -> Vec<f64> {
    let mut rng = tensor_rng(seed, name, expert);
    let mut out: Vec<f64> = tau
        .iter()
        .map(|&v| {
            let u: f64 = rng.random();
            if u >= p {
                v as f64
            } else {
                0.0
            }
        })
        .collect();
    let scale = match rescale {
        DareRescale::None => 1.0,
        DareRescale::Inverse => 1.0 / (1.0 - p),
        DareRescale::L1 => {
            const EPS: f64 = 1e-7;
            let before: f64 = tau.iter().map(|v| v.abs() as f64).sum();
            let after: f64 = out.iter().map(|v| v.abs()).sum();
            if before < EPS || after < EPS {
                1.0
            } else {
                before / after
            }
        }
    };
    if scale != 1.0 {
        out.iter_mut().for_each(|v| *v *= scale);
    }
    out
}

pub(crate) struct Dare(pub DareOptions);

impl MergeMethod for Dare {
    fn merge_tensor(&self, plan: &TensorPlan, data: &Loaded) -> Result<Merged, MergeError> {
        let o = &self.0;
        let mut sum = vec![0.0f64; data.base.len()];
        for (i, tau) in data.task_vectors().iter().enumerate() {
            let dropped = dare_drop(tau, o.p, o.rescale, o.seed, plan.name(), i);
            sum.iter_mut().zip(&dropped).for_each(|(s, d)| *s += d);
        }
        Ok(Merged::plain(add_scaled(&data.base, o.lambda, &sum)))
    }
}
