//! The block-by-block loop shared by every method: validation, calibration batches, the walk
//! over blocks in forward order, propagation of the calibration states and the report. What
//! happens inside a block is the method's strategy: [`crate::sequential`] (RTN, GPTQ, E-PMQ)
//! or [`crate::awq_strategy`] (AWQ).

use crate::calib::{read_samples, Batcher};
use crate::config::AlphaScope;
pub use crate::config::{PipelineConfig, PipelineInputs};
use crate::experts::Experts;
use crate::job::{BlockJob, Results};
use crate::progress::Progress;
use crate::report::{peak_rss_mib, Phases, Report};
use crate::resume::{Checkpoint, Checkpointing};
use crate::strategy::{self, Propagation};
use anyhow::{bail, Context, Result};
use candle_core::DType;
use pmq_formats::{PackedLinear, ReplacedTensors};
use pmq_models::{load_model_streamed, Batch, BlockModel, MemoBudget, OutputMemo, State};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

const MIB: f64 = (1u64 << 20) as f64;

/// The quantized linears, the unquantized tensors the method changed, and the report.
pub struct PipelineOutput {
    pub layers: BTreeMap<String, PackedLinear>,
    /// Unquantized tensors the method changed (AWQ: the norms and biases its inverse scales
    /// were folded into); a writer must store these instead of the source's values.
    pub tensors: ReplacedTensors,
    pub report: Report,
}

/// Checks what can be checked without loading anything: the methods' needs (calibration,
/// experts), one calibration file per expert, calibration files that exist and are not given
/// twice, the state dtype, and that neither the model (when given: an empty `model_dir` is one
/// still to be merged) nor an expert is a GPTQ-quantized checkpoint. Run before any work (before an inline merge too).
pub fn check_inputs(inputs: &PipelineInputs, cfg: &PipelineConfig) -> Result<()> {
    let method = cfg.method;
    if method.needs_calibration() && inputs.calib.is_empty() {
        bail!(
            "{} needs calibration data: give --calib TASK=FILE for each task",
            method.label()
        );
    }
    if method.needs_experts() && inputs.experts.is_empty() {
        bail!(
            "{} needs the experts: give --expert DIR for each task",
            method.label()
        );
    }
    if !inputs.experts.is_empty() && inputs.experts.len() != inputs.calib.len() {
        bail!(
            "{} experts but {} calibration tasks: expert i pairs with --calib i, give one of each per task",
            inputs.experts.len(),
            inputs.calib.len()
        );
    }
    let mut seen = std::collections::HashSet::new();
    for c in &inputs.calib {
        if !seen.insert(&c.task) {
            bail!("calibration task {:?} is given twice", c.task);
        }
        if !c.path.exists() {
            bail!(
                "calibration file for task {:?} not found: {}",
                c.task,
                c.path.display()
            );
        }
    }
    if !matches!(cfg.state_dtype, DType::F32 | DType::BF16 | DType::F16) {
        bail!(
            "calibration states can be stored as f32, bf16 or f16, not {:?}",
            cfg.state_dtype
        );
    }
    let model_given = !inputs.model_dir.as_os_str().is_empty();
    if let Some(evidence) = model_given
        .then(|| pmq_io::gptq_evidence(&inputs.model_dir))
        .flatten()
    {
        bail!(pmq_io::gptq_refusal(
            &inputs.model_dir,
            &evidence,
            "the model to quantize (--model)"
        ));
    }
    for (i, e) in inputs.experts.iter().enumerate() {
        if let Some(evidence) = pmq_io::gptq_evidence(e) {
            bail!(pmq_io::gptq_refusal(
                e,
                &evidence,
                &format!("expert {} (--expert)", i + 1)
            ));
        }
    }
    Ok(())
}

/// Runs the pipeline. Everything is validated (model, experts, calibration files) before any
/// quantization work starts. `progress` hears of every linear quantized.
pub fn run(
    inputs: &PipelineInputs,
    cfg: &PipelineConfig,
    progress: &dyn Progress,
) -> Result<PipelineOutput> {
    run_checkpointed(inputs, cfg, progress, None)
}

/// [`run`], with a checkpoint written after every block into `checkpoint.dir` and, with
/// `checkpoint.resume`, continuing from the blocks a checkpoint of the same inputs and
/// settings holds ([`crate::resume`]); the result is bit for bit that of an uninterrupted
/// run. The checkpoint is left in place (the caller removes it once the result is stored).
///
/// With `--alpha auto-model` ([`crate::AlphaScope::Model`]) the α search runs first
/// ([`crate::alpha_model`]); the checkpoint serves the final run.
pub fn run_checkpointed(
    inputs: &PipelineInputs,
    cfg: &PipelineConfig,
    progress: &dyn Progress,
    checkpoint: Option<&Checkpointing>,
) -> Result<PipelineOutput> {
    if let Some(auto) = cfg
        .alpha_auto
        .as_ref()
        .filter(|a| a.scope == AlphaScope::Model)
    {
        return crate::alpha_model::run(inputs, cfg, auto, progress, checkpoint);
    }
    Ok(run_inner(inputs, cfg, progress, checkpoint, None)?.0)
}

/// Calibration batches held out of a run (every `k`-th of each task, the last of every run of
/// `k`): not used to fit anything, propagated through the quantized blocks as they are
/// finished.
pub(crate) struct HeldOut {
    /// Per task, the held-out batches.
    pub batches: Vec<Vec<Batch>>,
    /// Per task and batch, the state after the last block (after the run).
    pub states: Vec<Vec<State>>,
}

/// The pipeline, with `holdout_every = Some(k)` holding every `k`-th calibration batch of each
/// task out of the fit and returning its last-block states ([`HeldOut`]).
pub(crate) fn run_inner(
    inputs: &PipelineInputs,
    cfg: &PipelineConfig,
    progress: &dyn Progress,
    checkpoint: Option<&Checkpointing>,
    holdout_every: Option<usize>,
) -> Result<(PipelineOutput, Option<HeldOut>)> {
    if holdout_every.is_some() && checkpoint.is_some() {
        bail!("a run with held-out batches keeps no checkpoint");
    }
    let t0 = Instant::now();
    let method = cfg.method;
    check_inputs(inputs, cfg)?;
    // the linears stay in the checkpoint until their block is quantized (memory: one block)
    let loaded = load_model_streamed(&inputs.model_dir)
        .with_context(|| format!("loading the merged model {}", inputs.model_dir.display()))?;
    let family = loaded.as_block_model().family();
    let batcher = Batcher::new(&inputs.model_dir, &loaded, cfg.max_seq_len)?;
    let mut model = loaded.into_block_model();
    let linears = model.linears();
    let experts = Experts::open(&inputs.experts, &inputs.model_dir, &linears)?;
    let mut warnings = input_warnings(inputs);
    let task_batches = inputs
        .calib
        .iter()
        .map(|spec| {
            let samples = read_samples(spec, family, cfg.samples_per_task)?;
            let empty = samples.iter().filter(|s| s.is_blank()).count();
            if empty == samples.len() {
                bail!(
                    "every calibration sample of task {:?} ({}) is empty",
                    spec.task,
                    spec.path.display()
                );
            }
            if empty > 0 {
                warnings.push(format!(
                    "task {:?}: {empty} of {} calibration samples are empty ({})",
                    spec.task,
                    samples.len(),
                    spec.path.display()
                ));
            }
            batcher
                .batches(&samples, cfg.batch_size)
                .with_context(|| format!("preparing calibration task {:?}", spec.task))
        })
        .collect::<Result<Vec<_>>>()?;
    let (task_batches, mut held) = match holdout_every {
        None => (task_batches, None),
        Some(k) => {
            let (fit, batches) = split_holdout(task_batches, k, inputs)?;
            let states = embed_all(&*model, &batches, DType::F32)?;
            (fit, Some(HeldOut { batches, states }))
        }
    };
    let mut checkpoint = checkpoint
        .map(|c| Checkpoint::open(c, inputs, cfg, family, model.num_blocks()))
        .transpose()?;
    let resume_at = checkpoint.as_ref().map_or(0, Checkpoint::finished_blocks);
    tracing::info!(
        family = ?family,
        blocks = model.num_blocks(),
        linears = linears.len(),
        tasks = task_batches.len(),
        method = method.label(),
        "quantizing"
    );

    progress.start(linears.len());

    let mut timing = Phases {
        load_s: t0.elapsed().as_secs_f64(),
        ..Phases::default()
    };
    let t_embed = Instant::now();
    let mut states = embed_all(&*model, &task_batches, cfg.state_dtype)?;
    timing.embed_s = t_embed.elapsed().as_secs_f64();
    let strategy = strategy::for_method(method);
    let mut results = Results::default();
    // a resumed run: the finished blocks from the checkpoint, their propagation replayed
    let mut wall_before = 0.0;
    let cache_budget = MemoBudget::new(cfg.forward_cache_bytes);
    if let Some(ckpt) = checkpoint.as_ref().filter(|_| resume_at > 0) {
        let t = Instant::now();
        let mut replay = Phases::default();
        // the replay is for the states entering the first unfinished block
        let needs_states = resume_at < model.num_blocks();
        for block in 0..resume_at {
            if needs_states {
                // the replay runs the block as it was before it was quantized
                model.load_block(block)?;
            }
            let next = match needs_states {
                true => Some(strategy.replay_block(&*model, block, &states)?),
                false => None,
            };
            let saved = ckpt.load_block(block)?;
            // the weights the interrupted run went on with after this block
            let (phases, wall) = saved.restore(model.as_mut(), &mut results, progress)?;
            if let Some(next) = next {
                // fresh caches: nothing frozen, nothing kept, a plain forward
                let mut memos = new_memos(&states, &cache_budget);
                states = advance(&*model, block, &states, next, cfg, &mut memos, &mut replay)?;
            }
            model.unload_block(block)?;
            if block + 1 == resume_at {
                // the time spent on the finished blocks, as the interrupted run recorded it
                wall_before = wall;
                timing = Phases {
                    load_s: timing.load_s,
                    embed_s: timing.embed_s,
                    ..phases
                };
            }
        }
        timing.replay_s = t.elapsed().as_secs_f64();
        tracing::info!(block = resume_at, "resumed from the checkpoint");
    }
    for block in resume_at..model.num_blocks() {
        model.load_block(block)?;
        if cfg.time_block_forward && block == resume_at {
            timing.block_forward_s = time_block_forward(&*model, block, &states)?;
        }
        let first_record = results.records.len();
        let mut memos = new_memos(&states, &cache_budget);
        let mut job = BlockJob {
            block,
            model: model.as_mut(),
            states: &states,
            experts: &experts,
            cfg,
            progress,
            timing: &mut timing,
            memos: &mut memos,
        };
        let next = strategy
            .quantize_block(&mut job, &mut results)
            .inspect_err(|_| progress.finish())?;
        // the calibration states leaving the last block feed nothing: no pass computes them
        if block + 1 < model.num_blocks() {
            states = advance(&*model, block, &states, next, cfg, &mut memos, &mut timing)?;
        }
        if let Some(h) = held.as_mut() {
            let t = Instant::now();
            h.states = forward_block(&*model, block, &h.states)?;
            timing.propagate_s += t.elapsed().as_secs_f64();
        }
        if let Some(ckpt) = checkpoint.as_mut() {
            let wall = wall_before + t0.elapsed().as_secs_f64();
            ckpt.save_block(block, &*model, &results, first_record, &timing, wall)
                .inspect_err(|_| progress.finish())?;
        }
        // the quantized weights are in `results` (and the checkpoint): give the memory back
        model.unload_block(block)?;
        tracing::debug!(block, "block quantized");
    }
    progress.finish();
    timing.forward_cache_peak_mib = timing
        .forward_cache_peak_mib
        .max(cache_budget.peak() as f64 / MIB);
    let batches: usize = states.iter().map(Vec::len).sum();
    let blocks = model.num_blocks();
    if blocks > 0 && batches > 0 {
        timing.capture_passes_per_block = timing.capture_calls as f64 / (blocks * batches) as f64;
    }
    let blocks_run = blocks - resume_at;
    if timing.block_forward_s > 0.0 && blocks_run > 0 {
        timing.non_solve_block_forwards = (timing.forward_s
            + timing.hessian_s
            + timing.fold_s
            + timing.metrics_s
            + timing.propagate_s)
            / (timing.block_forward_s * blocks_run as f64);
    }
    let mut settings = crate::config::solver_settings(&cfg.gptq);
    let run_settings = serde_json::json!({
        "method": method,
        "samples_per_task": cfg.samples_per_task,
        "batch_size": cfg.batch_size,
        "max_seq_len": cfg.max_seq_len,
        "true_sequential": cfg.true_sequential,
        "deviation": cfg.deviation,
        "state_dtype": format!("{:?}", cfg.state_dtype).to_lowercase(),
        "fold_precision": cfg.fold_precision,
        "experts": inputs.experts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    });
    if let (Some(s), serde_json::Value::Object(r)) = (settings.as_object_mut(), run_settings) {
        s.extend(r);
    }
    for r in &results.records {
        for w in &r.warnings {
            tracing::warn!("{}: {w}", r.name);
            warnings.push(format!("{}: {w}", r.name));
        }
    }
    let report = Report {
        model: inputs.model_dir.display().to_string(),
        settings,
        tasks: inputs.calib.iter().map(|c| c.task.clone()).collect(),
        linears: results.records,
        wall_seconds: wall_before + t0.elapsed().as_secs_f64(),
        resumed_at_block: (resume_at > 0).then_some(resume_at),
        warnings,
        peak_rss_mib: peak_rss_mib(),
        phases: timing,
        alpha_search: None,
    };
    let mut tensors = ReplacedTensors::new();
    for name in &results.changed {
        let t = model.tensor(name)?;
        tensors.insert(name.clone(), t.flatten_all()?.to_vec1::<f32>()?);
    }
    let output = PipelineOutput {
        layers: results.layers,
        tensors,
        report,
    };
    Ok((output, held))
}

/// Every batch embedded, stored as `dtype`.
fn embed_all(
    model: &dyn BlockModel,
    task_batches: &[Vec<Batch>],
    dtype: DType,
) -> Result<Vec<Vec<State>>> {
    Ok(task_batches
        .iter()
        .map(|batches| {
            batches
                .iter()
                .map(|b| model.embed(b)?.with_hidden_dtype(dtype))
                .collect::<pmq_models::Result<Vec<_>>>()
        })
        .collect::<pmq_models::Result<_>>()?)
}

/// `block` run plainly (no capture, no cache) on every state, batches in parallel.
pub(crate) fn forward_block(
    model: &dyn BlockModel,
    block: usize,
    states: &[Vec<State>],
) -> Result<Vec<Vec<State>>> {
    Ok(states
        .iter()
        .map(|task| {
            task.par_iter()
                .map(|s| model.block_forward(block, s, None))
                .collect::<pmq_models::Result<Vec<_>>>()
        })
        .collect::<pmq_models::Result<_>>()?)
}

/// Per task, its calibration batches.
type TaskBatches = Vec<Vec<Batch>>;

/// Splits each task's batches into the fit batches and the held-out ones (every `k`-th, the
/// last of every run of `k`); each task must keep at least one of each.
fn split_holdout(
    task_batches: TaskBatches,
    k: usize,
    inputs: &PipelineInputs,
) -> Result<(TaskBatches, TaskBatches)> {
    if k < 2 {
        bail!("holding out every {k}th batch leaves nothing to fit: give at least 2");
    }
    let mut fit = Vec::with_capacity(task_batches.len());
    let mut held = Vec::with_capacity(task_batches.len());
    for (batches, spec) in task_batches.into_iter().zip(&inputs.calib) {
        let n = batches.len();
        let (h, f): (Vec<_>, Vec<_>) = batches
            .into_iter()
            .enumerate()
            .partition(|(j, _)| j % k == k - 1);
        if h.is_empty() || f.is_empty() {
            bail!(
                "task {:?} has {n} calibration batch(es): too few to hold out every {k}th and fit on the rest (give more samples per task or a smaller --batch-size)",
                spec.task
            );
        }
        fit.push(f.into_iter().map(|(_, b)| b).collect());
        held.push(h.into_iter().map(|(_, b)| b).collect());
    }
    Ok((fit, held))
}

/// One empty forward cache per calibration state (same layout), drawing on `budget`.
fn new_memos(states: &[Vec<State>], budget: &Arc<MemoBudget>) -> Vec<Vec<OutputMemo>> {
    states
        .iter()
        .map(|task| {
            task.iter()
                .map(|_| OutputMemo::new(budget.clone()))
                .collect()
        })
        .collect()
}

/// Seconds of one plain forward pass of `block` over every state (batches in parallel, as the
/// pipeline's passes run), the output dropped: the median of three timed passes after an
/// untimed one. The first forward of a run also pays for faulting in the memory its tensors
/// are allocated from (the pipeline's own passes reuse it), which made the unit up to 1.6× as
/// long; and one warm pass alone read anywhere from 1.40 to 1.60 s on the pipeline benchmark,
/// moving every ratio in this unit by as much.
fn time_block_forward(model: &dyn BlockModel, block: usize, states: &[Vec<State>]) -> Result<f64> {
    let pass = || -> Result<f64> {
        let t = Instant::now();
        for task in states {
            task.par_iter()
                .try_for_each(|s| -> pmq_models::Result<()> {
                    model.block_forward(block, &s.with_hidden_dtype(DType::F32)?, None)?;
                    Ok(())
                })?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    pass()?;
    let mut timed = [pass()?, pass()?, pass()?];
    timed.sort_by(f64::total_cmp);
    Ok(timed[1])
}

/// The states entering block `block + 1`: `next` as the strategy declared it, from `states`
/// (the states entering `block`, with their forward caches `memos`), stored as
/// `cfg.state_dtype`.
fn advance(
    model: &dyn BlockModel,
    block: usize,
    states: &[Vec<State>],
    next: Propagation,
    cfg: &PipelineConfig,
    memos: &mut [Vec<OutputMemo>],
    timing: &mut Phases,
) -> Result<Vec<Vec<State>>> {
    Ok(match next {
        Propagation::States(next) => next
            .iter()
            .map(|task| {
                task.iter()
                    .map(|s| s.with_hidden_dtype(cfg.state_dtype))
                    .collect::<pmq_models::Result<Vec<_>>>()
            })
            .collect::<pmq_models::Result<_>>()?,
        Propagation::QuantizedOutputs => {
            let t = Instant::now();
            // the last pass over the block: reuse what the caches hold, keep nothing new
            memos
                .iter_mut()
                .flatten()
                .for_each(OutputMemo::stop_keeping);
            // batches in parallel (each forward's products also use the pool)
            let next = states
                .iter()
                .zip(memos.iter_mut())
                .map(|(task, task_memos)| {
                    task.par_iter()
                        .zip(task_memos.par_iter_mut())
                        .map(|(s, m)| {
                            let s = s.with_hidden_dtype(DType::F32)?;
                            model
                                .block_forward_memo(block, &s, None, m)?
                                .with_hidden_dtype(cfg.state_dtype)
                        })
                        .collect::<pmq_models::Result<Vec<_>>>()
                })
                .collect::<pmq_models::Result<_>>()?;
            timing.propagate_s += t.elapsed().as_secs_f64();
            next
        }
    })
}

/// Warnings about the inputs that do not make the run meaningless: an expert given twice, or
/// the model to quantize given as an expert (its task vector is zero). Also logged.
fn input_warnings(inputs: &PipelineInputs) -> Vec<String> {
    let experts = &inputs.experts;
    let out: Vec<String> = pmq_io::checkpoint_aliases(&inputs.model_dir, experts)
        .into_iter()
        .map(|a| match a {
            pmq_io::Alias::Reference(i) => format!(
                "expert {} ({}) is the model being quantized",
                i + 1,
                experts[i].display()
            ),
            pmq_io::Alias::Earlier { earlier, later } => format!(
                "experts {} and {} are the same checkpoint ({})",
                earlier + 1,
                later + 1,
                experts[later].display()
            ),
        })
        .collect();
    for w in &out {
        tracing::warn!("{w}");
    }
    out
}
