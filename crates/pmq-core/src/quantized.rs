//! A quantized linear layer: integer codes and per-(group, row) parameters in the GPTQ layout.

use crate::quant_grid::{GroupParams, QuantGrid};
use faer::Mat;

/// The result of quantizing an `[out, in]` weight on a [`QuantGrid`].
///
/// Layouts follow GPTQ checkpoints: `scales` and `zeros` are `[groups, out]` row-major,
/// `g_idx[c]` is the group of input column `c`, `codes` is `[out, in]` row-major.
/// `dequant[(r, c)] == scales[g_idx[c]·out + r] · (codes[r·in + c] − zeros[g_idx[c]·out + r])`
/// (`+ offsets[g_idx[c]·out + r]` on grids with offsets, GGUF's Q4_1) exactly.
#[derive(Clone, Debug)]
pub struct QuantizedLayer {
    pub grid: QuantGrid,
    pub rows: usize,
    pub cols: usize,
    /// Dequantized weight `Q`, `[out, in]`.
    pub dequant: Mat<f64>,
    /// Integer codes in `0..=2^b−1`, `[out, in]` row-major.
    pub codes: Vec<u8>,
    /// Scales, `[groups, out]` row-major.
    pub scales: Vec<f64>,
    /// True (v2) zero points, `[groups, out]` row-major.
    pub zeros: Vec<u32>,
    /// Group of each input column, `[in]`.
    pub g_idx: Vec<u32>,
    /// Offsets, `[groups, out]` row-major; empty when every offset is 0 (every grid but Q4_1).
    pub offsets: Vec<f64>,
}

impl QuantizedLayer {
    /// Empty layer to be filled by a solver.
    pub(crate) fn new(grid: QuantGrid, rows: usize, cols: usize, g_idx: Vec<u32>) -> Self {
        Self::with_dequant(grid, Mat::zeros(rows, cols), g_idx)
    }

    /// A layer whose dequantized weight is `dequant` (`[out, in]`), the rest to be filled.
    pub(crate) fn with_dequant(grid: QuantGrid, dequant: Mat<f64>, g_idx: Vec<u32>) -> Self {
        let groups = g_idx.iter().map(|&g| g as usize + 1).max().unwrap_or(1);
        let (rows, cols) = (dequant.nrows(), dequant.ncols());
        Self {
            grid,
            rows,
            cols,
            dequant,
            codes: vec![0; rows * cols],
            scales: vec![0.0; groups * rows],
            zeros: vec![0; groups * rows],
            g_idx,
            offsets: if grid.kind == crate::GridKind::GgufQ4_1 {
                vec![0.0; groups * rows]
            } else {
                Vec::new()
            },
        }
    }

    /// Number of groups (rows of `scales`).
    pub fn num_groups(&self) -> usize {
        self.scales.len() / self.rows.max(1)
    }

    /// Stores the parameters of group `g` for every row.
    pub(crate) fn set_group(&mut self, g: usize, params: &[GroupParams]) {
        for (r, p) in params.iter().enumerate() {
            self.scales[g * self.rows + r] = p.scale;
            self.zeros[g * self.rows + r] = p.zero;
            if let Some(o) = self.offsets.get_mut(g * self.rows + r) {
                *o = p.offset;
            } else {
                debug_assert_eq!(p.offset, 0.0, "an offset on a grid without offsets");
            }
        }
    }

    /// Parameters of group `g`, row `r`.
    pub fn params(&self, g: usize, r: usize) -> GroupParams {
        GroupParams {
            scale: self.scales[g * self.rows + r],
            zero: self.zeros[g * self.rows + r],
            offset: self.offsets.get(g * self.rows + r).copied().unwrap_or(0.0),
        }
    }

    /// Recomputes the dequantized weight from codes, scales, zeros and g_idx (what a loader
    /// of the packed checkpoint does).
    pub fn dequantize_from_codes(&self) -> Mat<f64> {
        Mat::from_fn(self.rows, self.cols, |r, c| {
            let g = self.g_idx[c] as usize;
            QuantGrid::dequant(self.codes[r * self.cols + c] as u32, self.params(g, r))
        })
    }
}

/// Group index of each input column when groups follow the column order: `c / group_size`.
pub fn trivial_g_idx(grid: &QuantGrid, cols: usize) -> Vec<u32> {
    match grid.group_size {
        Some(g) => (0..cols).map(|c| (c / g) as u32).collect(),
        None => vec![0; cols],
    }
}
