//! Round-to-nearest (RTN): every weight independently to the nearest point of its group's grid,
//! `Q = scale · (clamp(round(W / scale) + zero, 0, 2^b − 1) − zero)`, with the group parameters
//! fitted on the original weights (see [`crate::quant_grid`]).

use crate::matrix::check_finite;
use crate::quant_grid::QuantGrid;
use crate::quantized::{trivial_g_idx, QuantizedLayer};
use crate::CoreError;
use faer::MatRef;

/// Quantizes `w` (`[out, in]`) with RTN.
pub fn rtn(w: MatRef<'_, f64>, grid: &QuantGrid) -> Result<QuantizedLayer, CoreError> {
    check_finite("weight", w)?;
    let (rows, cols) = (w.nrows(), w.ncols());
    let mut out = QuantizedLayer::new(*grid, rows, cols, trivial_g_idx(grid, cols));
    let span = grid.group_size.unwrap_or(cols.max(1));
    for (g, start) in (0..cols).step_by(span).enumerate() {
        let end = (start + span).min(cols);
        let params: Vec<_> = (0..rows)
            .map(|r| grid.fit((start..end).map(|c| w[(r, c)])))
            .collect();
        out.set_group(g, &params);
        for c in start..end {
            for (r, &p) in params.iter().enumerate() {
                let q = grid.code(w[(r, c)], p);
                out.codes[r * cols + c] = q as u8;
                out.dequant[(r, c)] = QuantGrid::dequant(q, p);
            }
        }
    }
    Ok(out)
}
