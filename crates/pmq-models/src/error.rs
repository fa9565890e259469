//! The crate's error type: every failure names the file, tensor or config field involved.

use std::path::PathBuf;

/// Result alias used throughout `pmq-models`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A config file is malformed or a field has an invalid value.
    #[error("{}: field `{field}`: {msg}", file.display())]
    Config {
        /// The config file.
        file: PathBuf,
        /// The offending field (dotted path for nested fields).
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A config option has a value this crate does not implement.
    #[error("{}: unsupported `{field}` = {value}: {why}", file.display())]
    Unsupported {
        /// The config file.
        file: PathBuf,
        /// The field.
        field: String,
        /// The value found.
        value: String,
        /// What is supported instead.
        why: String,
    },
    /// `architectures` / `model_type` names a model this crate cannot run.
    #[error("{}: unknown architecture {found}; supported: BertModel (and Bert* heads), CLIPModel, CLIPVisionModel(WithProjection), T5ForConditionalGeneration, LlamaForCausalLM", file.display())]
    UnknownArchitecture {
        /// The config file.
        file: PathBuf,
        /// The `architectures`/`model_type` found.
        found: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("tensor `{name}` not found in {location}")]
    MissingTensor {
        /// HF tensor name.
        name: String,
        /// Checkpoint description (directory or files).
        location: String,
    },
    /// A tensor has a shape other than the config implies.
    #[error("tensor `{name}` in {location}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// HF tensor name.
        name: String,
        /// Checkpoint or call site.
        location: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype other than f32/f16/bf16.
    #[error(
        "tensor `{name}` in {location}: unsupported dtype {dtype} (expected F32, F16 or BF16)"
    )]
    DType {
        /// HF tensor name.
        name: String,
        /// Checkpoint description.
        location: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor holds a NaN or an infinite value.
    #[error("tensor `{name}` in {location}: element {index} is {value} (weights must be finite)")]
    NonFinite {
        /// HF tensor name.
        name: String,
        /// The file that holds it.
        location: String,
        /// Flat index of the first non-finite element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// The checkpoint's files could not be found, mapped or read.
    #[error(transparent)]
    Checkpoint(#[from] pmq_io::IoError),
    /// A linear name that the model does not have.
    #[error("unknown linear `{0}` (see BlockModel::linears for the valid names)")]
    UnknownLinear(String),
    /// A tensor name that is not a replaceable parameter (block norm weight/bias, linear bias).
    #[error("unknown tensor `{0}` (only block norm weights/biases and linear biases can be read or replaced)")]
    UnknownTensor(String),
    /// Invalid model input (batch, block index, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// Tokenizer loading or encoding failed.
    #[error("tokenizer {}: {msg}", path.display())]
    Tokenizer {
        /// tokenizer.json path.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// Image loading or preprocessing failed.
    #[error("image {}: {msg}", path.display())]
    Image {
        /// Image path.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// The capture callback reported an error.
    #[error("capture callback failed on linear `{linear}`: {msg}")]
    Capture {
        /// The linear whose input was being captured.
        linear: String,
        /// The callback's message.
        msg: String,
    },
    /// Returned by a capture callback that has seen every input it needs: the forward pass
    /// stops there (its output is not needed). Not a failure for the caller that asked.
    #[error("capture complete: the forward pass was stopped early on purpose")]
    CaptureDone,
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
}
