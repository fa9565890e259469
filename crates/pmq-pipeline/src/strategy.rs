//! What happens inside one block, per method: a [`BlockStrategy`] quantizes the block's linears
//! and declares what feeds the next block (GPTQModel's processor interface, in small).
//!
//! - [`Sequential`] (RTN, GPTQ, E-PMQ): true-sequential groups of linears on the current,
//!   partially quantized trajectory; the quantized block's outputs feed the next block.
//! - [`Awq`]: AWQ's searches on the block's full-precision inputs; the full-precision outputs
//!   feed the next block (AWQ propagates full-precision activations).

use crate::awq_strategy;
use crate::job::{BlockJob, Results};
use crate::method::{AwqOptions, Method};
use anyhow::Result;
use pmq_models::{BlockModel, State};

/// What feeds the next block.
pub(crate) enum Propagation {
    /// The outputs of the quantized block: the loop re-runs it on the calibration states.
    QuantizedOutputs,
    /// These states (computed by the strategy).
    States(Vec<Vec<State>>),
}

/// One method's work on one block.
pub(crate) trait BlockStrategy {
    fn quantize_block(&self, job: &mut BlockJob<'_>, results: &mut Results) -> Result<Propagation>;

    /// What [`quantize_block`](Self::quantize_block) returns for the next block, computed
    /// exactly as it does on `model` as it is before the block is quantized, but without
    /// quantizing: a resumed run replays its finished blocks with it ([`crate::resume`]).
    fn replay_block(
        &self,
        model: &dyn BlockModel,
        block: usize,
        states: &[Vec<State>],
    ) -> Result<Propagation>;
}

/// RTN, GPTQ, E-PMQ.
pub(crate) struct Sequential;

impl BlockStrategy for Sequential {
    fn quantize_block(&self, job: &mut BlockJob<'_>, results: &mut Results) -> Result<Propagation> {
        crate::sequential::quantize_block(job, results)?;
        Ok(Propagation::QuantizedOutputs)
    }

    fn replay_block(&self, _: &dyn BlockModel, _: usize, _: &[Vec<State>]) -> Result<Propagation> {
        Ok(Propagation::QuantizedOutputs)
    }
}

/// AWQ with its options.
pub(crate) struct Awq(pub AwqOptions);

impl BlockStrategy for Awq {
    fn quantize_block(&self, job: &mut BlockJob<'_>, results: &mut Results) -> Result<Propagation> {
        let t = std::time::Instant::now();
        // AWQ reads every state of the block at once: in f32 for this block
        let f32_states = in_f32(job.states)?;
        let mut job = BlockJob {
            block: job.block,
            model: &mut *job.model,
            states: &f32_states,
            experts: job.experts,
            cfg: job.cfg,
            progress: job.progress,
            timing: &mut *job.timing,
            memos: &mut *job.memos,
        };
        let next = awq_strategy::quantize_block(&mut job, &self.0, results)?;
        job.timing.solve_s += t.elapsed().as_secs_f64();
        Ok(Propagation::States(next))
    }

    /// The full-precision outputs, as `awq_strategy::quantize_block`'s capture pass gives them.
    fn replay_block(
        &self,
        model: &dyn BlockModel,
        block: usize,
        states: &[Vec<State>],
    ) -> Result<Propagation> {
        let next = crate::capture::block_outputs(model, block, &in_f32(states)?)?;
        Ok(Propagation::States(next))
    }
}

/// The states with their hidden states in f32.
fn in_f32(states: &[Vec<State>]) -> Result<Vec<Vec<State>>> {
    Ok(states
        .iter()
        .map(|task| {
            task.iter()
                .map(|s| s.with_hidden_dtype(candle_core::DType::F32))
                .collect::<pmq_models::Result<Vec<_>>>()
        })
        .collect::<pmq_models::Result<_>>()?)
}

/// The strategy of `method`.
pub(crate) fn for_method(method: Method) -> Box<dyn BlockStrategy> {
    match method {
        Method::Awq(opts) => Box::new(Awq(opts)),
        Method::Rtn | Method::Gptq | Method::Epmq { .. } => Box::new(Sequential),
    }
}
