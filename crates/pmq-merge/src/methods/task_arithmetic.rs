//! Task arithmetic: **W = W₀ + λ Σᵢ τᵢ**, τᵢ = Wᵢ − W₀ (λ = 0.3 by default).

use super::{add_scaled, MergeMethod, Merged};
use crate::inputs::Loaded;
use crate::plan::TensorPlan;
use crate::MergeError;

/// W₀ + λ Σᵢ (Wᵢ − W₀), accumulated in f64.
pub fn task_arithmetic(base: &[f32], experts: &[Vec<f32>], lambda: f64) -> Vec<f32> {
    let sum: Vec<f64> = (0..base.len())
        .map(|j| experts.iter().map(|e| e[j] as f64 - base[j] as f64).sum())
        .collect();
    add_scaled(base, lambda, &sum)
}

pub(crate) struct TaskArithmetic {
    pub lambda: f64,
}

impl MergeMethod for TaskArithmetic {
    fn merge_tensor(&self, _plan: &TensorPlan, data: &Loaded) -> Result<Merged, MergeError> {
        Ok(Merged::plain(task_arithmetic(
            &data.base,
            &data.experts,
            self.lambda,
        )))
    }
}
