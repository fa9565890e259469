//! `pmq merge`: merge K fine-tuned experts that share a base checkpoint into one model.
//!
//! Thin layer over [`pmq_merge::merge`]: parses flags, refuses flags that do not apply to the
//! chosen method, draws a progress bar over tensors on stderr, and prints one JSON summary
//! line on stdout (the full report is `merge_report.json` in the output directory).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use pmq_io::Dtype;
use pmq_merge::{
    DareOptions, DareRescale, MergeConfig, Method, Progress, RegMeanOptions, TiesMerge,
    TiesOptions, TiesTrim, WudiOptions, WudiOther, WudiSolver, DEFAULT_LAMBDA, REPORT_FILE,
};
use pmq_pipeline::grams::{collect_grams, GramSettings};
use pmq_pipeline::CalibSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Mean of the experts.
    Average,
    /// W0 + λ Σ (Wi − W0).
    TaskArithmetic,
    /// Trim, elect sign, disjoint merge (TIES).
    Ties,
    /// Drop and rescale task vectors, then task arithmetic (DARE).
    Dare,
    /// Per linear weight, minimise Σ ‖(τm − τi) τiᵀ‖² / ‖τi‖² (WUDI).
    Wudi,
    /// Per linear, W = (Σ Wi G̃i)(Σ G̃i)⁻¹ from each expert's input Gram matrices on its own
    /// task's data (RegMean); other tensors averaged. Needs --calib (or --grams) per expert.
    Regmean,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TrimArg {
    /// One threshold per task over the whole flattened model (FusionBench).
    Global,
    /// One threshold per task and tensor, FusionBench's tie-inclusive rule (every |τ| ≥ the
    /// threshold is kept).
    Tensor,
    /// mergekit's magnitude trim: exactly ⌊density·n⌋ largest |τ| per task and tensor.
    Mergekit,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TiesMergeArg {
    Sum,
    Mean,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RescaleArg {
    /// Survivors × 1/(1−p).
    Inverse,
    /// Preserve each tensor's L1 norm (mergekit).
    L1,
    None,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SolverArg {
    /// Reference schedule: Adam from Σ τi.
    Adam,
    /// Exact minimiser (Cholesky; conjugate gradient if singular).
    Exact,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OtherArg {
    /// Average the experts (FusionBench).
    Average,
    /// Keep the base values (official WUDI code).
    Base,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// Base (pre-trained) checkpoint directory (HF layout, safetensors).
    #[arg(long, value_name = "DIR")]
    pub base: PathBuf,
    /// Expert (fine-tuned) checkpoint directory; repeat once per expert.
    #[arg(long = "expert", value_name = "DIR", required = true)]
    pub experts: Vec<PathBuf>,
    /// Merge method.
    #[arg(long, value_enum)]
    pub method: MethodArg,
    /// Output directory (must not exist unless --overwrite).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub options: MergeOptions,
    /// Replace an existing output directory (only once the merge succeeded).
    #[arg(long)]
    pub overwrite: bool,
    /// Calibration file of expert i's own task, TASK=FILE; repeat, in the order of --expert
    /// [regmean: its Gram matrices are computed on it].
    #[arg(long = "calib", value_name = "TASK=FILE")]
    pub calib: Vec<CalibSpec>,
    /// Samples per task for the Gram matrices [regmean].
    #[arg(long, default_value_t = 256)]
    pub samples_per_task: usize,
    /// Calibration batch size [regmean].
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Truncate calibration texts to this many tokens [regmean].
    #[arg(long, default_value_t = 128)]
    pub max_seq_len: usize,
}

/// The merge methods' settings, shared by `pmq merge` and `pmq quantize --merge`.
#[derive(clap::Args, Debug, Clone)]
pub struct MergeOptions {
    /// Scaling λ of the merged task vector [task-arithmetic, ties, dare; default 0.3].
    #[arg(long, allow_hyphen_values = true)]
    pub lambda: Option<f64>,
    /// Fraction of |τ| entries kept per task [ties; default 0.2].
    #[arg(long)]
    pub density: Option<f64>,
    /// Where TIES trims [ties; default global].
    #[arg(long, value_enum)]
    pub ties_trim: Option<TrimArg>,
    /// How TIES combines agreeing entries [ties; default sum].
    #[arg(long, value_enum)]
    pub ties_merge: Option<TiesMergeArg>,
    /// Drop probability [dare; default 0.5].
    #[arg(long)]
    pub dare_p: Option<f64>,
    /// Rescaling of surviving entries [dare; default inverse].
    #[arg(long, value_enum)]
    pub dare_rescale: Option<RescaleArg>,
    /// Random seed [dare; default 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// WUDI solver [wudi; default adam].
    #[arg(long, value_enum)]
    pub wudi_solver: Option<SolverArg>,
    /// Adam steps [wudi; default 400].
    #[arg(long)]
    pub wudi_steps: Option<usize>,
    /// Adam learning rate [wudi; default 1e-5].
    #[arg(long)]
    pub wudi_lr: Option<f64>,
    /// What WUDI does with selected tensors that are not 2-D [wudi; default average].
    #[arg(long, value_enum)]
    pub wudi_other: Option<OtherArg>,
    /// Non-diagonal ratio r of the Gram matrices, G̃ = r·G + (1 − r)·diag(G) [regmean;
    /// default 0.6, FusionBench's; 1 = plain RegMean].
    #[arg(long)]
    pub regmean_ratio: Option<f64>,
    /// Precomputed Gram file of expert i (as `pmq merge --method regmean --keep-grams` or a
    /// previous run wrote them); repeat, in the order of --expert [regmean; instead of --calib].
    #[arg(long = "grams", value_name = "FILE")]
    pub grams: Vec<PathBuf>,
    /// Keep the Gram files computed from --calib in this directory (expert-1.safetensors, …)
    /// for later --grams runs [regmean].
    #[arg(long, value_name = "DIR")]
    pub keep_grams: Option<PathBuf>,
    /// Merge only tensors whose name matches this glob (repeatable; default: all).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never merge tensors whose name matches this glob (repeatable); they are copied from the base.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Output dtype of float tensors (default: each tensor's base dtype).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
}

impl MergeOptions {
    /// Fails if a flag of another method was given.
    pub fn check_flags(&self, method: MethodArg) -> anyhow::Result<()> {
        use MethodArg::*;
        let flags: [(&str, bool, &[MethodArg]); 14] = [
            (
                "--lambda",
                self.lambda.is_some(),
                &[TaskArithmetic, Ties, Dare],
            ),
            ("--density", self.density.is_some(), &[Ties]),
            ("--ties-trim", self.ties_trim.is_some(), &[Ties]),
            ("--ties-merge", self.ties_merge.is_some(), &[Ties]),
            ("--dare-p", self.dare_p.is_some(), &[Dare]),
            ("--dare-rescale", self.dare_rescale.is_some(), &[Dare]),
            ("--seed", self.seed.is_some(), &[Dare]),
            ("--wudi-solver", self.wudi_solver.is_some(), &[Wudi]),
            ("--wudi-steps", self.wudi_steps.is_some(), &[Wudi]),
            ("--wudi-lr", self.wudi_lr.is_some(), &[Wudi]),
            ("--wudi-other", self.wudi_other.is_some(), &[Wudi]),
            ("--regmean-ratio", self.regmean_ratio.is_some(), &[Regmean]),
            ("--grams", !self.grams.is_empty(), &[Regmean]),
            ("--keep-grams", self.keep_grams.is_some(), &[Regmean]),
        ];
        for (flag, given, methods) in flags {
            if given && !methods.contains(&method) {
                let name = method.to_possible_value().expect("no skipped variants");
                bail!("{flag} does not apply to --method {}", name.get_name());
            }
        }
        Ok(())
    }

    pub fn method(&self, method: MethodArg) -> Method {
        let lambda = self.lambda.unwrap_or(DEFAULT_LAMBDA);
        match method {
            MethodArg::Average => Method::Average,
            MethodArg::TaskArithmetic => Method::TaskArithmetic { lambda },
            MethodArg::Ties => {
                let d = TiesOptions::default();
                Method::Ties(TiesOptions {
                    density: self.density.unwrap_or(d.density),
                    lambda,
                    trim: match self.ties_trim {
                        Some(TrimArg::Tensor) => TiesTrim::Tensor,
                        Some(TrimArg::Mergekit) => TiesTrim::Mergekit,
                        Some(TrimArg::Global) => TiesTrim::Global,
                        None => d.trim,
                    },
                    merge: match self.ties_merge {
                        Some(TiesMergeArg::Mean) => TiesMerge::Mean,
                        Some(TiesMergeArg::Sum) => TiesMerge::Sum,
                        None => d.merge,
                    },
                })
            }
            MethodArg::Dare => {
                let d = DareOptions::default();
                Method::Dare(DareOptions {
                    p: self.dare_p.unwrap_or(d.p),
                    lambda,
                    rescale: match self.dare_rescale {
                        Some(RescaleArg::Inverse) => DareRescale::Inverse,
                        Some(RescaleArg::L1) => DareRescale::L1,
                        Some(RescaleArg::None) => DareRescale::None,
                        None => d.rescale,
                    },
                    seed: self.seed.unwrap_or(d.seed),
                })
            }
            MethodArg::Wudi => {
                let d = WudiOptions::default();
                Method::Wudi(WudiOptions {
                    solver: match self.wudi_solver {
                        Some(SolverArg::Adam) => WudiSolver::Adam,
                        Some(SolverArg::Exact) => WudiSolver::Exact,
                        None => d.solver,
                    },
                    steps: self.wudi_steps.unwrap_or(d.steps),
                    lr: self.wudi_lr.unwrap_or(d.lr),
                    other: match self.wudi_other {
                        Some(OtherArg::Average) => WudiOther::Average,
                        Some(OtherArg::Base) => WudiOther::Base,
                        None => d.other,
                    },
                })
            }
            MethodArg::Regmean => Method::RegMean(RegMeanOptions {
                non_diagonal_ratio: self
                    .regmean_ratio
                    .unwrap_or(RegMeanOptions::default().non_diagonal_ratio),
                grams: self.grams.clone(),
            }),
        }
    }

    /// Checks what RegMean's Gram matrices come from before any work: one --grams file per
    /// expert, or one --calib task per expert (with --keep-grams, if given, not inside an
    /// input or the output). `calib_is_for_grams`: the --calib files serve only the Grams
    /// (`pmq merge`), so giving them beside --grams is a contradiction.
    pub fn check_regmean(
        &self,
        experts: &[PathBuf],
        calib: &[CalibSpec],
        calib_is_for_grams: bool,
        protected: &[PathBuf],
    ) -> anyhow::Result<()> {
        if !self.grams.is_empty() {
            if self.keep_grams.is_some() {
                bail!("--keep-grams keeps Gram files computed from --calib; with --grams there is nothing to compute");
            }
            if calib_is_for_grams && !calib.is_empty() {
                bail!("give either --grams (precomputed Gram files) or --calib (data to compute them), not both");
            }
            if self.grams.len() != experts.len() {
                bail!(
                    "RegMean needs one Gram file per expert: {} --expert, {} --grams",
                    experts.len(),
                    self.grams.len()
                );
            }
            return Ok(());
        }
        if calib.len() != experts.len() {
            bail!(
                "RegMean needs each expert's own calibration data: {} --expert but {} --calib (give one TASK=FILE per expert, in the same order, or --grams)",
                experts.len(),
                calib.len()
            );
        }
        if let Some(dir) = &self.keep_grams {
            pmq_io::check_output_location(dir, protected)
                .with_context(|| format!("--keep-grams {}", dir.display()))?;
        }
        Ok(())
    }

    /// RegMean's Gram files: the given --grams, or computed from each expert on its own
    /// --calib task into `scratch` (or --keep-grams); [`Self::check_regmean`] ran before.
    pub fn regmean_grams(
        &self,
        experts: &[PathBuf],
        calib: &[CalibSpec],
        settings: &GramSettings,
        scratch: &std::path::Path,
    ) -> anyhow::Result<Vec<PathBuf>> {
        if !self.grams.is_empty() {
            return Ok(self.grams.clone());
        }
        let dir = self.keep_grams.as_deref().unwrap_or(scratch);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut out = Vec::new();
        for (i, (e, c)) in experts.iter().zip(calib).enumerate() {
            let path = dir.join(format!("expert-{}.safetensors", i + 1));
            tracing::info!(expert = i + 1, task = %c.task, "RegMean Gram matrices of {}", e.display());
            let s = collect_grams(e, c, settings, &path).with_context(|| {
                format!(
                    "Gram matrices of expert {} ({}) on task {:?}",
                    i + 1,
                    e.display(),
                    c.task
                )
            })?;
            tracing::info!(
                linears = s.linears,
                samples = s.samples,
                seconds = s.seconds,
                "wrote {}",
                path.display()
            );
            out.push(path);
        }
        Ok(out)
    }

    /// The merge of `experts` onto `base` into `out` with `method` and these options.
    pub fn config(
        &self,
        method: MethodArg,
        base: PathBuf,
        experts: Vec<PathBuf>,
        out: PathBuf,
        overwrite: bool,
    ) -> MergeConfig {
        MergeConfig {
            base,
            experts,
            out,
            method: self.method(method),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            dtype: self.dtype.map(|d| match d {
                DtypeArg::F32 => Dtype::F32,
                DtypeArg::F16 => Dtype::F16,
                DtypeArg::Bf16 => Dtype::BF16,
            }),
            overwrite,
        }
    }
}

/// A progress bar over the tensors of each pass, on stderr (hidden when not a terminal).
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{msg:>28} [{bar:40}] {pos}/{len} tensors ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> ");
        bar.set_style(style);
        Self(bar)
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: usize) {
        self.0.set_message(name.to_string());
        self.0.set_length(total as u64);
        self.0.set_position(0);
    }

    fn tensor_done(&self, _name: &str) {
        self.0.inc(1);
    }
}

pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    args.options.check_flags(args.method)?;
    if args.method != MethodArg::Regmean && !args.calib.is_empty() {
        bail!(
            "--calib does not apply to --method {:?} (only regmean reads calibration data)",
            args.method
        );
    }
    if args.samples_per_task == 0 || args.batch_size == 0 || args.max_seq_len == 0 {
        bail!("--samples-per-task, --batch-size and --max-seq-len must be positive");
    }
    let mut inputs = vec![args.base.clone()];
    inputs.extend(args.experts.iter().cloned());
    inputs.extend(args.calib.iter().map(|c| c.path.clone()));
    crate::output::prepare_dir(&args.out, args.overwrite, &inputs, "--out")?;
    let mut cfg = args.options.config(
        args.method,
        args.base.clone(),
        args.experts.clone(),
        args.out.clone(),
        args.overwrite,
    );
    cfg.method.validate()?;
    if args.method == MethodArg::Regmean {
        let mut protected = inputs.clone();
        protected.push(args.out.clone());
        args.options
            .check_regmean(&args.experts, &args.calib, true, &protected)?;
    }
    let _scratch = match &mut cfg.method {
        Method::RegMean(o) => {
            let parent = args
                .out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = pmq_io::TempDir::in_dir(parent, ".pmq-grams-").with_context(|| {
                format!("creating a temporary directory in {}", parent.display())
            })?;
            let settings = GramSettings {
                samples: args.samples_per_task,
                batch_size: args.batch_size,
                max_seq_len: args.max_seq_len,
            };
            o.grams =
                args.options
                    .regmean_grams(&args.experts, &args.calib, &settings, tmp.path())?;
            Some(tmp)
        }
        _ => None,
    };
    let report = run_merge(&cfg)?;
    let summary = serde_json::json!({
        "out": cfg.out,
        "method": report.method,
        "params": report.params,
        "k": report.k,
        "tensors_merged": report.tensors_merged,
        "tensors_copied": report.tensors_copied,
        "seconds": report.seconds,
        "report": cfg.out.join(REPORT_FILE),
    });
    println!("{summary}");
    Ok(())
}

/// Runs a merge with a progress bar and logs.
pub fn run_merge(cfg: &MergeConfig) -> anyhow::Result<pmq_merge::MergeReport> {
    tracing::info!(
        method = cfg.method.name(),
        experts = cfg.experts.len(),
        out = %cfg.out.display(),
        "pmq merge"
    );
    let bar = Bar::new();
    let result = pmq_merge::merge(cfg, &bar);
    bar.0.finish_and_clear();
    let report = result.with_context(|| format!("merge into {} failed", cfg.out.display()))?;
    tracing::info!(
        merged = report.tensors_merged,
        copied = report.tensors_copied,
        seconds = report.seconds,
        "wrote {}",
        cfg.out.display()
    );
    Ok(report)
}
