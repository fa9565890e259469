//! The loss the AWQ searches minimise. The scale search ([`search_scales`]) minimises the
//! block-output error of the fake-quantized, scaled weights,
//!
//! ```text
//! L(s) = ‖ f({Q(W_j·diag(s))·diag(s)⁻¹}_j ; X) − f({W_j}_j ; X) ‖²
//! ```
//!
//! (`f` the block that contains the linears, the norm the mean over output elements). When the
//! block is the group of linears itself, `f(W; X) = X Wᵀ` and [`LinearOutputLoss`] evaluates
//!
//! ```text
//! L = Σ_j ‖X (Q_j − W_j)ᵀ‖²_F / (tokens · Σ_j out_j)
//! ```
//!
//! This loss and the clip error of [`search_clip`] both reduce to per-row sums
//! `Σ_t (d_r · x_t)²` of difference rows `d` against token rows `x`, batched as one GEMM by
//! `RowMetric`: `D·Xᵀ` or `D·(XᵀX)`, whichever is smaller.
//!
//! [`search_scales`]: super::search_scales
//! [`search_clip`]: super::search_clip

use super::kernel::{col, common_cols};
use crate::matrix::{check_finite, par};
use crate::CoreError;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

/// The block loss of [`search_scales`] when the block is the group of linears itself:
/// `Σ_j ‖X (Q_j − W_j)ᵀ‖²_F / (tokens · Σ_j out_j)` — AutoAWQ's `_compute_loss` (mean over
/// output elements; biases cancel). Evaluated with `X` or with `XᵀX`, whichever is cheaper.
///
/// [`search_scales`]: super::search_scales
#[derive(Clone, Debug)]
pub struct LinearOutputLoss {
    weights: Vec<Mat<f64>>,
    metric: RowMetric,
    elements: f64,
}

impl LinearOutputLoss {
    /// `weights` `[out_j, in]`, inputs `x_rows` `[tokens, in]`.
    pub fn new(weights: &[MatRef<'_, f64>], x_rows: MatRef<'_, f64>) -> Result<Self, CoreError> {
        let cols = common_cols(weights)?;
        if x_rows.ncols() != cols || x_rows.nrows() == 0 {
            return Err(CoreError::Shape {
                what: "AWQ loss inputs".into(),
                got_rows: x_rows.nrows(),
                got_cols: x_rows.ncols(),
                expected: format!("tokens×{cols}, tokens ≥ 1"),
            });
        }
        check_finite("AWQ loss inputs", x_rows)?;
        let out: usize = weights.iter().map(|w| w.nrows()).sum();
        Ok(Self {
            weights: weights.iter().map(|w| w.to_owned()).collect(),
            metric: RowMetric::new(x_rows, par()),
            elements: (x_rows.nrows() * out) as f64,
        })
    }

    /// The loss of candidate weights `q` (same shapes as the weights).
    pub fn loss(&self, q: &[Mat<f64>]) -> Result<f64, CoreError> {
        if q.len() != self.weights.len() {
            return Err(CoreError::Config(format!(
                "AWQ loss: {} candidate weights for {} linears",
                q.len(),
                self.weights.len()
            )));
        }
        let mut total = 0.0;
        for (qj, wj) in q.iter().zip(&self.weights) {
            crate::matrix::check_shape(
                "AWQ candidate weight",
                qj.as_ref(),
                wj.nrows(),
                wj.ncols(),
            )?;
            let d = qj - wj;
            total += self
                .metric
                .row_errors(d.as_ref(), par())
                .iter()
                .sum::<f64>();
        }
        Ok(total / self.elements)
    }
}

/// Per-row sums `Σ_t (d_r · x_t)²` for difference rows `d` against token rows `x`, batched as
/// one GEMM: `D·Xᵀ` (`[out, tokens]`) or `D·(XᵀX)` (`[out, in]`), whichever is smaller.
#[derive(Clone, Debug)]
pub(super) enum RowMetric {
    Tokens(Mat<f64>),
    Gram(Mat<f64>),
}

impl RowMetric {
    pub(super) fn new(x: MatRef<'_, f64>, par: Par) -> Self {
        if x.ncols() < x.nrows() {
            let mut h = Mat::<f64>::zeros(x.ncols(), x.ncols());
            matmul(h.as_mut(), Accum::Replace, x.transpose(), x, 1.0, par);
            RowMetric::Gram(h)
        } else {
            RowMetric::Tokens(x.to_owned())
        }
    }

    pub(super) fn row_errors(&self, d: MatRef<'_, f64>, par: Par) -> Vec<f64> {
        let rows = d.nrows();
        let mut acc = vec![0.0; rows];
        match self {
            RowMetric::Tokens(x) => {
                let mut e = Mat::<f64>::zeros(rows, x.nrows());
                matmul(e.as_mut(), Accum::Replace, d, x.transpose(), 1.0, par);
                for t in 0..e.ncols() {
                    for (a, &v) in acc.iter_mut().zip(col(e.as_ref(), t)) {
                        *a += v * v;
                    }
                }
            }
            RowMetric::Gram(h) => {
                let mut f = Mat::<f64>::zeros(rows, h.ncols());
                matmul(f.as_mut(), Accum::Replace, d, h.as_ref(), 1.0, par);
                for c in 0..f.ncols() {
                    let dc = d.col(c);
                    for ((r, a), &v) in acc.iter_mut().enumerate().zip(col(f.as_ref(), c)) {
                        *a += v * dc[r];
                    }
                }
                for a in &mut acc {
                    *a = a.max(0.0);
                }
            }
        }
        acc
    }
}
