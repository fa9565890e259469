//! ggml's block layouts for Q4_0, Q4_1 and Q8_0 (`ggml-common.h`), packed from pmq's
//! `scale · (code − zero) + offset` form. Every block is 32 consecutive input columns of one row:
//!
//! ```text
//! Q4_0  18 bytes: f16 d, 16 × u8 qs             value = d · (q − 8)   q ∈ 0..=15
//! Q4_1  20 bytes: f16 d, f16 m, 16 × u8 qs      value = d · q + m     q ∈ 0..=15
//! Q8_0  34 bytes: f16 d, 32 × i8 qs             value = d · q         q ∈ −128..=127
//! ```
//!
//! 4-bit codes pair element `j` (low nibble) with element `j + 16` (high nibble) in byte `j`.
//! All numbers are little-endian. Nothing is rounded here: a scale, offset or zero point that
//! the block cannot store exactly is an error, so the file dequantizes to pmq's weights bit for
//! bit.

use half::f16;

/// Input columns per block (`QK4_0 = QK4_1 = QK8_0 = 32`).
pub const BLOCK: usize = 32;

/// The ggml tensor types pmq writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgufType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgufType {
    /// The `ggml_type` id stored in the tensor info (gguf-py `GGMLQuantizationType`).
    pub fn type_id(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q4_0 => 2,
            GgufType::Q4_1 => 3,
            GgufType::Q8_0 => 8,
        }
    }

    /// `general.file_type` of a model whose 2-D weights are of this type (gguf-py
    /// `LlamaFileType`: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q4_0 = 2, MOSTLY_Q4_1 = 3,
    /// MOSTLY_Q8_0 = 7).
    pub fn file_type(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q4_0 => 2,
            GgufType::Q4_1 => 3,
            GgufType::Q8_0 => 7,
        }
    }

    /// Bytes per block of [`BLOCK`] values (per value for F32/F16).
    pub fn block_bytes(self) -> usize {
        match self {
            GgufType::F32 => 4,
            GgufType::F16 => 2,
            GgufType::Q4_0 => 18,
            GgufType::Q4_1 => 20,
            GgufType::Q8_0 => 34,
        }
    }

    /// The name llama.cpp prints (`q4_0`, …).
    pub fn name(self) -> &'static str {
        match self {
            GgufType::F32 => "f32",
            GgufType::F16 => "f16",
            GgufType::Q4_0 => "q4_0",
            GgufType::Q4_1 => "q4_1",
            GgufType::Q8_0 => "q8_0",
        }
    }

    /// candle's dtype of the same layout.
    pub fn candle_dtype(self) -> candle_core::quantized::GgmlDType {
        use candle_core::quantized::GgmlDType;
        match self {
            GgufType::F32 => GgmlDType::F32,
            GgufType::F16 => GgmlDType::F16,
            GgufType::Q4_0 => GgmlDType::Q4_0,
            GgufType::Q4_1 => GgmlDType::Q4_1,
            GgufType::Q8_0 => GgmlDType::Q8_0,
        }
    }

    /// Whether this is one of the block-quantized types.
    pub fn is_quantized(self) -> bool {
        matches!(self, GgufType::Q4_0 | GgufType::Q4_1 | GgufType::Q8_0)
    }
}

/// Why a block could not be packed: the row, the block (group of 32 columns) and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockError {
    pub row: usize,
    pub block: Option<usize>,
    pub reason: String,
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.block {
            Some(b) => write!(f, "row {}, block {b}: {}", self.row, self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

fn exact_f16(v: f64, what: &str) -> Result<f16, String> {
    let h = f16::from_f64(v);
    if h.to_f64() == v && h.is_finite() {
        Ok(h)
    } else {
        Err(format!("{what} {v} is not exactly an f16"))
    }
}

/// Packs an `[rows, cols]` quantized matrix into ggml blocks of type `ty`, row-major (row `r`'s
/// `cols / 32` blocks contiguous, rows in order; GGUF `ne[0] = cols`). `codes` is `[rows, cols]`,
/// `scales`/`zeros`/`offsets` are `[cols / 32, rows]` (one entry per block; `offsets` may be
/// empty, meaning all 0), all row-major.
pub fn pack_rows(
    ty: GgufType,
    rows: usize,
    cols: usize,
    codes: &[u8],
    scales: &[f64],
    zeros: &[u32],
    offsets: &[f64],
) -> Result<Vec<u8>, BlockError> {
    let whole = |reason: String| BlockError {
        row: 0,
        block: None,
        reason,
    };
    if !ty.is_quantized() {
        return Err(whole(format!("{} is not a block type", ty.name())));
    }
    if !cols.is_multiple_of(BLOCK) {
        return Err(whole(format!(
            "has {cols} input columns, not a multiple of GGUF's block of {BLOCK}"
        )));
    }
    let blocks = cols / BLOCK;
    let n = blocks * rows;
    if codes.len() != rows * cols
        || scales.len() != n
        || zeros.len() != n
        || !(offsets.is_empty() || offsets.len() == n)
    {
        return Err(whole(format!(
            "expects {} codes and {n} scales/zeros/offsets (one per block of 32), got {} codes, {} scales, {} zeros, {} offsets",
            rows * cols,
            codes.len(),
            scales.len(),
            zeros.len(),
            offsets.len()
        )));
    }
    let mut out = Vec::with_capacity(n * ty.block_bytes());
    for r in 0..rows {
        for b in 0..blocks {
            let i = b * rows + r;
            let q = &codes[r * cols + b * BLOCK..r * cols + (b + 1) * BLOCK];
            let offset = offsets.get(i).copied().unwrap_or(0.0);
            pack_block(ty, q, scales[i], zeros[i], offset, &mut out).map_err(|reason| {
                BlockError {
                    row: r,
                    block: Some(b),
                    reason,
                }
            })?;
        }
    }
    Ok(out)
}

/// Appends one block of 32 codes with parameters `(scale, zero, offset)`.
fn pack_block(
    ty: GgufType,
    q: &[u8],
    scale: f64,
    zero: u32,
    offset: f64,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if scale.is_nan() || scale <= 0.0 {
        return Err(format!("scale {scale} is not positive"));
    }
    let d = exact_f16(scale, "scale")?;
    match ty {
        GgufType::Q4_0 => {
            if offset != 0.0 {
                return Err(format!("Q4_0 has no offset, got {offset}"));
            }
            let (d, flip) = match zero {
                8 => (d, false),
                7 => (-d, true),
                z => return Err(format!("Q4_0 needs zero point 8 or 7, got {z}")),
            };
            out.extend_from_slice(&d.to_le_bytes());
            push_nibbles(q, |c| if flip { 15 - c } else { c }, out)
        }
        GgufType::Q4_1 => {
            if zero != 0 {
                return Err(format!("Q4_1 needs zero point 0, got {zero}"));
            }
            let m = exact_f16(offset, "offset")?;
            out.extend_from_slice(&d.to_le_bytes());
            out.extend_from_slice(&m.to_le_bytes());
            push_nibbles(q, |c| c, out)
        }
        GgufType::Q8_0 => {
            if offset != 0.0 {
                return Err(format!("Q8_0 has no offset, got {offset}"));
            }
            if zero != 128 {
                return Err(format!("Q8_0 needs zero point 128, got {zero}"));
            }
            out.extend_from_slice(&d.to_le_bytes());
            out.extend(q.iter().map(|&c| (c as i16 - 128) as i8 as u8));
            Ok(())
        }
        GgufType::F32 | GgufType::F16 => unreachable!("checked by pack_rows"),
    }
}

/// Appends 16 bytes: byte `j` = `f(q[j]) | f(q[j + 16]) << 4`.
fn push_nibbles(q: &[u8], f: impl Fn(u8) -> u8, out: &mut Vec<u8>) -> Result<(), String> {
    if let Some(&c) = q.iter().find(|&&c| c > 15) {
        return Err(format!("code {c} does not fit in 4 bits"));
    }
    let half = BLOCK / 2;
    out.extend((0..half).map(|j| f(q[j]) | (f(q[j + half]) << 4)));
    Ok(())
}
