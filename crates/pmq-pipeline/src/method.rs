//! Quantization methods as small strategies over the shared solver core.
//!
//! Per linear (the true-sequential strategy, [`crate::sequential`]): each turns one linear's
//! merged weight, per-task Hessians and (E-PMQ) expert weights into a quantized layer.
//!
//! - RTN: round to nearest on the grid.
//! - GPTQ (naive PMQ): `min_Q ‖Q X − W_m X‖²`, `X` = all tasks' inputs, i.e. GPTQ on `H = Σ H_i`.
//! - E-PMQ: `min_Q Σ_i ‖Q X_i − W_i X_i‖² + λ‖Q − W_m‖²` = GPTQ on `(W* = R H_E⁻¹, H_E)`.
//!
//! Per block ([`crate::awq_strategy`]):
//!
//! - AWQ: activation-aware scales searched on the block's full-precision inputs, folded into
//!   the preceding norm or linear where that is exact, then clipping and RTN.

use anyhow::{bail, Result};
use faer::Mat;
use pmq_core::epmq::{epmq, EpmqProblem};
use pmq_core::gptq::{gptq, GptqConfig};
use pmq_core::objective::{quadratic_error, squared_distance};
use pmq_core::rtn::rtn;
use pmq_core::QuantizedLayer;
use serde::Serialize;

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

    pub fn label(&self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::Epmq { .. } => "epmq",
            Method::Awq(_) => "awq",
        }
    }

    /// Whether the next block's inputs are the full-precision outputs of this block (AWQ)
    /// rather than the outputs of the quantized block.
    pub fn propagates_full_precision(&self) -> bool {
        matches!(self, Method::Awq(_))
    }
}

/// One linear's inputs to a method.
pub struct LinearProblem<'a> {
    pub merged: &'a Mat<f64>,
    pub hessians: &'a [Mat<f64>],
    pub experts: &'a [Mat<f64>],
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
}

fn sum(hs: &[Mat<f64>]) -> Option<Mat<f64>> {
    let first = hs.first()?;
    Some(hs[1..].iter().fold(first.clone(), |a, h| a + h))
}

/// Solves one linear with `method` on `cfg`'s grid.
pub fn solve(method: Method, p: &LinearProblem<'_>, cfg: &GptqConfig) -> Result<LinearSolution> {
    let base = rtn(p.merged.as_ref(), &cfg.grid)?;
    Ok(match method {
        Method::Rtn => {
            let objective = sum(p.hessians)
                .map(|h| quadratic_error(base.dequant.as_ref(), p.merged.as_ref(), h.as_ref()));
            LinearSolution {
                layer: base,
                objective_rtn: objective,
                objective,
                percdamp: None,
                damping: None,
                lambda: None,
                extra_damping: None,
            }
        }
        Method::Gptq => {
            let h =
                sum(p.hessians).ok_or_else(|| anyhow::anyhow!("GPTQ needs calibration inputs"))?;
            let out = gptq(p.merged.as_ref(), h.as_ref(), cfg)?;
            LinearSolution {
                objective_rtn: Some(quadratic_error(
                    base.dequant.as_ref(),
                    p.merged.as_ref(),
                    h.as_ref(),
                )),
                objective: Some(out.objective),
                percdamp: Some(out.percdamp),
                damping: Some(out.damping),
                lambda: None,
                extra_damping: None,
                layer: out.layer,
            }
        }
        Method::Awq(_) => bail!("AWQ quantizes whole blocks (see awq_strategy), not one linear"),
        Method::Epmq { alpha } => {
            let experts: Vec<_> = p.experts.iter().map(|m| m.as_ref()).collect();
            let hessians: Vec<_> = p.hessians.iter().map(|m| m.as_ref()).collect();
            let problem = EpmqProblem {
                merged: p.merged.as_ref(),
                experts: &experts,
                hessians: &hessians,
            };
            let out = epmq(&problem, alpha, cfg)?;
            let lambda = out.target.lambda;
            let before = p
                .experts
                .iter()
                .zip(p.hessians)
                .map(|(w, h)| quadratic_error(base.dequant.as_ref(), w.as_ref(), h.as_ref()))
                .sum::<f64>()
                + lambda * squared_distance(base.dequant.as_ref(), p.merged.as_ref());
            LinearSolution {
                objective_rtn: Some(before),
                objective: Some(out.objective),
                percdamp: Some(out.gptq.percdamp),
                damping: Some(out.gptq.damping),
                lambda: Some(lambda),
                extra_damping: Some(out.target.extra_damping),
                layer: out.gptq.layer,
            }
        }
    })
}
