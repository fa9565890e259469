//! Quadratic layer errors. For a linear layer with inputs `X` and `H = X Xᵀ`,
//! `‖A X − B X‖²_F = tr((A − B) H (A − B)ᵀ)`.

use crate::matrix::par;
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
