//! The upper Cholesky factor of an inverse Hessian, `U` with `Uᵀ U = H⁻¹`, which GPTQ's
//! rounding loop reads row by row, from **one** factorisation of `H`.
//!
//! With `J` the order-reversing permutation and `J H J = L Lᵀ` (lower Cholesky factor `L`):
//!
//! ```text
//! H⁻¹ = J (L Lᵀ)⁻¹ J = (J L⁻¹ J)ᵀ (J L⁻¹ J),     so  U = J L⁻¹ J
//! ```
//!
//! (`J L⁻¹ J` is upper triangular with a positive diagonal, hence the unique Cholesky factor).
//! This costs one Cholesky factorisation and one triangular inverse (`2n³/3` flops) instead of
//! the reference's factorisation, inverse and second factorisation (`≈ 2n³`), and the same `U`
//! also solves `W H⁻¹ = (W Uᵀ) U` with two triangular products (E-PMQ's target).

use crate::matrix::par;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Accum, Mat, MatRef};

/// `U` (upper triangular, `Uᵀ U = H⁻¹`) of a symmetric matrix `h`, or `None` when `h` is not
/// numerically positive definite (a non-positive pivot or a non-finite or non-positive
/// diagonal of `U`).
pub fn inverse_upper_factor(h: MatRef<'_, f64>) -> Option<Mat<f64>> {
    inverse_upper_factor_shifted(h, 0.0)
}

/// [`inverse_upper_factor`] of `h + shift·I`.
pub fn inverse_upper_factor_shifted(h: MatRef<'_, f64>, shift: f64) -> Option<Mat<f64>> {
    let n = h.nrows();
    // J (H + shift·I) J, lower triangle only (the factorisation reads nothing else): column
    // j of it is column n−1−j of H read backwards.
    let mut l = Mat::<f64>::zeros(n, n);
    for j in 0..n {
        let src = h.col(n - 1 - j);
        let dst = l.col_as_slice_mut(j);
        for i in j..n {
            dst[i] = src[n - 1 - i];
        }
        dst[j] += shift;
    }
    let mut mem = MemBuffer::new(cholesky_in_place_scratch::<f64>(
        n,
        par(),
        Default::default(),
    ));
    cholesky_in_place(
        l.as_mut(),
        Default::default(),
        par(),
        MemStack::new(&mut mem),
        Default::default(),
    )
    .ok()?;
    let mut linv = Mat::<f64>::zeros(n, n);
    invert_lower_triangular(linv.as_mut(), l.as_ref(), par());
    drop(l);
    // U = J L⁻¹ J: column j of U is column n−1−j of L⁻¹ read backwards.
    let mut u = Mat::<f64>::zeros(n, n);
    for j in 0..n {
        let src = linv.col_as_slice(n - 1 - j);
        let dst = u.col_as_slice_mut(j);
        for i in 0..=j {
            dst[i] = src[n - 1 - i];
        }
    }
    (0..n)
        .all(|j| u[(j, j)].is_finite() && u[(j, j)] > 0.0)
        .then_some(u)
}

/// `W H⁻¹ = (W Uᵀ) U` for the factor `U` of [`inverse_upper_factor`]: two triangular
/// products, each as dense GEMMs over column panels (`U`'s explicit zeros make the panels
/// exact; faer's dense GEMM is several times faster here than its triangular product).
pub fn right_solve<T: faer::traits::ComplexField>(w: MatRef<'_, T>, u: MatRef<'_, T>) -> Mat<T> {
    const PANEL: usize = 512;
    let (rows, n) = (w.nrows(), w.ncols());
    // T = W Uᵀ: T[:, j0..j1] = W[:, j0..] · Uᵀ[j0.., j0..j1]   (Uᵀ is lower triangular)
    let mut t = Mat::<T>::zeros(rows, n);
    for j0 in (0..n).step_by(PANEL) {
        let j1 = (j0 + PANEL).min(n);
        matmul(
            t.as_mut().subcols_mut(j0, j1 - j0),
            Accum::Replace,
            w.subcols(j0, n - j0),
            u.transpose().submatrix(j0, j0, n - j0, j1 - j0),
            T::one_impl(),
            par(),
        );
    }
    // W H⁻¹ = T U: out[:, j0..j1] = T[:, ..j1] · U[..j1, j0..j1]   (U is upper triangular)
    let mut out = Mat::<T>::zeros(rows, n);
    for j0 in (0..n).step_by(PANEL) {
        let j1 = (j0 + PANEL).min(n);
        matmul(
            out.as_mut().subcols_mut(j0, j1 - j0),
            Accum::Replace,
            t.subcols(0, j1),
            u.submatrix(0, j0, j1, j1 - j0),
            T::one_impl(),
            par(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::linalg::solvers::DenseSolveCore;
    use faer::Side;

    fn spd(n: usize) -> Mat<f64> {
        let x = Mat::<f64>::from_fn(n, 3 * n, |i, j| {
            ((i * 31 + j * 17) % 23) as f64 / 7.0 - 1.5 + if i == j % n { 0.5 } else { 0.0 }
        });
        &x * x.transpose()
    }

    #[test]
    fn factor_equals_cholesky_of_the_explicit_inverse() {
        for n in [1, 2, 7, 40] {
            let h = spd(n);
            let u = inverse_upper_factor(h.as_ref()).unwrap();
            // the reference route: U = chol(H⁻¹)ᵀ (upper)
            let inv = h.llt(Side::Lower).unwrap().inverse();
            let want = inv.llt(Side::Lower).unwrap().L().transpose().to_owned();
            for i in 0..n {
                for j in 0..n {
                    let (a, b) = (u[(i, j)], want[(i, j)]);
                    assert!(
                        (a - b).abs() <= 1e-9 * b.abs().max(1e-3),
                        "n {n} ({i},{j}) {a} {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn right_solve_inverts_h() {
        let n = 30;
        let h = spd(n);
        let u = inverse_upper_factor(h.as_ref()).unwrap();
        let w = Mat::<f64>::from_fn(5, n, |i, j| (i as f64 - j as f64 * 0.1).sin());
        let x = right_solve(w.as_ref(), u.as_ref());
        let back = &x * &h;
        for i in 0..5 {
            for j in 0..n {
                assert!((back[(i, j)] - w[(i, j)]).abs() < 1e-8);
            }
        }
    }

    #[test]
    fn singular_matrix_is_refused() {
        let mut h = spd(6);
        for k in 0..6 {
            h[(2, k)] = 0.0;
            h[(k, 2)] = 0.0;
        }
        assert!(inverse_upper_factor(h.as_ref()).is_none());
    }
}
