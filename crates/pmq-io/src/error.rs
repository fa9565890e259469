//! The error type of this crate: every variant names the file and/or tensor involved.

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensorError};

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// An operating-system error on a file or directory. (The cause is part of the message and
    /// deliberately not a `source()`, so error chains print it once.)
    #[error("I/O error on {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not a valid safetensors file (bad header, truncated data, ...).
    #[error("{} is not a valid safetensors file: {error}", path.display())]
    Format {
        path: PathBuf,
        error: SafeTensorError,
    },
    /// A sharded checkpoint's index JSON is unreadable or inconsistent.
    #[error("bad shard index {}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
    /// A directory holds no weights.
    #[error("no *.safetensors files (and no model.safetensors.index.json) in {}", dir.display())]
    NoWeights { dir: PathBuf },
    /// A tensor was asked for that the store does not hold.
    #[error("tensor `{name}` not found in {}", root.display())]
    MissingTensor { name: String, root: PathBuf },
    /// Two files of one checkpoint hold a tensor of the same name.
    #[error("tensor `{name}` is stored twice: in {} and in {}", first.display(), second.display())]
    DuplicateTensor {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// The tensor's element type cannot be used for the requested operation.
    #[error("tensor `{name}` in {} has dtype {dtype}: {what}", path.display())]
    Dtype {
        name: String,
        path: PathBuf,
        dtype: Dtype,
        what: String,
    },
    /// The tensor does not have the required shape.
    #[error("tensor `{name}` in {} has shape {shape:?}: {what}", path.display())]
    Shape {
        name: String,
        path: PathBuf,
        shape: Vec<usize>,
        what: String,
    },
    /// Misuse of a writer or an inconsistent tensor list for a file being written.
    #[error("writing {}: tensor `{name}`: {reason}", path.display())]
    Write {
        path: PathBuf,
        name: String,
        reason: String,
    },
    /// The destination exists, is not a directory, or is otherwise unusable.
    #[error("{}: {reason}", path.display())]
    Destination { path: PathBuf, reason: String },
    /// Values cannot be encoded to this dtype.
    #[error(
        "cannot encode {} as {dtype} (supported: F32, F16, BF16, F64)",
        tensor.as_ref().map_or("floating-point values".to_string(), |t| format!("tensor `{t}`"))
    )]
    Encode {
        dtype: Dtype,
        tensor: Option<String>,
    },
    /// An output path is, contains or lies inside an input.
    #[error(
        "output {} {relation} input {}; inputs are never modified: choose another output location",
        out.display(),
        input.display()
    )]
    OutputOverlapsInput {
        out: PathBuf,
        input: PathBuf,
        relation: &'static str,
    },
}

impl IoError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error: source,
        }
    }

    /// Names `tensor` in an [`IoError::Encode`] that does not name one yet (other errors are
    /// returned unchanged).
    pub fn for_tensor(self, tensor: &str) -> Self {
        match self {
            Self::Encode {
                dtype,
                tensor: None,
            } => Self::Encode {
                dtype,
                tensor: Some(tensor.to_string()),
            },
            other => other,
        }
    }
}
