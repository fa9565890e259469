//! `pmq quantize`: layer-wise post-merge quantization of a whole model (RTN, GPTQ, E-PMQ,
//! AWQ), optionally merging the experts first, written as fake-quant safetensors and/or an HF
//! GPTQ checkpoint with a per-layer report. AWQ's folded norms/biases are written with the
//! quantized linears (both formats). The finished blocks are checkpointed in OUT.pmq-resume
//! until OUT is written; `--resume` continues a killed run from there.

use crate::merge_cmd::{run_merge, MergeOptions, MethodArg as MergeMethodArg};
use crate::quant_flags::{AlphaArg, QuantFlags};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use pmq_core::{GridKind, ScalePrecision};
use pmq_formats::gguf::{GgufOptions, Unquantized};
use pmq_pipeline::{
    quantize_and_write, AlphaScope, AutoAlpha, AwqOptions, CalibSpec, Checkpointing, DeviationMode,
    Method, ModelAlphaCriterion, OutputFormat, PipelineConfig, PipelineInputs, Progress,
    QuantizeOptions,
};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QuantMethodArg {
    /// Round to nearest.
    Rtn,
    /// GPTQ on the merged model with all tasks' inputs (naive post-merge quantization).
    Gptq,
    /// Expert-guided post-merge quantization with merged-weight anchoring.
    Epmq,
    /// Activation-aware weight quantization (AutoAWQ): scale search, exact folds, clip, RTN.
    Awq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// HF GPTQ checkpoint (v1 when symmetric, gptq_v2 when asymmetric).
    Gptq,
    /// Dequantized weights as ordinary safetensors.
    Fake,
    /// Both, in OUT/gptq and OUT/fake.
    Both,
    /// GGUF for llama.cpp (OUT/model.gguf), quantized on a GGUF grid (--grid).
    Gguf,
    /// GGUF and fake-quant, in OUT/gguf and OUT/fake.
    GgufFake,
}

impl FormatArg {
    /// Whether a GGUF file is written.
    fn writes_gguf(self) -> bool {
        matches!(self, FormatArg::Gguf | FormatArg::GgufFake)
    }

    /// Whether a GPTQ checkpoint is written.
    fn writes_gptq(self) -> bool {
        matches!(self, FormatArg::Gptq | FormatArg::Both)
    }
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The merged model directory (HF layout). Or use --merge with --base.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    #[arg(long, value_enum)]
    method: QuantMethodArg,
    /// Expert checkpoint; repeat, in the order of --calib.
    #[arg(long = "expert", value_name = "DIR")]
    experts: Vec<PathBuf>,
    /// Calibration file of one task, TASK=FILE; repeat, in the order of --expert.
    #[arg(long = "calib", value_name = "TASK=FILE")]
    calib: Vec<CalibSpec>,
    #[arg(long, default_value_t = 256)]
    samples_per_task: usize,
    #[command(flatten)]
    q: QuantFlags,
    /// AWQ: number of scale ratios r = i/N searched.
    #[arg(long, default_value_t = 20)]
    awq_grid: usize,
    /// AWQ: llm-awq's activation-only scales s = x̄^r instead of AutoAWQ's x̄^r / w̄^(1−r).
    #[arg(long)]
    awq_act_scales: bool,
    /// AWQ: skip the clipping search (plain RTN after scaling).
    #[arg(long)]
    awq_no_clip: bool,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Truncate calibration texts to this many tokens.
    #[arg(long, default_value_t = 128)]
    max_seq_len: usize,
    /// Settings of a published setup: `paper-llama` is the E-PMQ paper's Llama setting (groups
    /// of 32 input columns, batches of 4 samples, samples of up to 512 tokens), in place of
    /// --group-size, --batch-size and --max-seq-len.
    #[arg(long, value_enum, conflicts_with_all = ["group_size", "batch_size", "max_seq_len"])]
    preset: Option<PresetArg>,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = FormatArg::Gptq)]
    format: FormatArg,
    /// GGUF: a GGUF that llama.cpp's convert_hf_to_gguf.py wrote for the unquantized model;
    /// its tokenizer keys (and any key pmq does not write itself) are copied from it.
    #[arg(long, value_name = "FILE")]
    gguf_template: Option<PathBuf>,
    /// GGUF: storage of the tensors that are not quantized (embeddings, norms, biases; 1-D
    /// tensors are always f32, as llama.cpp's converter writes them).
    #[arg(long, value_enum, default_value_t = GgufUnquantizedArg::F32)]
    gguf_unquantized: GgufUnquantizedArg,
    /// Merge the --expert checkpoints onto --base first (then quantize the result).
    #[arg(long, value_enum, value_name = "MERGE_METHOD")]
    merge: Option<MergeMethodArg>,
    /// Base checkpoint for --merge.
    #[arg(long, value_name = "DIR")]
    base: Option<PathBuf>,
    #[command(flatten)]
    merge_options: MergeOptions,
    /// Replace an existing output directory (only once everything succeeded).
    #[arg(long)]
    overwrite: bool,
    /// Capture the inputs of all a block's linears in one forward pass before quantizing any
    /// of them (GPTQModel's `true_sequential=False`); by default each group of linears sees
    /// the outputs of the groups quantized before it. For parity with such runs, not for
    /// speed: with the forward cache the default computes each linear about once per block,
    /// this mode twice (the capture on the unquantized block, then its quantized outputs), so
    /// it is the slower of the two here (bench/pipeline).
    #[arg(long)]
    no_true_sequential: bool,
    /// The Eq. 9 deviation split in the report: `total` (over all tasks; memory flat in the
    /// number of tasks) or `per-task` (every task's split; keeps one Hessian per task).
    #[arg(long, value_enum, default_value_t = DeviationArg::Total)]
    deviation: DeviationArg,
    /// Storage of the calibration states kept between blocks: bf16 or f16 halve their memory
    /// (the activations are rounded once per block); computation stays f32.
    #[arg(long, value_enum, default_value_t = StateDtypeArg::F32)]
    state_dtype: StateDtypeArg,
    /// Memory (MiB) for the outputs of a block's quantized linears, kept between the block's
    /// capture passes instead of recomputed: about one block forward of linear work per
    /// block instead of one per group. 0 recomputes everything; results are the same.
    #[arg(long, value_name = "MIB", default_value_t = (pmq_pipeline::DEFAULT_FORWARD_CACHE_BYTES >> 20) as u64)]
    forward_cache_mib: u64,
    /// --alpha auto / auto-model: the α values tried (per linear / per model) [default: 0,0.01,0.1,1,10].
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    alpha_grid: Option<Vec<f64>>,
    /// --alpha auto / auto-model: hold out every N-th calibration batch of each task to score
    /// the α grid (the final quantization uses all batches) [default: 2 with auto-model, 4 with
    /// auto].
    #[arg(long)]
    alpha_holdout_every: Option<usize>,
    /// --alpha auto-model: what the candidates are scored by on the held-out batches —
    /// `head-kl` (each expert's classification head: KL of its predictions on the quantized
    /// model's embeddings from those on the expert's; BERT experts with pmq_head.safetensors)
    /// or `hidden-state` (relative error of the last block's output) [default: head-kl where
    /// every expert has a head, else hidden-state].
    #[arg(long, value_enum)]
    alpha_criterion: Option<AlphaCriterionArg>,
    /// Benchmark aid: time plain forward passes of the first block (the median of three,
    /// after an untimed warm-up pass), so that the report gives the time outside the solver in
    /// block-forward units.
    #[arg(long)]
    time_block_forward: bool,
    /// Continue an interrupted run from its checkpoint OUT.pmq-resume (written after every
    /// block, removed once OUT is written): the finished blocks are taken from it and the
    /// result is the same, byte for byte, as an uninterrupted run's. The inputs and settings
    /// must be the interrupted run's. Without --resume an old checkpoint is replaced.
    #[arg(long)]
    resume: bool,
    /// Testing aid: fail right after block N's checkpoint was written, as if killed there.
    #[arg(long, value_name = "N", hide = true)]
    stop_after_block: Option<usize>,
}

/// `--gguf-unquantized`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GgufUnquantizedArg {
    F32,
    F16,
}

/// `--preset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// Group 32, batch 4, 512 tokens (the E-PMQ paper's Llama-3-8B setting).
    PaperLlama,
}

/// The grid: `--grid`, or Q4_0 for GGUF output and the uniform grid otherwise; a grid the
/// output format cannot store is refused before any work.
fn grid_kind(args: &QuantizeArgs) -> Result<GridKind> {
    let gguf_out = args.format.writes_gguf();
    let kind = match args.q.grid {
        Some(g) => g.kind(),
        None if gguf_out => GridKind::GgufQ4_0,
        None => GridKind::Uniform,
    };
    if gguf_out && kind.is_uniform() {
        bail!("--format gguf needs one of GGUF's grids: --grid q4_0, q4_1 or q8_0");
    }
    if kind.is_gguf() && args.format.writes_gptq() {
        bail!(
            "--grid {} is GGUF's block grid, which a GPTQ checkpoint cannot declare: use --format gguf, gguf-fake or fake",
            kind.name()
        );
    }
    Ok(kind)
}

/// `--state-dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StateDtypeArg {
    F32,
    Bf16,
    F16,
}

/// `--deviation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviationArg {
    Total,
    PerTask,
}

/// `--alpha-criterion`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AlphaCriterionArg {
    HeadKl,
    HiddenState,
}

/// `--alpha auto` / `auto-model`: the grid, hold-out and scope, checked.
fn alpha_auto(args: &QuantizeArgs, method: &Method) -> Result<Option<AutoAlpha>> {
    let scope = match args.q.alpha {
        AlphaArg::Auto => Some(AlphaScope::Linear),
        AlphaArg::AutoModel => Some(AlphaScope::Model),
        AlphaArg::Fixed(_) => None,
    };
    let default = AutoAlpha::default();
    let Some(scope) = scope else {
        if args.alpha_grid.is_some()
            || args.alpha_holdout_every.is_some()
            || args.alpha_criterion.is_some()
        {
            bail!(
                "--alpha-grid, --alpha-holdout-every and --alpha-criterion only apply with --alpha auto or auto-model"
            );
        }
        return Ok(None);
    };
    if !matches!(method, Method::Epmq { .. }) {
        bail!("--alpha auto / auto-model applies to --method epmq");
    }
    let grid = args.alpha_grid.clone().unwrap_or(default.grid);
    if grid.is_empty() || grid.iter().any(|a| !(a.is_finite() && *a >= 0.0)) {
        bail!("--alpha-grid must list finite values ≥ 0; got {grid:?}");
    }
    if args.alpha_criterion.is_some() && scope != AlphaScope::Model {
        bail!("--alpha-criterion applies to --alpha auto-model");
    }
    let criterion = args.alpha_criterion.map(|c| match c {
        AlphaCriterionArg::HeadKl => ModelAlphaCriterion::HeadKl,
        AlphaCriterionArg::HiddenState => ModelAlphaCriterion::HiddenState,
    });
    let holdout_every = args
        .alpha_holdout_every
        .unwrap_or_else(|| scope.default_holdout_every());
    crate::quant_flags::check_holdout(holdout_every)?;
    Ok(Some(AutoAlpha {
        grid,
        holdout_every,
        scope,
        criterion,
    }))
}

fn pipeline_config(args: &QuantizeArgs) -> Result<PipelineConfig> {
    let method = match args.method {
        QuantMethodArg::Rtn => Method::Rtn,
        QuantMethodArg::Gptq => Method::Gptq,
        QuantMethodArg::Epmq => Method::Epmq {
            // with `auto` / `auto-model`, α is chosen from --alpha-grid
            alpha: args.q.alpha.fixed_or(0.0),
        },
        QuantMethodArg::Awq => Method::Awq(AwqOptions {
            duo_scaling: !args.awq_act_scales,
            n_grid: args.awq_grid,
            clip: !args.awq_no_clip,
        }),
    };
    let awq = matches!(method, Method::Awq(_));
    if !awq && (args.awq_act_scales || args.awq_no_clip || args.awq_grid != 20) {
        bail!("--awq-grid, --awq-act-scales and --awq-no-clip only apply to --method awq");
    }
    if awq && (args.q.act_order || args.q.static_groups) {
        bail!("AWQ rounds to nearest: --act-order and --static-groups do not apply");
    }
    if awq && args.awq_grid == 0 {
        bail!("--awq-grid must be at least 1");
    }
    let mut q = args.q.clone();
    let (mut batch_size, mut max_seq_len) = (args.batch_size, args.max_seq_len);
    if let Some(PresetArg::PaperLlama) = args.preset {
        (q.group_size, batch_size, max_seq_len) = (32, 4, 512);
    }
    let gptq = q.gptq_config(
        matches!(method, Method::Epmq { .. }),
        ScalePrecision::F16,
        grid_kind(args)?,
    )?;
    if args.samples_per_task == 0 || batch_size == 0 || max_seq_len == 0 {
        bail!("--samples-per-task, --batch-size and --max-seq-len must be positive");
    }
    Ok(PipelineConfig {
        method,
        gptq,
        samples_per_task: args.samples_per_task,
        batch_size,
        max_seq_len,
        true_sequential: !args.no_true_sequential,
        deviation: match args.deviation {
            DeviationArg::Total => DeviationMode::Total,
            DeviationArg::PerTask => DeviationMode::PerTask,
        },
        state_dtype: match args.state_dtype {
            StateDtypeArg::F32 => candle_core::DType::F32,
            StateDtypeArg::Bf16 => candle_core::DType::BF16,
            StateDtypeArg::F16 => candle_core::DType::F16,
        },
        forward_cache_bytes: usize::try_from(args.forward_cache_mib)
            .ok()
            .and_then(|m| m.checked_mul(1 << 20))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--forward-cache-mib {} is too large",
                    args.forward_cache_mib
                )
            })?,
        time_block_forward: args.time_block_forward,
        alpha_auto: alpha_auto(args, &method)?,
        fold_precision: args.q.fold_precision(),
    })
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    // Everything is validated before any work (the inline merge included).
    let cfg = pipeline_config(&args)?;
    let merge = match (&args.model, args.merge, &args.base) {
        (Some(_), None, None) => None,
        (None, Some(method), Some(base)) => {
            if args.experts.is_empty() {
                bail!("--merge needs the experts (--expert DIR, one per task)");
            }
            args.merge_options.check_flags(method)?;
            args.merge_options.method(method).validate()?;
            if method == MergeMethodArg::Regmean {
                let mut protected = args.experts.clone();
                protected.extend([base.clone(), args.out.clone()]);
                protected.extend(args.calib.iter().map(|c| c.path.clone()));
                args.merge_options
                    .check_regmean(&args.experts, &args.calib, false, &protected)
                    .context("--merge regmean")?;
            }
            if let Some(evidence) = pmq_io::gptq_evidence(base) {
                bail!(pmq_io::gptq_refusal(
                    base,
                    &evidence,
                    "the base of --merge (--base)"
                ));
            }
            Some((method, base.clone()))
        }
        (Some(_), Some(_), _) => bail!("give either --model or --merge/--base, not both"),
        (None, Some(_), None) => bail!("--merge needs --base DIR (the pre-trained checkpoint)"),
        (_, None, Some(_)) => bail!("--base is only used with --merge METHOD"),
        (None, None, None) => {
            bail!("give --model DIR (the merged model), or --merge METHOD --base DIR")
        }
    };
    let mut inputs: Vec<PathBuf> = args.experts.clone();
    inputs.extend(args.model.iter().cloned());
    inputs.extend(args.base.iter().cloned());
    inputs.extend(args.calib.iter().map(|c| c.path.clone()));
    crate::output::prepare_dir(&args.out, args.overwrite, &inputs, "--out")?;
    // With an inline merge the experts are merged; the pipeline gets them too (paired with the
    // calibration tasks) unless the method needs neither (RTN without --calib).
    let pipeline_experts =
        if merge.is_some() && !cfg.method.needs_experts() && args.calib.is_empty() {
            Vec::new()
        } else {
            args.experts.clone()
        };
    let mut pipeline_inputs = PipelineInputs {
        model_dir: args.model.clone().unwrap_or_default(),
        experts: pipeline_experts,
        calib: args.calib.clone(),
    };
    pmq_pipeline::check_inputs(&pipeline_inputs, &cfg)?;

    // Inline merge into a temporary directory next to the output (removed when done, or on
    // an interrupt).
    let _merged_tmp = match merge {
        None => None,
        Some((method, base)) => {
            let parent = args
                .out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = pmq_io::TempDir::in_dir(parent, ".pmq-merged-").with_context(|| {
                format!("creating a temporary directory in {}", parent.display())
            })?;
            let dir = tmp.path().join("merged");
            let mut mcfg =
                args.merge_options
                    .config(method, base, args.experts.clone(), dir.clone(), false);
            if let pmq_merge::Method::RegMean(o) = &mut mcfg.method {
                // the Grams read the same calibration samples as the quantization
                let settings = pmq_pipeline::grams::GramSettings {
                    samples: cfg.samples_per_task,
                    batch_size: cfg.batch_size,
                    max_seq_len: cfg.max_seq_len,
                };
                o.grams = args.merge_options.regmean_grams(
                    &args.experts,
                    &args.calib,
                    &settings,
                    tmp.path(),
                )?;
            }
            run_merge(&mcfg)?;
            pipeline_inputs.model_dir = dir;
            Some(tmp)
        }
    };
    let opts = QuantizeOptions {
        inputs: pipeline_inputs,
        config: cfg,
        out: args.out.clone(),
        format: match args.format {
            FormatArg::Gptq => OutputFormat::Gptq,
            FormatArg::Fake => OutputFormat::Fake,
            FormatArg::Both => OutputFormat::Both,
            FormatArg::Gguf => OutputFormat::Gguf,
            FormatArg::GgufFake => OutputFormat::GgufFake,
        },
        gguf: GgufOptions {
            template: args.gguf_template.clone(),
            unquantized: match args.gguf_unquantized {
                GgufUnquantizedArg::F32 => Unquantized::F32,
                GgufUnquantizedArg::F16 => Unquantized::F16,
            },
            name: None,
        },
        overwrite: args.overwrite,
        checkpoint: Some(Checkpointing {
            stop_after_block: args.stop_after_block,
            ..Checkpointing::next_to(&args.out, args.resume)
        }),
    };
    let (report, summary) = quantize_and_write(&opts, &Bar::new())?;
    eprintln!("{}", report.to_markdown());
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// A progress bar over the linears, on stderr (hidden when not a terminal).
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Self(bar)
    }
}

impl Progress for Bar {
    fn start(&self, linears: usize) {
        self.0.set_length(linears as u64);
    }
    fn message(&self, msg: &str) {
        self.0.set_message(msg.to_string());
    }
    fn linear_done(&self, _name: &str) {
        self.0.inc(1);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
