//! E-PMQ: expert-guided post-merge quantization with merged-weight anchoring
//! (arXiv 2605.16882). For one linear layer with merged weight `W_m`, experts `W_i` and
//! per-task Hessians `H_i = X_i X_iᵀ` (inputs collected on the partially quantized merged model):
//!
//! ```text
//! min_Q  Σ_i ‖Q X_i − W_i X_i‖² + λ ‖Q − W_m‖²,      λ = α · mean(diag Σ_i H_i)
//! ```
//!
//! Completing the square with `H_E = Σ_i H_i + λI` and `R = Σ_i W_i H_i + λ W_m`:
//!
//! ```text
//! objective(Q) = tr((Q − W*) H_E (Q − W*)ᵀ) + const,   W* = R H_E⁻¹   (the paper's Eq. 20)
//! ```
//!
//! so E-PMQ is the unmodified GPTQ rounding loop run on target `W*` with Hessian `H_E`; `λ`
//! plays the role of GPTQ's damping. `W*` is obtained by a Cholesky solve `H_E W*ᵀ = Rᵀ`, never
//! an explicit inverse. With `α = 0` (the paper's ablation) `H_E` may be singular: then GPTQ's
//! automatic damping path adds `δI` to `H_E` (R unchanged, as GPTQ damps `H` without touching
//! its target), and the damping used is reported.

use crate::damping::{with_auto_damping, Damping};
use crate::gptq::{gptq, GptqConfig, GptqOutput};
use crate::matrix::{check_finite, check_shape, frobenius_dot, mean_diag, par};
use crate::objective::squared_distance;
use crate::CoreError;
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, MatRef, Side};

/// The inputs of one layer's E-PMQ problem.
#[derive(Clone, Copy)]
pub struct EpmqProblem<'a> {
    /// Merged weight `W_m`, `[out, in]`.
    pub merged: MatRef<'a, f64>,
    /// Expert weights `W_i`, each `[out, in]`.
    pub experts: &'a [MatRef<'a, f64>],
    /// Per-task Hessians `H_i = X_i X_iᵀ`, each `[in, in]`.
    pub hessians: &'a [MatRef<'a, f64>],
}

/// The E-PMQ objective `Σ_i tr((Q − W_i) H_i (Q − W_i)ᵀ) + λ‖Q − W_m‖²`, precomputed so that
/// evaluating it costs one product: `⟨Q H_q, Q⟩ − 2⟨Q, R₀⟩ + c₀ + λ‖Q − W_m‖²` with
/// `H_q = Σ H_i`, `R₀ = Σ W_i H_i`, `c₀ = Σ ⟨W_i H_i, W_i⟩`.
#[derive(Clone, Debug)]
pub struct EpmqObjective {
    pub h_q: Mat<f64>,
    pub r0: Mat<f64>,
    pub c0: f64,
    pub lambda: f64,
    pub merged: Mat<f64>,
}

impl EpmqObjective {
    /// Validates the problem and precomputes `H_q`, `R₀`, `c₀`; `λ = α · mean(diag H_q)`.
    pub fn new(problem: &EpmqProblem<'_>, alpha: f64) -> Result<Self, CoreError> {
        let (rows, cols) = (problem.merged.nrows(), problem.merged.ncols());
        let k = problem.experts.len();
        if k == 0 {
            return Err(CoreError::Config("E-PMQ needs at least one expert".into()));
        }
        if problem.hessians.len() != k {
            return Err(CoreError::Config(format!(
                "E-PMQ needs one Hessian per expert: {k} experts, {} Hessians",
                problem.hessians.len()
            )));
        }
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(CoreError::Config(format!(
                "alpha must be finite and ≥ 0, got {alpha}"
            )));
        }
        check_finite("merged weight", problem.merged)?;
        let mut h_q = Mat::<f64>::zeros(cols, cols);
        let mut r0 = Mat::<f64>::zeros(rows, cols);
        let mut c0 = 0.0;
        for (i, (w_i, h_i)) in problem.experts.iter().zip(problem.hessians).enumerate() {
            check_shape(&format!("expert {i} weight"), *w_i, rows, cols)?;
            check_shape(&format!("Hessian {i}"), *h_i, cols, cols)?;
            check_finite(&format!("expert {i} weight"), *w_i)?;
            check_finite(&format!("Hessian {i}"), *h_i)?;
            h_q += *h_i;
            let mut p = Mat::<f64>::zeros(rows, cols);
            matmul(p.as_mut(), Accum::Replace, *w_i, *h_i, 1.0, par());
            c0 += frobenius_dot(p.as_ref(), *w_i);
            r0 += &p;
        }
        let lambda = alpha * mean_diag(h_q.as_ref());
        Ok(Self {
            h_q,
            r0,
            c0,
            lambda,
            merged: problem.merged.to_owned(),
        })
    }

    /// The objective at `q`.
    pub fn eval(&self, q: MatRef<'_, f64>) -> f64 {
        let mut qh = Mat::<f64>::zeros(q.nrows(), q.ncols());
        matmul(
            qh.as_mut(),
            Accum::Replace,
            q,
            self.h_q.as_ref(),
            1.0,
            par(),
        );
        frobenius_dot(qh.as_ref(), q) - 2.0 * frobenius_dot(q, self.r0.as_ref())
            + self.c0
            + self.lambda * squared_distance(q, self.merged.as_ref())
    }

    /// `H_E = H_q + λI`.
    pub fn h_e(&self) -> Mat<f64> {
        let mut h = self.h_q.clone();
        for j in 0..h.nrows() {
            h[(j, j)] += self.lambda;
        }
        h
    }

    /// `R = R₀ + λ W_m`.
    pub fn r(&self) -> Mat<f64> {
        let mut r = self.r0.clone();
        r += faer::Scale(self.lambda) * &self.merged;
        r
    }
}

/// The continuous optimum of the E-PMQ objective.
#[derive(Clone, Debug)]
pub struct EpmqTarget {
    /// `W* = R (H_E + δI)⁻¹`, `[out, in]`.
    pub target: Mat<f64>,
    /// The Hessian the rounding runs on: `H_E + δI`.
    pub hessian: Mat<f64>,
    /// The anchor weight `λ = α · mean(diag H_q)`.
    pub lambda: f64,
    /// Extra damping `δ` that was needed to factor `H_E` (0 unless `H_E` is singular).
    pub extra_damping: f64,
    /// `δ` as a fraction of `mean(diag H_E)`.
    pub extra_percdamp: f64,
}

/// Computes `W* = R H_E⁻¹` by a Cholesky solve, adding damping only if `H_E` cannot be factored.
pub fn epmq_target(objective: &EpmqObjective) -> Result<EpmqTarget, CoreError> {
    let h_e = objective.h_e();
    let damped = with_auto_damping(
        "E-PMQ Hessian H_E = ΣH_i + λI",
        h_e.as_ref(),
        Damping::gptq(0.0),
        |hd| {
            let llt = hd.llt(Side::Lower).ok()?;
            Some((llt, hd.clone()))
        },
    )?;
    let (llt, hessian) = damped.value;
    let rt = objective.r().transpose().to_owned();
    let target = llt.solve(rt.as_ref()).transpose().to_owned();
    check_finite("E-PMQ target W*", target.as_ref())?;
    Ok(EpmqTarget {
        target,
        hessian,
        lambda: objective.lambda,
        extra_damping: damped.damping,
        extra_percdamp: damped.percdamp,
    })
}

/// The result of [`epmq`].
#[derive(Clone, Debug)]
pub struct EpmqOutput {
    /// GPTQ on `(W*, H_E)`; its `objective` is `tr((Q − W*) H_E (Q − W*)ᵀ)`.
    pub gptq: GptqOutput,
    pub target: EpmqTarget,
    /// E-PMQ objective of the quantized weight.
    pub objective: f64,
    /// E-PMQ objective of the continuous optimum `W*` (a lower bound for any `Q`).
    pub objective_target: f64,
    /// E-PMQ objective of the unquantized merged weight (`Σ_i ‖W_m X_i − W_i X_i‖²`).
    pub objective_merged: f64,
}

/// Solves one layer's E-PMQ problem: GPTQ on target `W*` with Hessian `H_E`. The GPTQ
/// config's damping is added on top of `λ` (0 by default in E-PMQ: λ is the damping).
pub fn epmq(
    problem: &EpmqProblem<'_>,
    alpha: f64,
    cfg: &GptqConfig,
) -> Result<EpmqOutput, CoreError> {
    let obj = EpmqObjective::new(problem, alpha)?;
    let target = epmq_target(&obj)?;
    let out = gptq(target.target.as_ref(), target.hessian.as_ref(), cfg)?;
    // Completing the square: E(Q) = tr((Q − W*) H_E (Q − W*)ᵀ) + E(W*), and at the optimum
    // E(W*) = c₀ + λ‖W_m‖² − ⟨R, W*⟩ (since W* H_E = R). Exact only without extra damping;
    // otherwise evaluate directly (one product each).
    let (objective, objective_target) = if target.extra_damping == 0.0 {
        let r = obj.r();
        let merged_sq = frobenius_dot(problem.merged, problem.merged);
        let at_target =
            obj.c0 + obj.lambda * merged_sq - frobenius_dot(r.as_ref(), target.target.as_ref());
        (out.objective + at_target, at_target)
    } else {
        (
            obj.eval(out.layer.dequant.as_ref()),
            obj.eval(target.target.as_ref()),
        )
    };
    Ok(EpmqOutput {
        objective,
        objective_target,
        objective_merged: obj.eval(problem.merged),
        gptq: out,
        target,
    })
}
