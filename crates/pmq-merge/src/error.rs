//! The error type of merging: every variant names the tensor and/or checkpoint involved.

use std::path::PathBuf;

use pmq_io::{Dtype, IoError};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// An option value is out of range.
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    /// An `--include`/`--exclude` pattern is not a valid glob.
    #[error("invalid tensor pattern `{pattern}`: {reason}")]
    Pattern { pattern: String, reason: String },
    /// Merging needs at least one expert.
    #[error("no expert checkpoints given")]
    NoExperts,
    /// A `config.json` could not be read or parsed.
    #[error("cannot read {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// Base and expert were built for different architectures.
    #[error(
        "config.json `{field}` differs: base {} has {base_value}, {expert} has {expert_value}",
        base.display()
    )]
    Architecture {
        field: &'static str,
        base: PathBuf,
        expert: String,
        base_value: String,
        expert_value: String,
    },
    /// An expert lacks a tensor selected for merging.
    #[error("{expert} has no tensor `{tensor}`, which is selected for merging (exclude it with --exclude to copy it from the base)")]
    MissingTensor { tensor: String, expert: String },
    /// An expert has a tensor the base lacks.
    #[error("{expert} has tensor `{tensor}`, which the base checkpoint lacks (exclude it with --exclude to ignore it)")]
    ExtraTensor { tensor: String, expert: String },
    /// Base and expert shapes differ.
    #[error(
        "tensor `{tensor}` has shape {expert_shape:?} in {expert} but {base_shape:?} in the base"
    )]
    Shape {
        tensor: String,
        expert: String,
        base_shape: Vec<usize>,
        expert_shape: Vec<usize>,
    },
    /// A tensor selected for merging is not floating point in an expert.
    #[error("tensor `{tensor}` is {dtype} in {source_name}, but merging needs F32/F16/BF16/F64 (exclude it with --exclude)")]
    NotFloat {
        tensor: String,
        source_name: String,
        dtype: Dtype,
    },
    /// NaN or infinity in an input tensor.
    #[error("tensor `{tensor}` of {source_name} holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        tensor: String,
        source_name: String,
        index: usize,
        value: f32,
    },
    /// The merged tensor does not fit the output dtype (or went non-finite).
    #[error("merged tensor `{tensor}` {reason}")]
    BadResult { tensor: String, reason: String },
    /// An input is a GPTQ-quantized checkpoint (packed codes, not float weights).
    #[error("{message}")]
    Quantized { message: String },
    /// A RegMean Gram file is missing, malformed or does not fit the model.
    #[error("Gram file {}: {reason}", path.display())]
    Grams { path: PathBuf, reason: String },
    /// Writing the merge report failed.
    #[error("cannot write {}: {reason}", path.display())]
    Report { path: PathBuf, reason: String },
}

impl MergeError {
    pub(crate) fn option(option: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidOption {
            option,
            reason: reason.into(),
        }
    }
}
