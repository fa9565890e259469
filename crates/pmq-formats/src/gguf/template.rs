//! A template GGUF (written by llama.cpp's converter for the same model): its keys, read with
//! candle's GGUF reader, and the check that its architecture matches.

use super::metadata::Metadata;
use super::names::Arch;
use crate::FormatError;
use candle_core::quantized::gguf_file::{Content, Value};
use std::path::Path;

/// The template's key/values sorted by key, after checking `general.architecture == arch`.
pub fn template_keys(path: &Path, arch: Arch) -> Result<Metadata, FormatError> {
    let mut f = std::fs::File::open(path).map_err(|e| FormatError::file(path, e.to_string()))?;
    let content = Content::read(&mut f)
        .map_err(|e| FormatError::file(path, format!("is not a readable GGUF file: {e}")))?;
    match content.metadata.get("general.architecture") {
        Some(Value::String(a)) if a == arch.name() => {}
        Some(Value::String(a)) => {
            return Err(FormatError::file(
                path,
                format!(
                    "is a template for architecture {a}, but the model is {}",
                    arch.name()
                ),
            ))
        }
        _ => {
            return Err(FormatError::file(
                path,
                "has no string general.architecture",
            ))
        }
    }
    let mut keys: Metadata = content.metadata.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keys)
}
