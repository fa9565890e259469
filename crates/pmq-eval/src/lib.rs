//! Per-task accuracy of a BERT model directory with linear task heads.
//!
//! For every task, each test text is embedded by mean pooling over the attention mask
//! ([`Encoder`]), classified by its task's [`Head`] (`argmax W·e + b`), and
//! `accuracy = #(prediction = label) / #examples`. The model — an HF BERT directory (an expert,
//! a merged model, a fake-quant model) or a pmq GPTQ checkpoint, which is dequantized into a
//! temporary directory first — is loaded once for all tasks.
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
mod head;
mod hits;
#[doc(hidden)]
pub use encoder::{is_gptq_dir, Encoder};
pub use head::{Head, EXPERT_FILE, HEAD_FILE};
pub use hits::{decode_hits, encode_hits};

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
    /// Texts per forward pass.
    pub batch_size: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            max_examples: None,
            max_seq_len: 128,
            batch_size: 32,
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

/// Checks that `head` fits `task` and an encoder of width `hidden`.
fn check_pair(task: &TaskData, head: &Head, hidden: usize) -> Result<()> {
    if head.labels != task.labels {
        bail!(
            "head for task {:?} has labels {:?}, but task {:?} has labels {:?}",
            head.task,
            head.labels,
            task.name,
            task.labels
        );
    }
    if head.hidden != hidden {
        bail!(
            "head for task {:?} expects embeddings of width {}, the model produces {hidden}",
            head.task,
            head.hidden
        );
    }
    if head.task != task.name {
        tracing::warn!(head = %head.task, task = %task.name, "head was trained for another task name");
    }
    Ok(())
}

/// Test-split accuracy of the model in `model_dir` on every `(task, head)` pair.
pub fn evaluate(
    model_dir: &Path,
    tasks: &[(&TaskData, &Head)],
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
    let encoder = Encoder::open(model_dir, opts.max_seq_len)?;
    for (task, head) in tasks {
        check_pair(task, head, encoder.hidden())?;
        if let Some(m) = head.max_seq_len {
            if m != opts.max_seq_len {
                tracing::warn!(
                    task = %task.name, head = m, eval = opts.max_seq_len,
                    "the head was trained with another max_seq_len than the evaluation uses"
                );
            }
        }
    }
    let mut out = Vec::with_capacity(tasks.len());
    for (task, head) in tasks {
        let n = opts
            .max_examples
            .map_or(task.test.len(), |m| m.min(task.test.len()));
        let examples = &task.test[..n];
        if examples.is_empty() {
            bail!("task {:?} has no test examples", task.name);
        }
        let pb = ProgressBar::new(n as u64).with_style(
            ProgressStyle::with_template("{msg:>20} [{bar:30}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_message(format!("eval {}", task.name));
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let emb = encoder.embed(&texts, opts.batch_size, Some(&pb))?;
        pb.finish_and_clear();
        let labels: Vec<usize> = examples.iter().map(|e| e.label).collect();
        let right = outcomes(head, &emb, &labels);
        let (correct, total) = (right.iter().filter(|&&b| b).count(), right.len());
        let acc = TaskAccuracy {
            task: task.name.clone(),
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
