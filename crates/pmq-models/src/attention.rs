//! Multi-head scaled dot-product attention shared by the families (f32, CPU), and the additive
//! key-padding bias of a token mask.

use crate::error::Result;
use candle_core::Tensor;

/// `[b, s, heads * d]` → `[b, heads, s, d]` (contiguous).
pub(crate) fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, hd) = x.dims3()?;
    Ok(x.reshape((b, s, heads, hd / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// `[b, heads, s, d]` → `[b, s, heads * d]`.
pub(crate) fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, s, h * d))?)
}

/// softmax(q kᵀ · scale + bias) v for q `[b, h, s, d]`, k/v `[b, h_kv, t, d]` (grouped-query
/// attention when `h_kv < h`); `bias` broadcastable to `[b, h, s, t]`.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let h = q.dim(1)?;
    let h_kv = k.dim(1)?;
    let (k, v) = if h_kv != h {
        let rep = h / h_kv;
        (
            candle_transformers::utils::repeat_kv(k.clone(), rep)?,
            candle_transformers::utils::repeat_kv(v.clone(), rep)?,
        )
    } else {
        (k.clone(), v.clone())
    };
    let mut scores = q.matmul(&k.t()?.contiguous()?)?;
    if scale != 1.0 {
        scores = (scores * scale)?;
    }
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs.matmul(&v.contiguous()?)?)
}

/// Converts a `[b, s]` 0/1 mask into the additive key-padding bias `[b, 1, 1, s]` with
/// `f32::MIN` (torch.finfo(float32).min) on padded keys, as transformers does.
pub(crate) fn padding_bias(mask_f32: &Tensor) -> Result<Tensor> {
    let (b, s) = mask_f32.dims2()?;
    let bias = ((mask_f32.ones_like()? - mask_f32)? * f64::from(f32::MIN))?;
    Ok(bias.reshape((b, 1, 1, s))?)
}
