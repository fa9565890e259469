//! The GPTQ checkpoint layout of integer codes (AutoGPTQ / GPTQModel):
//!
//! - `qweight` int32 `[in·b/32, out]`: for each output channel, the codes of the input channels
//!   form one bit stream, channel `c` at bits `c·b .. c·b+b`, lowest channel in the lowest bits of
//!   the lowest word (so 3-bit codes straddle words: 32 channels in 3 words).
//! - `qzeros` int32 `[groups, out·b/32]`: per group, the zero points of the output channels as one
//!   bit stream the same way.
//! - v1 (`checkpoint_format: "gptq"`) stores `zero − 1` (loaders add 1 back; a zero of 0 cannot
//!   be stored), v2 (`"gptq_v2"`) stores the true zero.

use crate::CoreError;
use serde::{Deserialize, Serialize};

/// Which zero-point convention a GPTQ checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointFormat {
    /// `checkpoint_format: "gptq"`: stored zero = zero − 1.
    #[serde(rename = "gptq")]
    V1,
    /// `checkpoint_format: "gptq_v2"`: stored zero = zero.
    #[serde(rename = "gptq_v2")]
    V2,
}

impl CheckpointFormat {
    /// The `checkpoint_format` string of `quantize_config.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::V1 => "gptq",
            Self::V2 => "gptq_v2",
        }
    }
}

fn check_bits(bits: u32) -> Result<(), CoreError> {
    if matches!(bits, 2 | 3 | 4 | 8) {
        Ok(())
    } else {
        Err(CoreError::Packing(format!(
            "bits must be 2, 3, 4 or 8, got {bits}"
        )))
    }
}

fn words_for(what: &str, len: usize, bits: u32) -> Result<usize, CoreError> {
    let total = len * bits as usize;
    if !total.is_multiple_of(32) {
        return Err(CoreError::Packing(format!(
            "{what}: {len} values of {bits} bits do not fill whole 32-bit words \
             ({len}·{bits} is not a multiple of 32)"
        )));
    }
    Ok(total / 32)
}

/// Writes `value` into a bit stream spread over `word(k)` for k = 0, 1, ….
fn put_bits(words: &mut [u32], stride: usize, base: usize, bitpos: usize, bits: u32, value: u32) {
    let (w, off) = (bitpos / 32, bitpos % 32);
    words[base + w * stride] |= value << off;
    if off + bits as usize > 32 {
        words[base + (w + 1) * stride] |= value >> (32 - off);
    }
}

fn get_bits(words: &[u32], stride: usize, base: usize, bitpos: usize, bits: u32) -> u32 {
    let (w, off) = (bitpos / 32, bitpos % 32);
    let mask = (1u32 << bits) - 1;
    let mut v = words[base + w * stride] >> off;
    if off + bits as usize > 32 {
        v |= words[base + (w + 1) * stride] << (32 - off);
    }
    v & mask
}

/// Packs `[out, in]` row-major codes into `qweight` `[in·b/32, out]` (row-major).
pub fn pack_qweight(
    codes: &[u8],
    out: usize,
    inp: usize,
    bits: u32,
) -> Result<Vec<i32>, CoreError> {
    check_bits(bits)?;
    if codes.len() != out * inp {
        return Err(CoreError::Packing(format!(
            "codes: {} values for a {out}×{inp} weight",
            codes.len()
        )));
    }
    let words = words_for("qweight input channels", inp, bits)?;
    let maxq = (1u32 << bits) - 1;
    let mut packed = vec![0u32; words * out];
    for o in 0..out {
        for c in 0..inp {
            let v = codes[o * inp + c] as u32;
            if v > maxq {
                return Err(CoreError::Packing(format!(
                    "code {v} at row {o}, column {c} does not fit in {bits} bits"
                )));
            }
            put_bits(&mut packed, out, o, c * bits as usize, bits, v);
        }
    }
    Ok(packed.into_iter().map(|w| w as i32).collect())
}

/// Unpacks `qweight` `[in·b/32, out]` into `[out, in]` row-major codes.
pub fn unpack_qweight(
    qweight: &[i32],
    out: usize,
    inp: usize,
    bits: u32,
) -> Result<Vec<u8>, CoreError> {
    check_bits(bits)?;
    let words = words_for("qweight input channels", inp, bits)?;
    if qweight.len() != words * out {
        return Err(CoreError::Packing(format!(
            "qweight: {} words, expected {words}×{out} for a {out}×{inp} {bits}-bit weight",
            qweight.len()
        )));
    }
    let raw: Vec<u32> = qweight.iter().map(|&w| w as u32).collect();
    let mut codes = vec![0u8; out * inp];
    for o in 0..out {
        for c in 0..inp {
            codes[o * inp + c] = get_bits(&raw, out, o, c * bits as usize, bits) as u8;
        }
    }
    Ok(codes)
}

/// Packs true zero points `[groups, out]` (row-major) into `qzeros` `[groups, out·b/32]`.
pub fn pack_qzeros(
    zeros: &[u32],
    groups: usize,
    out: usize,
    bits: u32,
    format: CheckpointFormat,
) -> Result<Vec<i32>, CoreError> {
    check_bits(bits)?;
    if zeros.len() != groups * out {
        return Err(CoreError::Packing(format!(
            "zeros: {} values for {groups} groups × {out} outputs",
            zeros.len()
        )));
    }
    let words = words_for("qzeros output channels", out, bits)?;
    let maxq = (1u32 << bits) - 1;
    let mut packed = vec![0u32; groups * words];
    for g in 0..groups {
        for o in 0..out {
            let z = zeros[g * out + o];
            let stored = match format {
                CheckpointFormat::V2 => z,
                CheckpointFormat::V1 => z.checked_sub(1).ok_or_else(|| {
                    CoreError::Packing(format!(
                        "GPTQ v1 (checkpoint_format \"gptq\") stores zero − 1 and cannot store the \
                         zero point 0 of group {g}, output {o}; write v2 (\"gptq_v2\") instead"
                    ))
                })?,
            };
            if stored > maxq {
                return Err(CoreError::Packing(format!(
                    "zero point {z} of group {g}, output {o} does not fit in {bits} bits"
                )));
            }
            put_bits(&mut packed, 1, g * words, o * bits as usize, bits, stored);
        }
    }
    Ok(packed.into_iter().map(|w| w as i32).collect())
}

/// Unpacks `qzeros` `[groups, out·b/32]` into true zero points `[groups, out]`.
pub fn unpack_qzeros(
    qzeros: &[i32],
    groups: usize,
    out: usize,
    bits: u32,
    format: CheckpointFormat,
) -> Result<Vec<u32>, CoreError> {
    check_bits(bits)?;
    let words = words_for("qzeros output channels", out, bits)?;
    if qzeros.len() != groups * words {
        return Err(CoreError::Packing(format!(
            "qzeros: {} words, expected {groups}×{words}",
            qzeros.len()
        )));
    }
    let raw: Vec<u32> = qzeros.iter().map(|&w| w as u32).collect();
    let mut zeros = vec![0u32; groups * out];
    for g in 0..groups {
        for o in 0..out {
            let stored = get_bits(&raw, 1, g * words, o * bits as usize, bits);
            zeros[g * out + o] = match format {
                CheckpointFormat::V2 => stored,
                CheckpointFormat::V1 => stored + 1,
            };
        }
    }
    Ok(zeros)
}
