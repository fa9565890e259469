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

use crate::damping::Damping;
use crate::gptq::{gptq_prepared, prepare_hessian, GptqConfig, GptqOutput, PreparedHessian};
use crate::inverse_factor::right_solve;
use crate::matrix::{check_finite, check_shape, frobenius_dot, mean_diag, par};
use crate::objective::squared_distance;
use crate::CoreError;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

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

/// The expert terms of the objective folded task by task, so that memory does not grow with
/// the number of tasks: `R₀ = Σ_i W_i H_i` and `c₀ = Σ_i ⟨W_i H_i, W_i⟩` (one GEMM per task);
/// `H_q = Σ_i H_i` is summed by the caller, who may share it between linears reading the same
/// input.
#[derive(Clone, Debug)]
pub struct ExpertFold {
    r0: Mat<f64>,
    c0: f64,
    tasks: usize,
    product: Mat<f64>,
}

impl ExpertFold {
    /// An empty fold for `[rows, cols]` weights.
    pub fn new(rows: usize, cols: usize) -> Self {
        Self {
            r0: Mat::zeros(rows, cols),
            c0: 0.0,
            tasks: 0,
            product: Mat::zeros(0, 0),
        }
    }

    /// Tasks folded so far.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// Folds task `i`'s expert weight `W_i` and Hessian `H_i` (validated; named by the task
    /// index in errors).
    pub fn add(&mut self, expert: MatRef<'_, f64>, h: MatRef<'_, f64>) -> Result<(), CoreError> {
        let (rows, cols) = (self.r0.nrows(), self.r0.ncols());
        let i = self.tasks;
        check_shape(&format!("expert {i} weight"), expert, rows, cols)?;
        check_shape(&format!("Hessian {i}"), h, cols, cols)?;
        check_finite(&format!("expert {i} weight"), expert)?;
        check_finite(&format!("Hessian {i}"), h)?;
        if self.product.nrows() != rows || self.product.ncols() != cols {
            self.product = Mat::zeros(rows, cols);
        }
        matmul(self.product.as_mut(), Accum::Replace, expert, h, 1.0, par());
        self.c0 += frobenius_dot(self.product.as_ref(), expert);
        self.r0 += &self.product;
        self.tasks += 1;
        Ok(())
    }

    /// Adds `other`, a fold of the same tasks on other samples (`R₀` and `c₀` summed, the task
    /// count kept): the fold of all the samples.
    pub fn absorb(&mut self, other: &ExpertFold) -> Result<(), CoreError> {
        check_shape(
            "expert fold",
            other.r0.as_ref(),
            self.r0.nrows(),
            self.r0.ncols(),
        )?;
        if other.tasks != self.tasks {
            return Err(CoreError::Config(format!(
                "expert folds of {} and {} tasks cannot be summed",
                self.tasks, other.tasks
            )));
        }
        self.r0 += &other.r0;
        self.c0 += other.c0;
        Ok(())
    }

    /// The objective with `H_q = Σ_i H_i` and `λ = α · mean(diag H_q)`.
    pub fn finish(
        self,
        merged: MatRef<'_, f64>,
        h_q: Mat<f64>,
        alpha: f64,
    ) -> Result<EpmqObjective, CoreError> {
        let (rows, cols) = (self.r0.nrows(), self.r0.ncols());
        if self.tasks == 0 {
            return Err(CoreError::Config("E-PMQ needs at least one expert".into()));
        }
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(CoreError::Config(format!(
                "alpha must be finite and ≥ 0, got {alpha}"
            )));
        }
        check_shape("merged weight", merged, rows, cols)?;
        check_finite("merged weight", merged)?;
        check_shape("Hessian sum", h_q.as_ref(), cols, cols)?;
        let lambda = alpha * mean_diag(h_q.as_ref());
        Ok(EpmqObjective {
            h_q,
            r0: self.r0,
            c0: self.c0,
            lambda,
            merged: merged.to_owned(),
        })
    }
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
        check_finite("merged weight", problem.merged)?;
        let mut fold = ExpertFold::new(rows, cols);
        let mut h_q = Mat::<f64>::zeros(cols, cols);
        for (w_i, h_i) in problem.experts.iter().zip(problem.hessians) {
            fold.add(*w_i, *h_i)?;
            h_q += *h_i;
        }
        fold.finish(problem.merged, h_q, alpha)
    }

    /// The objective of the unquantized merged weight, `Σ_i ‖W_m X_i − W_i X_i‖²` (one
    /// product).
    pub fn at_merged(&self) -> f64 {
        self.eval(self.merged.as_ref())
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
    /// The anchor weight `λ = α · mean(diag H_q)`.
    pub lambda: f64,
    /// Extra damping `δ` that was needed to factor `H_E` (0 unless `H_E` is singular).
    pub extra_damping: f64,
    /// `δ` as a fraction of `mean(diag H_E)`.
    pub extra_percdamp: f64,
}

/// `H_E` prepared for the rounding loop (act-order as `act_order`), damped only if it cannot
/// be factored, and `W* = R (H_E + δI)⁻¹` from the same factor.
fn target_and_factor(
    objective: &EpmqObjective,
    act_order: bool,
) -> Result<(EpmqTarget, PreparedHessian), CoreError> {
    let t = std::time::Instant::now();
    let h_e = objective.h_e();
    let prepared = prepare_hessian(
        "E-PMQ Hessian H_E = ΣH_i + λI",
        h_e.as_ref(),
        Damping::gptq(0.0),
        act_order,
        false,
    )?;
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "E-PMQ factor of H_E");
    let t = std::time::Instant::now();
    let r = objective.r();
    let (rows, cols) = (r.nrows(), r.ncols());
    let target = match &prepared.perm {
        None => right_solve(r.as_ref(), prepared.u.as_ref()),
        Some(p) => {
            let r_perm = Mat::from_fn(rows, cols, |i, j| r[(i, p[j])]);
            let t_perm = right_solve(r_perm.as_ref(), prepared.u.as_ref());
            let mut t = Mat::<f64>::zeros(rows, cols);
            for (j, &c) in p.iter().enumerate() {
                t.col_mut(c).copy_from(t_perm.col(j));
            }
            t
        }
    };
    check_finite("E-PMQ target W*", target.as_ref())?;
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "E-PMQ target W*");
    let t = EpmqTarget {
        target,
        lambda: objective.lambda,
        extra_damping: prepared.damping,
        extra_percdamp: prepared.percdamp,
    };
    Ok((t, prepared))
}

/// Computes `W* = R H_E⁻¹` by one Cholesky factorisation, adding damping only if `H_E` cannot
/// be factored.
pub fn epmq_target(objective: &EpmqObjective) -> Result<EpmqTarget, CoreError> {
    Ok(target_and_factor(objective, false)?.0)
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
}

/// Solves one layer's E-PMQ problem: GPTQ on target `W*` with Hessian `H_E`. The GPTQ
/// config's damping is added on top of `λ` (0 by default in E-PMQ: λ is the damping).
pub fn epmq(
    problem: &EpmqProblem<'_>,
    alpha: f64,
    cfg: &GptqConfig,
) -> Result<EpmqOutput, CoreError> {
    let obj = EpmqObjective::new(problem, alpha)?;
    epmq_solve(&obj, cfg)
}

/// [`epmq`] on a precomputed (e.g. folded) objective. Without GPTQ damping, `H_E` is
/// factored once: the same `U` gives `W*` and drives the rounding loop.
pub fn epmq_solve(obj: &EpmqObjective, cfg: &GptqConfig) -> Result<EpmqOutput, CoreError> {
    let (target, mut prepared) = target_and_factor(obj, cfg.act_order)?;
    if cfg.damping.percdamp > 0.0 {
        // GPTQ damping on top of H_E + δI: a second factorisation of the damped matrix.
        let mut hd = obj.h_e();
        for j in 0..hd.nrows() {
            hd[(j, j)] += target.extra_damping;
        }
        prepared = prepare_hessian(
            "E-PMQ Hessian H_E = ΣH_i + λI",
            hd.as_ref(),
            cfg.damping,
            cfg.act_order,
            false,
        )?;
    } else {
        // The rounding loop runs on H_E + δI as given: nothing added on top.
        prepared.damping = 0.0;
        prepared.percdamp = 0.0;
    }
    let out = gptq_prepared(target.target.as_ref(), &prepared, cfg)?;
    drop(prepared);
    // Completing the square: E(Q) = tr((Q − W*) H_E (Q − W*)ᵀ) + E(W*), and at the optimum
    // E(W*) = c₀ + λ‖W_m‖² − ⟨R, W*⟩ (since W* H_E = R). Exact only without extra damping;
    // otherwise evaluate directly (one product each).
    let merged = obj.merged.as_ref();
    let (objective, objective_target) = if target.extra_damping == 0.0 {
        let r = obj.r();
        let merged_sq = frobenius_dot(merged, merged);
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
        gptq: out,
        target,
    })
}
