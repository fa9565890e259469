//! The paper's deviation split (its Eq. 9), measured on calibration inputs:
//!
//! ```text
//! Q X_i − W_i X_i = (Q X_i − W_m X_i) + (W_m X_i − W_i X_i)
//!      expert-relative error = quantization deviation + merging deviation
//! ```
//!
//! so `‖QX_i − W_iX_i‖² = ‖QX_i − W_mX_i‖² + ‖W_mX_i − W_iX_i‖² + 2⟨(Q − W_m)X_i, (W_m − W_i)X_i⟩`,
//! every term a trace with `H_i = X_i X_iᵀ`.
//!
//! Two modes: [`DeviationMode::Total`] (the default) needs only `H_q = Σ_i H_i` and the sums
//! the expert fold keeps, so memory does not grow with the number of tasks, and reports the
//! quantization deviation over all tasks and root-mean-square merge and expert errors over the
//! tasks; [`DeviationMode::PerTask`] keeps every `H_i` and reports each task's split.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use pmq_core::matrix::{frobenius_dot, par};
use pmq_core::objective::{quadratic_form, QuadraticFormF32};
use serde::{Deserialize, Serialize};

/// How much of the split a run measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviationMode {
    /// Totals over the tasks (memory flat in the number of tasks).
    #[default]
    Total,
    /// Every task's split (keeps one Hessian per task and input at once).
    PerTask,
}

/// The split for one task.
#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// The expert sums a method computed: `Σ_i ‖W_mX_i − W_iX_i‖²` and `Σ_i ‖QX_i − W_iX_i‖²`.
#[derive(Clone, Copy, Debug)]
pub struct ExpertTerms {
    pub tasks: usize,
    pub merge_sq: f64,
    pub expert_sq: f64,
}

/// The split for one linear.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deviation {
    /// `‖Q X − W_m X‖` over all tasks' inputs (`X` = all `X_i` side by side).
    pub quant: f64,
    /// `sqrt(mean_i ‖W_m X_i − W_i X_i‖²)` (`None` without experts)
    pub merge_rms: Option<f64>,
    /// `sqrt(mean_i ‖Q X_i − W_i X_i‖²)` (`None` without experts)
    pub expert_rms: Option<f64>,
    /// `mean_i ‖W_m X_i − W_i X_i‖` (per-task mode with experts)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_mean: Option<f64>,
    /// `mean_i ‖Q X_i − W_i X_i‖` (per-task mode with experts)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expert_mean: Option<f64>,
    /// Each task's split (per-task mode with experts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_task: Vec<TaskDeviation>,
}

fn diff(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] - b[(i, j)])
}

/// The totals: `‖QX − W_mX‖²` — `known_quant_sq` when the solver already measured it (RTN's
/// and GPTQ's objective is exactly this), else from `H_q` (an f32 form) — and the method's
/// expert sums.
pub fn deviation_total(
    q: &Mat<f64>,
    merged: &Mat<f64>,
    h_q: &Mat<f64>,
    known_quant_sq: Option<f64>,
    terms: &Option<ExpertTerms>,
) -> Deviation {
    let quant_sq = known_quant_sq
        .unwrap_or_else(|| QuadraticFormF32::new(h_q.as_ref()).error(q.as_ref(), merged.as_ref()));
    let rms = |sq: f64, k: usize| (sq.max(0.0) / k.max(1) as f64).sqrt();
    Deviation {
        quant: quant_sq.max(0.0).sqrt(),
        merge_rms: terms.map(|t| rms(t.merge_sq, t.tasks)),
        expert_rms: terms.map(|t| rms(t.expert_sq, t.tasks)),
        merge_mean: None,
        expert_mean: None,
        per_task: Vec::new(),
    }
}

/// Measures each task's split of `q` against the merged weight and the experts (one per
/// Hessian; may be empty, then only the quantization deviation is measured).
pub fn deviation_per_task(
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
    let has = !per_task.is_empty();
    let mean = |f: fn(&TaskDeviation) -> f64| {
        has.then(|| per_task.iter().map(f).sum::<f64>() / per_task.len() as f64)
    };
    let rms = |f: fn(&TaskDeviation) -> f64| {
        has.then(|| {
            (per_task.iter().map(|t| f(t).powi(2)).sum::<f64>() / per_task.len() as f64).sqrt()
        })
    };
    Deviation {
        quant: quant_sq.max(0.0).sqrt(),
        merge_rms: rms(|t| t.merge),
        expert_rms: rms(|t| t.expert),
        merge_mean: mean(|t| t.merge),
        expert_mean: mean(|t| t.expert),
        per_task,
    }
}
