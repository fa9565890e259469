//! Small tensor helpers shared below the families: flattening hidden states to the rows of the
//! real tokens and back, reading f32 values in place, and the shape-checked f32 copy that
//! replaces a parameter.

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

/// The rows `y` (`[rows.len(), out]`) put back at the flattened positions `rows` (ascending,
/// as [`crate::State`] lists the real tokens) of a zero tensor shaped like `like` (`[..., in]`)
/// with its last dimension `out`: one pass that copies each real row and zeroes the others.
pub(crate) fn scatter_rows(y: &Tensor, rows: &Tensor, like: &[usize]) -> Result<Tensor> {
    let out = y.dim(1)?;
    let mut dims = like[..like.len().saturating_sub(1)].to_vec();
    let total: usize = dims.iter().product();
    dims.push(out);
    let idx: Vec<u32> = rows.to_vec1()?;
    let ascending =
        idx.windows(2).all(|w| w[0] < w[1]) && idx.last().is_none_or(|&r| (r as usize) < total);
    if y.dtype() != DType::F32 || !ascending {
        let zeros = Tensor::zeros((total, out), y.dtype(), y.device())?;
        return Ok(zeros.index_add(rows, y, 0)?.reshape(dims)?);
    }
    let dst = with_f32_values(y, |src| {
        let mut dst = Vec::with_capacity(total * out);
        for (k, &r) in idx.iter().enumerate() {
            dst.resize(r as usize * out, 0.0);
            dst.extend_from_slice(&src[k * out..(k + 1) * out]);
        }
        dst.resize(total * out, 0.0);
        dst
    })?;
    Ok(Tensor::from_vec(dst, dims, y.device())?)
}

/// Calls `f` with `t`'s values as f32 in row-major order: read in place when `t` is a
/// contiguous f32 CPU tensor, converted and copied otherwise.
pub fn with_f32_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&v[start..end]));
        }
    }
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(f(&v))
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
