//! WUDI-merging for the streaming engine: every selected 2-D tensor gets
//! **W = W₀ + τ_m**, τ_m = argmin Σᵢ ‖(τ_m − τᵢ)τᵢᵀ‖²_F / ‖τᵢ‖²_F (no scaling; see
//! [`crate::wudi_solver`]); other selected tensors get the experts' average (FusionBench) or
//! the base values (official code).

use faer::Mat;
use serde_json::json;

use super::average::average;
use super::{MergeMethod, Merged};
use crate::inputs::Loaded;
use crate::plan::TensorPlan;
use crate::wudi_solver::{frobenius, mat_to_row_major, ExactMethod, WudiProblem};
use crate::{MergeError, WudiOptions, WudiOther, WudiSolver};

pub(crate) struct Wudi(pub WudiOptions);

impl MergeMethod for Wudi {
    fn merge_tensor(&self, plan: &TensorPlan, data: &Loaded) -> Result<Merged, MergeError> {
        let shape = &plan.info.shape;
        if shape.len() != 2 {
            let values = match self.0.other {
                WudiOther::Average => average(&data.experts),
                WudiOther::Base => data.base.clone(),
            };
            return Ok(Merged::plain(values));
        }
        let (rows, cols) = (shape[0], shape[1]);
        let problem = WudiProblem::from_row_major(rows, cols, &data.task_vectors());
        let initial_loss = problem.loss(problem.init());
        let (x, solver, extra): (Mat<f64>, &str, serde_json::Value) = match self.0.solver {
            WudiSolver::Adam => (
                problem.adam(self.0.steps, self.0.lr),
                "adam",
                json!({ "steps": self.0.steps, "lr": self.0.lr }),
            ),
            WudiSolver::Exact => match problem.exact() {
                (x, ExactMethod::Cholesky) => (x, "cholesky", json!({})),
                (x, ExactMethod::DualCholesky) => (x, "cholesky-dual", json!({})),
                (
                    x,
                    ExactMethod::ConjugateGradient {
                        iterations,
                        converged,
                    },
                ) => {
                    if !converged {
                        tracing::warn!(
                            tensor = plan.name(),
                            iterations,
                            "WUDI conjugate gradient stopped before reaching its tolerance"
                        );
                    }
                    (
                        x,
                        "conjugate-gradient",
                        json!({ "iterations": iterations, "converged": converged }),
                    )
                }
            },
        };
        let final_loss = problem.loss(x.as_ref());
        let gradient_norm = frobenius(problem.gradient(x.as_ref()).as_ref());
        let tau = mat_to_row_major(x.as_ref());
        let values = data
            .base
            .iter()
            .zip(&tau)
            .map(|(&w, &t)| (w as f64 + t) as f32)
            .collect();
        let mut detail = json!({
            "solver": solver,
            "initial_loss": initial_loss,
            "final_loss": final_loss,
            "gradient_norm": gradient_norm,
        });
        if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        Ok(Merged {
            values,
            detail: Some(detail),
        })
    }
}
