//! Quantization methods as small strategies over the shared solver core.
//!
//! Per linear (the true-sequential strategy, [`crate::sequential`]): each turns one linear's
//! merged weight, per-task Hessians and (E-PMQ) expert weights into a quantized layer.
//!
//! - RTN: round to nearest on the grid.
//! - GPTQ (naive PMQ): `min_Q ‖Q X − W_m X‖²`, `X` = all tasks' inputs, i.e. GPTQ on `H = Σ H_i`.
//! - E-PMQ: `min_Q Σ_i ‖Q X_i − W_i X_i‖² + λ‖Q − W_m‖²` = GPTQ on `(W* = R H_E⁻¹, H_E)`.
//!
//! Per block ([`crate::awq_strategy`], see [`crate::strategy`]):
//!
//! - AWQ: activation-aware scales searched on the block's full-precision inputs, folded into
//!   the preceding norm or linear where that is exact, then clipping and RTN.

use crate::deviation::ExpertTerms;
use anyhow::{bail, Result};
use faer::Mat;
use pmq_core::epmq::{epmq_solve, ExpertFold};
use pmq_core::gptq::{gptq, GptqConfig};
use pmq_core::objective::{squared_distance, QuadraticFormF32};
use pmq_core::rtn::rtn;
use pmq_core::QuantizedLayer;
use serde::Serialize;
use std::time::Instant;

/// The method, with its own settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Method {
    Rtn,
    Gptq,
    Epmq { alpha: f64 },
    Awq(AwqOptions),
}

/// The settings of AWQ (AutoAWQ's defaults: duo scaling, 20 ratios, clipping on).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AwqOptions {
    /// `s = x̄^r / w̄^(1−r)` (AutoAWQ) instead of `s = x̄^r` (llm-awq).
    pub duo_scaling: bool,
    /// Number of grid ratios `r = i / n_grid`, `i = 0 … n_grid − 1`.
    pub n_grid: usize,
    /// Search per-group clipping thresholds (skipping queries and keys).
    pub clip: bool,
}

impl Default for AwqOptions {
    fn default() -> Self {
        Self {
            duo_scaling: true,
            n_grid: 20,
            clip: true,
        }
    }
}

impl AwqOptions {
    /// The core search settings.
    pub fn config(&self) -> pmq_core::awq::AwqConfig {
        pmq_core::awq::AwqConfig {
            duo_scaling: self.duo_scaling,
            n_grid: self.n_grid,
            ..Default::default()
        }
    }
}

impl Method {
    /// Whether the method needs the experts' weights.
    pub fn needs_experts(&self) -> bool {
        matches!(self, Method::Epmq { .. })
    }

    /// Whether the method needs calibration inputs.
    pub fn needs_calibration(&self) -> bool {
        !matches!(self, Method::Rtn)
    }

    /// The default damping, as a fraction of `mean(diag H)`: 1 % for GPTQ's `H`, none for
    /// E-PMQ's `H_E` (its anchor `λI` damps).
    pub fn default_percdamp(&self) -> f64 {
        match self {
            Method::Epmq { .. } => 0.0,
            _ => 0.01,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::Epmq { .. } => "epmq",
            Method::Awq(_) => "awq",
        }
    }
}

/// One linear's inputs to a method.
pub struct LinearProblem<'a> {
    pub merged: &'a Mat<f64>,
    /// `H_q = Σ_i H_i` over the calibration tasks (`None` without calibration).
    pub h_q: Option<&'a Mat<f64>>,
    /// The experts folded task by task (`None` without experts).
    pub experts: Option<ExpertFold>,
}

/// What a method produced for one linear.
pub struct LinearSolution {
    pub layer: QuantizedLayer,
    /// The method's objective at RTN of the merged weight (the "before").
    pub objective_rtn: Option<f64>,
    /// The method's objective at the result (the "after").
    pub objective: Option<f64>,
    pub percdamp: Option<f64>,
    pub damping: Option<f64>,
    pub lambda: Option<f64>,
    pub extra_damping: Option<f64>,
    /// The expert sums of the deviation split (with experts).
    pub terms: Option<ExpertTerms>,
    /// GPTQ's dead input columns (zero Hessian diagonal), for GPTQ and E-PMQ.
    pub dead_columns: Option<usize>,
    /// E-PMQ's continuous optimum and its figures.
    pub epmq: Option<EpmqDetails>,
    /// Seconds spent on report figures (objectives, sums) rather than on quantizing.
    pub metrics_seconds: f64,
}

/// What E-PMQ computes on the way: the completed square's target and its objective.
pub struct EpmqDetails {
    /// `W* = R H_E⁻¹`.
    pub target: Mat<f64>,
    /// `E(W*)`, the objective's floor over continuous weights.
    pub objective_target: f64,
    /// GPTQ's objective rounding toward `W*` on `H_E`: `tr((Q − W*) H_E (Q − W*)ᵀ)`.
    pub objective_rounding: f64,
    /// The extra damping of `H_E` as a fraction of its mean diagonal (0 when none was needed).
    pub extra_percdamp: f64,
}

/// `Σ_i ‖W_mX_i − W_iX_i‖²` (the fold's `c`) and `Σ_i ‖QX_i − W_iX_i‖²` (one f64 product)
/// from the fold.
pub(crate) fn expert_terms(fold: ExpertFold, h_q: &Mat<f64>, q: &Mat<f64>) -> Result<ExpertTerms> {
    let tasks = fold.tasks();
    let obj = fold.finish(h_q.clone(), 0.0)?;
    Ok(ExpertTerms {
        tasks,
        merge_sq: obj.at_merged(),
        expert_sq: obj.eval(q.as_ref()),
    })
}

/// The fold, once it is known to be taken around `merged` (the weight being quantized).
fn checked(fold: ExpertFold, merged: &Mat<f64>) -> Result<ExpertFold> {
    if fold.merged() != merged.as_ref() {
        bail!("internal: the experts were folded around another merged weight");
    }
    Ok(fold)
}

/// Refuses a Hessian without any calibration signal (all-zero diagonal: every input the linear
/// saw was zero), for which GPTQ would return an all-zero weight and E-PMQ has no objective.
fn check_signal(h: &Mat<f64>) -> Result<()> {
    if (0..h.nrows()).all(|j| h[(j, j)] == 0.0) {
        bail!(
            "no calibration signal: every input this linear saw was zero (its Hessian is all \
             zero), so the result would be meaningless; check the calibration data"
        );
    }
    Ok(())
}

/// Solves one linear with `method` on `cfg`'s grid.
///
/// This is the one per-linear dispatch of the project: the pipeline and `pmq solve` call it.
/// The RTN of the merged weight (the "before" figure of the other methods) counts as metrics
/// time, not as solve time, except for RTN itself.
pub fn solve(method: Method, p: LinearProblem<'_>, cfg: &GptqConfig) -> Result<LinearSolution> {
    let t_base = Instant::now();
    let base = rtn(p.merged.as_ref(), &cfg.grid)?;
    let base_seconds = match method {
        Method::Rtn => 0.0,
        _ => t_base.elapsed().as_secs_f64(),
    };
    let merged = p.merged;
    let mut solution = match method {
        Method::Rtn => {
            let t = Instant::now();
            let objective = p.h_q.map(|h| {
                QuadraticFormF32::new(h.as_ref()).error(base.dequant.as_ref(), merged.as_ref())
            });
            let terms = match (p.experts, p.h_q) {
                (Some(f), Some(h)) => Some(expert_terms(checked(f, merged)?, h, &base.dequant)?),
                _ => None,
            };
            LinearSolution {
                layer: base,
                objective_rtn: objective,
                objective,
                percdamp: None,
                damping: None,
                lambda: None,
                extra_damping: None,
                terms,
                dead_columns: None,
                epmq: None,
                metrics_seconds: t.elapsed().as_secs_f64(),
            }
        }
        Method::Gptq => {
            let h = p
                .h_q
                .ok_or_else(|| anyhow::anyhow!("GPTQ needs calibration inputs"))?;
            check_signal(h)?;
            let out = gptq(merged.as_ref(), h.as_ref(), cfg)?;
            let t = Instant::now();
            let objective_rtn =
                QuadraticFormF32::new(h.as_ref()).error(base.dequant.as_ref(), merged.as_ref());
            let terms = match p.experts {
                Some(f) => Some(expert_terms(checked(f, merged)?, h, &out.layer.dequant)?),
                None => None,
            };
            LinearSolution {
                objective_rtn: Some(objective_rtn),
                objective: Some(out.objective),
                percdamp: Some(out.percdamp),
                damping: Some(out.damping),
                lambda: None,
                extra_damping: None,
                terms,
                dead_columns: Some(out.dead_columns),
                epmq: None,
                metrics_seconds: t.elapsed().as_secs_f64(),
                layer: out.layer,
            }
        }
        Method::Awq(_) => bail!("AWQ quantizes whole blocks (see awq_strategy), not one linear"),
        Method::Epmq { alpha } => {
            let fold = p
                .experts
                .ok_or_else(|| anyhow::anyhow!("E-PMQ needs the experts"))?;
            let h = p
                .h_q
                .ok_or_else(|| anyhow::anyhow!("E-PMQ needs calibration inputs"))?;
            check_signal(h)?;
            let fold = checked(fold, merged)?;
            let tasks = fold.tasks();
            let obj = fold.finish(h.clone(), alpha)?;
            let out = epmq_solve(&obj, cfg)?;
            let t = Instant::now();
            let lambda = out.target.lambda;
            let q = &out.gptq.layer.dequant;
            // E(X) = tr((X − W*) H_E (X − W*)ᵀ) + E(W*): a positive form, computed in f32,
            // when W* is the exact optimum (no extra damping); directly otherwise. At the
            // merged weight it is the fold's `c`.
            let before = if out.target.extra_damping == 0.0 {
                let form = QuadraticFormF32::new(obj.h_e().as_ref());
                form.error(base.dequant.as_ref(), out.target.target.as_ref()) + out.objective_target
            } else {
                obj.eval(base.dequant.as_ref())
            };
            let merge_sq = obj.at_merged();
            let expert_sq = out.objective - lambda * squared_distance(q.as_ref(), merged.as_ref());
            LinearSolution {
                objective_rtn: Some(before),
                objective: Some(out.objective),
                percdamp: Some(out.gptq.percdamp),
                damping: Some(out.gptq.damping),
                lambda: Some(lambda),
                extra_damping: Some(out.target.extra_damping),
                terms: Some(ExpertTerms {
                    tasks,
                    merge_sq,
                    expert_sq,
                }),
                dead_columns: Some(out.gptq.dead_columns),
                epmq: Some(EpmqDetails {
                    target: out.target.target,
                    objective_target: out.objective_target,
                    objective_rounding: out.gptq.objective,
                    extra_percdamp: out.target.extra_percdamp,
                }),
                metrics_seconds: t.elapsed().as_secs_f64(),
                layer: out.gptq.layer,
            }
        }
    };
    solution.metrics_seconds += base_seconds;
    Ok(solution)
}
