//! The paper's deviation split (its Eq. 9), measured on calibration inputs:
//!
//! ```text
//! Q X_i − W_i X_i = (Q X_i − W_m X_i) + (W_m X_i − W_i X_i)
//!      expert-relative error = quantization deviation + merging deviation
//! ```
//!
//! so `‖QX_i − W_iX_i‖² = ‖QX_i − W_mX_i‖² + ‖W_mX_i − W_iX_i‖² + 2⟨(Q − W_m)X_i, (W_m − W_i)X_i⟩`,
//! every term a trace with `H_i = X_i X_iᵀ`.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use pmq_core::matrix::{frobenius_dot, par};
use pmq_core::objective::quadratic_form;
use serde::Serialize;

/// The split for one task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskDeviation {
    /// `‖Q X_i − W_m X_i‖`
    pub quant: f64,
    /// `‖W_m X_i − W_i X_i‖`
    pub merge: f64,
    /// `‖Q X_i − W_i X_i‖`, computed directly from `Q − W_i`.
    pub expert: f64,
    /// `⟨(Q − W_m)X_i, (W_m − W_i)X_i⟩`
    pub cross: f64,
}

/// The split for one linear.
#[derive(Clone, Debug, Serialize)]
pub struct Deviation {
    /// `‖Q X − W_m X‖` over all tasks' inputs (`X` = all `X_i` side by side).
    pub quant: f64,
    /// `mean_i ‖W_m X_i − W_i X_i‖` (0 without experts)
    pub merge_mean: f64,
    /// `mean_i ‖Q X_i − W_i X_i‖` (0 without experts)
    pub expert_mean: f64,
    pub per_task: Vec<TaskDeviation>,
}

fn diff(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] - b[(i, j)])
}

/// Measures the split of `q` against the merged weight and the experts (one per Hessian; may
/// be empty, then only the quantization deviation is measured).
pub fn deviation(
    q: &Mat<f64>,
    merged: &Mat<f64>,
    experts: &[Mat<f64>],
    hessians: &[Mat<f64>],
) -> Deviation {
    let d = diff(q.as_ref(), merged.as_ref());
    let mut quant_sq = 0.0;
    let mut per_task = Vec::new();
    for (i, h) in hessians.iter().enumerate() {
        let mut dh = Mat::<f64>::zeros(d.nrows(), d.ncols());
        matmul(
            dh.as_mut(),
            Accum::Replace,
            d.as_ref(),
            h.as_ref(),
            1.0,
            par(),
        );
        let q_i = frobenius_dot(dh.as_ref(), d.as_ref());
        quant_sq += q_i;
        if let Some(w_i) = experts.get(i) {
            let e = diff(merged.as_ref(), w_i.as_ref());
            let cross = frobenius_dot(dh.as_ref(), e.as_ref());
            let merge_sq = quadratic_form(e.as_ref(), h.as_ref());
            let expert_sq = quadratic_form(diff(q.as_ref(), w_i.as_ref()).as_ref(), h.as_ref());
            per_task.push(TaskDeviation {
                quant: q_i.max(0.0).sqrt(),
                merge: merge_sq.max(0.0).sqrt(),
                expert: expert_sq.max(0.0).sqrt(),
                cross,
            });
        }
    }
    let mean = |f: fn(&TaskDeviation) -> f64| {
        if per_task.is_empty() {
            0.0
        } else {
            per_task.iter().map(f).sum::<f64>() / per_task.len() as f64
        }
    };
    Deviation {
        quant: quant_sq.max(0.0).sqrt(),
        merge_mean: mean(|t| t.merge),
        expert_mean: mean(|t| t.expert),
        per_task,
    }
}
