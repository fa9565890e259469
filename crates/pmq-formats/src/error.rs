use std::path::PathBuf;

/// Errors of the checkpoint writers and readers; each names the file or tensor.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(transparent)]
    Io(#[from] pmq_io::IoError),
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("tensor `{name}` in {}: {reason}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error(transparent)]
    Core(#[from] pmq_core::CoreError),
}

impl FormatError {
    pub(crate) fn file(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Self::File {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tensor(path: &std::path::Path, name: &str, reason: impl Into<String>) -> Self {
        Self::Tensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}
