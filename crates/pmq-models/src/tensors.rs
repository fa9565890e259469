//! Small tensor helpers shared below the families: flattening hidden states to the rows of the
//! real tokens, a linear layer as one GEMM, and the shape-checked f32 copy that replaces a
//! parameter.

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

/// `y = x Wᵀ + b` for `x` of shape `[..., in]`, as one GEMM over all the leading dimensions.
/// (candle_nn's `Linear` multiplies a batch `[b, s, in]` by a weight broadcast over `b`: one
/// small GEMM per sequence, each packing the whole weight again — a third of the GEMM rate on
/// 2-core CPUs for batches of short sequences.)
pub(crate) fn linear_forward(layer: &candle_nn::Linear, x: &Tensor) -> Result<Tensor> {
    let w = layer.weight();
    let dims = x.dims();
    let (Some(&d_in), Ok(d_out)) = (dims.last(), w.dim(0)) else {
        return Ok(candle_core::Module::forward(layer, x)?);
    };
    let rows = x.elem_count() / d_in.max(1);
    let y = x.contiguous()?.reshape((rows, d_in))?.matmul(&w.t()?)?;
    let y = match layer.bias() {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims[..dims.len() - 1].to_vec();
    out.push(d_out);
    Ok(y.reshape(out)?)
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
    let y = y.contiguous()?;
    let (storage, layout) = y.storage_and_layout();
    let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((start, _))) =
        (&*storage, layout.contiguous_offsets())
    else {
        drop(storage);
        let zeros = Tensor::zeros((total, out), y.dtype(), y.device())?;
        return Ok(zeros.index_add(rows, &y, 0)?.reshape(dims)?);
    };
    let src = &v[start..start + idx.len() * out];
    let mut dst = Vec::with_capacity(total * out);
    let mut next = 0;
    for (k, &r) in idx.iter().enumerate() {
        dst.resize(r as usize * out, 0.0);
        dst.extend_from_slice(&src[k * out..(k + 1) * out]);
        next = r as usize + 1;
    }
    debug_assert!(next <= total);
    dst.resize(total * out, 0.0);
    Ok(Tensor::from_vec(dst, dims, y.device())?)
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
