//! The block-by-block loop shared by every method.

use crate::calib::{read_samples, Batcher, CalibSpec};
use crate::deviation::deviation;
use crate::experts::Experts;
use crate::method::{solve, LinearProblem, Method};
use crate::report::{peak_rss_mib, LinearRecord, Report};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use faer::Mat;
use indicatif::{ProgressBar, ProgressStyle};
use pmq_core::gptq::GptqConfig;
use pmq_core::hessian::HessianAccumulator;
use pmq_core::matrix::{from_row_major_f32, to_row_major_f32};
use pmq_formats::PackedLinear;
use pmq_models::{load_model, State};
use std::collections::{BTreeMap, HashMap};
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

/// The quantized linears and the report.
pub struct PipelineOutput {
    pub layers: BTreeMap<String, PackedLinear>,
    pub report: Report,
}

fn tensor_to_mat(t: &Tensor) -> Result<Mat<f64>> {
    let (r, c) = t.dims2()?;
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(from_row_major_f32(r, c, &v))
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
    let mut layers = BTreeMap::new();
    let mut records = Vec::new();
    let n_tasks = states.len();

    for block in 0..model.num_blocks() {
        for (gi, group) in model.block_groups(block)?.into_iter().enumerate() {
            // One Hessian per (linear, task), from the current quantized trajectory.
            let mut acc: HashMap<String, Vec<HessianAccumulator>> = group
                .iter()
                .map(|l| {
                    (
                        l.name.clone(),
                        (0..n_tasks)
                            .map(|_| HessianAccumulator::new(l.in_features))
                            .collect(),
                    )
                })
                .collect();
            // Linears fed the very same tensor (q, k, v) share one accumulation; the sharing
            // pattern is fixed by the architecture and checked on every forward.
            let mut aliases: Option<HashMap<String, String>> = None;
            for (t, task_states) in states.iter().enumerate() {
                for s in task_states {
                    let mut seen: HashMap<candle_core::TensorId, String> = HashMap::new();
                    let mut call_aliases: HashMap<String, String> = HashMap::new();
                    let mut capture = |name: &str, x: &Tensor| -> pmq_models::Result<()> {
                        if !acc.contains_key(name) {
                            return Ok(());
                        }
                        if let Some(src) = seen.get(&x.id()) {
                            call_aliases.insert(name.to_string(), src.clone());
                            return Ok(());
                        }
                        seen.insert(x.id(), name.to_string());
                        let v: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                        acc.get_mut(name).expect("checked")[t].add_rows_f32(&v);
                        Ok(())
                    };
                    model.block_forward(block, s, Some(&mut capture))?;
                    match &aliases {
                        None => aliases = Some(call_aliases),
                        Some(a) if *a == call_aliases => {}
                        Some(_) => bail!(
                            "block {block}: the linears sharing an input changed between batches"
                        ),
                    }
                }
            }
            for (name, src) in aliases.unwrap_or_default() {
                let copy = acc[&src].clone();
                acc.insert(name, copy);
            }
            for spec in &group {
                let t_lin = Instant::now();
                bar.set_message(spec.name.clone());
                let per_task = acc.remove(&spec.name).expect("accumulated above");
                let tokens: Vec<usize> = per_task.iter().map(|a| a.tokens()).collect();
                let hessians: Vec<Mat<f64>> =
                    per_task.into_iter().map(|a| a.into_hessian()).collect();
                let merged = tensor_to_mat(&model.linear_weight(&spec.name)?)?;
                let expert_weights = if experts.is_empty() {
                    Vec::new()
                } else {
                    experts.weights(spec)?
                };
                let problem = LinearProblem {
                    merged: &merged,
                    hessians: &hessians,
                    experts: &expert_weights,
                };
                let sol = solve(method, &problem, &cfg.gptq)
                    .with_context(|| format!("quantizing {}", spec.name))?;
                let q = &sol.layer.dequant;
                let dev = (!hessians.is_empty())
                    .then(|| deviation(q, &merged, &expert_weights, &hessians));
                let w = Tensor::from_vec(
                    to_row_major_f32(q.as_ref()),
                    (q.nrows(), q.ncols()),
                    &Device::Cpu,
                )?;
                model.set_linear_weight(&spec.name, w)?;
                records.push(LinearRecord {
                    name: spec.name.clone(),
                    block,
                    group: gi,
                    rows: spec.out_features,
                    cols: spec.in_features,
                    tokens,
                    objective_rtn: sol.objective_rtn,
                    objective: sol.objective,
                    percdamp: sol.percdamp,
                    damping: sol.damping,
                    lambda: sol.lambda,
                    extra_damping: sol.extra_damping,
                    seconds: t_lin.elapsed().as_secs_f64(),
                    deviation: dev,
                });
                layers.insert(spec.name.clone(), PackedLinear::from(sol.layer));
                bar.inc(1);
            }
        }
        // The quantized block's outputs feed the next block.
        for task_states in states.iter_mut() {
            for s in task_states.iter_mut() {
                *s = model.block_forward(block, s, None)?;
            }
        }
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
        linears: records,
        wall_seconds: t0.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
    };
    Ok(PipelineOutput { layers, report })
}
