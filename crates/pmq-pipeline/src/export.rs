//! Quantize a model and write it: the library form of `pmq quantize` (without the inline
//! merge, which is `pmq_merge::merge` on its own), used by the CLI and by the benchmark.
//!
//! The pipeline ([`crate::run`]) quantizes every linear; the writers of `pmq-formats` store
//! the result next to the report (`pmq_report.json`, `pmq_report.md`) as an HF GPTQ
//! checkpoint, as fake-quant safetensors, or both (`OUT/gptq`, `OUT/fake`), or as GGUF for
//! llama.cpp (`OUT/model.gguf`; with fake-quant: `OUT/gguf`, `OUT/fake`). Every output is
//! written to a temporary directory and renamed into place once complete. With
//! [`QuantizeOptions::checkpoint`], the finished blocks are checkpointed (`OUT.pmq-resume`)
//! until then, and a killed run can be resumed ([`crate::resume`]).

use crate::config::{PipelineConfig, PipelineInputs};
use crate::progress::Progress;
use crate::report::{peak_rss_mib, LinearRecord, Phases, Report};
use crate::resume::{remove_checkpoint, remove_checkpoint_without_blocks, Checkpointing};
use anyhow::{bail, Result};
use pmq_core::packing::CheckpointFormat;
use pmq_formats::fake_quant::write_fake_quant;
use pmq_formats::gguf::{write_gguf, GgufOptions};
use pmq_formats::gptq_checkpoint::{write_gptq, GptqSettings};
use pmq_formats::{Destination, QuantizedModel};
use pmq_io::{AtomicDir, TensorStore};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// The on-disk form of the quantized model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// HF GPTQ checkpoint (v1 when symmetric, gptq_v2 when asymmetric).
    Gptq,
    /// Dequantized weights as ordinary safetensors.
    Fake,
    /// Both, in `OUT/gptq` and `OUT/fake`.
    Both,
    /// GGUF (`OUT/model.gguf`) for llama.cpp; the linears must be on a GGUF grid.
    Gguf,
    /// GGUF and fake-quant, in `OUT/gguf` and `OUT/fake`.
    GgufFake,
}

/// What to quantize, how, and where to write it.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub inputs: PipelineInputs,
    pub config: PipelineConfig,
    /// Output directory.
    pub out: PathBuf,
    pub format: OutputFormat,
    /// GGUF settings (template, unquantized tensors' type), used by the GGUF formats.
    pub gguf: GgufOptions,
    /// Replace an existing output directory (only once everything succeeded).
    pub overwrite: bool,
    /// Keep a checkpoint after every block (and resume from one), removed once the output is
    /// written ([`crate::resume`]; `pmq quantize`: [`Checkpointing::next_to`] the output);
    /// `None`: no checkpoints.
    pub checkpoint: Option<Checkpointing>,
}

/// The one-line summary of a quantization run (what `pmq quantize` prints as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct QuantizeSummary {
    pub out: PathBuf,
    pub method: crate::Method,
    pub linears: usize,
    pub replaced_tensors: usize,
    pub tasks: Vec<String>,
    /// Pipeline and writing, seconds.
    pub wall_seconds: f64,
    /// Peak resident memory of the process, MiB (see [`crate::report::reset_peak_rss`]).
    pub peak_rss_mib: Option<f64>,
    pub phases: Phases,
    /// Mean over linears of the Eq. 9 quantization deviation.
    pub mean_quant_deviation: Option<f64>,
    /// Mean over linears of the RMS expert error.
    pub rms_expert_error: Option<f64>,
    pub format: OutputFormat,
}

/// The settings recorded in a GPTQ checkpoint's `quantization_config` for a run with `cfg`.
pub fn gptq_settings(cfg: &PipelineConfig) -> GptqSettings {
    let g = &cfg.gptq;
    GptqSettings {
        bits: g.grid.bits,
        group_size: g.grid.group_size_i64(),
        sym: g.grid.sym,
        desc_act: g.act_order,
        static_groups: g.static_groups,
        true_sequential: cfg.true_sequential,
        damp_percent: g.damping.percdamp,
        format: if g.grid.sym {
            CheckpointFormat::V1
        } else {
            CheckpointFormat::V2
        },
        quantizer: format!("pmq:{} {}", env!("CARGO_PKG_VERSION"), cfg.method.label()),
    }
}

/// Quantizes `opts.inputs.model_dir` and writes it to `opts.out`; returns the report and the
/// summary. An existing output is refused without `overwrite`, before any work.
pub fn quantize_and_write(
    opts: &QuantizeOptions,
    progress: &dyn Progress,
) -> Result<(Report, QuantizeSummary)> {
    if opts.out.exists() && !opts.overwrite {
        bail!(
            "output {} already exists (use --overwrite to replace it)",
            opts.out.display()
        );
    }
    let out = crate::run_checkpointed(
        &opts.inputs,
        &opts.config,
        progress,
        opts.checkpoint.as_ref(),
    )
    .inspect_err(|_| {
        // a checkpoint is kept only with something to resume from
        if let Some(c) = &opts.checkpoint {
            let _ = remove_checkpoint_without_blocks(&c.dir);
        }
    })?;
    let replaced = &out.tensors;
    let extra: Vec<(&str, Vec<u8>)> = vec![
        ("pmq_report.json", serde_json::to_vec_pretty(&out.report)?),
        ("pmq_report.md", out.report.to_markdown().into_bytes()),
    ];
    let src = TensorStore::open_dir(&opts.inputs.model_dir)?;
    let settings = gptq_settings(&opts.config);
    let t_write = Instant::now();
    let model = QuantizedModel::new(&src, &out.layers).with_replaced(replaced);
    let dest = |dir, overwrite| Destination {
        dir,
        extra_files: &extra,
        overwrite,
    };
    match opts.format {
        OutputFormat::Gptq => write_gptq(&model, &settings, &dest(&opts.out, opts.overwrite))?,
        OutputFormat::Fake => write_fake_quant(&model, None, &dest(&opts.out, opts.overwrite))?,
        OutputFormat::Both => {
            let dir = AtomicDir::create(&opts.out, opts.overwrite)?;
            let (gptq, fake) = (dir.path().join("gptq"), dir.path().join("fake"));
            write_gptq(&model, &settings, &dest(&gptq, false))?;
            write_fake_quant(&model, None, &dest(&fake, false))?;
            dir.commit()?;
        }
        OutputFormat::Gguf => write_gguf(&model, &opts.gguf, &dest(&opts.out, opts.overwrite))?,
        OutputFormat::GgufFake => {
            let dir = AtomicDir::create(&opts.out, opts.overwrite)?;
            let (gguf, fake) = (dir.path().join("gguf"), dir.path().join("fake"));
            write_gguf(&model, &opts.gguf, &dest(&gguf, false))?;
            write_fake_quant(&model, None, &dest(&fake, false))?;
            dir.commit()?;
        }
    }
    if let Some(c) = &opts.checkpoint {
        // the output is complete: the checkpoint is no longer needed
        if let Err(e) = remove_checkpoint(&c.dir) {
            tracing::warn!("could not remove the checkpoint {}: {e:#}", c.dir.display());
        }
    }
    let mut phases = out.report.phases.clone();
    phases.write_s = t_write.elapsed().as_secs_f64();
    let r = &out.report;
    let mean = |f: &dyn Fn(&LinearRecord) -> Option<f64>| {
        let v: Vec<f64> = r.linears.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let summary = QuantizeSummary {
        out: opts.out.clone(),
        // with --alpha auto-model, the α the model was quantized with
        method: r
            .alpha_search
            .as_ref()
            .map_or(opts.config.method, |s| crate::Method::Epmq {
                alpha: s.alpha,
            }),
        linears: r.linears.len(),
        replaced_tensors: replaced.len(),
        tasks: r.tasks.clone(),
        wall_seconds: r.wall_seconds + phases.write_s,
        peak_rss_mib: peak_rss_mib(),
        phases,
        mean_quant_deviation: mean(&|l| l.deviation.as_ref().map(|d| d.quant)),
        rms_expert_error: mean(&|l| l.deviation.as_ref().and_then(|d| d.expert_rms)),
        format: opts.format,
    };
    Ok((out.report, summary))
}
