//! `pmq bench`: the paper's tables on the real testbed (main table, α ablation, bit widths,
//! calibration budget), written to a results directory as JSON + markdown + SVG. Subsets are
//! selectable so a single cell can be rerun; finished cells are cached and merged into the
//! existing results.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pmq_bench::{
    plan, write_results, Bench, BenchConfig, BenchResults, Defaults, Experiment, MergeKind, Meta,
    QuantKind, Selection,
};
use pmq_eval::EvalOptions;
use pmq_finetune::FinetuneConfig;
use pmq_testbed::{default_cache_dir, fetch, task_names, FetchOptions, SplitConfig};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// The benchmark's fine-tuning budget (all 8 experts in ≤ 30 min on 2 cores).
    Bench,
    /// Fewer training steps, for `pmq demo`.
    Demo,
    /// A handful of steps: CI-sized runs.
    Ci,
}

impl PresetArg {
    pub fn config(self) -> FinetuneConfig {
        match self {
            Self::Bench => FinetuneConfig::bench(),
            Self::Demo => FinetuneConfig::demo(),
            Self::Ci => FinetuneConfig::ci(),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Bench => "bench",
            Self::Demo => "demo",
            Self::Ci => "ci",
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Testbed cache [default: $PMQ_CACHE, else $XDG_CACHE_HOME/pmq, else ~/.cache/pmq].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Work directory for merged/quantized models and cached cells [default: <cache>/bench].
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    /// Where results.json, tables.md and bits.svg go.
    #[arg(long, value_name = "DIR", default_value = "bench/results")]
    results: PathBuf,
    /// Experiments to run (comma-separated): main, alpha, bits, budget, auto (E-PMQ with
    /// `--alpha auto` under the four merges), regmean (RegMean merge + quantizers).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "main,alpha,bits,budget,auto,regmean"
    )]
    experiments: Vec<String>,
    /// Only these merge methods: avg, ta, ties, wudi, regmean.
    #[arg(long = "merge", value_delimiter = ',')]
    merges: Vec<String>,
    /// Only these methods: fp, rtn, gptq, awq, epmq, epmq-auto.
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Only these bit widths.
    #[arg(long, value_delimiter = ',', value_parser = crate::flag_values::bits)]
    bits: Vec<u8>,
    /// Only these group sizes.
    #[arg(long = "group-size", value_delimiter = ',', allow_hyphen_values = true, value_parser = crate::flag_values::group_size)]
    groups: Vec<i64>,
    /// Only these E-PMQ anchor weights α.
    #[arg(long = "alpha", value_delimiter = ',', allow_hyphen_values = true, value_parser = crate::flag_values::finite_non_negative)]
    alphas: Vec<f64>,
    /// Only these calibration budgets (samples per task).
    #[arg(long = "samples", value_delimiter = ',', value_parser = crate::flag_values::positive)]
    samples: Vec<usize>,
    /// Tasks (comma-separated) [default: all 8].
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// Your own tasks instead of the testbed's: a suite file (YAML) naming the base model and,
    /// per task, the expert (or training data for pmq to fine-tune one), its head, and
    /// calibration and test data — text classification, image folders (CLIP) or text-to-text
    /// pairs (T5). See bench/README.md, "Your own tasks".
    #[arg(long, value_name = "FILE", conflicts_with = "tasks")]
    suite: Option<PathBuf>,
    /// Fine-tuning preset of the experts.
    #[arg(long, value_enum, default_value_t = PresetArg::Bench)]
    preset: PresetArg,
    /// Seed of the splits and of the fine-tuning [default: the testbed's split seed and the
    /// preset's training seed].
    #[arg(long)]
    seed: Option<u64>,
    /// Calibration samples per task where an experiment does not vary it.
    #[arg(long, default_value_t = 128, value_parser = crate::flag_values::positive)]
    default_samples: usize,
    /// E-PMQ α where an experiment does not vary it (Simple Averaging, TA, TIES; the paper: 0.01).
    #[arg(long, default_value_t = 0.01, allow_hyphen_values = true, value_parser = crate::flag_values::finite_non_negative)]
    default_alpha: f64,
    /// E-PMQ α for WUDI-merged models in the main table (the paper: 10).
    #[arg(long, default_value_t = pmq_bench::plan::PAPER_WUDI_ALPHA, allow_hyphen_values = true, value_parser = crate::flag_values::finite_non_negative)]
    wudi_alpha: f64,
    /// Evaluate on at most this many test examples per task [default: the whole test split].
    #[arg(long, value_parser = crate::flag_values::positive)]
    eval_max_examples: Option<usize>,
    /// Auto-α cells (epmq-auto, epmq-auto-model) hold out every N-th calibration batch of each
    /// task to score the α candidates (pmq quantize --alpha-holdout-every) [default: pmq
    /// quantize's, 4 per linear and 2 per model]; part of the key when not 4.
    #[arg(long, value_name = "N", value_parser = crate::flag_values::positive)]
    alpha_holdout_every: Option<usize>,
    /// Skip the linear-probe ("Pre-trained") reference row.
    #[arg(long)]
    no_probe: bool,
    /// Recompute cells even when cached.
    #[arg(long)]
    force: bool,
    /// Keep the quantized models in the work directory.
    #[arg(long)]
    keep_models: bool,
}

fn parse_all<T>(v: &[String], f: impl Fn(&str) -> Result<T>) -> Result<Option<Vec<T>>> {
    if v.is_empty() {
        return Ok(None);
    }
    Ok(Some(v.iter().map(|s| f(s)).collect::<Result<_>>()?))
}

/// Settings shared by `pmq bench` and `pmq demo`.
pub struct RunSpec {
    pub cache: PathBuf,
    pub work: PathBuf,
    pub tasks: Vec<String>,
    pub split: SplitConfig,
    pub preset: PresetArg,
    /// Overrides the preset's training seed.
    pub seed: Option<u64>,
    pub eval_max_examples: Option<usize>,
    pub force: bool,
    pub keep_models: bool,
    /// A suite file of the user's own tasks (instead of `tasks`).
    pub suite: Option<PathBuf>,
}

/// Fetches what the tasks need and prepares the experts.
pub fn prepare(spec: &RunSpec) -> Result<Bench> {
    let finetune = || {
        let mut f = spec.preset.config();
        if let Some(seed) = spec.seed {
            f.seed = seed;
        }
        f
    };
    if spec.suite.is_some() {
        return Bench::prepare(bench_config(spec, finetune()));
    }
    for t in &spec.tasks {
        if !task_names().contains(&t.as_str()) {
            bail!(
                "unknown task {t:?}; the tasks are {}",
                task_names().join(", ")
            );
        }
    }
    let opts = FetchOptions {
        tasks: spec.tasks.clone(),
        ..FetchOptions::default()
    };
    let report = fetch(&spec.cache, &opts).context("fetching the testbed")?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    Bench::prepare(bench_config(spec, finetune()))
}

/// The benchmark configuration of `spec` with the experts' training config `finetune`.
fn bench_config(spec: &RunSpec, finetune: pmq_finetune::FinetuneConfig) -> BenchConfig {
    BenchConfig {
        cache: spec.cache.clone(),
        suite: spec.suite.clone(),
        work: spec.work.clone(),
        tasks: spec.tasks.clone(),
        split: spec.split.clone(),
        preset: spec.preset.name().to_string(),
        eval: EvalOptions {
            max_examples: spec.eval_max_examples,
            max_seq_len: finetune.max_seq_len,
            batch_size: 32,
            max_new_tokens: None,
        },
        calib_max_seq_len: finetune.max_seq_len,
        calib_batch_size: 32,
        finetune,
        force: spec.force,
        keep_models: spec.keep_models,
    }
}

/// The metadata block of a results file.
pub fn meta(bench: &Bench) -> Meta {
    Meta {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date: pmq_bench::results::now(),
        cores: pmq_bench::results::cores(),
        cpu: pmq_bench::results::cpu_model(),
        tasks: bench.config().tasks.clone(),
        settings: bench.config().settings(),
        context: bench.context().to_string(),
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let cache = match &args.cache {
        Some(c) => c.clone(),
        None => default_cache_dir()?,
    };
    let experiments = args
        .experiments
        .iter()
        .map(|s| Experiment::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let sel = Selection {
        merges: parse_all(&args.merges, MergeKind::parse)?,
        methods: parse_all(&args.methods, QuantKind::parse)?,
        bits: (!args.bits.is_empty()).then(|| args.bits.clone()),
        groups: (!args.groups.is_empty()).then(|| args.groups.clone()),
        alphas: (!args.alphas.is_empty()).then(|| args.alphas.clone()),
        samples: (!args.samples.is_empty()).then(|| args.samples.clone()),
    };
    let defaults = Defaults {
        bits: 4,
        group_size: 128,
        alpha: args.default_alpha,
        wudi_alpha: args.wudi_alpha,
        samples: args.default_samples,
    };
    if let Some(n) = args.alpha_holdout_every {
        crate::quant_flags::check_holdout(n)?;
    }
    let cells: Vec<_> = plan(&experiments, &defaults, &sel)
        .into_iter()
        .map(|c| match args.alpha_holdout_every {
            Some(n) => c.with_holdout(n),
            None => c,
        })
        .collect();
    if cells.is_empty() {
        bail!("the selection matches no cell of the chosen experiments");
    }
    let tasks = if args.suite.is_some() {
        Vec::new()
    } else if args.tasks.is_empty() {
        task_names().iter().map(|s| s.to_string()).collect()
    } else {
        args.tasks.clone()
    };
    let work = args.work.clone().unwrap_or_else(|| cache.join("bench"));
    let mut inputs = crate::output::testbed_inputs(&cache);
    inputs.push(cache.join("experts"));
    if let Some(file) = &args.suite {
        // nothing the suite reads may be overwritten
        let suite = pmq_bench::Suite::load(file)?;
        inputs.extend([file.clone(), suite.base.clone()]);
        for t in &suite.tasks {
            inputs.extend(t.expert.iter().chain(&t.head).chain(&t.train_path).cloned());
            inputs.push(t.calib.clone());
            if let pmq_bench::suite::TestSource::File(p) = &t.test {
                inputs.push(p.clone());
            }
        }
    }
    crate::output::prepare_work_dir(&work, &inputs, "--work")?;
    crate::output::prepare_work_dir(&args.results, &inputs, "--results")?;
    let spec = RunSpec {
        work,
        cache,
        tasks,
        split: SplitConfig {
            seed: args.seed.unwrap_or(pmq_testbed::DEFAULT_SEED),
            ..SplitConfig::default()
        },
        preset: args.preset,
        seed: args.seed,
        eval_max_examples: args.eval_max_examples,
        force: args.force,
        keep_models: args.keep_models,
        suite: args.suite.clone(),
    };
    eprintln!(
        "pmq bench: {} cells: {}",
        cells.len(),
        cells.iter().map(|c| c.key()).collect::<Vec<_>>().join(", ")
    );
    let bench = prepare(&spec)?;
    let refs = bench.reference_rows(!args.no_probe)?;
    let results_file = args.results.join("results.json");
    let mut done = Vec::new();
    let bar = cell_bar(cells.len());
    for c in &cells {
        bar.set_message(c.key());
        // Write after every cell so an interrupted run keeps what it finished.
        let r = bench.run_cell(c)?;
        bar.println(format!(
            "{}: average {:.1}%{}",
            r.key,
            100.0 * r.average,
            r.quant_seconds
                .map_or(String::new(), |s| format!(" (quantize {s:.0} s)"))
        ));
        bar.inc(1);
        done.push(r);
        let old = BenchResults::load(&results_file)?;
        let res = BenchResults::merge_in(old, meta(&bench), refs.clone(), done.clone());
        write_results(&args.results, &res, &defaults)?;
    }
    bar.finish_and_clear();
    let res = BenchResults::load(&results_file)?.context("results.json vanished")?;
    println!("{}", pmq_bench::render_markdown(&res, &defaults));
    eprintln!("results in {}", args.results.display());
    Ok(())
}

/// A progress bar over benchmark cells.
pub fn cell_bar(n: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("cells [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}
