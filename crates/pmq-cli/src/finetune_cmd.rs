//! `pmq finetune`: train (or reuse) one expert per testbed task from the backbone — full
//! fine-tuning or a linear probe — and print a JSON summary.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pmq_finetune::{finetune, ExpertRecord, FinetuneConfig, Mode};
use pmq_testbed::{backbone_dir, default_cache_dir, load_task, task_names, SplitConfig};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Fine-tune every encoder weight plus a linear head.
    Full,
    /// Train only a linear head on the frozen backbone.
    Probe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PresetArg {
    /// 1 epoch over the whole training split, 64 tokens: ≈ 2–4 min per expert on 2 cores.
    Bench,
    /// 512 training examples: ≈ 0.5–1 min per expert (the demo).
    Demo,
    /// 16 steps on 128 examples, 32 tokens: seconds (tests).
    Ci,
}

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Testbed cache directory [default: $PMQ_CACHE, else $XDG_CACHE_HOME/pmq, else ~/.cache/pmq].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Task to train (repeat); default: all 8.
    #[arg(long = "task", value_name = "TASK")]
    tasks: Vec<String>,
    #[arg(long, value_enum, default_value_t = ModeArg::Full)]
    mode: ModeArg,
    #[arg(long, value_enum, default_value_t = PresetArg::Bench)]
    preset: PresetArg,
    /// Root of the expert directories; each task goes to OUT/<task>
    /// [default: <cache>/experts/<preset>/<mode>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Overrides the preset's seed (head initialisation and batch order).
    #[arg(long)]
    seed: Option<u64>,
}

pub fn run(args: FinetuneArgs) -> Result<()> {
    let cache = match args.cache {
        Some(c) => c,
        None => default_cache_dir()?,
    };
    let preset = match args.preset {
        PresetArg::Bench => "bench",
        PresetArg::Demo => "demo",
        PresetArg::Ci => "ci",
    };
    let mode = match args.mode {
        ModeArg::Full => Mode::Full,
        ModeArg::Probe => Mode::LinearProbe,
    };
    let mut cfg = FinetuneConfig::preset(preset)?;
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    let tasks: Vec<String> = if args.tasks.is_empty() {
        task_names().iter().map(|t| t.to_string()).collect()
    } else {
        args.tasks
    };
    for t in &tasks {
        if !task_names().contains(&t.as_str()) {
            bail!(
                "unknown task {t:?}; the tasks are {}",
                task_names().join(", ")
            );
        }
    }
    let root = args
        .out
        .unwrap_or_else(|| cache.join("experts").join(preset).join(mode.name()));
    crate::output::prepare_work_dir(&root, &crate::output::testbed_inputs(&cache), "--out")?;
    let backbone = backbone_dir(&cache);
    if !backbone.join("model.safetensors").is_file() {
        bail!(
            "no backbone at {}; run `pmq testbed --cache {} fetch` first",
            backbone.display(),
            cache.display()
        );
    }
    let start = std::time::Instant::now();
    let mut experts = Vec::new();
    for name in &tasks {
        let task = load_task(&cache, name, &SplitConfig::default()).with_context(|| {
            format!(
                "loading task {name:?} (fetch it with `pmq testbed --cache {} fetch`)",
                cache.display()
            )
        })?;
        let out = finetune(&backbone, &task, mode, &cfg, &root.join(name))
            .with_context(|| format!("training the {mode} expert of {name:?}"))?;
        let rec = ExpertRecord::read(&out.dir)?
            .with_context(|| format!("{} has no expert record", out.dir.display()))?;
        eprintln!(
            "{name:>20}: {} in {:.1} s, {} steps, loss {:.4}, train acc {:.3}{}",
            mode,
            out.train_seconds,
            out.steps,
            out.final_loss,
            rec.train_accuracy,
            if out.cached { " (cached)" } else { "" }
        );
        experts.push(serde_json::json!({
            "task": name,
            "dir": out.dir,
            "head": out.head,
            "cached": out.cached,
            "train_seconds": out.train_seconds,
            "steps": out.steps,
            "final_loss": out.final_loss,
            "train_accuracy": rec.train_accuracy,
            "train_examples": rec.train_examples,
        }));
    }
    println!(
        "{}",
        serde_json::json!({
            "preset": preset,
            "mode": mode.name(),
            "config": cfg,
            "backbone": backbone,
            "experts": experts,
            "seconds": start.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
