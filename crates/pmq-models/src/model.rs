//! The block-wise model interface that the quantization pipeline drives ([`BlockModel`]), and
//! the crate-internal part each family implements ([`ModelParts`]: its parameter owner and its
//! one block implementation) from which `BlockModel`'s shared methods are defined once.

use crate::batch::Batch;
use crate::capture::{CaptureFn, OutputMemo};
use crate::error::{Error, Result};
use crate::linear::LinearSpec;
use crate::params::Params;
use crate::scaling::{AwqLayout, SubBlock};
use crate::state::State;
use candle_core::Tensor;

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

/// What every family provides for [`BlockModel`]'s shared methods. Not exported (which also
/// keeps `BlockModel` implementable only inside this crate).
pub trait ModelParts {
    /// The family's quantizable parameters.
    fn params(&self) -> &Params;

    /// The family's quantizable parameters, to replace some.
    fn params_mut(&mut self) -> &mut Params;

    /// Runs `block` on `state`, reporting linear inputs to `capture` and keeping/reusing frozen
    /// linears' outputs in `memo`; with `stop`, ends after that sub-block and returns its
    /// output ([`Ran::Sub`]), else the state after the block.
    fn run_block(
        &self,
        block: usize,
        state: &State,
        capture: Option<&mut CaptureFn<'_>>,
        memo: Option<&mut OutputMemo>,
        stop: Option<SubBlock>,
    ) -> Result<Ran>;
}

/// A model split into embedding stage → ordered blocks → head stage, with swappable linears.
///
/// Typical layer-wise use: `s = embed(batch)`; for each block `b`: for each group of
/// `block_groups(b)` run `block_forward(b, &s, Some(capture))`, accumulate `X Xᵀ` per linear,
/// quantize the group and `set_linear_weight`; then `s = block_forward(b, &s, None)`.
pub trait BlockModel: ModelParts + Send + Sync {
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
    ) -> Result<State> {
        self.run_block(block, state, capture, None, None)?
            .into_state()
    }

    /// [`block_forward`](Self::block_forward) with the outputs of frozen linears kept in and
    /// reused from `memo` (one memo per calibration batch and block; see [`OutputMemo`]). The
    /// result is bit for bit that of `block_forward`.
    fn block_forward_memo(
        &self,
        block: usize,
        state: &State,
        capture: Option<&mut CaptureFn<'_>>,
        memo: &mut OutputMemo,
    ) -> Result<State> {
        self.run_block(block, state, capture, Some(memo), None)?
            .into_state()
    }

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
    fn set_linear_weight(&mut self, name: &str, weight: Tensor) -> Result<()> {
        self.params_mut().set_linear_weight(name, weight)
    }

    /// Reads the weights of `block`'s linears into memory. A model loaded with
    /// [`crate::load_model_streamed`] keeps them in the checkpoint until then (and reads a
    /// weight it needs in the meantime for each use); for other models this does nothing.
    fn load_block(&mut self, block: usize) -> Result<()> {
        let names = self.block_linear_names(block)?;
        self.params_mut().load_linears(&names)
    }

    /// Gives back the memory of `block`'s linear weights in a streamed model: weights as read
    /// go back to the checkpoint; replaced ones (quantized) are dropped, and using them later
    /// is an error. For models not loaded streamed this does nothing.
    fn unload_block(&mut self, block: usize) -> Result<()> {
        let names = self.block_linear_names(block)?;
        self.params_mut().unload_linears(&names)
    }

    /// The names of `block`'s linears.
    fn block_linear_names(&self, block: usize) -> Result<Vec<String>> {
        Ok(self
            .block_groups(block)?
            .into_iter()
            .flatten()
            .map(|l| l.name)
            .collect())
    }

    /// The current weight `[out, in]` (f32) of linear `name`.
    fn linear_weight(&self, name: &str) -> Result<Tensor> {
        self.params().linear_weight(name)
    }

    /// The scaling groups of `block` for AWQ: which linears share an input, where `1/s` folds
    /// exactly, and what to inspect (see [`crate::scaling`] for the table).
    fn awq_layout(&self, block: usize) -> Result<AwqLayout>;

    /// Runs `block` on `state` (its input) with the current weights up to the end of `sub`
    /// and returns that sub-block's output before the residual add, as `[tokens, hidden]`
    /// rows with padding removed. Fails when the block has no such sub-block.
    fn sub_block_output(&self, block: usize, state: &State, sub: SubBlock) -> Result<Tensor> {
        self.run_block(block, state, None, None, Some(sub))?
            .into_sub(sub)
    }

    /// A block norm's weight or bias, or a quantizable linear's bias, by HF tensor name.
    fn tensor(&self, name: &str) -> Result<Tensor> {
        self.params().tensor(name)
    }

    /// Replaces a tensor that [`BlockModel::tensor`] can read (same shape).
    fn set_tensor(&mut self, name: &str, value: Tensor) -> Result<()> {
        self.params_mut().set_tensor(name, value)
    }
}

/// What a block run with a possible early stop produced ([`ModelParts::run_block`]).
pub enum Ran {
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

/// A model's blocks (one entry per block, in order), indexed with a range check.
#[derive(Debug, Clone)]
pub(crate) struct Blocks<L>(Vec<L>);

impl<L> Blocks<L> {
    /// Number of blocks.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Block `block`, or an error naming the valid range.
    pub(crate) fn get(&self, block: usize) -> Result<&L> {
        self.0.get(block).ok_or_else(|| {
            Error::input(format!(
                "block index {block} out of range (model has {} blocks)",
                self.0.len()
            ))
        })
    }
}

impl<L> From<Vec<L>> for Blocks<L> {
    fn from(layers: Vec<L>) -> Self {
        Self(layers)
    }
}
