//! Little-endian byte <-> float conversions for the float dtypes (F32, F16, BF16, F64).
//!
//! F16/BF16 go through the `half` crate; narrowing conversions round to nearest, ties to even.

use half::{bf16, f16};
use safetensors::Dtype;

use crate::IoError;

/// Whether `dtype` is one of the floating-point types this crate converts (F16, BF16, F32, F64).
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

/// Parses a dtype name as written in safetensors headers or on a command line
/// (`f32`, `F16`, `bf16`, `float16`, `bfloat16`, ...), case-insensitively.
pub fn parse_dtype(s: &str) -> Option<Dtype> {
    Some(match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" | "float" => Dtype::F32,
        "f16" | "float16" | "half" => Dtype::F16,
        "bf16" | "bfloat16" => Dtype::BF16,
        "f64" | "float64" | "double" => Dtype::F64,
        "i32" | "int32" => Dtype::I32,
        "i64" | "int64" => Dtype::I64,
        "i8" | "int8" => Dtype::I8,
        "u8" | "uint8" => Dtype::U8,
        "bool" => Dtype::BOOL,
        _ => return None,
    })
}

/// Decodes little-endian `bytes` of a float `dtype` into `f32` (F64 is narrowed).
/// Returns `None` for a non-float dtype or a byte length that is not a whole number of elements.
pub fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => chunks::<4>(bytes)?.map(f32::from_le_bytes).collect(),
        Dtype::F16 => chunks::<2>(bytes)?
            .map(|b| f16::from_le_bytes(b).to_f32())
            .collect(),
        Dtype::BF16 => chunks::<2>(bytes)?
            .map(|b| bf16::from_le_bytes(b).to_f32())
            .collect(),
        Dtype::F64 => chunks::<8>(bytes)?
            .map(|b| f64::from_le_bytes(b) as f32)
            .collect(),
        _ => return None,
    };
    Some(out)
}

/// Decodes little-endian `bytes` of a float `dtype` into `f64` (exact for every float dtype).
pub fn decode_f64(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f64>> {
    let out = match dtype {
        Dtype::F32 => chunks::<4>(bytes)?
            .map(|b| f32::from_le_bytes(b) as f64)
            .collect(),
        Dtype::F16 => chunks::<2>(bytes)?
            .map(|b| f16::from_le_bytes(b).to_f64())
            .collect(),
        Dtype::BF16 => chunks::<2>(bytes)?
            .map(|b| bf16::from_le_bytes(b).to_f64())
            .collect(),
        Dtype::F64 => chunks::<8>(bytes)?.map(f64::from_le_bytes).collect(),
        _ => return None,
    };
    Some(out)
}

/// Encodes `values` as little-endian bytes of `dtype` (F32, F16, BF16 or F64); F16/BF16 round
/// to nearest, ties to even.
pub fn encode_f32(dtype: Dtype, values: &[f32]) -> Result<Vec<u8>, IoError> {
    let out = match dtype {
        Dtype::F32 => f32_bytes(values),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::F64 => values
            .iter()
            .flat_map(|&v| (v as f64).to_le_bytes())
            .collect(),
        other => {
            return Err(IoError::Encode {
                dtype: other,
                tensor: None,
            })
        }
    };
    Ok(out)
}

/// Little-endian bytes of `f32` values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of `i32` values.
pub fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn chunks<const N: usize>(bytes: &[u8]) -> Option<impl Iterator<Item = [u8; N]> + '_> {
    bytes.len().is_multiple_of(N).then(|| {
        bytes
            .chunks_exact(N)
            .map(|c| <[u8; N]>::try_from(c).expect("chunks_exact yields N bytes"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_bf16_round_to_nearest_even() {
        // 1 + 2^-11 lies exactly between two f16 values (1 and 1 + 2^-10): ties to even -> 1.
        let v = 1.0f32 + 2f32.powi(-11);
        let b = encode_f32(Dtype::F16, &[v]).unwrap();
        assert_eq!(decode_f32(Dtype::F16, &b).unwrap(), vec![1.0]);
        // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even -> 1.
        let v = 1.0f32 + 2f32.powi(-8);
        let b = encode_f32(Dtype::BF16, &[v]).unwrap();
        assert_eq!(decode_f32(Dtype::BF16, &b).unwrap(), vec![1.0]);
        // 1 + 3*2^-9 rounds up to 1 + 2^-7 in bf16.
        let v = 1.0f32 + 3.0 * 2f32.powi(-9);
        let b = encode_f32(Dtype::BF16, &[v]).unwrap();
        assert_eq!(
            decode_f32(Dtype::BF16, &b).unwrap(),
            vec![1.0 + 2f32.powi(-7)]
        );
    }

    #[test]
    fn non_float_and_ragged_bytes_are_rejected() {
        assert!(decode_f32(Dtype::I32, &[0; 4]).is_none());
        assert!(decode_f32(Dtype::F32, &[0; 5]).is_none());
        assert!(matches!(
            encode_f32(Dtype::I8, &[1.0]),
            Err(IoError::Encode {
                dtype: Dtype::I8,
                tensor: None
            })
        ));
    }
}
