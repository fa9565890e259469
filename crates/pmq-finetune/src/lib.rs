//! Task experts for merging: one per task, trained from a shared backbone (BERT for text
//! classification, a CLIP vision tower for image folders, T5 for text-to-text pairs:
//! [`finetune_text_to_text`]).
//!
//! * [`Mode::Full`] fine-tunes every encoder weight plus a linear head on the mean-pooled
//!   sentence embedding (cross-entropy, AdamW, warm-up/decay schedule, gradient clipping;
//!   see [`full`]) with a differentiable BERT forward ([`bert::TrainBert`]). The output is an HF
//!   model directory with the backbone's exact tensor names, shapes and dtypes, so `pmq merge`
//!   accepts it with the backbone as base, plus `pmq_head.safetensors` and `pmq_expert.json`.
//! * [`Mode::LinearProbe`] freezes the backbone and trains only the head ([`probe`]); it writes
//!   the head and the record (the "pre-trained" baseline of the benchmark, and the head of an
//!   expert trained elsewhere).
//!
//! [`finetune_images`] does both for a CLIP vision tower on an image folder task.
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
pub mod clip;
mod config;
pub mod data;
pub mod fingerprint;
pub mod full;
mod layers;
pub mod optim;
mod output;
pub mod probe;
pub mod t5;

pub use config::{FinetuneConfig, Mode, MAX_GRAD_NORM};
pub use fingerprint::{fingerprint, fingerprint_of};
pub use output::ExpertRecord;

use anyhow::{Context, Result};
use candle_core::DType;
use pmq_eval::tasks::{ImageExample, ImageTask};
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

/// The cached expert in `out_dir` when its record carries `fp` and its files are complete.
fn cached(out_dir: &Path, fp: &str, mode: Mode, task: &str) -> Option<ExpertOutput> {
    match ExpertRecord::read(out_dir) {
        // a text-to-text expert (no labels) has no classification head
        Ok(Some(rec))
            if rec.fingerprint == fp
                && (rec.labels.is_empty() || out_dir.join(HEAD_FILE).is_file()) =>
        {
            let complete = mode == Mode::LinearProbe || out_dir.join("model.safetensors").is_file();
            if complete {
                tracing::info!(task = %task, mode = %mode, dir = %out_dir.display(), "expert cached");
                return Some(ExpertOutput::from_record(out_dir, &rec, true));
            }
            None
        }
        Ok(Some(_)) => {
            tracing::info!(task = %task, dir = %out_dir.display(), "fingerprint changed; retraining");
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(dir = %out_dir.display(), "unreadable expert record ({e:#}); retraining");
            None
        }
    }
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
    if let Some(out) = cached(out_dir, &fp, mode, &task.name) {
        return Ok(out);
    }
    output::check_replaceable(out_dir)?;
    tracing::info!(
        task = %task.name, mode = %mode, examples = train.len(), epochs = cfg.epochs,
        batch = cfg.batch_size, max_seq_len = cfg.max_seq_len, "training expert"
    );
    let mut trained = match mode {
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
    if let Some(h) = trained.head.as_mut() {
        h.max_seq_len = Some(cfg.max_seq_len);
    }
    let head = trained
        .head
        .as_ref()
        .context("a classification run produces a head")?;
    let record = ExpertRecord::of_run(
        (&task.name, &task.labels),
        mode,
        cfg,
        fp,
        backbone,
        train.len(),
        &trained,
    );
    match mode {
        Mode::Full => output::write_full(backbone, &trained.tensors, Some(head), &record, out_dir)?,
        Mode::LinearProbe => output::write_probe(head, &record, out_dir)?,
    }
    tracing::info!(
        task = %task.name, mode = %mode, seconds = record.train_seconds, steps = record.steps,
        loss = record.final_train_loss, train_accuracy = record.train_accuracy,
        dir = %out_dir.display(), "expert written"
    );
    Ok(ExpertOutput::from_record(out_dir, &record, false))
}

/// The training images a config uses: all of them, or with `max_train` a seeded random
/// subset of that size (the folder order is by class, so a prefix would drop classes).
pub fn train_images(task: &ImageTask, cfg: &FinetuneConfig) -> Vec<ImageExample> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut v = task.examples.clone();
    if let Some(m) = cfg.max_train.filter(|&m| m < v.len()) {
        v.shuffle(&mut rand::rngs::StdRng::seed_from_u64(cfg.seed));
        v.truncate(m);
    }
    v
}

/// Trains (or reuses) the expert of the image task `task` from the CLIP vision tower in
/// `model`, in `out_dir`: [`Mode::Full`] fine-tunes the whole tower with a head on its image
/// embedding ([`clip::TrainClip`], the loop of [`full`]) and writes an HF directory with the
/// model's tensor names (the text tower of a `CLIPModel` copied as it is);
/// [`Mode::LinearProbe`] trains only the head on the frozen tower (head + record).
pub fn finetune_images(
    model: &Path,
    task: &ImageTask,
    mode: Mode,
    cfg: &FinetuneConfig,
    out_dir: &Path,
) -> Result<ExpertOutput> {
    cfg.validate()?;
    let train = train_images(task, cfg);
    let digest = fingerprint::image_examples_sha256(&train)?;
    let fp = fingerprint_of(
        model,
        &task.name,
        &task.labels,
        (&digest, train.len()),
        mode,
        cfg,
    )?;
    if let Some(out) = cached(out_dir, &fp, mode, &task.name) {
        return Ok(out);
    }
    output::check_replaceable(out_dir)?;
    tracing::info!(task = %task.name, mode = %mode, images = train.len(), "training image expert");
    let trained = match mode {
        Mode::LinearProbe => {
            probe::train_image_probe(model, &train, &task.name, &task.labels, cfg)?
        }
        Mode::Full => {
            let tower = clip::TrainClip::load(model, DType::F32)?;
            let size = tower.config().image_size as u32;
            let processor = pmq_models::ClipImageProcessor::from_dir(model, size)?;
            let mut pixels = Vec::with_capacity(train.len());
            for e in &train {
                pixels.push(processor.load_batch(&[e.path.as_path()])?.squeeze(0)?);
            }
            let y: Vec<usize> = train.iter().map(|e| e.label).collect();
            full::train_full_images(&tower, &pixels, &y, &task.name, &task.labels, cfg)?
        }
    };
    let record = ExpertRecord::of_run(
        (&task.name, &task.labels),
        mode,
        cfg,
        fp,
        model,
        train.len(),
        &trained,
    );
    match mode {
        Mode::Full => output::write_full(
            model,
            &trained.tensors,
            trained.head.as_ref(),
            &record,
            out_dir,
        )?,
        Mode::LinearProbe => output::write_probe(
            trained.head.as_ref().context("a probe produces a head")?,
            &record,
            out_dir,
        )?,
    }
    tracing::info!(
        task = %task.name, mode = %mode, seconds = record.train_seconds,
        train_accuracy = record.train_accuracy, dir = %out_dir.display(), "image expert written"
    );
    Ok(ExpertOutput::from_record(out_dir, &record, false))
}

/// Fine-tunes (or reuses) the T5 expert of the text-to-text task `task` from the model in
/// `model`, in `out_dir`: every tensor trained on the mean token cross-entropy of the targets
/// ([`t5::TrainT5`], the loop of [`full`]); an HF directory with the model's tensor names and
/// the record, no classification head (the model is scored by its own decoding). Inputs and
/// targets are truncated to `max_seq_len` tokens.
pub fn finetune_text_to_text(
    model: &Path,
    task: &pmq_eval::tasks::TextToTextTask,
    cfg: &FinetuneConfig,
    out_dir: &Path,
) -> Result<ExpertOutput> {
    cfg.validate()?;
    let n = cfg
        .max_train
        .map_or(task.examples.len(), |m| m.min(task.examples.len()));
    let train = &task.examples[..n];
    if train.is_empty() {
        anyhow::bail!("task {:?} has no training pairs", task.name);
    }
    // the pairs as examples for the fingerprint: input, a separator no text holds, target
    let as_examples: Vec<pmq_testbed::Example> = train
        .iter()
        .map(|p| pmq_testbed::Example {
            text: format!("{}\u{0}{}", p.input, p.target),
            label: 0,
        })
        .collect();
    let fp = fingerprint(model, &task.name, &[], &as_examples, Mode::Full, cfg)?;
    if let Some(out) = cached(out_dir, &fp, Mode::Full, &task.name) {
        return Ok(out);
    }
    output::check_replaceable(out_dir)?;
    let t5 = t5::TrainT5::load(model, DType::F32)?;
    let tok = TextTokenizer::from_file(&model.join("tokenizer.json"), cfg.max_seq_len)
        .with_context(|| format!("loading the tokenizer of {}", model.display()))?;
    let data = data::Seq2Seq::new(&tok, train, t5.config().decoder_start_token_id)?;
    tracing::info!(task = %task.name, pairs = n, "fine-tuning text-to-text expert");
    let trained = full::train_full_seq2seq(&t5, &data, &task.name, cfg)?;
    let record = ExpertRecord::of_run((&task.name, &[]), Mode::Full, cfg, fp, model, n, &trained);
    output::write_full(model, &trained.tensors, None, &record, out_dir)?;
    tracing::info!(
        task = %task.name, seconds = record.train_seconds, loss = record.final_train_loss,
        token_accuracy = record.train_accuracy, dir = %out_dir.display(), "text-to-text expert written"
    );
    Ok(ExpertOutput::from_record(out_dir, &record, false))
}
