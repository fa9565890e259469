//! The model directory an evaluation reads: an HF directory as it is, or a pmq GPTQ checkpoint
//! (a directory with `quantize_config.json`) dequantized into a scratch directory that lives as
//! long as the returned [`ModelDir`].

use anyhow::{bail, Context, Result};
use pmq_models::{load_model, LoadedModel};
use std::path::{Path, PathBuf};

/// Whether `dir` is a GPTQ checkpoint (`quantize_config.json`, a `quantization_config` in
/// `config.json`, or packed `*.qweight` tensors).
pub fn is_gptq_dir(dir: &Path) -> bool {
    pmq_io::gptq_evidence(dir).is_some()
}

/// A readable HF model directory for `source`.
pub struct ModelDir {
    /// What the user named.
    pub source: PathBuf,
    /// The HF directory to load (the source, or its dequantized copy).
    pub dir: PathBuf,
    _scratch: Option<pmq_io::TempDir>,
}

impl ModelDir {
    /// Resolves `source`, dequantizing a GPTQ checkpoint.
    pub fn open(source: &Path) -> Result<Self> {
        if !source.is_dir() {
            bail!("model directory {} does not exist", source.display());
        }
        if !is_gptq_dir(source) {
            return Ok(Self {
                source: source.to_path_buf(),
                dir: source.to_path_buf(),
                _scratch: None,
            });
        }
        let tmp = pmq_io::TempDir::in_dir(&std::env::temp_dir(), "pmq-eval-")
            .context("creating a scratch directory")?;
        let out = tmp.path().join("dequantized");
        tracing::info!(model = %source.display(), "dequantizing GPTQ checkpoint");
        pmq_formats::gptq_checkpoint::dequantize_checkpoint(source, &out, false)
            .with_context(|| format!("dequantizing GPTQ checkpoint {}", source.display()))?;
        Ok(Self {
            source: source.to_path_buf(),
            dir: out,
            _scratch: Some(tmp),
        })
    }

    /// Loads the model.
    pub fn load(&self) -> Result<LoadedModel> {
        load_model(&self.dir).with_context(|| format!("loading model {}", self.source.display()))
    }

    /// The `tokenizer.json` of the model (next to the weights, or in the source directory of a
    /// GPTQ checkpoint).
    pub fn tokenizer_file(&self) -> Result<PathBuf> {
        [
            self.dir.join("tokenizer.json"),
            self.source.join("tokenizer.json"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("{} has no tokenizer.json", self.source.display()))
    }
}
