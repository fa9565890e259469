//! Task definitions a user brings: what `pmq finetune`, `pmq eval` and `pmq run` read besides
//! the built-in testbed.
//!
//! | kind | data | scored by |
//! |---|---|---|
//! | text classification | JSONL lines `{"text", "label"}` ([`text`]) | a linear head on the BERT sentence embedding |
//! | image classification | a folder with one sub-folder of images per class ([`image`]) | a linear head on the CLIP image embedding |
//! | text-to-text | JSONL lines `{"input", "target"}` ([`seq2seq`]) | exact match of T5's greedy decoding |
//!
//! [`DataKind::detect`] tells them apart: a directory is an image folder; a JSONL file is
//! text-to-text when its first line has `"input"` and `"target"`, classification when it has
//! `"text"`.

pub mod image;
pub mod jsonl;
pub mod seq2seq;
pub mod text;

pub use image::{ImageExample, ImageTask};
pub use seq2seq::{TextPair, TextToTextTask};

use crate::{EvalTask, Head};
use anyhow::{bail, Context, Result};
use pmq_testbed::TaskData;
use std::path::Path;

/// A task's test data with what scores it, owned ([`TestTask::as_eval`] borrows it for
/// [`crate::evaluate_tasks`]).
#[derive(Clone, Debug)]
pub enum TestTask {
    /// Text classification: the test split of a task, and its head.
    Text(TaskData, Head),
    /// Image classification, and its head.
    Image(ImageTask, Head),
    /// Text-to-text pairs (exact match).
    TextToText(TextToTextTask),
}

impl TestTask {
    /// The user's test data for task `name` at `path` ([`DataKind::detect`]), scored by
    /// `head` (classification) or by exact match (text-to-text, no head).
    pub fn read(name: &str, path: &Path, head: Option<Head>) -> Result<Self> {
        let kind = DataKind::detect(path)?;
        Ok(match (kind, head) {
            (DataKind::TextClassification, Some(h)) => {
                TestTask::Text(text::read_test_task(name, path, &h)?, h)
            }
            (DataKind::ImageClassification, Some(h)) => {
                TestTask::Image(ImageTask::from_folder_with_labels(name, path, &h.labels)?, h)
            }
            (DataKind::TextToText, None) => {
                TestTask::TextToText(TextToTextTask::from_jsonl(name, path)?)
            }
            (DataKind::TextToText, Some(_)) => bail!(
                "task {name:?}: {} holds text-to-text pairs, which are scored by exact match of \
                 the model's decoding, not by a head: drop its head",
                path.display()
            ),
            (k, None) => bail!(
                "task {name:?}: {} is {} data, scored with its expert's head: give the head (pmq eval: \
                 --task {name}=HEAD; a recipe or suite: `head:`)",
                path.display(),
                k.name()
            ),
        })
    }

    /// The borrowed form [`crate::evaluate_tasks`] takes.
    pub fn as_eval(&self) -> EvalTask<'_> {
        match self {
            TestTask::Text(t, h) => EvalTask::Text(t, h),
            TestTask::Image(t, h) => EvalTask::Image(t, h),
            TestTask::TextToText(t) => EvalTask::TextToText(t),
        }
    }

    /// The head, for classification tasks.
    pub fn head(&self) -> Option<&Head> {
        match self {
            TestTask::Text(_, h) | TestTask::Image(_, h) => Some(h),
            TestTask::TextToText(_) => None,
        }
    }
}

/// The kind of a user's task data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// JSONL `{"text", "label"}`.
    TextClassification,
    /// A folder per class of image files.
    ImageClassification,
    /// JSONL `{"input", "target"}`.
    TextToText,
}

impl DataKind {
    /// The kind of the data at `path` (see the module documentation).
    pub fn detect(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Ok(DataKind::ImageClassification);
        }
        if !path.is_file() {
            bail!("task data {} does not exist", path.display());
        }
        let lines = jsonl::read_lines(path, "task file")?;
        let Some((n, first)) = lines.first() else {
            bail!("{}: no examples", path.display());
        };
        let v: serde_json::Value = serde_json::from_str(first)
            .with_context(|| format!("{}:{n}: not a JSON object", path.display()))?;
        let has = |k: &str| v.get(k).is_some_and(serde_json::Value::is_string);
        Ok(if has("input") && has("target") {
            DataKind::TextToText
        } else if has("text") {
            DataKind::TextClassification
        } else {
            bail!(
                "{}:{n}: a task file has {{\"text\", \"label\"}} lines (classification) or \
                 {{\"input\", \"target\"}} lines (text-to-text); an image task is a directory \
                 with one folder per class",
                path.display()
            )
        })
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            DataKind::TextClassification => "text classification",
            DataKind::ImageClassification => "image classification",
            DataKind::TextToText => "text-to-text",
        }
    }
}

/// Orders class names: all non-negative integers → numeric order (ties such as `1` and `01`
/// by their text), otherwise lexicographic. Names are kept as written, each once.
pub(crate) fn sorted_classes(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = names.into_iter().collect();
    v.sort();
    v.dedup();
    let numeric: Option<Vec<u64>> = v.iter().map(|s| s.parse::<u64>().ok()).collect();
    if let (Some(_), true) = (&numeric, v.iter().all(|s| !s.starts_with('+'))) {
        v.sort_by_key(|s| (s.parse::<u64>().unwrap_or(u64::MAX), s.clone()));
    }
    v
}

/// Whether every class name is a non-negative integer (classes trained from integer labels).
pub(crate) fn integer_classes(labels: &[String]) -> bool {
    labels
        .iter()
        .all(|l| !l.starts_with('+') && l.parse::<u64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_sort_numerically_when_all_are_integers() {
        let s = |v: &[&str]| sorted_classes(v.iter().map(|s| s.to_string()));
        assert_eq!(s(&["10", "2", "1", "2"]), ["1", "2", "10"]);
        // names are kept as written: leading zeros (image folders 00000…) and all
        assert_eq!(s(&["00042", "00007", "00000"]), ["00000", "00007", "00042"]);
        assert_eq!(s(&["01", "1", "2"]), ["01", "1", "2"]);
        assert_eq!(s(&["b", "a", "10", "b"]), ["10", "a", "b"]);
    }

    #[test]
    fn kinds_are_detected() {
        let d = tempfile::tempdir().unwrap();
        let f = |name: &str, body: &str| {
            let p = d.path().join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        let cls = f("c.jsonl", "\n{\"text\": \"x\", \"label\": 1}\n");
        let s2s = f("s.jsonl", "{\"input\": \"x\", \"target\": \"y\"}\n");
        let bad = f("b.jsonl", "{\"prompt\": \"x\"}\n");
        assert_eq!(
            DataKind::detect(&cls).unwrap(),
            DataKind::TextClassification
        );
        assert_eq!(DataKind::detect(&s2s).unwrap(), DataKind::TextToText);
        assert_eq!(
            DataKind::detect(d.path()).unwrap(),
            DataKind::ImageClassification
        );
        let e = DataKind::detect(&bad).unwrap_err().to_string();
        assert!(e.contains("b.jsonl:1") && e.contains("input"), "{e}");
        let e = DataKind::detect(&d.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
