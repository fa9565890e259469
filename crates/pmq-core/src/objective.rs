//! Quadratic layer errors. For a linear layer with inputs `X` and `H = X Xᵀ`,
//! `‖A X − B X‖²_F = tr((A − B) H (A − B)ᵀ)`.

use crate::matrix::{lower_gram_f32, par, par_from_fn, to_f32_checked};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

/// `tr((A − B) H (A − B)ᵀ)`, i.e. `‖A X − B X‖²_F` when `H = X Xᵀ`.
pub fn quadratic_error(a: MatRef<'_, f64>, b: MatRef<'_, f64>, h: MatRef<'_, f64>) -> f64 {
    let d = Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] - b[(i, j)]);
    quadratic_form(d.as_ref(), h)
}

/// `tr(D H Dᵀ)`.
pub fn quadratic_form(d: MatRef<'_, f64>, h: MatRef<'_, f64>) -> f64 {
    let mut dh = Mat::<f64>::zeros(d.nrows(), d.ncols());
    matmul(dh.as_mut(), Accum::Replace, d, h, 1.0, par());
    crate::matrix::frobenius_dot(dh.as_ref(), d)
}

/// `‖A − B‖²_F`.
pub fn squared_distance(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            let d = a[(i, j)] - b[(i, j)];
            s += d * d;
        }
    }
    s
}

/// `tr(D H Dᵀ)` for many `D` with one `H`, in f32 products summed in f64: for reports of
/// positive semi-definite forms (no cancellation), at half the cost of f64 and ~1e-6 relative
/// accuracy.
pub struct QuadraticFormF32 {
    h: Mat<f32>,
    finite: bool,
}

impl QuadraticFormF32 {
    /// Prepares `H` (`[n, n]`): its f32 copy, checked for finiteness on the way.
    pub fn new(h: MatRef<'_, f64>) -> Self {
        let (h, finite) = to_f32_checked(h);
        Self { h, finite }
    }

    /// Whether `H` is finite in f32.
    pub fn is_finite(&self) -> bool {
        self.finite
    }

    /// `H` in f32.
    pub fn h(&self) -> MatRef<'_, f32> {
        self.h.as_ref()
    }

    /// `tr((A − B) H (A − B)ᵀ) = ⟨H, DᵀD⟩` with `D = A − B`: the lower triangle of `DᵀD` is a
    /// symmetric rank-k update ([`lower_gram_f32`]: half the products of `D H`), summed against
    /// `H` in f64.
    pub fn error(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
        let d = par_from_fn(a.nrows(), a.ncols(), |i, j| (a[(i, j)] - b[(i, j)]) as f32);
        let n = d.ncols();
        let mut g = Mat::<f32>::zeros(n, n);
        lower_gram_f32(g.as_mut(), d.transpose());
        let mut s = 0.0f64;
        for j in 0..n {
            let (h, g) = (&self.h.col_as_slice(j)[j..], &g.col_as_slice(j)[j..]);
            let off: f64 = h[1..]
                .iter()
                .zip(&g[1..])
                .map(|(&x, &y)| x as f64 * y as f64)
                .sum();
            s += h[0] as f64 * g[0] as f64 + 2.0 * off;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_form_matches_f64() {
        // 40 inputs: one panel of the Gram product; 1100: three (crate::matrix::GRAM_PANEL)
        for n in [40, 2 * crate::matrix::GRAM_PANEL + 76] {
            let x = Mat::<f64>::from_fn(12, n, |i, j| ((i * 7 + j * 3) % 11) as f64 - 5.0);
            let h = x.transpose() * &x;
            let a = Mat::<f64>::from_fn(5, n, |i, j| (i as f64 + 0.3 * j as f64).sin());
            let b = Mat::<f64>::from_fn(5, n, |i, j| (i as f64 * 0.7 - 0.1 * j as f64).cos());
            let want = quadratic_error(a.as_ref(), b.as_ref(), h.as_ref());
            let got = QuadraticFormF32::new(h.as_ref()).error(a.as_ref(), b.as_ref());
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "n = {n}: {got} vs {want}"
            );
        }
    }
}
