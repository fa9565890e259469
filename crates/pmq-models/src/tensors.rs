//! Small tensor helpers shared below the families: flattening hidden states to the rows of the
//! real tokens, and the shape-checked f32 copy that replaces a parameter.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// `x` (`[..., d]`) flattened to `[rows, d]`, restricted to the unpadded `rows` when given.
pub(crate) fn token_rows(x: &Tensor, rows: Option<&Tensor>) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    let flat = x.reshape(((), d))?;
    Ok(match rows {
        Some(r) => flat.index_select(r, 0)?,
        None => flat.contiguous()?,
    })
}

/// `value` as a contiguous CPU f32 tensor with the shape of `current` (the tensor named `name`
/// that it replaces).
pub(crate) fn checked(name: &str, current: &Tensor, value: Tensor) -> Result<Tensor> {
    if value.dims() != current.dims() {
        return Err(Error::Shape {
            name: name.to_string(),
            location: "set_tensor".into(),
            expected: current.dims().to_vec(),
            found: value.dims().to_vec(),
        });
    }
    Ok(value
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .contiguous()?)
}
