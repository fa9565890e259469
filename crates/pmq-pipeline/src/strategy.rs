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
use pmq_models::State;

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
}

/// RTN, GPTQ, E-PMQ.
pub(crate) struct Sequential;

impl BlockStrategy for Sequential {
    fn quantize_block(&self, job: &mut BlockJob<'_>, results: &mut Results) -> Result<Propagation> {
        crate::sequential::quantize_block(job, results)?;
        Ok(Propagation::QuantizedOutputs)
    }
}

/// AWQ with its options.
pub(crate) struct Awq(pub AwqOptions);

impl BlockStrategy for Awq {
    fn quantize_block(&self, job: &mut BlockJob<'_>, results: &mut Results) -> Result<Propagation> {
        let t = std::time::Instant::now();
        // AWQ reads every state of the block at once: in f32 for this block
        let f32_states: Vec<Vec<State>> = job
            .states
            .iter()
            .map(|task| {
                task.iter()
                    .map(|s| s.with_hidden_dtype(candle_core::DType::F32))
                    .collect::<pmq_models::Result<Vec<_>>>()
            })
            .collect::<pmq_models::Result<_>>()?;
        let mut job = BlockJob {
            block: job.block,
            model: &mut *job.model,
            states: &f32_states,
            experts: job.experts,
            cfg: job.cfg,
            progress: job.progress,
            timing: &mut *job.timing,
        };
        let next = awq_strategy::quantize_block(&mut job, &self.0, results)?;
        job.timing.solve_s += t.elapsed().as_secs_f64();
        Ok(Propagation::States(next))
    }
}

/// The strategy of `method`.
pub(crate) fn for_method(method: Method) -> Box<dyn BlockStrategy> {
    match method {
        Method::Awq(opts) => Box::new(Awq(opts)),
        Method::Rtn | Method::Gptq | Method::Epmq { .. } => Box::new(Sequential),
    }
}
