//! The state passed from block to block ([`State`]): hidden states, the token mask and its
//! unpadded rows, plus a context that each family defines for itself (attention bias, RoPE
//! tables, T5's encoder output ...) and that only that family reads back.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

/// A family's own part of a [`State`]. Any `'static` debuggable, thread-safe type qualifies;
/// each family uses a type of its own, so a state handed to another family is recognised as
/// foreign (see [`State::extra_for`]).
pub(crate) trait FamilyState: Any + Debug + Send + Sync {
    /// The value as [`Any`], for downcasting.
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + Debug + Send + Sync> FamilyState for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Everything a block needs: the hidden states entering it plus family-specific context
/// (attention bias, RoPE tables, T5 encoder output ...). Produced by [`crate::BlockModel::embed`]
/// and by each [`crate::BlockModel::block_forward`]; the state returned by block `i` is the
/// input of block `i + 1`.
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) hidden: Tensor,
    pub(crate) mask: Tensor,
    pub(crate) rows: Option<Tensor>,
    extra: Arc<dyn FamilyState>,
}

impl State {
    /// Builds a state from hidden states `[b, s, d]`, a `[b, s]` token mask (any dtype; `None`
    /// means no padding) and the family's context, built from the checked f32 mask.
    pub(crate) fn new<E: FamilyState>(
        hidden: Tensor,
        mask: Option<&Tensor>,
        extra: impl FnOnce(&Tensor) -> Result<E>,
    ) -> Result<Self> {
        let (b, s, _) = hidden.dims3()?;
        let (mask, rows) = token_mask_and_rows(mask, b, s)?;
        let extra = Arc::new(extra(&mask)?);
        Ok(Self {
            hidden,
            mask,
            rows,
            extra,
        })
    }

    /// The same state with other hidden states (the output of a block).
    pub(crate) fn with_hidden(&self, hidden: Tensor) -> Self {
        Self {
            hidden,
            ..self.clone()
        }
    }

    /// The family context, when it is a `T`.
    pub(crate) fn extra<T: FamilyState>(&self) -> Option<&T> {
        // called on the trait object itself: `Arc<dyn FamilyState>` is a `FamilyState` too
        <dyn FamilyState as FamilyState>::as_any(&*self.extra).downcast_ref()
    }

    /// The family context of `family`'s type `T`; an error naming `family` for a state that
    /// another family produced.
    pub(crate) fn extra_for<T: FamilyState>(&self, family: &str) -> Result<&T> {
        self.extra()
            .ok_or_else(|| Error::input(format!("state was not produced by a {family} model")))
    }

    /// Hidden states `[batch, seq, hidden]` entering the next block (for T5 after the last
    /// encoder block: the decoder's embedded inputs).
    pub fn hidden(&self) -> &Tensor {
        &self.hidden
    }

    /// The same state with its hidden states stored as `dtype`: bf16/f16 halve the memory of
    /// calibration states kept between blocks. Blocks compute in f32, so convert back with
    /// `with_hidden_dtype(DType::F32)` before a forward pass. Other parts (masks, T5's encoder
    /// output) are shared, not converted.
    pub fn with_hidden_dtype(&self, dtype: DType) -> Result<Self> {
        if self.hidden.dtype() == dtype {
            return Ok(self.clone());
        }
        Ok(self.with_hidden(self.hidden.to_dtype(dtype)?))
    }

    /// `[batch, seq]` f32 mask of the current stream (1 = real token).
    pub fn token_mask(&self) -> &Tensor {
        &self.mask
    }

    /// Indices (u32) of the real tokens in the flattened `[batch * seq]` rows, `None` when the
    /// batch has no padding.
    pub fn valid_rows(&self) -> Option<&Tensor> {
        self.rows.as_ref()
    }
}

/// Converts an optional mask to f32 `[b, s]` and the list of unpadded flattened rows.
pub(crate) fn token_mask_and_rows(
    mask: Option<&Tensor>,
    b: usize,
    s: usize,
) -> Result<(Tensor, Option<Tensor>)> {
    let Some(mask) = mask else {
        return Ok((Tensor::ones((b, s), DType::F32, &Device::Cpu)?, None));
    };
    if mask.dims() != [b, s] {
        return Err(Error::input(format!(
            "attention mask has shape {:?}, expected [{b}, {s}]",
            mask.dims()
        )));
    }
    let mask = mask.to_dtype(DType::F32)?;
    let flat: Vec<f32> = mask.flatten_all()?.to_vec1()?;
    if flat.iter().any(|&m| m != 0.0 && m != 1.0) {
        return Err(Error::input("attention mask values must be 0 or 1"));
    }
    let rows: Vec<u32> = flat
        .iter()
        .enumerate()
        .filter(|(_, &m)| m == 1.0)
        .map(|(i, _)| i as u32)
        .collect();
    let rows = if rows.len() == flat.len() {
        None
    } else {
        let n = rows.len();
        Some(Tensor::from_vec(rows, n, &Device::Cpu)?)
    };
    Ok((mask, rows))
}
