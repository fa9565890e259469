//! The block-by-block loop shared by every method: validation, calibration batches, the walk
//! over blocks in forward order, propagation of the calibration states and the report. What
//! happens inside a block is the method's strategy: [`crate::sequential`] (RTN, GPTQ, E-PMQ)
//! or [`crate::awq_strategy`] (AWQ).

use crate::calib::{read_samples, Batcher, CalibSpec};
use crate::experts::Experts;
use crate::method::Method;
use crate::report::{peak_rss_mib, LinearRecord, Report};
use crate::{awq_strategy, sequential};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use faer::{Mat, MatRef};
use indicatif::{ProgressBar, ProgressStyle};
use pmq_core::gptq::GptqConfig;
use pmq_core::matrix::{from_row_major_f32, to_row_major_f32};
use pmq_core::QuantizedLayer;
use pmq_formats::{PackedLinear, ReplacedTensors};
use pmq_models::{load_model, BlockModel, State};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

/// What to quantize with what.
#[derive(Clone, Debug)]
pub struct PipelineInputs {
    /// The merged model (HF directory).
    pub model_dir: PathBuf,
    /// Expert checkpoints, expert i paired with calibration task i.
    pub experts: Vec<PathBuf>,
    /// One calibration file per task.
    pub calib: Vec<CalibSpec>,
}

/// How to quantize.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub method: Method,
    /// Grid, damping, block size, act-order, static groups.
    pub gptq: GptqConfig,
    pub samples_per_task: usize,
    pub batch_size: usize,
    pub max_seq_len: usize,
    pub show_progress: bool,
}

/// The quantized linears, the unquantized tensors the method changed, and the report.
pub struct PipelineOutput {
    pub layers: BTreeMap<String, PackedLinear>,
    /// Unquantized tensors the method changed (AWQ: the norms and biases its inverse scales
    /// were folded into); a writer must store these instead of the source's values.
    pub tensors: ReplacedTensors,
    pub report: Report,
}

/// One block's work for a strategy: the model, the calibration states entering the block
/// (per task, per batch), the experts and the settings.
pub(crate) struct BlockJob<'a> {
    pub block: usize,
    pub model: &'a mut dyn BlockModel,
    pub states: &'a [Vec<State>],
    pub experts: &'a Experts,
    pub cfg: &'a PipelineConfig,
    pub bar: &'a ProgressBar,
}

/// Everything quantized so far.
#[derive(Default)]
pub(crate) struct Results {
    pub layers: BTreeMap<String, PackedLinear>,
    pub records: Vec<LinearRecord>,
    /// Names of unquantized tensors changed in the model.
    pub changed: BTreeSet<String>,
}

impl Results {
    /// Stores a quantized linear and its report entry.
    pub fn push(&mut self, record: LinearRecord, layer: QuantizedLayer) {
        self.layers
            .insert(record.name.clone(), PackedLinear::from(layer));
        self.records.push(record);
    }
}

/// A 2-D tensor as an f64 matrix.
pub(crate) fn tensor_to_mat(t: &Tensor) -> Result<Mat<f64>> {
    let (r, c) = t.dims2()?;
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(from_row_major_f32(r, c, &v))
}

/// An f64 matrix as a 2-D f32 tensor.
pub(crate) fn mat_to_tensor(m: MatRef<'_, f64>) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        to_row_major_f32(m),
        (m.nrows(), m.ncols()),
        &Device::Cpu,
    )?)
}

/// Runs the pipeline. Everything is validated (model, experts, calibration files) before any
/// quantization work starts.
pub fn run(inputs: &PipelineInputs, cfg: &PipelineConfig) -> Result<PipelineOutput> {
    let t0 = Instant::now();
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
    }
    let loaded = load_model(&inputs.model_dir)
        .with_context(|| format!("loading the merged model {}", inputs.model_dir.display()))?;
    let family = loaded.as_block_model().family();
    let batcher = Batcher::new(&inputs.model_dir, &loaded, cfg.max_seq_len)?;
    let mut model = loaded.into_block_model();
    let linears = model.linears();
    let experts = Experts::open(&inputs.experts, &inputs.model_dir, &linears)?;
    let task_batches = inputs
        .calib
        .iter()
        .map(|spec| {
            let samples = read_samples(spec, family, cfg.samples_per_task)?;
            batcher
                .batches(&samples, cfg.batch_size)
                .with_context(|| format!("preparing calibration task {:?}", spec.task))
        })
        .collect::<Result<Vec<_>>>()?;
    tracing::info!(
        family = ?family,
        blocks = model.num_blocks(),
        linears = linears.len(),
        tasks = task_batches.len(),
        method = method.label(),
        "quantizing"
    );

    let bar = if cfg.show_progress {
        ProgressBar::new(linears.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );

    let mut states: Vec<Vec<State>> = task_batches
        .iter()
        .map(|batches| {
            batches
                .iter()
                .map(|b| model.embed(b))
                .collect::<pmq_models::Result<Vec<_>>>()
        })
        .collect::<pmq_models::Result<_>>()?;
    let mut results = Results::default();
    for block in 0..model.num_blocks() {
        let mut job = BlockJob {
            block,
            model: model.as_mut(),
            states: &states,
            experts: &experts,
            cfg,
            bar: &bar,
        };
        let next = match method {
            Method::Awq(opts) => Some(awq_strategy::quantize_block(&mut job, &opts, &mut results)?),
            _ => {
                sequential::quantize_block(&mut job, &mut results)?;
                None
            }
        };
        states = match next {
            // AWQ: the full-precision block outputs, computed before quantizing
            Some(next) => next,
            // the quantized block's outputs feed the next block
            None => states
                .iter()
                .map(|task| {
                    task.iter()
                        .map(|s| model.block_forward(block, s, None))
                        .collect::<pmq_models::Result<Vec<_>>>()
                })
                .collect::<pmq_models::Result<_>>()?,
        };
        tracing::debug!(block, "block quantized");
    }
    bar.finish_and_clear();
    let g = &cfg.gptq;
    let report = Report {
        model: inputs.model_dir.display().to_string(),
        settings: serde_json::json!({
            "method": method,
            "bits": g.grid.bits,
            "group_size": g.grid.group_size_i64(),
            "sym": g.grid.sym,
            "act_order": g.act_order,
            "static_groups": g.static_groups,
            "damp": g.damping.percdamp,
            "block_size": g.block_size,
            "samples_per_task": cfg.samples_per_task,
            "batch_size": cfg.batch_size,
            "max_seq_len": cfg.max_seq_len,
            "experts": inputs.experts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        }),
        tasks: inputs.calib.iter().map(|c| c.task.clone()).collect(),
        linears: results.records,
        wall_seconds: t0.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
    };
    let mut tensors = ReplacedTensors::new();
    for name in &results.changed {
        let t = model.tensor(name)?;
        tensors.insert(name.clone(), t.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(PipelineOutput {
        layers: results.layers,
        tensors,
        report,
    })
}
