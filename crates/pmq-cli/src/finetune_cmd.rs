//! `pmq finetune`: train (or reuse) one expert per task — the testbed's or the user's own
//! (`--data`: text classification JSONL, or an image folder per class probed on a CLIP model)
//! — by full fine-tuning or a linear probe, and print a JSON summary.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pmq_eval::tasks::{text, DataKind, ImageTask, TextToTextTask};
use pmq_finetune::{
    finetune, finetune_images, finetune_text_to_text, ExpertRecord, FinetuneConfig, Mode,
};
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
    /// Your own task instead of the testbed's: NAME=PATH; repeat. Needs --out. PATH is a JSONL
    /// training file of {"text", "label"} lines (classes: the distinct labels), or a directory
    /// with one folder of images per class (classes: the folder names; a CLIP --model), or a
    /// JSONL file of {"input", "target"} pairs (a T5 --model, full fine-tuning, no head).
    #[arg(long = "data", value_name = "NAME=PATH", conflicts_with = "tasks")]
    data: Vec<String>,
    /// The model to fine-tune or probe [default: the testbed backbone]. With --mode probe and an
    /// expert trained elsewhere (any HF BERT or CLIP fine-tune of the base), this trains the
    /// head that `pmq eval` and `pmq run` score it with, on the expert's own embeddings.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
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
    // the user's tasks, read up front (bad files fail before any training)
    let data = crate::labelled::parse_data_flags(&args.data)?;
    let mut user_tasks: Vec<pmq_testbed::TaskData> = Vec::new();
    let mut image_tasks: Vec<ImageTask> = Vec::new();
    let mut pair_tasks: Vec<TextToTextTask> = Vec::new();
    for spec in &data {
        if spec.task.contains(['/', '\\']) || spec.task == "." || spec.task == ".." {
            bail!(
                "--data {}: the task name is a directory under --out: no path separators",
                spec.task
            );
        }
        match DataKind::detect(&spec.path)? {
            DataKind::TextClassification => {
                user_tasks.push(text::read_train_task(&spec.task, &spec.path)?)
            }
            DataKind::ImageClassification => {
                image_tasks.push(ImageTask::from_folder(&spec.task, &spec.path)?)
            }
            DataKind::TextToText => {
                pair_tasks.push(TextToTextTask::from_jsonl(&spec.task, &spec.path)?)
            }
        }
    }
    let kinds = [
        !user_tasks.is_empty(),
        !image_tasks.is_empty(),
        !pair_tasks.is_empty(),
    ];
    if kinds.iter().filter(|&&k| k).count() > 1 {
        bail!("--data: text, image and text-to-text tasks need different models; train them in separate runs");
    }
    if !pair_tasks.is_empty() {
        if mode == Mode::LinearProbe {
            bail!(
                "--data: text-to-text pairs have no classification head to probe: a T5 expert \
                 is scored by its own decoding (`pmq eval --model EXPERT --data NAME=FILE`); \
                 fine-tune one with --mode full"
            );
        }
        let (Some(model), Some(root)) = (args.model.as_deref(), args.out) else {
            bail!("--data with text-to-text pairs: give --model (the T5 checkpoint) and --out");
        };
        let mut inputs = vec![model.to_path_buf()];
        inputs.extend(data.iter().map(|s| s.path.clone()));
        crate::output::prepare_work_dir(&root, &inputs, "--out")?;
        let start = std::time::Instant::now();
        let mut experts = Vec::new();
        for task in &pair_tasks {
            let out = finetune_text_to_text(model, task, &cfg, &root.join(&task.name))
                .with_context(|| format!("training the text-to-text expert of {:?}", task.name))?;
            let rec = ExpertRecord::read(&out.dir)?
                .with_context(|| format!("{} has no expert record", out.dir.display()))?;
            eprintln!(
                "{:>20}: full in {:.1} s on {} pairs, loss {:.4}, token acc {:.3}{}",
                task.name,
                out.train_seconds,
                rec.train_examples,
                out.final_loss,
                rec.train_accuracy,
                if out.cached { " (cached)" } else { "" }
            );
            experts.push(expert_json(&task.name, &[], &out, &rec));
        }
        println!(
            "{}",
            serde_json::json!({
                "preset": preset, "mode": mode.name(), "config": cfg, "backbone": model,
                "experts": experts, "seconds": start.elapsed().as_secs_f64(),
            })
        );
        return Ok(());
    }
    if !image_tasks.is_empty() {
        return run_images(
            &image_tasks,
            args.model.as_deref(),
            args.out,
            (preset, mode),
            &cfg,
            &data,
        );
    }
    if !user_tasks.is_empty() && args.out.is_none() {
        bail!("--data trains your own tasks: give --out DIR for their experts");
    }
    let tasks: Vec<String> = if !user_tasks.is_empty() {
        user_tasks.iter().map(|t| t.name.clone()).collect()
    } else if args.tasks.is_empty() {
        task_names().iter().map(|t| t.to_string()).collect()
    } else {
        args.tasks
    };
    if user_tasks.is_empty() {
        for t in &tasks {
            if !task_names().contains(&t.as_str()) {
                bail!(
                    "unknown task {t:?}; the tasks are {} (your own data: --data NAME=FILE)",
                    task_names().join(", ")
                );
            }
        }
    }
    let root = args
        .out
        .unwrap_or_else(|| cache.join("experts").join(preset).join(mode.name()));
    let mut inputs = crate::output::testbed_inputs(&cache);
    inputs.extend(args.model.iter().cloned());
    inputs.extend(data.iter().map(|s| s.path.clone()));
    crate::output::prepare_work_dir(&root, &inputs, "--out")?;
    let backbone = args.model.clone().unwrap_or_else(|| backbone_dir(&cache));
    if !backbone.join("config.json").is_file() {
        bail!(
            "no model at {}; {}",
            backbone.display(),
            match &args.model {
                Some(_) => "--model needs an HF BERT directory".to_string(),
                None => format!("run `pmq testbed --cache {} fetch` first", cache.display()),
            }
        );
    }
    let start = std::time::Instant::now();
    let mut experts = Vec::new();
    let mut user_tasks = user_tasks.into_iter();
    for name in &tasks {
        let task = match user_tasks.next() {
            Some(t) => t,
            None => load_task(&cache, name, &SplitConfig::default()).with_context(|| {
                format!(
                    "loading task {name:?} (fetch it with `pmq testbed --cache {} fetch`)",
                    cache.display()
                )
            })?,
        };
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
        experts.push(expert_json(name, &rec.labels, &out, &rec));
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

/// Experts (full fine-tuning) or linear-probe heads for image folder tasks from the CLIP vision
/// tower `model`.
fn run_images(
    tasks: &[ImageTask],
    model: Option<&std::path::Path>,
    out: Option<PathBuf>,
    (preset, mode): (&str, Mode),
    cfg: &FinetuneConfig,
    data: &[crate::labelled::DataSpec],
) -> Result<()> {
    let Some(model) = model else {
        bail!(
            "--data with image folders: give --model, the CLIP checkpoint to fine-tune (or to \
             probe, with --mode probe)"
        );
    };
    let Some(root) = out else {
        bail!("--data trains your own tasks: give --out DIR for their experts");
    };
    let mut inputs = vec![model.to_path_buf()];
    inputs.extend(data.iter().map(|s| s.path.clone()));
    crate::output::prepare_work_dir(&root, &inputs, "--out")?;
    let start = std::time::Instant::now();
    let mut experts = Vec::new();
    for task in tasks {
        let out = finetune_images(model, task, mode, cfg, &root.join(&task.name))
            .with_context(|| format!("training the {mode} expert of {:?}", task.name))?;
        let rec = ExpertRecord::read(&out.dir)?
            .with_context(|| format!("{} has no expert record", out.dir.display()))?;
        eprintln!(
            "{:>20}: {mode} in {:.1} s on {} images, train acc {:.3}{}",
            task.name,
            out.train_seconds,
            rec.train_examples,
            rec.train_accuracy,
            if out.cached { " (cached)" } else { "" }
        );
        experts.push(expert_json(&task.name, &task.labels, &out, &rec));
    }
    println!(
        "{}",
        serde_json::json!({
            "preset": preset,
            "mode": mode.name(),
            "config": cfg,
            "backbone": model,
            "experts": experts,
            "seconds": start.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

/// One expert of the JSON summary.
fn expert_json(
    task: &str,
    labels: &[String],
    out: &pmq_finetune::ExpertOutput,
    rec: &ExpertRecord,
) -> serde_json::Value {
    serde_json::json!({
        "task": task,
        "labels": labels,
        "dir": out.dir,
        "head": out.head,
        "cached": out.cached,
        "train_seconds": out.train_seconds,
        "steps": out.steps,
        "final_loss": out.final_loss,
        "train_accuracy": rec.train_accuracy,
        "train_examples": rec.train_examples,
    })
}
