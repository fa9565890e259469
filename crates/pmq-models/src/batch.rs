//! Model inputs for one batch ([`Batch`]): token ids and masks for the text families, pixels
//! for CLIP, teacher-forced decoder ids for T5.

use crate::error::Result;
use crate::ids::pad_sequences;
use candle_core::Tensor;

/// Model inputs for one batch. Which fields are needed depends on the family:
/// text models need `input_ids` (+ `attention_mask`, BERT optionally `token_type_ids`), CLIP
/// needs `pixel_values`, T5 block-wise runs also need teacher-forced `decoder_input_ids`.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Token ids `[batch, seq]` (u32).
    pub input_ids: Option<Tensor>,
    /// `[batch, seq]`, 1 for real tokens and 0 for padding; `None` means no padding.
    pub attention_mask: Option<Tensor>,
    /// BERT segment ids `[batch, seq]`; zeros when `None`.
    pub token_type_ids: Option<Tensor>,
    /// Preprocessed images `[batch, channels, image_size, image_size]` (f32).
    pub pixel_values: Option<Tensor>,
    /// T5 decoder input ids `[batch, dec_seq]` (start token followed by the shifted labels).
    pub decoder_input_ids: Option<Tensor>,
    /// T5 decoder padding mask `[batch, dec_seq]`; `None` means no padding.
    pub decoder_attention_mask: Option<Tensor>,
}

impl Batch {
    /// A text batch from token id sequences, right-padded with `pad_id` and with the matching
    /// attention mask.
    pub fn from_token_ids(seqs: &[Vec<u32>], pad_id: u32) -> Result<Self> {
        let (ids, mask) = pad_sequences(seqs, pad_id)?;
        Ok(Self {
            input_ids: Some(ids),
            attention_mask: Some(mask),
            ..Default::default()
        })
    }

    /// An image batch from preprocessed pixels `[batch, 3, H, W]`.
    pub fn from_pixels(pixel_values: Tensor) -> Self {
        Self {
            pixel_values: Some(pixel_values),
            ..Default::default()
        }
    }

    /// Adds T5 decoder inputs (right-padded with `pad_id`).
    pub fn with_decoder_ids(mut self, seqs: &[Vec<u32>], pad_id: u32) -> Result<Self> {
        let (ids, mask) = pad_sequences(seqs, pad_id)?;
        self.decoder_input_ids = Some(ids);
        self.decoder_attention_mask = Some(mask);
        Ok(self)
    }
}
