//! Round-to-nearest (RTN): every weight independently to the nearest point of its group's grid,
//! `Q = scale · (clamp(round(W / scale) + zero, 0, 2^b − 1) − zero)`, with the group parameters
//! fitted on the original weights (see [`crate::quant_grid`]).

use crate::matrix::check_finite;
use crate::quant_grid::{GroupParams, QuantGrid};
use crate::quantized::{trivial_g_idx, QuantizedLayer};
use crate::CoreError;
use faer::MatRef;

/// Quantizes `w` (`[out, in]`) with RTN (rows in parallel: each row is quantized on its own).
pub fn rtn(w: MatRef<'_, f64>, grid: &QuantGrid) -> Result<QuantizedLayer, CoreError> {
    use rayon::prelude::*;
    check_finite("weight", w)?;
    let (rows, cols) = (w.nrows(), w.ncols());
    let mut out = QuantizedLayer::new(*grid, rows, cols, trivial_g_idx(grid, cols));
    let span = grid.group_size.unwrap_or(cols.max(1));
    let starts: Vec<usize> = (0..cols).step_by(span).collect();
    const CHUNK: usize = 64;
    // per chunk of rows: the parameters of its rows, group by group
    let params: Vec<Vec<Vec<GroupParams>>> = out
        .dequant
        .as_mut()
        .par_row_chunks_mut(CHUNK)
        .zip(out.codes.par_chunks_mut(CHUNK * cols.max(1)))
        .enumerate()
        .map(|(k, (mut deq, codes))| {
            let r0 = k * CHUNK;
            starts
                .iter()
                .map(|&start| {
                    let end = (start + span).min(cols);
                    let params: Vec<_> = (0..deq.nrows())
                        .map(|r| grid.fit((start..end).map(|c| w[(r0 + r, c)])))
                        .collect();
                    for c in start..end {
                        for (r, &p) in params.iter().enumerate() {
                            let q = grid.code(w[(r0 + r, c)], p);
                            codes[r * cols + c] = q as u8;
                            deq[(r, c)] = QuantGrid::dequant(q, p);
                        }
                    }
                    params
                })
                .collect()
        })
        .collect();
    for g in 0..starts.len() {
        let all: Vec<GroupParams> = params
            .iter()
            .flat_map(|chunk| chunk[g].iter().copied())
            .collect();
        out.set_group(g, &all);
    }
    Ok(out)
}
