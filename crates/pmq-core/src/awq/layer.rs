//! The AWQ-quantized linear: RTN of the scaled (and clipped) weight,
//!
//! ```text
//! W_q = RTN(clamp(W·diag(s), ±m)),   applied to diag(s)⁻¹·x
//! ```
//!
//! # Why the scaled weight can be folded
//!
//! `Q(W·diag(s))·diag(s)⁻¹` applied to `x` equals `Q(W·diag(s))` applied to `diag(s)⁻¹·x`
//! (in token rows: `X·diag(s)⁻¹·Q(W·diag(s))ᵀ`). So the quantized layer stores
//! `Q(W·diag(s))` ([`scale_columns`] then RTN) and `diag(s)⁻¹` is folded into whatever produces
//! `x`: a LayerNorm/RMSNorm (`γ ← γ/s`, `β ← β/s`) or a preceding linear (its rows and bias
//! divided by `s`). Folding is architecture-specific and left to the pipeline;
//! [`unscale_columns`] gives `W·diag(s)⁻¹` (or `X·diag(s)⁻¹` for token rows).

use super::clip::{search_clip, ClipSearch};
use super::config::AwqConfig;
use super::kernel::{scale_columns, unscale_columns};
use crate::quant_grid::QuantGrid;
use crate::quantized::QuantizedLayer;
use crate::rtn::rtn;
use crate::CoreError;
use faer::{Mat, MatRef};

/// One AWQ-quantized linear: the codes of the scaled (and clipped) weight plus the scales.
#[derive(Clone, Debug)]
pub struct AwqLayer {
    /// RTN of `clamp(W·diag(s))`: what is stored, to be applied to `diag(s)⁻¹·x`.
    pub layer: QuantizedLayer,
    /// The AWQ scales `s` (fold `diag(s)⁻¹` into the producer of `x`).
    pub scales: Vec<f64>,
    /// The clip search, when inputs were given.
    pub clip: Option<ClipSearch>,
}

impl AwqLayer {
    /// `Q(W·diag(s))·diag(s)⁻¹`: the weight to apply to the original, unscaled input.
    pub fn effective_weight(&self) -> Mat<f64> {
        unscale_columns(self.layer.dequant.as_ref(), &self.scales)
    }
}

/// The final AWQ step for one linear: scale the columns of `w` by `scales`, run the clip search
/// on the scaled inputs `x_rows·diag(s)⁻¹` when `x_rows` (the original inputs, `[tokens, in]`)
/// is given, clamp, and quantize with [`rtn`].
pub fn quantize_layer(
    w: MatRef<'_, f64>,
    scales: &[f64],
    x_rows: Option<MatRef<'_, f64>>,
    grid: &QuantGrid,
    cfg: &AwqConfig,
) -> Result<AwqLayer, CoreError> {
    if scales.len() != w.ncols() {
        return Err(CoreError::Shape {
            what: "AWQ scales".into(),
            got_rows: 1,
            got_cols: scales.len(),
            expected: format!("1×{}", w.ncols()),
        });
    }
    if let Some(c) = scales.iter().position(|&s| !(s.is_finite() && s > 0.0)) {
        return Err(CoreError::NonFinite {
            what: "AWQ scales (must be finite and > 0)".into(),
            row: 0,
            col: c,
            value: scales[c],
        });
    }
    let ws = scale_columns(w, scales);
    let clip = match x_rows {
        Some(x) => {
            if x.ncols() != w.ncols() {
                return Err(CoreError::Shape {
                    what: "AWQ clip-search inputs".into(),
                    got_rows: x.nrows(),
                    got_cols: x.ncols(),
                    expected: format!("tokens×{}", w.ncols()),
                });
            }
            let xs = unscale_columns(x, scales);
            Some(search_clip(ws.as_ref(), xs.as_ref(), grid, cfg)?)
        }
        None => None,
    };
    let target = clip.as_ref().map_or(ws.as_ref(), |c| c.clipped.as_ref());
    let layer = rtn(target, grid)?;
    Ok(AwqLayer {
        layer,
        scales: scales.to_vec(),
        clip,
    })
}
