//! [`PackedLinear`]: one quantized linear layer without its dequantized copy.

use pmq_core::{QuantGrid, QuantizedLayer};

/// Codes and grid parameters of an `[out, in]` linear weight, in the GPTQ layouts:
/// `codes` `[out, in]`, `scales`/`zeros` `[groups, out]`, `g_idx` `[in]` (all row-major).
/// The weight is `scales[g_idx[c], r] · (codes[r, c] − zeros[g_idx[c], r])`, plus
/// `offsets[g_idx[c], r]` on grids with offsets (GGUF Q4_1; `offsets` is empty otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedLinear {
    pub rows: usize,
    pub cols: usize,
    pub grid: QuantGrid,
    pub codes: Vec<u8>,
    pub scales: Vec<f64>,
    pub zeros: Vec<u32>,
    pub g_idx: Vec<u32>,
    /// `[groups, out]`; empty when every offset is 0.
    pub offsets: Vec<f64>,
}

impl From<&QuantizedLayer> for PackedLinear {
    fn from(q: &QuantizedLayer) -> Self {
        Self {
            rows: q.rows,
            cols: q.cols,
            grid: q.grid,
            codes: q.codes.clone(),
            scales: q.scales.clone(),
            zeros: q.zeros.clone(),
            g_idx: q.g_idx.clone(),
            offsets: q.offsets.clone(),
        }
    }
}

impl From<QuantizedLayer> for PackedLinear {
    fn from(q: QuantizedLayer) -> Self {
        Self {
            rows: q.rows,
            cols: q.cols,
            grid: q.grid,
            codes: q.codes,
            scales: q.scales,
            zeros: q.zeros,
            g_idx: q.g_idx,
            offsets: q.offsets,
        }
    }
}

impl PackedLinear {
    /// Number of groups.
    pub fn num_groups(&self) -> usize {
        self.scales.len() / self.rows.max(1)
    }

    /// The dequantized weight, `[out, in]` row-major f32. The product (and Q4_1's sum with
    /// its offset) is exact in f64 and rounded once, so it equals a loader's f32
    /// `scale · (q − zero)` (llama.cpp's `d · q + m`) bit for bit.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                let g = self.g_idx[c] as usize;
                let i = g * self.rows + r;
                let mut v =
                    self.scales[i] * (self.codes[r * self.cols + c] as f64 - self.zeros[i] as f64);
                if let Some(&o) = self.offsets.get(i) {
                    if o != 0.0 {
                        v += o;
                    }
                }
                w.push(v as f32);
            }
        }
        w
    }

    /// Whether every zero point can be stored in GPTQ v1 (`zero − 1`), i.e. no zero is 0.
    pub fn fits_v1(&self) -> bool {
        self.zeros.iter().all(|&z| z >= 1)
    }

    /// The grid.
    pub fn grid(&self) -> &QuantGrid {
        &self.grid
    }
}
