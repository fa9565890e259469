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
//! plays the role of GPTQ's damping. The experts enter through their offsets from the merged
//! weight, `D = Σ_i (W_i − W_m) H_i` (so `R = W_m H_E + D`), and `W* = W_m + D H_E⁻¹` is
//! computed from the inverse Cholesky factor GPTQ needs anyway, never an explicit inverse: the
//! correction is small next to `W_m`, so neither the products nor the solve carry large
//! cancelling terms, and both may run in f32 ([`FoldPrecision`]). With `α = 0` (the paper's ablation) `H_E` may be singular: then GPTQ's
//! automatic damping path adds `δI` to `H_E` (R unchanged, as GPTQ damps `H` without touching
//! its target), and the damping used is reported.

use crate::damping::Damping;
use crate::gptq::{gptq_prepared, prepare_hessian, GptqConfig, GptqOutput, PreparedHessian};
use crate::inverse_factor::right_solve;
use crate::matrix::{
    check_finite, check_shape, frobenius_dot, from_row_major, gemm_f32, mean_diag, par,
    par_from_fn, to_f32, to_row_major,
};
use crate::objective::QuadraticFormF32;
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

/// Precision of the fold's products `Δ_i H_i` (always summed over tasks in f64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FoldPrecision {
    /// f32 GEMMs (twice the speed): `Δ_i` is a correction to `W_m`, so its relative ~1e-7
    /// rounding stays far below the quantization step.
    #[default]
    F32,
    /// f64 GEMMs: the reference.
    F64,
}

/// The expert terms of the objective folded task by task, so that memory does not grow with
/// the number of tasks. With `Δ_i = W_i − W_m` (the experts' offsets from the merged weight,
/// small next to `W_m`, which keeps the sums free of cancellation):
///
/// ```text
/// D = Σ_i Δ_i H_i,    c = Σ_i ⟨Δ_i H_i, Δ_i⟩ = Σ_i ‖W_m X_i − W_i X_i‖²
/// ```
///
/// one GEMM per task, so that `R₀ = Σ_i W_i H_i = W_m H_q + D`. `H_q = Σ_i H_i` is summed by
/// the caller, who may share it between linears reading the same input.
#[derive(Clone, Debug)]
pub struct ExpertFold {
    /// `W_m`, row-major: the offsets `Δ_i` are formed row by row, reading row-major expert
    /// weights (as checkpoints store them) without striding.
    merged: Vec<f64>,
    d: Mat<f64>,
    c: f64,
    tasks: usize,
    precision: FoldPrecision,
}

impl ExpertFold {
    /// An empty fold around the merged weight `W_m` (`[out, in]`), with f64 products.
    pub fn new(merged: MatRef<'_, f64>) -> Self {
        Self::with_precision(merged, FoldPrecision::F64)
    }

    /// An empty fold around `W_m` whose products `Δ_i H_i` are computed in `precision`.
    pub fn with_precision(merged: MatRef<'_, f64>, precision: FoldPrecision) -> Self {
        Self {
            merged: to_row_major(merged),
            d: Mat::zeros(merged.nrows(), merged.ncols()),
            c: 0.0,
            tasks: 0,
            precision,
        }
    }

    /// Tasks folded so far.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// The merged weight the offsets are taken from.
    pub fn merged(&self) -> MatRef<'_, f64> {
        MatRef::from_row_major_slice(&self.merged, self.d.nrows(), self.d.ncols())
    }

    /// Folds task `i`'s expert weight `W_i` (any strides; a row-major view of a checkpoint's
    /// tensor is read fastest) and Hessian `H_i` (validated; named by the task index in
    /// errors).
    pub fn add(&mut self, expert: MatRef<'_, f64>, h: MatRef<'_, f64>) -> Result<(), CoreError> {
        let (rows, cols) = (self.d.nrows(), self.d.ncols());
        let i = self.tasks;
        self.check_task_shapes(expert, h)?;
        match self.precision {
            FoldPrecision::F64 => {
                check_finite(&format!("expert {i} weight"), expert)?;
                check_finite(&format!("Hessian {i}"), h)?;
                let merged = self.merged();
                let delta = par_from_fn(rows, cols, |r, c| expert[(r, c)] - merged[(r, c)]);
                let mut product = Mat::<f64>::zeros(rows, cols);
                matmul(
                    product.as_mut(),
                    Accum::Replace,
                    delta.as_ref(),
                    h,
                    1.0,
                    par(),
                );
                self.c += frobenius_dot(product.as_ref(), delta.as_ref());
                self.d += &product;
                self.tasks += 1;
                Ok(())
            }
            FoldPrecision::F32 => self.add_f32(expert, h, &QuadraticFormF32::new(h)),
        }
    }

    /// [`Self::add`] with `H_i` already in f32: `form` is `QuadraticFormF32::new(h)`, made
    /// once for every linear reading the same input (q, k, v; gate, up). A fold of f64
    /// products uses `h` alone.
    pub fn add_with_form(
        &mut self,
        expert: MatRef<'_, f64>,
        h: MatRef<'_, f64>,
        form: &QuadraticFormF32,
    ) -> Result<(), CoreError> {
        if self.precision == FoldPrecision::F64 {
            return self.add(expert, h);
        }
        self.check_task_shapes(expert, h)?;
        let (cols, i) = (self.d.ncols(), self.tasks);
        if form.h().nrows() != cols || form.h().ncols() != cols {
            return Err(CoreError::Config(format!(
                "the f32 copy of Hessian {i} is {}x{}, expected {cols}x{cols}",
                form.h().nrows(),
                form.h().ncols()
            )));
        }
        self.add_f32(expert, h, form)
    }

    /// The shapes of task `i`'s expert weight (`W_m`'s) and Hessian (`[cols, cols]`).
    fn check_task_shapes(
        &self,
        expert: MatRef<'_, f64>,
        h: MatRef<'_, f64>,
    ) -> Result<(), CoreError> {
        let (rows, cols, i) = (self.d.nrows(), self.d.ncols(), self.tasks);
        check_shape(&format!("expert {i} weight"), expert, rows, cols)?;
        check_shape(&format!("Hessian {i}"), h, cols, cols)
    }

    /// The f32 fold of one task (shapes checked): `Δ_i` row-major in f32 (its finiteness
    /// checked on the way), `P = Δ_i H_i` by the gemm crate, then `D += P` and
    /// `c += ⟨P, Δ_i⟩` in f64 in one pass over 64-column tiles. `c` sums each column over the
    /// rows in order, then the columns in order: the same sums whatever the threads. A product
    /// that overflows f32 is found in that pass, after `D` took part of it: the error leaves
    /// the fold unusable (the pipeline stops on it).
    fn add_f32(
        &mut self,
        expert: MatRef<'_, f64>,
        h: MatRef<'_, f64>,
        form: &QuadraticFormF32,
    ) -> Result<(), CoreError> {
        use rayon::prelude::*;
        const T: usize = 64;
        let (rows, cols) = (self.d.nrows(), self.d.ncols());
        let i = self.tasks;
        let Some(delta) = self.offsets_f32(expert) else {
            // the f64 checks only run to name what is wrong
            check_finite(&format!("expert {i} weight"), expert)?;
            check_finite("merged weight", self.merged())?;
            return Err(CoreError::Config(format!(
                "expert {i} weight: its offset from the merged weight exceeds the f32 \
                 range; fold in f64"
            )));
        };
        if !form.is_finite() {
            check_finite(&format!("Hessian {i}"), h)?;
            return Err(CoreError::Config(format!(
                "Hessian {i} exceeds the f32 range; fold in f64"
            )));
        }
        let mut product = Mat::<f32>::zeros(rows, cols);
        gemm_f32(
            product.as_mut(),
            MatRef::from_row_major_slice(&delta, rows, cols),
            form.h(),
        );
        let tiles: Vec<(Vec<f64>, bool)> = self
            .d
            .par_col_chunks_mut(T)
            .enumerate()
            .map(|(k, mut dst)| {
                let (c0, w) = (k * T, dst.ncols());
                let mut sums = vec![0.0f64; w];
                let mut finite = true;
                // the tile of Δ_i, transposed: column j of the tile is contiguous
                let mut tile = [0.0f32; T * T];
                for r0 in (0..rows).step_by(T) {
                    let n = T.min(rows - r0);
                    for r in 0..n {
                        let row = &delta[(r0 + r) * cols + c0..][..w];
                        for (j, &v) in row.iter().enumerate() {
                            tile[j * T + r] = v;
                        }
                    }
                    for (j, s) in sums.iter_mut().enumerate() {
                        let p = &product.col_as_slice(c0 + j)[r0..r0 + n];
                        let dl = &tile[j * T..j * T + n];
                        let d = dst
                            .as_mut()
                            .col_mut(j)
                            .try_as_col_major_mut()
                            .expect("faer matrices have contiguous columns")
                            .as_slice_mut();
                        for ((dv, &pv), &lv) in d[r0..r0 + n].iter_mut().zip(p).zip(dl) {
                            finite &= pv.is_finite();
                            *dv += pv as f64;
                            *s += pv as f64 * lv as f64;
                        }
                    }
                }
                (sums, finite)
            })
            .collect();
        if tiles.iter().any(|(_, finite)| !finite) {
            return Err(CoreError::Config(format!(
                "expert {i}: the product of its offset from the merged weight and Hessian {i} \
                 exceeds the f32 range; fold in f64"
            )));
        }
        self.c += tiles.iter().flat_map(|(s, _)| s).sum::<f64>();
        self.tasks += 1;
        Ok(())
    }

    /// `Δ_i = W_i − W_m` row-major in f32 (rows in parallel), or `None` when an entry is not
    /// finite in f32.
    fn offsets_f32(&self, expert: MatRef<'_, f64>) -> Option<Vec<f32>> {
        use rayon::prelude::*;
        let cols = self.d.ncols();
        let mut delta = vec![0.0f32; self.merged.len()];
        if cols == 0 {
            return Some(delta);
        }
        let finite = delta
            .par_chunks_mut(cols)
            .zip(self.merged.par_chunks(cols))
            .enumerate()
            .map(|(r, (out, m))| {
                let row = expert.row(r);
                let mut finite = true;
                match row.try_as_row_major() {
                    Some(e) => {
                        for ((o, &e), &m) in out.iter_mut().zip(e.as_slice()).zip(m) {
                            *o = (e - m) as f32;
                            finite &= o.is_finite();
                        }
                    }
                    None => {
                        for (c, (o, &m)) in out.iter_mut().zip(m).enumerate() {
                            *o = (row[c] - m) as f32;
                            finite &= o.is_finite();
                        }
                    }
                }
                finite
            })
            .reduce(|| true, |a, b| a && b);
        finite.then_some(delta)
    }

    /// Adds `other`, a fold of the same tasks on other samples around the same merged weight
    /// (`D` and `c` summed, the task count kept): the fold of all the samples.
    pub fn absorb(&mut self, other: &ExpertFold) -> Result<(), CoreError> {
        check_shape(
            "expert fold",
            other.d.as_ref(),
            self.d.nrows(),
            self.d.ncols(),
        )?;
        if other.tasks != self.tasks {
            return Err(CoreError::Config(format!(
                "expert folds of {} and {} tasks cannot be summed",
                self.tasks, other.tasks
            )));
        }
        if other.merged != self.merged {
            return Err(CoreError::Config(
                "expert folds around different merged weights cannot be summed".into(),
            ));
        }
        self.d += &other.d;
        self.c += other.c;
        Ok(())
    }

    /// The objective with `H_q = Σ_i H_i` and `λ = α · mean(diag H_q)`.
    pub fn finish(self, h_q: Mat<f64>, alpha: f64) -> Result<EpmqObjective, CoreError> {
        let (rows, cols) = (self.d.nrows(), self.d.ncols());
        if self.tasks == 0 {
            return Err(CoreError::Config("E-PMQ needs at least one expert".into()));
        }
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(CoreError::Config(format!(
                "alpha must be finite and ≥ 0, got {alpha}"
            )));
        }
        let merged = from_row_major(rows, cols, &self.merged);
        check_finite("merged weight", merged.as_ref())?;
        check_shape("Hessian sum", h_q.as_ref(), cols, cols)?;
        let lambda = alpha * mean_diag(h_q.as_ref());
        Ok(EpmqObjective {
            h_q,
            d: self.d,
            c: self.c,
            lambda,
            merged,
            precision: self.precision,
        })
    }
}

/// The E-PMQ objective `Σ_i tr((Q − W_i) H_i (Q − W_i)ᵀ) + λ‖Q − W_m‖²`, precomputed so that
/// evaluating it costs one product: with `E = Q − W_m`,
/// `⟨E H_q, E⟩ − 2⟨E, D⟩ + c + λ‖E‖²` (`H_q = Σ H_i`, `D = Σ Δ_i H_i`, `c = Σ ⟨Δ_i H_i, Δ_i⟩`,
/// `Δ_i = W_i − W_m`; see [`ExpertFold`]).
#[derive(Clone, Debug)]
pub struct EpmqObjective {
    pub h_q: Mat<f64>,
    pub d: Mat<f64>,
    pub c: f64,
    pub lambda: f64,
    pub merged: Mat<f64>,
    /// The precision of the fold's products, also used for the correction
    /// `(D − δW_m) H_E⁻¹` of the target (two triangular products; factorisations stay f64).
    pub precision: FoldPrecision,
}

impl EpmqObjective {
    /// Validates the problem and precomputes `H_q`, `D`, `c` (f64 products);
    /// `λ = α · mean(diag H_q)`.
    pub fn new(problem: &EpmqProblem<'_>, alpha: f64) -> Result<Self, CoreError> {
        Self::with_precision(problem, alpha, FoldPrecision::F64)
    }

    /// [`EpmqObjective::new`] with the fold's products in `precision`.
    pub fn with_precision(
        problem: &EpmqProblem<'_>,
        alpha: f64,
        precision: FoldPrecision,
    ) -> Result<Self, CoreError> {
        let cols = problem.merged.ncols();
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
        let mut fold = ExpertFold::with_precision(problem.merged, precision);
        let mut h_q = Mat::<f64>::zeros(cols, cols);
        for (w_i, h_i) in problem.experts.iter().zip(problem.hessians) {
            fold.add(*w_i, *h_i)?;
            h_q += *h_i;
        }
        fold.finish(h_q, alpha)
    }

    /// The objective of the unquantized merged weight, `Σ_i ‖W_m X_i − W_i X_i‖² = c` (no
    /// product).
    pub fn at_merged(&self) -> f64 {
        self.c
    }

    /// The objective at `q`.
    pub fn eval(&self, q: MatRef<'_, f64>) -> f64 {
        let e = q - &self.merged;
        let mut eh = Mat::<f64>::zeros(q.nrows(), q.ncols());
        matmul(
            eh.as_mut(),
            Accum::Replace,
            e.as_ref(),
            self.h_q.as_ref(),
            1.0,
            par(),
        );
        frobenius_dot(eh.as_ref(), e.as_ref()) - 2.0 * frobenius_dot(e.as_ref(), self.d.as_ref())
            + self.c
            + self.lambda * frobenius_dot(e.as_ref(), e.as_ref())
    }

    /// `H_E = H_q + λI`.
    pub fn h_e(&self) -> Mat<f64> {
        let mut h = self.h_q.clone();
        for j in 0..h.nrows() {
            h[(j, j)] += self.lambda;
        }
        h
    }

    /// `R = R₀ + λ W_m = W_m H_E + D`.
    pub fn r(&self) -> Mat<f64> {
        let mut r = Mat::<f64>::zeros(self.merged.nrows(), self.merged.ncols());
        matmul(
            r.as_mut(),
            Accum::Replace,
            self.merged.as_ref(),
            self.h_e().as_ref(),
            1.0,
            par(),
        );
        r += &self.d;
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
    // W* = R (H_E + δI)⁻¹ with R = W_m (H_E + δI) − δW_m + D, i.e. W_m plus the correction
    // (D − δW_m)(H_E + δI)⁻¹, which carries no large cancelling terms
    let merged = objective.merged.as_ref();
    let mut rhs = objective.d.clone();
    if prepared.damping != 0.0 {
        rhs -= faer::Scale(prepared.damping) * merged;
    }
    let (rows, cols) = (rhs.nrows(), rhs.ncols());
    let solve = |w: MatRef<'_, f64>| match objective.precision {
        FoldPrecision::F64 => right_solve(w, prepared.u.as_ref()),
        FoldPrecision::F32 => {
            let x = right_solve(to_f32(w).as_ref(), to_f32(prepared.u.as_ref()).as_ref());
            par_from_fn(rows, cols, |r, c| x[(r, c)] as f64)
        }
    };
    let correction = match &prepared.perm {
        None => solve(rhs.as_ref()),
        Some(p) => {
            let r_perm = Mat::from_fn(rows, cols, |i, j| rhs[(i, p[j])]);
            let t_perm = solve(r_perm.as_ref());
            let mut t = Mat::<f64>::zeros(rows, cols);
            for (j, &c) in p.iter().enumerate() {
                t.col_mut(c).copy_from(t_perm.col(j));
            }
            t
        }
    };
    drop(rhs);
    let target = merged + &correction;
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
    // Completing the square: E(Q) = tr((Q − W*) H_E (Q − W*)ᵀ) + E(W*), and at the optimum,
    // with Z = W* − W_m (so that Z H_E = D), E(W*) = ⟨Z H_E, Z⟩ − 2⟨Z, D⟩ + c = c − ⟨D, Z⟩.
    // Exact only without extra damping; otherwise evaluate directly (one product each).
    let (objective, objective_target) = if target.extra_damping == 0.0 {
        let z = &target.target - &obj.merged;
        let at_target = obj.c - frobenius_dot(obj.d.as_ref(), z.as_ref());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A merged weight, `k` experts around it and `k` Hessians, `rows × cols` (not multiples
    /// of the fold's 64-wide tiles).
    fn case(rows: usize, cols: usize, k: usize) -> (Mat<f64>, Vec<Mat<f64>>, Vec<Mat<f64>>) {
        let v = |s: usize| ((s * 7919) % 1013) as f64 / 1013.0 - 0.5;
        let merged = Mat::from_fn(rows, cols, |r, c| v(r * 31 + c * 17));
        let experts = (0..k)
            .map(|i| {
                Mat::from_fn(rows, cols, |r, c| {
                    merged[(r, c)] + 0.05 * v(i * 999 + r * 13 + c)
                })
            })
            .collect();
        let hessians = (0..k)
            .map(|i| {
                let x = Mat::from_fn(cols, 90, |r, t| v(i * 77 + r * 5 + t * 11));
                &x * x.transpose()
            })
            .collect();
        (merged, experts, hessians)
    }

    #[test]
    fn f32_fold_is_the_same_for_any_expert_layout_and_shared_forms_and_near_the_f64_fold() {
        let (rows, cols) = (150, 130);
        let (merged, experts, hessians) = case(rows, cols, 3);
        let fold = |how: usize| {
            let precision = match how {
                3 => FoldPrecision::F64,
                _ => FoldPrecision::F32,
            };
            let mut f = ExpertFold::with_precision(merged.as_ref(), precision);
            for (w, h) in experts.iter().zip(&hessians) {
                let rm = crate::matrix::to_row_major(w.as_ref());
                let rm = MatRef::from_row_major_slice(&rm, rows, cols);
                match how {
                    0 => f.add(w.as_ref(), h.as_ref()).unwrap(),
                    1 => f.add(rm, h.as_ref()).unwrap(),
                    2 => {
                        let form = QuadraticFormF32::new(h.as_ref());
                        f.add_with_form(rm, h.as_ref(), &form).unwrap()
                    }
                    _ => f.add(w.as_ref(), h.as_ref()).unwrap(),
                }
            }
            (f.d.clone(), f.c)
        };
        let (d0, c0) = fold(0);
        for how in [1, 2] {
            let (d, c) = fold(how);
            assert_eq!(d, d0, "layout {how}");
            assert_eq!(c.to_bits(), c0.to_bits(), "layout {how}");
        }
        let (d64, c64) = fold(3);
        let scale = d64.norm_max();
        for c in 0..cols {
            for r in 0..rows {
                assert!(
                    (d0[(r, c)] - d64[(r, c)]).abs() <= 1e-5 * scale,
                    "D[{r}, {c}]"
                );
            }
        }
        assert!((c0 - c64).abs() <= 1e-5 * c64, "c: {c0} vs {c64}");
    }

    #[test]
    fn f32_fold_refuses_what_f32_cannot_hold() {
        let (rows, cols) = (70, 66);
        let (merged, experts, hessians) = case(rows, cols, 1);
        let (w, h) = (&experts[0], &hessians[0]);
        let fails = |w: &Mat<f64>, h: &Mat<f64>, what: &str| {
            let mut f = ExpertFold::with_precision(merged.as_ref(), FoldPrecision::F32);
            let err = f.add(w.as_ref(), h.as_ref()).unwrap_err().to_string();
            assert!(err.contains(what) && err.contains("fold in f64"), "{err}");
        };
        let mut far = w.clone();
        far[(69, 65)] = 1e39;
        fails(&far, h, "offset from the merged weight exceeds");
        let mut huge = h.clone();
        huge[(3, 65)] = 1e39;
        fails(w, &huge, "Hessian 0 exceeds");
        // each factor fits in f32, their product does not
        let big = Mat::from_fn(rows, cols, |r, c| merged[(r, c)] + 1e20);
        let big_h = Mat::from_fn(cols, cols, |r, c| if r == c { 1e20 } else { 0.0 });
        fails(&big, &big_h, "the product of its offset");
        // a non-finite weight is named by the f64 check
        let mut nan = w.clone();
        nan[(2, 3)] = f64::NAN;
        let mut f = ExpertFold::with_precision(merged.as_ref(), FoldPrecision::F32);
        assert!(matches!(
            f.add(nan.as_ref(), h.as_ref()),
            Err(CoreError::NonFinite { row: 2, col: 3, .. })
        ));
    }
}
