//! Copying a model directory's non-weight files (config, tokenizer, pooling config, …).

use crate::FormatError;
use std::path::Path;

fn is_weight_file(name: &str) -> bool {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    matches!(
        ext,
        "safetensors" | "pt" | "pth" | "ckpt" | "h5" | "msgpack" | "gguf" | "onnx"
    ) || name.ends_with(".index.json")
        || (ext == "bin" && name.contains("model"))
}

/// Copies every non-hidden, non-weight file of `from` into `to`, recursing into
/// sub-directories (sentence-transformers keeps `1_Pooling/config.json`), except `skip`.
pub(crate) fn copy_aux_files(from: &Path, to: &Path, skip: &[&str]) -> Result<(), FormatError> {
    let entries = std::fs::read_dir(from).map_err(|e| FormatError::file(from, e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| FormatError::file(from, e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || skip.contains(&name.as_str()) || is_weight_file(&name) {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let kind = entry
            .file_type()
            .map_err(|e| FormatError::file(&src, e.to_string()))?;
        if kind.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|e| FormatError::file(&dst, e.to_string()))?;
            copy_aux_files(&src, &dst, &[])?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).map_err(|e| FormatError::file(&src, e.to_string()))?;
        }
    }
    Ok(())
}
