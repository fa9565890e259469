//! The cache key of an expert: sha256 over a canonical JSON of everything that determines the
//! trained weights — the backbone's `model.safetensors` (sha256), `config.json` and
//! `tokenizer.json` (sha256), the task name and labels, the sha256 of the training examples
//! actually used (text and label, in order; this pins the split), the training config (seed
//! included) with the fixed probe epochs and gradient clip, the mode and the record format
//! version.

use crate::config::{FinetuneConfig, Mode};
use anyhow::{Context, Result};
use pmq_testbed::Example;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Bumped whenever the training code changes what a given input produces. 2: experts trained
/// between 2026-12-02 and 2026-12-03 got no gradient through the encoder's GELU (the threaded
/// inference GELU was used in training); such cached experts are retrained.
pub const FORMAT_VERSION: u32 = 2;

/// Hex sha256 of a file's contents.
pub use pmq_testbed::sha256_file;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 (hex) of examples: per example the label, the text length and the text.
pub fn examples_sha256(examples: &[Example]) -> String {
    let mut h = Sha256::new();
    for e in examples {
        h.update((e.label as u64).to_le_bytes());
        h.update((e.text.len() as u64).to_le_bytes());
        h.update(e.text.as_bytes());
    }
    hex(&h.finalize())
}

/// sha256 (hex) of image examples: per example the label and the sha256 of the file's bytes
/// (so renaming a folder keeps the key; changing a pixel changes it).
pub fn image_examples_sha256(examples: &[pmq_eval::tasks::ImageExample]) -> Result<String> {
    let mut h = Sha256::new();
    for e in examples {
        h.update((e.label as u64).to_le_bytes());
        h.update(sha256_file(&e.path)?.as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// The fingerprint of one training run on text examples.
pub fn fingerprint(
    backbone: &Path,
    task: &str,
    labels: &[String],
    train: &[Example],
    mode: Mode,
    cfg: &FinetuneConfig,
) -> Result<String> {
    let digest = examples_sha256(train);
    fingerprint_of(backbone, task, labels, (&digest, train.len()), mode, cfg)
}

/// The fingerprint of one training run whose examples hash to `train.0` (`train.1` of them).
pub fn fingerprint_of(
    backbone: &Path,
    task: &str,
    labels: &[String],
    train: (&str, usize),
    mode: Mode,
    cfg: &FinetuneConfig,
) -> Result<String> {
    let weights = ["model.safetensors", "model.safetensors.index.json"]
        .iter()
        .map(|n| backbone.join(n))
        .find(|p| p.is_file())
        .with_context(|| format!("{} has no model.safetensors", backbone.display()))?;
    let optional = |name: &str| -> Result<Option<String>> {
        let p = backbone.join(name);
        p.is_file().then(|| sha256_file(&p)).transpose()
    };
    let key = serde_json::json!({
        "format": FORMAT_VERSION,
        "backbone_weights": sha256_file(&weights)?,
        "backbone_config": optional("config.json")?,
        "backbone_tokenizer": optional("tokenizer.json")?,
        "task": task,
        "labels": labels,
        "train": train.0,
        "train_examples": train.1,
        "mode": mode,
        "config": cfg,
        "probe_epochs": (mode == Mode::LinearProbe).then(|| cfg.probe_epochs()),
        "max_grad_norm": (mode == Mode::Full).then_some(crate::config::MAX_GRAD_NORM),
    });
    // image models: the preprocessing decides the embeddings (absent for text backbones,
    // whose keys stay as they were)
    let mut key = key;
    if let Some(p) = optional("preprocessor_config.json")? {
        key["backbone_preprocessor"] = p.into();
    }
    Ok(hex(&Sha256::digest(key.to_string().as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(t: &str, l: usize) -> Example {
        Example {
            text: t.into(),
            label: l,
        }
    }

    #[test]
    fn fingerprint_changes_with_every_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"weights").unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let labels = vec!["a".to_string(), "b".to_string()];
        let train = vec![ex("x", 0), ex("y", 1)];
        let cfg = FinetuneConfig::ci();
        let f = |train: &[Example], mode, cfg: &FinetuneConfig| {
            fingerprint(dir.path(), "t", &labels, train, mode, cfg).unwrap()
        };
        let base = f(&train, Mode::Full, &cfg);
        assert_eq!(base, f(&train, Mode::Full, &cfg));
        assert_ne!(base, f(&train, Mode::LinearProbe, &cfg));
        assert_ne!(base, f(&[ex("x", 1), ex("y", 1)], Mode::Full, &cfg));
        let seeded = FinetuneConfig {
            seed: 9,
            ..cfg.clone()
        };
        assert_ne!(base, f(&train, Mode::Full, &seeded));
        std::fs::write(dir.path().join("model.safetensors"), b"weights2").unwrap();
        assert_ne!(base, f(&train, Mode::Full, &cfg));
        assert_eq!(
            sha256_file(&dir.path().join("config.json")).unwrap().len(),
            64
        );
        // "ab"+"c" and "a"+"bc" hash differently
        assert_ne!(
            examples_sha256(&[ex("ab", 0), ex("c", 0)]),
            examples_sha256(&[ex("a", 0), ex("bc", 0)])
        );
    }
}
