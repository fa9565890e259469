//! Per-task accuracy of a model directory: text classification (BERT), image classification
//! (CLIP vision tower) with linear task heads, and text-to-text (T5) by exact match.
//!
//! For a classification task each test example is embedded — a text by mean pooling over the
//! attention mask ([`Encoder`]), an image by CLIP's image embedding ([`ImageEncoder`]) —,
//! classified by its task's [`Head`] (`argmax W·e + b`), and
//! `accuracy = #(prediction = label) / #examples`. A text-to-text task counts the inputs whose
//! greedy decoding equals the target ([`Generator`]). The model — an HF directory (an expert,
//! a merged model, a fake-quant model) or a pmq GPTQ checkpoint, which is dequantized into a
//! temporary directory first — is loaded once for all tasks ([`evaluate_tasks`]). The tasks a
//! user brings are read by [`tasks`].
//!
//! ```no_run
//! use pmq_eval::{evaluate, EvalOptions, Head};
//! use pmq_testbed::{load_task, SplitConfig};
//! # fn main() -> anyhow::Result<()> {
//! let cache = std::path::Path::new("/cache");
//! let task = load_task(cache, "spam", &SplitConfig::default())?;
//! let head = Head::load(&cache.join("experts/bench/full/spam"))?;
//! let acc = evaluate(&cache.join("merged"), &[(&task, &head)], &EvalOptions::default())?;
//! println!("{}: {:.3}", acc[0].task, acc[0].accuracy);
//! # Ok(())
//! # }
//! ```

mod encoder;
mod generation;
mod head;
mod hits;
mod image_encoder;
mod model_dir;
pub mod tasks;
#[doc(hidden)]
pub use encoder::Encoder;
pub use generation::Generator;
pub use head::{Head, EXPERT_FILE, HEAD_FILE};
pub use hits::{decode_hits, encode_hits};
pub use image_encoder::ImageEncoder;
pub use model_dir::{is_gptq_dir, ModelDir};
use tasks::{ImageTask, TextToTextTask};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pmq_testbed::TaskData;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How [`evaluate`] runs.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Evaluate only the first `n` test examples of each task.
    pub max_examples: Option<usize>,
    /// Tokenizer truncation length; must match the one the heads were trained with.
    pub max_seq_len: usize,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// Text-to-text: cut decoding after this many tokens and compare the cut output [default:
    /// one step more than the longest tokenized target, and the model must stop within it].
    pub max_new_tokens: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            max_examples: None,
            max_seq_len: 128,
            batch_size: 32,
            max_new_tokens: None,
        }
    }
}

/// The accuracy of one task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskAccuracy {
    pub task: String,
    /// `correct / total`.
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
    /// Which examples were right ([`encode_hits`]), for paired comparisons between models;
    /// absent in results written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<String>,
}

impl TaskAccuracy {
    /// The per-example outcomes, when recorded.
    pub fn outcomes(&self) -> Option<Result<Vec<bool>>> {
        self.hits.as_ref().map(|h| {
            let v = decode_hits(h, self.total)?;
            let c = v.iter().filter(|&&b| b).count();
            if c != self.correct {
                bail!(
                    "task {:?}: the hit string has {c} correct examples, the record says {}",
                    self.task,
                    self.correct
                );
            }
            Ok(v)
        })
    }
}

/// Whether each of `embeddings` (one per example) is classified as its label under `head`.
pub fn outcomes(head: &Head, embeddings: &[Vec<f32>], labels: &[usize]) -> Vec<bool> {
    embeddings
        .iter()
        .zip(labels)
        .map(|(e, &l)| head.predict(e) == l)
        .collect()
}

/// Accuracy of `embeddings` (one per example) against `labels` under `head`.
pub fn accuracy(head: &Head, embeddings: &[Vec<f32>], labels: &[usize]) -> (usize, usize) {
    let correct = outcomes(head, embeddings, labels)
        .iter()
        .filter(|&&b| b)
        .count();
    (correct, labels.len())
}

/// Checks that `head` fits a task `(name, labels)` and an encoder of width `hidden`.
fn check_head(name: &str, labels: &[String], head: &Head, hidden: usize) -> Result<()> {
    if head.labels != labels {
        bail!(
            "head for task {:?} has labels {:?}, but task {name:?} has labels {labels:?}",
            head.task,
            head.labels,
        );
    }
    if head.hidden != hidden {
        bail!(
            "head for task {:?} expects embeddings of width {}, the model produces {hidden}",
            head.task,
            head.hidden
        );
    }
    if head.task != name {
        tracing::warn!(head = %head.task, task = %name, "head was trained for another task name");
    }
    Ok(())
}

/// Test-split accuracy of the BERT model in `model_dir` on every `(task, head)` pair.
pub fn evaluate(
    model_dir: &Path,
    tasks: &[(&TaskData, &Head)],
    opts: &EvalOptions,
) -> Result<Vec<TaskAccuracy>> {
    let tasks: Vec<EvalTask> = tasks.iter().map(|(t, h)| EvalTask::Text(t, h)).collect();
    evaluate_tasks(model_dir, &tasks, opts)
}

/// A task to evaluate, with what scores it.
#[derive(Clone, Copy, Debug)]
pub enum EvalTask<'a> {
    /// Text classification (BERT): the task's test split, scored by the head.
    Text(&'a TaskData, &'a Head),
    /// Image classification (CLIP vision tower), scored by the head.
    Image(&'a ImageTask, &'a Head),
    /// Text-to-text (T5), scored by exact match.
    TextToText(&'a TextToTextTask),
}

impl EvalTask<'_> {
    /// The task name.
    pub fn name(&self) -> &str {
        match self {
            EvalTask::Text(t, _) => &t.name,
            EvalTask::Image(t, _) => &t.name,
            EvalTask::TextToText(t) => &t.name,
        }
    }

    /// The kind of data.
    pub fn kind(&self) -> tasks::DataKind {
        match self {
            EvalTask::Text(..) => tasks::DataKind::TextClassification,
            EvalTask::Image(..) => tasks::DataKind::ImageClassification,
            EvalTask::TextToText(_) => tasks::DataKind::TextToText,
        }
    }

    fn len(&self) -> usize {
        match self {
            EvalTask::Text(t, _) => t.test.len(),
            EvalTask::Image(t, _) => t.examples.len(),
            EvalTask::TextToText(t) => t.examples.len(),
        }
    }
}

/// The model loaded for one kind of task.
enum Scorer {
    Text(Box<Encoder>),
    Image(Box<ImageEncoder>),
    Generate(Box<Generator>),
}

impl Scorer {
    fn open(model_dir: &Path, kind: tasks::DataKind, opts: &EvalOptions) -> Result<Self> {
        use tasks::DataKind::*;
        Ok(match kind {
            TextClassification => {
                Scorer::Text(Box::new(Encoder::open(model_dir, opts.max_seq_len)?))
            }
            ImageClassification => Scorer::Image(Box::new(ImageEncoder::open(model_dir)?)),
            TextToText => Scorer::Generate(Box::new(Generator::open(model_dir, opts.max_seq_len)?)),
        })
    }

    fn hidden(&self) -> Option<usize> {
        match self {
            Scorer::Text(e) => Some(e.hidden()),
            Scorer::Image(e) => Some(e.hidden()),
            Scorer::Generate(_) => None,
        }
    }

    /// Whether each of the first `n` examples of `task` is right.
    fn outcomes(
        &self,
        task: &EvalTask,
        n: usize,
        opts: &EvalOptions,
        pb: &ProgressBar,
    ) -> Result<Vec<bool>> {
        let bs = opts.batch_size;
        Ok(match (self, task) {
            (Scorer::Text(enc), EvalTask::Text(t, head)) => {
                let ex = &t.test[..n];
                let texts: Vec<&str> = ex.iter().map(|e| e.text.as_str()).collect();
                let emb = enc.embed(&texts, bs, Some(pb))?;
                let labels: Vec<usize> = ex.iter().map(|e| e.label).collect();
                outcomes(head, &emb, &labels)
            }
            (Scorer::Image(enc), EvalTask::Image(t, head)) => {
                let ex = &t.examples[..n];
                let paths: Vec<&Path> = ex.iter().map(|e| e.path.as_path()).collect();
                let emb = enc.embed(&paths, bs, Some(pb))?;
                let labels: Vec<usize> = ex.iter().map(|e| e.label).collect();
                outcomes(head, &emb, &labels)
            }
            (Scorer::Generate(g), EvalTask::TextToText(t)) => {
                g.exact_matches(&t.examples[..n], bs, opts.max_new_tokens, Some(pb))?
            }
            _ => bail!("task {:?} does not fit the loaded model", task.name()),
        })
    }
}

/// Test accuracy of the model in `model_dir` on every task. All tasks must be of one kind
/// (one model reads text, images, or input/target pairs); the model is loaded once.
pub fn evaluate_tasks(
    model_dir: &Path,
    tasks: &[EvalTask],
    opts: &EvalOptions,
) -> Result<Vec<TaskAccuracy>> {
    if opts.max_seq_len == 0 {
        bail!("max_seq_len must be positive");
    }
    if opts.batch_size == 0 {
        bail!("batch_size must be positive");
    }
    if opts.max_examples == Some(0) {
        bail!("max_examples must be at least 1 (or unset for the whole test split)");
    }
    if opts.max_new_tokens == Some(0) {
        bail!("max_new_tokens must be at least 1 (or unset for the longest target)");
    }
    if !model_dir.is_dir() {
        bail!("model directory {} does not exist", model_dir.display());
    }
    let Some(first) = tasks.first() else {
        return Ok(Vec::new());
    };
    if let Some(t) = tasks.iter().find(|t| t.kind() != first.kind()) {
        bail!(
            "tasks {:?} ({}) and {:?} ({}) cannot be evaluated on one model: each model reads \
             one kind of data",
            first.name(),
            first.kind().name(),
            t.name(),
            t.kind().name()
        );
    }
    let scorer = Scorer::open(model_dir, first.kind(), opts)?;
    for task in tasks {
        let (name, labels, head) = match task {
            EvalTask::Text(t, h) => (&t.name, &t.labels, *h),
            EvalTask::Image(t, h) => (&t.name, &t.labels, *h),
            EvalTask::TextToText(_) => continue,
        };
        if let Some(hidden) = scorer.hidden() {
            check_head(name, labels, head, hidden)?;
        }
        if let (EvalTask::Text(..), Some(m)) = (task, head.max_seq_len) {
            if m != opts.max_seq_len {
                tracing::warn!(
                    task = %name, head = m, eval = opts.max_seq_len,
                    "the head was trained with another max_seq_len than the evaluation uses"
                );
            }
        }
    }
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        let n = opts.max_examples.map_or(task.len(), |m| m.min(task.len()));
        if n == 0 {
            bail!("task {:?} has no test examples", task.name());
        }
        let pb = ProgressBar::new(n as u64).with_style(
            ProgressStyle::with_template("{msg:>20} [{bar:30}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_message(format!("eval {}", task.name()));
        let right = scorer.outcomes(task, n, opts, &pb)?;
        pb.finish_and_clear();
        let (correct, total) = (right.iter().filter(|&&b| b).count(), right.len());
        let acc = TaskAccuracy {
            task: task.name().to_string(),
            accuracy: correct as f64 / total as f64,
            correct,
            total,
            hits: Some(encode_hits(&right)),
        };
        tracing::info!(task = %acc.task, accuracy = acc.accuracy, correct, total, model = %model_dir.display(), "evaluated");
        out.push(acc);
    }
    Ok(out)
}
