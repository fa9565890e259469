//! The per-tensor plan of a merge, validated before anything is written.

use pmq_io::{is_float, Dtype, TensorInfo};

use crate::checkpoint::Checkpoint;
use crate::select::Selector;
use crate::MergeError;

/// What happens to one output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Computed from the base and the experts by the merge method.
    Merge,
    /// Copied from the base: not selected by the patterns.
    CopyUnselected,
    /// Copied from the base: not a float tensor.
    CopyNonFloat,
}

/// One output tensor: the base tensor's name and shape, its output dtype, and its action.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    pub info: TensorInfo,
    pub out_dtype: Dtype,
    pub action: Action,
}

impl TensorPlan {
    pub fn name(&self) -> &str {
        &self.info.name
    }
}

/// Builds and checks the plan: every base tensor appears once, in sorted name order.
///
/// Errors: a selected expert tensor the base lacks, a selected base tensor an expert lacks,
/// a shape mismatch, or a selected expert tensor that is not floating point.
pub fn build(
    base: &Checkpoint,
    experts: &[Checkpoint],
    selector: &Selector,
    dtype: Option<Dtype>,
) -> Result<Vec<TensorPlan>, MergeError> {
    for expert in experts {
        for name in expert.store.names() {
            if !base.store.contains(&name) && selector.selects(&name) {
                return Err(MergeError::ExtraTensor {
                    tensor: name,
                    expert: expert.label.clone(),
                });
            }
        }
    }
    let mut plan = Vec::new();
    for name in base.store.names() {
        let info = base.store.info(&name).expect("listed name").clone();
        let float = is_float(info.dtype);
        let action = if !selector.selects(&name) {
            Action::CopyUnselected
        } else if !float {
            Action::CopyNonFloat
        } else {
            Action::Merge
        };
        if action == Action::Merge {
            for expert in experts {
                let Some(e) = expert.store.info(&name) else {
                    return Err(MergeError::MissingTensor {
                        tensor: name,
                        expert: expert.label.clone(),
                    });
                };
                if e.shape != info.shape {
                    return Err(MergeError::Shape {
                        tensor: name,
                        expert: expert.label.clone(),
                        base_shape: info.shape.clone(),
                        expert_shape: e.shape.clone(),
                    });
                }
                if !is_float(e.dtype) {
                    return Err(MergeError::NotFloat {
                        tensor: name,
                        source_name: expert.label.clone(),
                        dtype: e.dtype,
                    });
                }
            }
        }
        let out_dtype = match dtype {
            Some(d) if float => d,
            _ => info.dtype,
        };
        plan.push(TensorPlan {
            info,
            out_dtype,
            action,
        });
    }
    Ok(plan)
}
