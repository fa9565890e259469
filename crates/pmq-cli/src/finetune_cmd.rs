//! `pmq finetune`: train (or reuse) one expert per task — the testbed's or the user's own
//! (`--data`: text classification JSONL, or an image folder per class probed on a CLIP model)
//! — by full fine-tuning or a linear probe, and print a JSON summary.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pmq_eval::tasks::{text, DataKind, ImageTask, TextToTextTask};
use pmq_finetune::{
    finetune, finetune_images, finetune_text_to_text, ExpertOutput, ExpertRecord, FinetuneConfig,
    Mode,
};
use pmq_testbed::{backbone_dir, default_cache_dir, load_task, task_names, SplitConfig};
use std::path::{Path, PathBuf};

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
        prepare_out(&root, &[model.to_path_buf()], &data)?;
        return train_each(
            &pair_tasks,
            |t| &t.name,
            &root,
            (preset, mode, &cfg, model),
            |t, dir| finetune_text_to_text(model, t, &cfg, dir),
        );
    }
    if !image_tasks.is_empty() {
        let Some(model) = args.model.as_deref() else {
            bail!(
                "--data with image folders: give --model, the CLIP checkpoint to fine-tune (or to \
                 probe, with --mode probe)"
            );
        };
        let Some(root) = args.out else {
            bail!("--data trains your own tasks: give --out DIR for their experts");
        };
        prepare_out(&root, &[model.to_path_buf()], &data)?;
        return train_each(
            &image_tasks,
            |t| &t.name,
            &root,
            (preset, mode, &cfg, model),
            |t, dir| finetune_images(model, t, mode, &cfg, dir),
        );
    }
    if !user_tasks.is_empty() && args.out.is_none() {
        bail!("--data trains your own tasks: give --out DIR for their experts");
    }
    let names: Vec<String> = if !user_tasks.is_empty() {
        user_tasks.iter().map(|t| t.name.clone()).collect()
    } else if args.tasks.is_empty() {
        task_names().iter().map(|t| t.to_string()).collect()
    } else {
        args.tasks
    };
    if user_tasks.is_empty() {
        for t in &names {
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
    prepare_out(&root, &inputs, &data)?;
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
    let tasks = if user_tasks.is_empty() {
        let mut v = Vec::with_capacity(names.len());
        for name in &names {
            v.push(
                load_task(&cache, name, &SplitConfig::default()).with_context(|| {
                    format!(
                        "loading task {name:?} (fetch it with `pmq testbed --cache {} fetch`)",
                        cache.display()
                    )
                })?,
            );
        }
        v
    } else {
        user_tasks
    };
    train_each(
        &tasks,
        |t| &t.name,
        &root,
        (preset, mode, &cfg, &backbone),
        |t, dir| finetune(&backbone, t, mode, &cfg, dir),
    )
}

/// Checks the experts' root `root` against the run's inputs (`inputs` and the `--data` paths).
fn prepare_out(root: &Path, inputs: &[PathBuf], data: &[crate::labelled::DataSpec]) -> Result<()> {
    let mut inputs = inputs.to_vec();
    inputs.extend(data.iter().map(|s| s.path.clone()));
    crate::output::prepare_work_dir(root, &inputs, "--out")
}

/// Trains (or reuses) the expert of every task with `train` into `root/<name>`, prints a line
/// per expert and then the JSON summary of the run `(preset, mode, config, backbone)`.
fn train_each<T>(
    tasks: &[T],
    name: impl Fn(&T) -> &str,
    root: &Path,
    (preset, mode, cfg, backbone): (&str, Mode, &FinetuneConfig, &Path),
    train: impl Fn(&T, &Path) -> Result<ExpertOutput>,
) -> Result<()> {
    let start = std::time::Instant::now();
    let mut experts = Vec::new();
    for task in tasks {
        let name = name(task);
        let out = train(task, &root.join(name))
            .with_context(|| format!("training the {mode} expert of {name:?}"))?;
        let rec = ExpertRecord::read(&out.dir)?
            .with_context(|| format!("{} has no expert record", out.dir.display()))?;
        eprintln!(
            "{name:>20}: {mode} in {:.1} s, {} steps on {} examples, loss {:.4}, train acc {:.3}{}",
            out.train_seconds,
            out.steps,
            rec.train_examples,
            out.final_loss,
            rec.train_accuracy,
            if out.cached { " (cached)" } else { "" }
        );
        experts.push(expert_json(name, &out, &rec));
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

/// One expert of the JSON summary (its classes as recorded; none for text-to-text).
fn expert_json(task: &str, out: &ExpertOutput, rec: &ExpertRecord) -> serde_json::Value {
    serde_json::json!({
        "task": task,
        "labels": rec.labels,
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
