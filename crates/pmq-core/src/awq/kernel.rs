//! The numeric kernels of AWQ: column scaling `W·diag(s)` and `W·diag(s)⁻¹`, and fake
//! quantization (quantize-dequantize on the grid, per row and group, parallel over groups)
//!
//! ```text
//! Q(W·diag(s))·diag(s)⁻¹        (or Q(W) without s)
//! Q(x) = scale·(clamp(round(x/scale) + zero, 0, maxq) − zero)   (round half to even)
//! ```
//!
//! plus the small helpers the searches share (group parameters fitted per row, column slices,
//! the common input width of a group of linears).

use crate::quant_grid::QuantGrid;
use crate::CoreError;
use faer::{Mat, MatMut, MatRef};
use rayon::prelude::*;

/// `W·diag(s)`: column `c` multiplied by `s_c`.
pub fn scale_columns(w: MatRef<'_, f64>, s: &[f64]) -> Mat<f64> {
    assert_eq!(s.len(), w.ncols(), "one scale per column");
    Mat::from_fn(w.nrows(), w.ncols(), |r, c| w[(r, c)] * s[c])
}

/// `W·diag(s)⁻¹`: column `c` divided by `s_c`. For token rows `X` (`[tokens, in]`) this is the
/// input the scaled weight sees, `X·diag(s)⁻¹`.
pub fn unscale_columns(w: MatRef<'_, f64>, s: &[f64]) -> Mat<f64> {
    assert_eq!(s.len(), w.ncols(), "one scale per column");
    Mat::from_fn(w.nrows(), w.ncols(), |r, c| w[(r, c)] / s[c])
}

/// Fake quantization (quantize-dequantize) of `w` on `grid`, groups fitted on `w` itself;
/// equal to [`rtn`]`(w).dequant`.
///
/// [`rtn`]: crate::rtn::rtn
pub fn fake_quantize(w: MatRef<'_, f64>, grid: &QuantGrid) -> Mat<f64> {
    fake_quant_scaled(w, None, grid)
}

/// `Q(W·diag(s))·diag(s)⁻¹` (or `Q(W)` without `s`), parallel over groups.
pub(super) fn fake_quant_scaled(
    w: MatRef<'_, f64>,
    s: Option<&[f64]>,
    grid: &QuantGrid,
) -> Mat<f64> {
    let (rows, cols) = (w.nrows(), w.ncols());
    let mut out = Mat::<f64>::zeros(rows, cols);
    if rows == 0 || cols == 0 {
        return out;
    }
    let owned;
    let w = if w.row_stride() == 1 {
        w
    } else {
        owned = w.to_owned();
        owned.as_ref()
    };
    let span = grid.group_size.unwrap_or(cols);
    out.par_col_chunks_mut(span)
        .enumerate()
        .for_each(|(g, mut block)| {
            let start = g * span;
            let mut mn = vec![f64::INFINITY; rows];
            let mut mx = vec![f64::NEG_INFINITY; rows];
            for j in 0..block.ncols() {
                let c = start + j;
                let sc = s.map_or(1.0, |s| s[c]);
                let dst = col_mut(block.as_mut(), j);
                for (((d, &x), lo), hi) in dst.iter_mut().zip(col(w, c)).zip(&mut mn).zip(&mut mx) {
                    let v = if s.is_some() { x * sc } else { x };
                    *lo = lo.min(v);
                    *hi = hi.max(v);
                    *d = v;
                }
            }
            let params = fit_rows(grid, &mn, &mx);
            for j in 0..block.ncols() {
                let sc = s.map_or(1.0, |s| s[start + j]);
                for (d, p) in col_mut(block.as_mut(), j).iter_mut().zip(&params) {
                    let q = p.fake_quant(*d);
                    *d = if s.is_some() { q / sc } else { q };
                }
            }
        });
    out
}

/// Group parameters of one row in the form the hot loops use.
#[derive(Clone, Copy)]
pub(super) struct RowParams {
    scale: f64,
    zero: f64,
    offset: f64,
    maxq: f64,
}

impl RowParams {
    /// [`QuantGrid::fake_quant`] bit for bit (`scale·(clamp(round((x − offset)/scale) + zero, 0,
    /// maxq) − zero) + offset`, offset 0 but on GGUF's Q4_1 grid; the code stays an integral f64 instead of a `u32`), with a branch-free
    /// round-half-to-even: `round_ties_even` is a libm call on baseline x86-64, ~10× slower.
    #[inline(always)]
    pub(super) fn fake_quant(&self, x: f64) -> f64 {
        let q = (round_half_even((x - self.offset) / self.scale) + self.zero).clamp(0.0, self.maxq);
        (q - self.zero) * self.scale + self.offset
    }
}

/// Round half to even: for `|v| < 2^51`, adding and subtracting `1.5·2^52` rounds to an
/// integer in the default (nearest-even) rounding mode; larger values and NaN take the libm path.
/// `−0.3 ↦ +0` here versus `−0` in libm; `+ zero` (≥ 0) makes both `+0` before use.
#[inline(always)]
fn round_half_even(v: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52
    if v.abs() < 2_251_799_813_685_248.0 {
        (v + MAGIC) - MAGIC
    } else {
        v.round_ties_even()
    }
}

/// Fits the parameters of each row from its minimum and maximum ([`QuantGrid::fit_range`]).
pub(super) fn fit_rows(grid: &QuantGrid, mn: &[f64], mx: &[f64]) -> Vec<RowParams> {
    let maxq = grid.maxq() as f64;
    mn.iter()
        .zip(mx)
        .map(|(&lo, &hi)| {
            let p = grid.fit_range(lo, hi);
            RowParams {
                scale: p.scale,
                zero: p.zero as f64,
                offset: p.offset,
                maxq,
            }
        })
        .collect()
}

/// Column `j` of a matrix with unit row stride, as a slice.
pub(super) fn col(m: MatRef<'_, f64>, j: usize) -> &[f64] {
    m.col(j)
        .try_as_col_major()
        .expect("unit row stride")
        .as_slice()
}

/// Column `j` of a mutable matrix with unit row stride, as a slice.
pub(super) fn col_mut(m: MatMut<'_, f64>, j: usize) -> &mut [f64] {
    m.col_mut(j)
        .try_as_col_major_mut()
        .expect("unit row stride")
        .as_slice_mut()
}

/// The common number of input columns of a non-empty list of weights.
pub(super) fn common_cols(weights: &[MatRef<'_, f64>]) -> Result<usize, CoreError> {
    let Some(first) = weights.first() else {
        return Err(CoreError::Config(
            "AWQ needs at least one weight in the group of linears".into(),
        ));
    };
    let cols = first.ncols();
    for (j, w) in weights.iter().enumerate() {
        if w.ncols() != cols {
            return Err(CoreError::Shape {
                what: format!("AWQ weight {j}"),
                got_rows: w.nrows(),
                got_cols: w.ncols(),
                expected: format!("out×{cols} (all linears of a group share the input)"),
            });
        }
    }
    Ok(cols)
}
