//! Task experts for merging: one per task, trained from a shared BERT backbone.
//!
//! * [`Mode::Full`] fine-tunes every encoder weight plus a linear head on the mean-pooled
//!   sentence embedding (cross-entropy, AdamW, warm-up/decay schedule, gradient clipping;
//!   see [`full`]) with a differentiable BERT forward ([`bert::TrainBert`]). The output is an HF
//!   model directory with the backbone's exact tensor names, shapes and dtypes, so `pmq merge`
//!   accepts it with the backbone as base, plus `pmq_head.safetensors` and `pmq_expert.json`.
//! * [`Mode::LinearProbe`] freezes the backbone and trains only the head ([`probe`]); it writes
//!   the head and the record (the "pre-trained" baseline of the benchmark).
//!
//! Runs are cached: when `out_dir/pmq_expert.json` carries the same [`fingerprint`] the
//! expert is returned without training.
//!
//! ```no_run
//! use pmq_finetune::{finetune, FinetuneConfig, Mode};
//! use pmq_testbed::{backbone_dir, load_task, SplitConfig};
//! # fn main() -> anyhow::Result<()> {
//! let cache = std::path::Path::new("/cache");
//! let task = load_task(cache, "spam", &SplitConfig::default())?;
//! let out = finetune(&backbone_dir(cache), &task, Mode::Full, &FinetuneConfig::bench(),
//!                    &cache.join("experts/bench/full/spam"))?;
//! println!("{} steps, loss {:.3}, cached: {}", out.steps, out.final_loss, out.cached);
//! # Ok(())
//! # }
//! ```

pub mod bert;
mod config;
mod data;
pub mod fingerprint;
pub mod full;
pub mod optim;
mod output;
pub mod probe;

pub use config::{FinetuneConfig, Mode, MAX_GRAD_NORM};
pub use fingerprint::fingerprint;
pub use output::ExpertRecord;

use anyhow::{Context, Result};
use candle_core::DType;
use pmq_eval::HEAD_FILE;
use pmq_models::TextTokenizer;
use pmq_testbed::TaskData;
use std::path::{Path, PathBuf};

/// Where an expert is and how it was obtained.
#[derive(Clone, Debug)]
pub struct ExpertOutput {
    /// The expert directory (full mode: an HF model directory; probe: head + record only).
    pub dir: PathBuf,
    /// `dir/pmq_head.safetensors`.
    pub head: PathBuf,
    /// Whether a matching earlier run was reused.
    pub cached: bool,
    /// Training time of the run that produced the expert (of the earlier run when cached).
    pub train_seconds: f64,
    pub steps: usize,
    /// Mean training loss over the last quarter of the steps.
    pub final_loss: f64,
}

impl ExpertOutput {
    fn from_record(dir: &Path, rec: &ExpertRecord, cached: bool) -> Self {
        Self {
            dir: dir.to_path_buf(),
            head: dir.join(HEAD_FILE),
            cached,
            train_seconds: rec.train_seconds,
            steps: rec.steps,
            final_loss: rec.final_train_loss,
        }
    }
}

/// The training examples a config uses: the first `max_train` of the task's train split.
pub fn train_examples<'a>(task: &'a TaskData, cfg: &FinetuneConfig) -> &'a [pmq_testbed::Example] {
    let n = cfg
        .max_train
        .map_or(task.train.len(), |m| m.min(task.train.len()));
    &task.train[..n]
}

/// Trains (or reuses) the expert of `task` in `out_dir`.
pub fn finetune(
    backbone: &Path,
    task: &TaskData,
    mode: Mode,
    cfg: &FinetuneConfig,
    out_dir: &Path,
) -> Result<ExpertOutput> {
    cfg.validate()?;
    if task.labels.len() < 2 {
        anyhow::bail!(
            "task {:?} has {} labels; classification needs at least 2",
            task.name,
            task.labels.len()
        );
    }
    let train = train_examples(task, cfg);
    if train.is_empty() {
        anyhow::bail!("task {:?} has no training examples", task.name);
    }
    let fp = fingerprint(backbone, &task.name, &task.labels, train, mode, cfg)?;
    match ExpertRecord::read(out_dir) {
        Ok(Some(rec)) if rec.fingerprint == fp && out_dir.join(HEAD_FILE).is_file() => {
            let complete = mode == Mode::LinearProbe || out_dir.join("model.safetensors").is_file();
            if complete {
                tracing::info!(task = %task.name, mode = %mode, dir = %out_dir.display(), "expert cached");
                return Ok(ExpertOutput::from_record(out_dir, &rec, true));
            }
        }
        Ok(Some(_)) => {
            tracing::info!(task = %task.name, dir = %out_dir.display(), "fingerprint changed; retraining")
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(dir = %out_dir.display(), "unreadable expert record ({e:#}); retraining")
        }
    }
    output::check_replaceable(out_dir)?;
    tracing::info!(
        task = %task.name, mode = %mode, examples = train.len(), epochs = cfg.epochs,
        batch = cfg.batch_size, max_seq_len = cfg.max_seq_len, "training expert"
    );
    let trained = match mode {
        Mode::Full => {
            let tok =
                TextTokenizer::from_file(&backbone.join("tokenizer.json"), cfg.max_seq_len)
                    .with_context(|| format!("loading the tokenizer of {}", backbone.display()))?;
            let data = data::Encoded::new(&tok, train, task.labels.len())?;
            tracing::debug!(task = %task.name, mean_tokens = data.mean_len(), "tokenised");
            let model = bert::TrainBert::load(backbone, DType::F32)?;
            full::train_full(&model, &data, &task.name, &task.labels, cfg)?
        }
        Mode::LinearProbe => probe::train_probe(backbone, train, &task.name, &task.labels, cfg)?,
    };
    let mut head = trained.head;
    head.max_seq_len = Some(cfg.max_seq_len);
    let record = ExpertRecord {
        format: fingerprint::FORMAT_VERSION,
        task: task.name.clone(),
        labels: task.labels.clone(),
        mode,
        config: cfg.clone(),
        seed: cfg.seed,
        fingerprint: fp,
        backbone: std::fs::canonicalize(backbone).unwrap_or_else(|_| backbone.to_path_buf()),
        train_examples: train.len(),
        train_seconds: trained.seconds,
        steps: trained.steps,
        final_train_loss: trained.final_loss,
        train_accuracy: trained.train_accuracy,
        created_by: format!("pmq-finetune {}", env!("CARGO_PKG_VERSION")),
    };
    match mode {
        Mode::Full => output::write_full(backbone, &trained.tensors, &head, &record, out_dir)?,
        Mode::LinearProbe => output::write_probe(&head, &record, out_dir)?,
    }
    tracing::info!(
        task = %task.name, mode = %mode, seconds = record.train_seconds, steps = record.steps,
        loss = record.final_train_loss, train_accuracy = record.train_accuracy,
        dir = %out_dir.display(), "expert written"
    );
    Ok(ExpertOutput::from_record(out_dir, &record, false))
}
