//! Token-id tensors shared by the text families: padding id sequences into a `[batch, seq]`
//! tensor with its mask, and checking/converting the id tensors a [`crate::Batch`] carries.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// Right-pads `seqs` to a `[batch, max_len]` u32 tensor and returns it with its 0/1 mask.
pub fn pad_sequences(seqs: &[Vec<u32>], pad_id: u32) -> Result<(Tensor, Tensor)> {
    if seqs.is_empty() {
        return Err(Error::input("empty batch: no sequences"));
    }
    let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
    if len == 0 {
        return Err(Error::input("all sequences in the batch are empty"));
    }
    if let Some(i) = seqs.iter().position(Vec::is_empty) {
        return Err(Error::input(format!("sequence {i} of the batch is empty")));
    }
    let mut ids = Vec::with_capacity(seqs.len() * len);
    let mut mask = Vec::with_capacity(seqs.len() * len);
    for s in seqs {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(pad_id, len - s.len()));
        mask.extend(std::iter::repeat_n(1u32, s.len()));
        mask.extend(std::iter::repeat_n(0u32, len - s.len()));
    }
    let dev = Device::Cpu;
    Ok((
        Tensor::from_vec(ids, (seqs.len(), len), &dev)?,
        Tensor::from_vec(mask, (seqs.len(), len), &dev)?,
    ))
}

/// Checks that every id in `ids` is below `limit`.
pub(crate) fn check_ids(ids: &Tensor, limit: usize, what: &str) -> Result<()> {
    let max = ids.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
    if max >= limit {
        return Err(Error::input(format!(
            "{what} contains id {max}, but the model only has {limit} entries"
        )));
    }
    Ok(())
}

/// Converts a user id tensor to `[b, s]` u32.
pub(crate) fn ids_u32(ids: &Tensor, what: &str) -> Result<Tensor> {
    if ids.rank() != 2 {
        return Err(Error::input(format!(
            "{what} must be [batch, seq], found shape {:?}",
            ids.dims()
        )));
    }
    if ids.dim(1)? == 0 {
        return Err(Error::input(format!("{what} has zero length")));
    }
    Ok(ids.to_dtype(DType::U32)?)
}
