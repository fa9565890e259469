//! The block-wise model interface that the quantization pipeline drives.

use crate::error::{Error, Result};
use crate::scaling::{AwqLayout, SubBlock};
use candle_core::{DType, Device, Tensor};

/// Supported model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// BERT encoders (e.g. all-MiniLM-L6-v2).
    Bert,
    /// The vision tower of CLIP (ViT-B/32, ViT-L/14, ...).
    ClipVision,
    /// T5 / FLAN-T5 encoder-decoder.
    T5,
    /// Llama 1/2/3.x decoder-only LMs.
    Llama,
}

/// One quantizable linear layer, named by its HF prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinearSpec {
    /// HF prefix, e.g. `encoder.layer.0.attention.self.query`; the weight is `{name}.weight`.
    pub name: String,
    /// Input features (columns of the weight).
    pub in_features: usize,
    /// Output features (rows of the weight).
    pub out_features: usize,
    /// Whether the layer has a `{name}.bias`.
    pub has_bias: bool,
}

impl LinearSpec {
    /// HF name of the weight tensor.
    pub fn weight_name(&self) -> String {
        format!("{}.weight", self.name)
    }
    /// HF name of the bias tensor (meaningful only when `has_bias`).
    pub fn bias_name(&self) -> String {
        format!("{}.bias", self.name)
    }
}

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

/// Everything a block needs: the hidden states entering it plus family-specific context
/// (attention bias, RoPE tables, T5 encoder output ...). Produced by [`BlockModel::embed`] and
/// by each [`BlockModel::block_forward`]; the state returned by block `i` is the input of block
/// `i + 1`.
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) hidden: Tensor,
    pub(crate) mask: Tensor,
    pub(crate) rows: Option<Tensor>,
    pub(crate) extra: Extra,
}

/// Family-specific part of a [`State`].
#[derive(Debug, Clone)]
pub(crate) enum Extra {
    /// Additive attention bias broadcastable to `[b, heads, q, k]`.
    Bias(Tensor),
    /// Nothing beyond the hidden states (CLIP vision).
    None,
    /// Llama: additive causal+padding bias and RoPE tables.
    Llama(crate::llama::LlamaExtra),
    /// T5 encoder or decoder phase.
    T5(Box<crate::t5::T5Extra>),
}

impl State {
    /// Builds a state from hidden states `[b, s, d]` and a `[b, s]` token mask (any dtype).
    pub(crate) fn new(hidden: Tensor, mask: Option<&Tensor>, extra: Extra) -> Result<Self> {
        let (b, s, _) = hidden.dims3()?;
        let (mask, rows) = token_mask_and_rows(mask, b, s)?;
        Ok(Self {
            hidden,
            mask,
            rows,
            extra,
        })
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
        Ok(Self {
            hidden: self.hidden.to_dtype(dtype)?,
            ..self.clone()
        })
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

/// The capture callback: receives a linear's name and its input as `[tokens, in_features]`
/// with padding tokens already removed. Linears fed the same tensor one after the other (q, k,
/// v; gate, up) receive the very same rows tensor (equal [`Tensor::id`]). Returning an error
/// aborts the forward pass.
pub type CaptureFn<'a> = dyn FnMut(&str, &Tensor) -> Result<()> + 'a;

/// A model split into embedding stage → ordered blocks → head stage, with swappable linears.
///
/// Typical layer-wise use: `s = embed(batch)`; for each block `b`: for each group of
/// `block_groups(b)` run `block_forward(b, &s, Some(capture))`, accumulate `X Xᵀ` per linear,
/// quantize the group and `set_linear_weight`; then `s = block_forward(b, &s, None)`.
pub trait BlockModel: Send + Sync {
    /// The model family.
    fn family(&self) -> Family;

    /// Number of blocks (T5: encoder blocks followed by decoder blocks).
    fn num_blocks(&self) -> usize;

    /// The linears of `block` in true-sequential groups: every linear of a group has inputs
    /// that depend only on earlier groups.
    fn block_groups(&self, block: usize) -> Result<Vec<Vec<LinearSpec>>>;

    /// All quantizable linears of all blocks, in forward order.
    fn linears(&self) -> Vec<LinearSpec> {
        (0..self.num_blocks())
            .flat_map(|b| self.block_groups(b).unwrap_or_default())
            .flatten()
            .collect()
    }

    /// Embedding stage: the state entering block 0.
    fn embed(&self, batch: &Batch) -> Result<State>;

    /// Runs block `block` on `state`. When `capture` is given it is called once per linear
    /// of the block with that linear's input (`[tokens, in_features]`, padding removed).
    fn block_forward(
        &self,
        block: usize,
        state: &State,
        capture: Option<&mut CaptureFn<'_>>,
    ) -> Result<State>;

    /// Head stage on the state after the last block: BERT the last hidden state
    /// `[b, s, d]`; CLIP the image embedding `[b, proj]`; Llama and T5 the logits `[b, s, vocab]`.
    fn head(&self, state: &State) -> Result<Tensor>;

    /// Whole forward: `embed` → every block → `head`.
    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let mut s = self.embed(batch)?;
        for b in 0..self.num_blocks() {
            s = self.block_forward(b, &s, None)?;
        }
        self.head(&s)
    }

    /// Replaces the weight `[out, in]` of linear `name` (e.g. by its quantized version).
    fn set_linear_weight(&mut self, name: &str, weight: Tensor) -> Result<()>;

    /// The current weight `[out, in]` (f32) of linear `name`.
    fn linear_weight(&self, name: &str) -> Result<Tensor>;

    /// The scaling groups of `block` for AWQ: which linears share an input, where `1/s` folds
    /// exactly, and what to inspect (see [`crate::scaling`] for the table).
    fn awq_layout(&self, block: usize) -> Result<AwqLayout>;

    /// Runs `block` on `state` (its input) with the current weights up to the end of `sub`
    /// and returns that sub-block's output before the residual add, as `[tokens, hidden]`
    /// rows with padding removed. Fails when the block has no such sub-block.
    fn sub_block_output(&self, block: usize, state: &State, sub: SubBlock) -> Result<Tensor>;

    /// A block norm's weight or bias, or a quantizable linear's bias, by HF tensor name.
    fn tensor(&self, name: &str) -> Result<Tensor>;

    /// Replaces a tensor that [`BlockModel::tensor`] can read (same shape).
    fn set_tensor(&mut self, name: &str, value: Tensor) -> Result<()>;
}

/// What a block run with a possible early stop produced.
pub(crate) enum Ran {
    /// The whole block ran.
    Block(State),
    /// It stopped after a sub-block: that output as token rows.
    Sub(Tensor),
}

impl Ran {
    /// The state after the block.
    pub(crate) fn into_state(self) -> Result<State> {
        match self {
            Ran::Block(s) => Ok(s),
            Ran::Sub(_) => Err(Error::input("block stopped early without being asked to")),
        }
    }

    /// The sub-block output asked for.
    pub(crate) fn into_sub(self, sub: SubBlock) -> Result<Tensor> {
        match self {
            Ran::Sub(t) => Ok(t),
            Ran::Block(_) => Err(Error::input(format!("this block has no {sub:?} sub-block"))),
        }
    }
}

/// `x` (`[..., d]`) flattened to `[rows, d]`, restricted to the unpadded `rows` when given.
pub(crate) fn token_rows(x: &Tensor, rows: Option<&Tensor>) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    let flat = x.reshape(((), d))?;
    Ok(match rows {
        Some(r) => flat.index_select(r, 0)?,
        None => flat.contiguous()?,
    })
}

/// Checks a block index.
pub(crate) fn check_block(block: usize, n: usize) -> Result<()> {
    if block >= n {
        Err(Error::input(format!(
            "block index {block} out of range (model has {n} blocks)"
        )))
    } else {
        Ok(())
    }
}

/// Converts a `[b, s]` 0/1 mask into the additive key-padding bias `[b, 1, 1, s]` with
/// `f32::MIN` (torch.finfo(float32).min) on padded keys, as transformers does.
pub(crate) fn padding_bias(mask_f32: &Tensor) -> Result<Tensor> {
    let (b, s) = mask_f32.dims2()?;
    let bias = ((mask_f32.ones_like()? - mask_f32)? * f64::from(f32::MIN))?;
    Ok(bias.reshape((b, 1, 1, s))?)
}
