//! Simple averaging: **W = (1/K) Σᵢ Wᵢ** (the base is not used).

use super::{MergeMethod, Merged};
use crate::inputs::Loaded;
use crate::plan::TensorPlan;
use crate::MergeError;

/// Element-wise mean of the experts, accumulated in f64.
pub fn average(experts: &[Vec<f32>]) -> Vec<f32> {
    let k = experts.len() as f64;
    let n = experts.first().map_or(0, Vec::len);
    (0..n)
        .map(|j| (experts.iter().map(|e| e[j] as f64).sum::<f64>() / k) as f32)
        .collect()
}

pub(crate) struct Average;

impl MergeMethod for Average {
    fn merge_tensor(&self, _plan: &TensorPlan, data: &Loaded) -> Result<Merged, MergeError> {
        Ok(Merged::plain(average(&data.experts)))
    }
}
