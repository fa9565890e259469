//! Expert directories and their record.
//!
//! Full mode: an HF model directory — the backbone's non-weight files (config, tokenizer,
//! pooling config, …), `model.safetensors` with exactly the backbone's tensor names, order,
//! shapes and dtypes (trained tensors re-encoded in their source dtype, the rest such as
//! `embeddings.position_ids` and `pooler.*` copied byte for byte) — plus `pmq_head.safetensors`
//! and `pmq_expert.json`. Linear-probe mode: only the head and the record (the model is the
//! backbone, whose path the record names). Directories are built in a temporary sibling and
//! renamed into place ([`pmq_io::AtomicDir`]).

use crate::config::{FinetuneConfig, Mode};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use pmq_eval::{Head, EXPERT_FILE, HEAD_FILE};
use pmq_io::{encode_f32, AtomicDir, SafetensorsWriter, TensorStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// `pmq_expert.json`: what was trained, how, and how it went.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExpertRecord {
    /// Record format version ([`crate::fingerprint::FORMAT_VERSION`]).
    pub format: u32,
    pub task: String,
    pub labels: Vec<String>,
    pub mode: Mode,
    pub config: FinetuneConfig,
    pub seed: u64,
    /// Cache key ([`crate::fingerprint::fingerprint`]).
    pub fingerprint: String,
    /// The backbone directory the expert was trained from (the model of a linear probe).
    pub backbone: PathBuf,
    pub train_examples: usize,
    pub train_seconds: f64,
    /// Optimizer steps (probe: head-only steps).
    pub steps: usize,
    /// Mean training loss over the last quarter of the steps (probe: over the last epoch).
    pub final_train_loss: f64,
    /// Training accuracy over the last quarter of the steps (probe: of the final head on the
    /// whole training set).
    pub train_accuracy: f64,
    /// What wrote the record, e.g. `pmq-finetune 0.1.0`.
    pub created_by: String,
}

impl ExpertRecord {
    /// The record of a finished run of `task` = `(name, labels)` from `backbone` on `examples`
    /// training examples.
    pub fn of_run(
        task: (&str, &[String]),
        mode: Mode,
        cfg: &FinetuneConfig,
        fingerprint: String,
        backbone: &Path,
        examples: usize,
        trained: &crate::full::Trained,
    ) -> Self {
        Self {
            format: crate::fingerprint::FORMAT_VERSION,
            task: task.0.to_string(),
            labels: task.1.to_vec(),
            mode,
            config: cfg.clone(),
            seed: cfg.seed,
            fingerprint,
            backbone: std::fs::canonicalize(backbone).unwrap_or_else(|_| backbone.to_path_buf()),
            train_examples: examples,
            train_seconds: trained.seconds,
            steps: trained.steps,
            final_train_loss: trained.final_loss,
            train_accuracy: trained.train_accuracy,
            created_by: format!("pmq-finetune {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Reads `dir/pmq_expert.json`; `None` when it does not exist.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(EXPERT_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let rec = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a pmq expert record", path.display()))?;
        Ok(Some(rec))
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(EXPERT_FILE);
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// Refuses to replace `out_dir` unless it is absent, empty, or an earlier expert directory.
pub fn check_replaceable(out_dir: &Path) -> Result<()> {
    if !out_dir.exists() {
        return Ok(());
    }
    if !out_dir.is_dir() {
        bail!("{} exists and is not a directory", out_dir.display());
    }
    let empty = std::fs::read_dir(out_dir)
        .with_context(|| format!("reading {}", out_dir.display()))?
        .next()
        .is_none();
    if empty || out_dir.join(EXPERT_FILE).is_file() {
        Ok(())
    } else {
        bail!(
            "{} exists and is not a pmq expert directory (no {EXPERT_FILE}); refusing to replace it",
            out_dir.display()
        )
    }
}

/// Writes a full expert: the backbone with `trained` tensors replaced, the head (classification
/// experts) and the record.
pub fn write_full(
    backbone: &Path,
    trained: &HashMap<String, Tensor>,
    head: Option<&Head>,
    record: &ExpertRecord,
    out_dir: &Path,
) -> Result<()> {
    check_replaceable(out_dir)?;
    let src = TensorStore::open_dir(backbone)
        .with_context(|| format!("opening backbone {}", backbone.display()))?;
    for name in trained.keys() {
        if !src.contains(name) {
            bail!(
                "trained tensor `{name}` does not exist in the backbone {}",
                backbone.display()
            );
        }
    }
    let dir = AtomicDir::create(out_dir, true)?;
    let names = src.names();
    let infos: Vec<_> = names
        .iter()
        .map(|n| src.info(n).cloned().expect("listed name"))
        .collect();
    let meta: BTreeMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        (
            "trained_by".to_string(),
            format!("pmq-finetune {}", env!("CARGO_PKG_VERSION")),
        ),
    ]
    .into_iter()
    .collect();
    let dest = dir.path().join("model.safetensors");
    let mut writer = SafetensorsWriter::create(&dest, &infos, Some(meta))?;
    for info in &infos {
        match trained.get(&info.name) {
            Some(t) => {
                if t.dims() != info.shape {
                    bail!(
                        "trained tensor `{}` has shape {:?}, the backbone {:?}",
                        info.name,
                        t.dims(),
                        info.shape
                    );
                }
                let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                if !values.iter().all(|v| v.is_finite()) {
                    bail!("trained tensor `{}` has non-finite values", info.name);
                }
                let bytes = encode_f32(info.dtype, &values)
                    .with_context(|| format!("encoding `{}` as {:?}", info.name, info.dtype))?;
                writer.write(&info.name, &bytes)?;
            }
            None => writer.write(&info.name, src.raw_bytes(&info.name)?)?,
        }
    }
    writer.finish()?;
    pmq_io::copy_non_weight_files(
        backbone,
        dir.path(),
        &[EXPERT_FILE, "merge_report.json", "pmq_report.json"],
    )?;
    if let Some(head) = head {
        head.save(&dir.path().join(HEAD_FILE))?;
    }
    record.write(dir.path())?;
    dir.commit()?;
    Ok(())
}

/// Writes a linear-probe expert: the head and the record only.
pub fn write_probe(head: &Head, record: &ExpertRecord, out_dir: &Path) -> Result<()> {
    check_replaceable(out_dir)?;
    let dir = AtomicDir::create(out_dir, true)?;
    head.save(&dir.path().join(HEAD_FILE))?;
    record.write(dir.path())?;
    dir.commit()?;
    Ok(())
}
