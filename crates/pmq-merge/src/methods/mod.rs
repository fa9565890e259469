//! The merge methods. Each module states its equation and exposes the pure per-tensor math
//! (usable and testable without files); [`build`] wraps them for the streaming engine.

pub mod average;
pub mod dare;
pub mod regmean;
pub mod task_arithmetic;
pub mod ties;
pub mod wudi;

use serde_json::Value;

use crate::inputs::{Inputs, Loaded};
use crate::plan::TensorPlan;
use crate::progress::Progress;
use crate::{MergeError, Method};

/// The merged values of one tensor, and optional per-tensor facts for the report.
pub struct Merged {
    pub values: Vec<f32>,
    pub detail: Option<Value>,
}

impl Merged {
    pub fn plain(values: Vec<f32>) -> Self {
        Self {
            values,
            detail: None,
        }
    }
}

/// A merge method as the engine drives it.
pub(crate) trait MergeMethod: Sync {
    /// Passes over all merged tensors before any output is written (TIES global trimming).
    fn prepare(
        &mut self,
        _inputs: &Inputs,
        _merged: &[&TensorPlan],
        _progress: &dyn Progress,
    ) -> Result<(), MergeError> {
        Ok(())
    }

    /// The merged values of one tensor (row-major, same length as the base tensor).
    fn merge_tensor(&self, plan: &TensorPlan, data: &Loaded) -> Result<Merged, MergeError>;

    /// Method-wide facts for the report (thresholds, ...).
    fn details(&self) -> Value {
        Value::Null
    }
}

pub(crate) fn build(method: &Method) -> Box<dyn MergeMethod> {
    match method {
        Method::Average => Box::new(average::Average),
        Method::TaskArithmetic { lambda } => {
            Box::new(task_arithmetic::TaskArithmetic { lambda: *lambda })
        }
        Method::Ties(o) => Box::new(ties::Ties::new(o.clone())),
        Method::Dare(o) => Box::new(dare::Dare(o.clone())),
        Method::Wudi(o) => Box::new(wudi::Wudi(o.clone())),
        Method::RegMean(o) => Box::new(regmean::RegMean::new(o.clone())),
    }
}

/// `W₀ + λ·Δ` element-wise, in f64, rounded to f32.
pub(crate) fn add_scaled(base: &[f32], lambda: f64, delta: &[f64]) -> Vec<f32> {
    base.iter()
        .zip(delta)
        .map(|(&w, &d)| (w as f64 + lambda * d) as f32)
        .collect()
}
