//! Linear task heads on sentence embeddings: `logits = W·e + b`, prediction `argmax logits`.
//!
//! On disk a head is `pmq_head.safetensors` with `weight` f32 `[classes, hidden]` and `bias` f32
//! `[classes]`. Its task name and labels come from the sibling `pmq_expert.json` (written by
//! pmq-finetune: `task`, `labels`, `config.max_seq_len`) or, failing that, from the safetensors
//! metadata (`task`, `labels` as a JSON list, `max_seq_len`), which [`Head::save`] always writes.

use anyhow::{bail, Context, Result};
use pmq_io::{encode_f32, write_safetensors, Dtype, TensorStore};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of a head inside an expert directory.
pub const HEAD_FILE: &str = "pmq_head.safetensors";
/// File name of the expert record next to a head.
pub const EXPERT_FILE: &str = "pmq_expert.json";

/// A linear classification head for one task.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    /// The task the head was trained for.
    pub task: String,
    /// Class names; output `i` of the head scores `labels[i]`.
    pub labels: Vec<String>,
    /// Embedding width the head expects.
    pub hidden: usize,
    /// `[classes, hidden]`, row-major.
    pub weight: Vec<f32>,
    /// `[classes]`.
    pub bias: Vec<f32>,
    /// The tokenizer truncation length the head was trained with, when recorded.
    pub max_seq_len: Option<usize>,
}

impl Head {
    /// A head from its parts, checking the shapes and that every value is finite.
    pub fn new(
        task: impl Into<String>,
        labels: Vec<String>,
        hidden: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<Self> {
        let task = task.into();
        let c = labels.len();
        if c < 2 {
            bail!("head for task {task:?} has {c} labels; a classifier needs at least 2");
        }
        if hidden == 0 {
            bail!("head for task {task:?} has hidden size 0");
        }
        if weight.len() != c * hidden {
            bail!(
                "head for task {task:?}: weight has {} values, expected {c} × {hidden}",
                weight.len()
            );
        }
        if bias.len() != c {
            bail!(
                "head for task {task:?}: bias has {} values, expected {c}",
                bias.len()
            );
        }
        if !weight.iter().chain(&bias).all(|v| v.is_finite()) {
            bail!("head for task {task:?} has non-finite values");
        }
        Ok(Self {
            task,
            labels,
            hidden,
            weight,
            bias,
            max_seq_len: None,
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// Loads a head from `path`: a `pmq_head.safetensors` file or a directory holding one.
    pub fn load(path: &Path) -> Result<Head> {
        let file = if path.is_dir() {
            path.join(HEAD_FILE)
        } else {
            path.to_path_buf()
        };
        if !file.is_file() {
            bail!("head file {} does not exist", file.display());
        }
        let store = TensorStore::open_file(&file)
            .with_context(|| format!("opening head {}", file.display()))?;
        let info = |name: &str| {
            store
                .info(name)
                .cloned()
                .with_context(|| format!("head {} has no tensor `{name}`", file.display()))
        };
        let (w, b) = (info("weight")?, info("bias")?);
        let [classes, hidden] = w.shape[..] else {
            bail!(
                "head {}: `weight` has shape {:?}, expected [classes, hidden]",
                file.display(),
                w.shape
            );
        };
        if b.shape != [classes] {
            bail!(
                "head {}: `bias` has shape {:?}, expected [{classes}]",
                file.display(),
                b.shape
            );
        }
        let weight = store.read_f32("weight")?;
        let bias = store.read_f32("bias")?;
        let meta = HeadMeta::find(&file, store.metadata())?;
        let mut head = Head::new(meta.task, meta.labels, hidden, weight, bias)
            .with_context(|| format!("loading head {}", file.display()))?;
        head.max_seq_len = meta.max_seq_len;
        Ok(head)
    }

    /// Writes `weight` and `bias` (f32) with the task, labels and `max_seq_len` as metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let c = self.num_classes();
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        meta.insert("task".to_string(), self.task.clone());
        meta.insert(
            "labels".to_string(),
            serde_json::to_string(&self.labels).context("serialising labels")?,
        );
        if let Some(m) = self.max_seq_len {
            meta.insert("max_seq_len".to_string(), m.to_string());
        }
        let tensors = vec![
            (
                "weight".to_string(),
                Dtype::F32,
                vec![c, self.hidden],
                encode_f32(Dtype::F32, &self.weight)?,
            ),
            (
                "bias".to_string(),
                Dtype::F32,
                vec![c],
                encode_f32(Dtype::F32, &self.bias)?,
            ),
        ];
        write_safetensors(path, &tensors, Some(meta))
            .with_context(|| format!("writing head {}", path.display()))
    }

    /// `W·e + b` for one embedding of length `hidden`.
    pub fn logits(&self, embedding: &[f32]) -> Vec<f32> {
        self.weight
            .chunks_exact(self.hidden)
            .zip(&self.bias)
            .map(|(row, b)| {
                let dot: f64 = row
                    .iter()
                    .zip(embedding)
                    .map(|(w, x)| f64::from(*w) * f64::from(*x))
                    .sum();
                (dot + f64::from(*b)) as f32
            })
            .collect()
    }

    /// The predicted class (first maximum of the logits).
    pub fn predict(&self, embedding: &[f32]) -> usize {
        let logits = self.logits(embedding);
        let mut best = 0;
        for (i, v) in logits.iter().enumerate() {
            if *v > logits[best] {
                best = i;
            }
        }
        best
    }
}

/// Task, labels and truncation length of a head, from `pmq_expert.json` or the file metadata.
struct HeadMeta {
    task: String,
    labels: Vec<String>,
    max_seq_len: Option<usize>,
}

impl HeadMeta {
    fn find(file: &Path, meta: Option<&std::collections::HashMap<String, String>>) -> Result<Self> {
        let json = sibling_expert_json(file);
        if json.is_file() {
            return Self::from_expert_json(&json);
        }
        let meta = meta.with_context(|| {
            format!(
                "head {} has neither a sibling {EXPERT_FILE} nor task/labels metadata",
                file.display()
            )
        })?;
        let task = meta
            .get("task")
            .with_context(|| format!("head {}: metadata lacks `task`", file.display()))?
            .clone();
        let labels: Vec<String> = serde_json::from_str(
            meta.get("labels")
                .with_context(|| format!("head {}: metadata lacks `labels`", file.display()))?,
        )
        .with_context(|| {
            format!(
                "head {}: metadata `labels` is not a JSON list",
                file.display()
            )
        })?;
        let max_seq_len = meta.get("max_seq_len").and_then(|v| v.parse().ok());
        Ok(Self {
            task,
            labels,
            max_seq_len,
        })
    }

    fn from_expert_json(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let task = v["task"]
            .as_str()
            .with_context(|| format!("{}: missing string field `task`", path.display()))?
            .to_string();
        let labels = v["labels"]
            .as_array()
            .with_context(|| format!("{}: missing list field `labels`", path.display()))?
            .iter()
            .map(|l| l.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("{}: `labels` must be strings", path.display()))?;
        let max_seq_len = v
            .pointer("/config/max_seq_len")
            .and_then(Value::as_u64)
            .map(|m| m as usize);
        Ok(Self {
            task,
            labels,
            max_seq_len,
        })
    }
}

fn sibling_expert_json(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) => p.join(EXPERT_FILE),
        None => PathBuf::from(EXPERT_FILE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn logits_and_prediction_by_hand() {
        // W = [[1, 0], [0, 1], [-1, -1]], b = [0, 0.5, 0]
        let h = Head::new(
            "t",
            labels(3),
            2,
            vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0],
            vec![0.0, 0.5, 0.0],
        )
        .unwrap();
        assert_eq!(h.logits(&[2.0, 1.0]), vec![2.0, 1.5, -3.0]);
        assert_eq!(h.predict(&[2.0, 1.0]), 0);
        assert_eq!(h.predict(&[1.0, 1.0]), 1);
        assert_eq!(h.predict(&[-3.0, -1.0]), 2);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(Head::new("t", labels(2), 2, vec![0.0; 3], vec![0.0; 2]).is_err());
        assert!(Head::new("t", labels(2), 2, vec![0.0; 4], vec![0.0; 3]).is_err());
        assert!(Head::new("t", labels(1), 2, vec![0.0; 2], vec![0.0; 1]).is_err());
        assert!(Head::new("t", labels(2), 1, vec![f32::NAN, 0.0], vec![0.0; 2]).is_err());
    }

    #[test]
    fn save_load_roundtrip_with_and_without_expert_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Head::new(
            "spam",
            vec!["ham".into(), "spam".into()],
            3,
            vec![0.1, 0.2, 0.3, -0.1, -0.2, -0.3],
            vec![0.5, -0.5],
        )
        .unwrap();
        h.max_seq_len = Some(64);
        let file = dir.path().join(HEAD_FILE);
        h.save(&file).unwrap();
        assert_eq!(Head::load(dir.path()).unwrap(), h);
        // the expert record wins over the metadata
        std::fs::write(
            dir.path().join(EXPERT_FILE),
            r#"{"task": "spam2", "labels": ["a", "b"], "config": {"max_seq_len": 32}}"#,
        )
        .unwrap();
        let l = Head::load(&file).unwrap();
        assert_eq!((l.task.as_str(), l.max_seq_len), ("spam2", Some(32)));
        assert_eq!(l.labels, vec!["a", "b"]);
        let err = Head::load(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    }
}
