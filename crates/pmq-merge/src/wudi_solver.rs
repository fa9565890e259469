//! The WUDI objective and its solvers (pure f64 linear algebra on `faer` matrices).
//!
//! For task vectors τ₁..τ_K of one linear weight (r × c, rows = output channels), WUDI-merging
//! (Cheng et al. 2025, "Whoever Started the Interference Should End It") minimises
//!
//! **L(τ_m) = Σᵢ ‖(τ_m − τᵢ) τᵢᵀ‖²_F / ‖τᵢ‖²_F**
//!
//! (summed, not averaged, as in both reference implementations). With
//! Gᵢ = τᵢᵀτᵢ / ‖τᵢ‖²_F (c × c), L = Σᵢ tr((τ_m − τᵢ) Gᵢ (τ_m − τᵢ)ᵀ) is quadratic and
//!
//! **∇L = 2 (τ_m S − C)**, S = Σᵢ Gᵢ, C = Σᵢ τᵢ Gᵢ,
//!
//! both precomputed once. Task vectors with ‖τᵢ‖ = 0 contribute nothing (the reference would
//! divide 0 by 0) and are skipped.
//!
//! * [`WudiProblem::adam`]: the reference schedule — PyTorch Adam (β = (0.9, 0.999), ε = 1e-8,
//!   no weight decay) from τ_m = Σᵢ τᵢ.
//! * [`WudiProblem::exact`]: the minimiser, S τ_mᵀ = Cᵀ by Cholesky. When S is singular the
//!   minimisers form an affine set; the one returned is the start Σᵢ τᵢ plus a correction in
//!   the row space of S — the point plain gradient descent from that start converges to, since
//!   ∇L has no null-space component (Adam's per-entry scaling need not stay on that set).
//!   If K·r < c, S (c × c, rank ≤ K·r) is certainly singular and the correction is found in
//!   the dual: with T̃ = [τᵢ/‖τᵢ‖]ᵢ stacked (K·r × c), S = T̃ᵀT̃ and C = B T̃ with
//!   B = [τᵢτᵢᵀ/‖τᵢ‖]ᵢ, so τ_m = Σᵢτᵢ + Z T̃ with Z (T̃T̃ᵀ) = B − (Σᵢτᵢ) T̃ᵀ, a K·r × K·r
//!   Cholesky solve. If the Cholesky factor is numerically singular either way: conjugate
//!   gradient from Σᵢ τᵢ.

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, MatRef, Side};
use pmq_core::matrix::{frobenius_dot, par};

/// A row-major f32 buffer as an r × c f64 matrix (pmq-core's `from_row_major_f32`).
pub use pmq_core::matrix::from_row_major_f32 as mat_from_row_major;
/// Row-major f64 values of a matrix (pmq-core's `to_row_major`).
pub use pmq_core::matrix::to_row_major as mat_to_row_major;

/// Relative pivot below which S counts as singular: min(L_jj²) ≤ this × max(S_jj).
const SINGULAR_PIVOT: f64 = 1e-12;

/// How [`WudiProblem::exact`] obtained its solution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExactMethod {
    /// Cholesky of S (c × c).
    Cholesky,
    /// Cholesky of the dual Gram matrix T̃T̃ᵀ (K·r × K·r), used when K·r < c.
    DualCholesky,
    ConjugateGradient {
        iterations: usize,
        converged: bool,
    },
}

/// The precomputed quadratic of one tensor.
pub struct WudiProblem {
    taus: Vec<Mat<f64>>,
    norms: Vec<f64>,
    s: Mat<f64>,
    c: Mat<f64>,
    init: Mat<f64>,
}

impl WudiProblem {
    /// Builds S, C and the start Σᵢ τᵢ from the task vectors (all r × c).
    pub fn new(taus: Vec<Mat<f64>>) -> Self {
        assert!(!taus.is_empty(), "at least one task vector");
        let (r, c) = (taus[0].nrows(), taus[0].ncols());
        let mut init = Mat::<f64>::zeros(r, c);
        for t in &taus {
            assert_eq!((t.nrows(), t.ncols()), (r, c), "task vector shapes");
            init += t;
        }
        let mut s = Mat::<f64>::zeros(c, c);
        let mut cm = Mat::<f64>::zeros(r, c);
        let mut kept = Vec::new();
        let mut norms = Vec::new();
        for t in taus {
            let n = frobenius_dot(t.as_ref(), t.as_ref());
            if n == 0.0 {
                continue;
            }
            // S += τᵀτ / n
            matmul(
                s.as_mut(),
                Accum::Add,
                t.transpose(),
                t.as_ref(),
                1.0 / n,
                par(),
            );
            // C += τ (τᵀτ) / n, via whichever Gram matrix is smaller.
            if r <= c {
                let mut p = Mat::<f64>::zeros(r, r);
                matmul(
                    p.as_mut(),
                    Accum::Replace,
                    t.as_ref(),
                    t.transpose(),
                    1.0,
                    par(),
                );
                matmul(
                    cm.as_mut(),
                    Accum::Add,
                    p.as_ref(),
                    t.as_ref(),
                    1.0 / n,
                    par(),
                );
            } else {
                let mut g = Mat::<f64>::zeros(c, c);
                matmul(
                    g.as_mut(),
                    Accum::Replace,
                    t.transpose(),
                    t.as_ref(),
                    1.0,
                    par(),
                );
                matmul(
                    cm.as_mut(),
                    Accum::Add,
                    t.as_ref(),
                    g.as_ref(),
                    1.0 / n,
                    par(),
                );
            }
            norms.push(n);
            kept.push(t);
        }
        Self {
            taus: kept,
            norms,
            s,
            c: cm,
            init,
        }
    }

    /// Builds the problem from row-major f32 task vectors of shape rows × cols.
    pub fn from_row_major(rows: usize, cols: usize, taus: &[Vec<f32>]) -> Self {
        Self::new(
            taus.iter()
                .map(|t| mat_from_row_major(rows, cols, t))
                .collect(),
        )
    }

    /// The starting point Σᵢ τᵢ.
    pub fn init(&self) -> MatRef<'_, f64> {
        self.init.as_ref()
    }

    /// S = Σᵢ τᵢᵀτᵢ / ‖τᵢ‖².
    pub fn s(&self) -> MatRef<'_, f64> {
        self.s.as_ref()
    }

    /// C = Σᵢ τᵢ τᵢᵀ τᵢ / ‖τᵢ‖².
    pub fn c(&self) -> MatRef<'_, f64> {
        self.c.as_ref()
    }

    /// L(x) from its definition, Σᵢ ‖(x − τᵢ)τᵢᵀ‖²_F / ‖τᵢ‖²_F (no expansion, so no
    /// cancellation); for tall matrices as ⟨D (τᵢᵀτᵢ), D⟩ with D = x − τᵢ, which is cheaper.
    pub fn loss(&self, x: MatRef<'_, f64>) -> f64 {
        let (r, c) = (x.nrows(), x.ncols());
        let mut total = 0.0;
        for (t, &n) in self.taus.iter().zip(&self.norms) {
            let d = x - t;
            if r <= c {
                let mut prod = Mat::<f64>::zeros(r, r);
                matmul(
                    prod.as_mut(),
                    Accum::Replace,
                    d.as_ref(),
                    t.transpose(),
                    1.0,
                    par(),
                );
                total += frobenius_dot(prod.as_ref(), prod.as_ref()) / n;
            } else {
                let mut gram = Mat::<f64>::zeros(c, c);
                matmul(
                    gram.as_mut(),
                    Accum::Replace,
                    t.transpose(),
                    t.as_ref(),
                    1.0,
                    par(),
                );
                let mut dg = Mat::<f64>::zeros(r, c);
                matmul(
                    dg.as_mut(),
                    Accum::Replace,
                    d.as_ref(),
                    gram.as_ref(),
                    1.0,
                    par(),
                );
                total += frobenius_dot(dg.as_ref(), d.as_ref()) / n;
            }
        }
        total
    }

    /// ∇L(x) = 2 (x S − C).
    pub fn gradient(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        let mut g = Mat::<f64>::zeros(x.nrows(), x.ncols());
        self.gradient_into(x, &mut g);
        g
    }

    fn gradient_into(&self, x: MatRef<'_, f64>, g: &mut Mat<f64>) {
        matmul(g.as_mut(), Accum::Replace, x, self.s.as_ref(), 2.0, par());
        *g -= faer::Scale(2.0) * &self.c;
    }

    /// PyTorch's Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, no weight decay) on L from Σᵢ τᵢ.
    pub fn adam(&self, steps: usize, lr: f64) -> Mat<f64> {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        let (r, c) = (self.init.nrows(), self.init.ncols());
        let mut x = self.init.clone();
        let mut m = Mat::<f64>::zeros(r, c);
        let mut v = Mat::<f64>::zeros(r, c);
        let mut g = Mat::<f64>::zeros(r, c);
        for t in 1..=steps {
            self.gradient_into(x.as_ref(), &mut g);
            let bc1 = 1.0 - B1.powi(t as i32);
            let bc2_sqrt = (1.0 - B2.powi(t as i32)).sqrt();
            let step = lr / bc1;
            for j in 0..c {
                for i in 0..r {
                    let gi = g[(i, j)];
                    let mi = B1 * m[(i, j)] + (1.0 - B1) * gi;
                    let vi = B2 * v[(i, j)] + (1.0 - B2) * gi * gi;
                    m[(i, j)] = mi;
                    v[(i, j)] = vi;
                    x[(i, j)] -= step * mi / (vi.sqrt() / bc2_sqrt + EPS);
                }
            }
        }
        x
    }

    /// The minimiser of L (see the module docs).
    pub fn exact(&self) -> (Mat<f64>, ExactMethod) {
        let (r, c) = (self.init.nrows(), self.init.ncols());
        let solved = if self.taus.len() * r < c {
            self.dual_cholesky().map(|x| (x, ExactMethod::DualCholesky))
        } else {
            self.primal_cholesky().map(|x| (x, ExactMethod::Cholesky))
        };
        solved.unwrap_or_else(|| self.conjugate_gradient())
    }

    /// S τ_mᵀ = Cᵀ by Cholesky, `None` if S is numerically singular.
    fn primal_cholesky(&self) -> Option<Mat<f64>> {
        let mut rhs = self.c.transpose().to_owned();
        cholesky_solve(self.s.as_ref(), rhs.as_mut())?;
        Some(rhs.transpose().to_owned())
    }

    /// τ_m = Σᵢτᵢ + Z T̃ with Z (T̃T̃ᵀ) = B − (Σᵢτᵢ) T̃ᵀ; `None` if T̃T̃ᵀ is numerically singular.
    fn dual_cholesky(&self) -> Option<Mat<f64>> {
        let (r, c) = (self.init.nrows(), self.init.ncols());
        let k = self.taus.len();
        if k == 0 {
            return Some(self.init.clone());
        }
        let mut tt = Mat::<f64>::zeros(k * r, c);
        for (i, (t, &n)) in self.taus.iter().zip(&self.norms).enumerate() {
            tt.as_mut()
                .subrows_mut(i * r, r)
                .copy_from(faer::Scale(1.0 / n.sqrt()) * t);
        }
        let mut gram = Mat::<f64>::zeros(k * r, k * r);
        matmul(
            gram.as_mut(),
            Accum::Replace,
            tt.as_ref(),
            tt.transpose(),
            1.0,
            par(),
        );
        // rhsᵀ blocks: (τᵢ − Σⱼτⱼ) τᵢᵀ / ‖τᵢ‖, stored transposed (K·r × r) for the solve.
        let mut rhs_t = Mat::<f64>::zeros(k * r, r);
        for (i, t) in self.taus.iter().enumerate() {
            let d = t - &self.init;
            let block = tt.as_ref().subrows(i * r, r);
            matmul(
                rhs_t.as_mut().subrows_mut(i * r, r),
                Accum::Replace,
                block,
                d.transpose(),
                1.0,
                par(),
            );
        }
        cholesky_solve(gram.as_ref(), rhs_t.as_mut())?;
        let mut x = self.init.clone();
        matmul(
            x.as_mut(),
            Accum::Add,
            rhs_t.transpose(),
            tt.as_ref(),
            1.0,
            par(),
        );
        Some(x)
    }

    /// CG on x ↦ x S (symmetric positive semi-definite) for x S = C, from Σᵢ τᵢ.
    pub fn conjugate_gradient(&self) -> (Mat<f64>, ExactMethod) {
        let (r, c) = (self.init.nrows(), self.init.ncols());
        let mut x = self.init.clone();
        let mut q = Mat::<f64>::zeros(r, c);
        matmul(
            q.as_mut(),
            Accum::Replace,
            x.as_ref(),
            self.s.as_ref(),
            1.0,
            par(),
        );
        let mut res = &self.c - &q;
        let scale = frobenius_dot(self.c.as_ref(), self.c.as_ref())
            .sqrt()
            .max(frobenius_dot(q.as_ref(), q.as_ref()).sqrt());
        let tol = 1e-13 * scale;
        let mut p = res.clone();
        let mut rs = frobenius_dot(res.as_ref(), res.as_ref());
        let max_iter = 2 * c + 50;
        let mut iterations = 0;
        let mut converged = rs.sqrt() <= tol;
        while !converged && iterations < max_iter {
            matmul(
                q.as_mut(),
                Accum::Replace,
                p.as_ref(),
                self.s.as_ref(),
                1.0,
                par(),
            );
            let pq = frobenius_dot(p.as_ref(), q.as_ref());
            if pq <= 0.0 {
                break;
            }
            let alpha = rs / pq;
            x += faer::Scale(alpha) * &p;
            res -= faer::Scale(alpha) * &q;
            let rs_new = frobenius_dot(res.as_ref(), res.as_ref());
            iterations += 1;
            converged = rs_new.sqrt() <= tol;
            p = &res + faer::Scale(rs_new / rs) * &p;
            rs = rs_new;
        }
        (
            x,
            ExactMethod::ConjugateGradient {
                iterations,
                converged,
            },
        )
    }
}

/// Solves A X = B in place for symmetric positive definite A; `None` (B untouched or
/// partly solved) when A is numerically singular: min(L_jj²) ≤ 1e-12 · max(A_jj), or A = 0.
fn cholesky_solve(a: MatRef<'_, f64>, b: faer::MatMut<'_, f64>) -> Option<()> {
    let n = a.nrows();
    let max_diag = (0..n).map(|j| a[(j, j)]).fold(0.0f64, f64::max);
    if max_diag <= 0.0 {
        return None;
    }
    let llt = a.llt(Side::Lower).ok()?;
    let l = llt.L();
    let min_pivot = (0..n)
        .map(|j| l[(j, j)] * l[(j, j)])
        .fold(f64::INFINITY, f64::min);
    if min_pivot <= SINGULAR_PIVOT * max_diag {
        return None;
    }
    llt.solve_in_place(b);
    Some(())
}

/// Frobenius norm of a matrix.
pub fn frobenius(m: MatRef<'_, f64>) -> f64 {
    frobenius_dot(m, m).sqrt()
}
