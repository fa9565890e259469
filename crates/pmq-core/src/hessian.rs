//! Accumulation of a linear layer's input Hessian `H = Σ_tokens x xᵀ = X Xᵀ` (in f64; the
//! reference's `2/N` scale does not change any argmin and is left out, so per-task Hessians add
//! up to the Hessian of the union of the tasks' tokens).

use crate::matrix::par;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

/// Running `Σ x xᵀ` over the tokens seen so far.
#[derive(Clone, Debug)]
pub struct HessianAccumulator {
    h: Mat<f64>,
    tokens: usize,
}

impl HessianAccumulator {
    /// An empty accumulator for inputs of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            h: Mat::zeros(dim, dim),
            tokens: 0,
        }
    }

    /// Input dimension.
    pub fn dim(&self) -> usize {
        self.h.nrows()
    }

    /// Tokens accumulated.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Adds the tokens of a row-major `[n, dim]` buffer.
    pub fn add_rows_f32(&mut self, x: &[f32]) {
        let d = self.dim();
        assert_eq!(x.len() % d.max(1), 0, "input rows must have {d} features");
        let n = x.len().checked_div(d).unwrap_or(0);
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        // A row-major [n, d] buffer read column-major is the [d, n] matrix X with one token
        // per column, so H += X Xᵀ.
        let xt = MatRef::from_column_major_slice(&x64, d, n);
        matmul(self.h.as_mut(), Accum::Add, xt, xt.transpose(), 1.0, par());
        self.tokens += n;
    }

    /// The accumulated Hessian.
    pub fn hessian(&self) -> MatRef<'_, f64> {
        self.h.as_ref()
    }

    /// Consumes the accumulator.
    pub fn into_hessian(self) -> Mat<f64> {
        self.h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulates_sum_of_outer_products_over_batches() {
        let d = 3;
        let tokens: Vec<[f32; 3]> = vec![[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0], [2.0, -2.0, 1.0]];
        let mut acc = HessianAccumulator::new(d);
        acc.add_rows_f32(&tokens[..2].concat());
        acc.add_rows_f32(&tokens[2]);
        assert_eq!(acc.tokens(), 3);
        for i in 0..d {
            for j in 0..d {
                let want: f64 = tokens.iter().map(|t| t[i] as f64 * t[j] as f64).sum();
                assert!((acc.hessian()[(i, j)] - want).abs() < 1e-12);
            }
        }
    }
}
