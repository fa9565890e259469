//! `pmq demo`: the whole path on the real testbed in one command — fetch, fine-tune one expert
//! per task (cached), merge them with task arithmetic, quantize the merged model to 4 bits with
//! GPTQ and with E-PMQ, and print the per-task accuracy table.
//!
//! `--ci` runs the same path CI-sized: 2 tasks, tiny splits, a few training steps.

use crate::bench_cmd::{cell_bar, meta, prepare, PresetArg, RunSpec};
use anyhow::{Context, Result};
use clap::Args;
use pmq_bench::{write_results, BenchResults, Cell, Defaults, MergeKind, QuantKind};
use pmq_testbed::{default_cache_dir, task_names, SplitConfig};
use std::path::PathBuf;

/// The two tasks of the CI-sized demo (PyPI and npm sources, both small).
pub const CI_TASKS: [&str; 2] = ["movie-sentiment", "spam"];

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Testbed cache [default: $PMQ_CACHE, else $XDG_CACHE_HOME/pmq, else ~/.cache/pmq].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Where models, cached results and the demo's results go [default: <cache>/demo or
    /// <cache>/demo-ci].
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    /// CI-sized run: 2 tasks, tiny splits, a few training steps.
    #[arg(long)]
    ci: bool,
    /// Tasks (comma-separated) [default: all 8; with --ci: movie-sentiment,spam].
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// Bits of both quantizers.
    #[arg(long, default_value_t = 4, value_parser = crate::flag_values::bits)]
    bits: u8,
    /// Calibration samples per task [default: 128; with --ci: 16].
    #[arg(long, value_parser = crate::flag_values::positive)]
    samples: Option<usize>,
    /// Evaluate on at most this many test examples per task [default: 400; with --ci: all].
    #[arg(long, value_parser = crate::flag_values::positive)]
    eval_max_examples: Option<usize>,
    /// Recompute the cells even when cached (the experts stay cached).
    #[arg(long)]
    force: bool,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let cache = match &args.cache {
        Some(c) => c.clone(),
        None => default_cache_dir()?,
    };
    let tasks: Vec<String> = match (args.tasks.is_empty(), args.ci) {
        (false, _) => args.tasks.clone(),
        (true, true) => CI_TASKS.iter().map(|s| s.to_string()).collect(),
        (true, false) => task_names().iter().map(|s| s.to_string()).collect(),
    };
    let (split, preset, samples, eval_max) = if args.ci {
        let split = SplitConfig {
            train_max: 64,
            calib_size: 16,
            test_max: 48,
            test_min: 32,
            ..SplitConfig::default()
        };
        (
            split,
            PresetArg::Ci,
            args.samples.unwrap_or(16),
            args.eval_max_examples,
        )
    } else {
        (
            SplitConfig::default(),
            PresetArg::Demo,
            args.samples.unwrap_or(128),
            args.eval_max_examples.or(Some(400)),
        )
    };
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| cache.join(if args.ci { "demo-ci" } else { "demo" }));
    let mut inputs = crate::output::testbed_inputs(&cache);
    inputs.push(cache.join("experts"));
    crate::output::prepare_work_dir(&work, &inputs, "--work")?;
    let spec = RunSpec {
        cache,
        work: work.clone(),
        tasks,
        split,
        preset,
        seed: None,
        eval_max_examples: eval_max,
        force: args.force,
        keep_models: false,
        suite: None,
    };
    let bench = prepare(&spec)?;
    let refs = bench.reference_rows(false)?;
    let defaults = Defaults {
        bits: args.bits,
        group_size: 128,
        alpha: 0.01,
        wudi_alpha: pmq_bench::plan::PAPER_WUDI_ALPHA,
        samples,
    };
    let cells = [
        Cell::fp(MergeKind::Ta),
        Cell::quant(
            MergeKind::Ta,
            QuantKind::Gptq,
            args.bits,
            128,
            0.01,
            samples,
        ),
        Cell::quant(
            MergeKind::Ta,
            QuantKind::Epmq,
            args.bits,
            128,
            0.01,
            samples,
        ),
    ];
    let bar = cell_bar(cells.len());
    let mut done = Vec::new();
    for c in &cells {
        bar.set_message(c.key());
        done.push(bench.run_cell(c)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let res = BenchResults::merge_in(None, meta(&bench), refs, done);
    let out = work.join("results");
    write_results(&out, &res, &defaults)?;
    let table = pmq_bench::tables::main_table(&res, &defaults, 128, true)
        .context("the demo produced no table")?;
    println!("{table}");
    for c in &res.cells {
        if let (Some(s), Some(m)) = (c.quant_seconds, c.quant_peak_rss_mib) {
            println!(
                "{}: quantized in {s:.0} s, peak RSS {m:.0} MiB",
                c.cell.quant.label()
            );
        }
    }
    println!(
        "total {:.0} s; results (JSON, markdown) in {}",
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
