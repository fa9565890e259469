//! Full-precision tensors that a quantization method changed (e.g. the LayerNorm/RMSNorm
//! weights and biases into which AWQ folds its inverse scales) and that the writers store
//! instead of the source checkpoint's values.

use crate::{FormatError, PackedLinear};
use pmq_io::{encode_f32, is_float, TensorStore};
use std::collections::BTreeMap;

/// Tensor name → new values (row-major f32, the source tensor's shape). Written in the source
/// tensor's dtype.
pub type ReplacedTensors = BTreeMap<String, Vec<f32>>;

/// Checks that every replaced tensor exists in the source as a float tensor with as many
/// elements, and is not the weight of a quantized linear (that one is the quantized layer).
pub(crate) fn check_replaced(
    src: &TensorStore,
    layers: &BTreeMap<String, PackedLinear>,
    replaced: &ReplacedTensors,
) -> Result<(), FormatError> {
    for (name, values) in replaced {
        let info = src.info(name).ok_or_else(|| {
            FormatError::tensor(
                src.root(),
                name,
                "is replaced but the source model has no such tensor",
            )
        })?;
        if !is_float(info.dtype) {
            return Err(FormatError::tensor(
                src.root(),
                name,
                format!("is replaced but has the non-float dtype {:?}", info.dtype),
            ));
        }
        if info.numel() != values.len() {
            return Err(FormatError::tensor(
                src.root(),
                name,
                format!(
                    "has shape {:?} but its replacement has {} values",
                    info.shape,
                    values.len()
                ),
            ));
        }
        if let Some(p) = name.strip_suffix(".weight") {
            if layers.contains_key(p) {
                return Err(FormatError::tensor(
                    src.root(),
                    name,
                    "is both quantized and replaced",
                ));
            }
        }
    }
    Ok(())
}

/// The bytes to write for a tensor that is not quantized: its replacement encoded in the
/// source dtype, or the source bytes.
pub(crate) fn unquantized_bytes<'a>(
    src: &'a TensorStore,
    replaced: &ReplacedTensors,
    name: &str,
) -> Result<std::borrow::Cow<'a, [u8]>, FormatError> {
    match replaced.get(name) {
        Some(values) => {
            let dtype = src.dtype(name)?;
            Ok(std::borrow::Cow::Owned(
                encode_f32(dtype, values).map_err(|e| e.for_tensor(name))?,
            ))
        }
        None => Ok(std::borrow::Cow::Borrowed(src.raw_bytes(name)?)),
    }
}
