//! Copying a model directory's non-weight files (config, tokenizer, pooling config, ...).

use std::path::Path;

use crate::IoError;

/// Extensions of weight files, which are never copied (the output has its own weights).
const WEIGHT_EXTENSIONS: &[&str] = &[
    "safetensors",
    "pt",
    "pth",
    "ckpt",
    "h5",
    "msgpack",
    "gguf",
    "onnx",
    "onnx_data",
];

/// Whether a file name is a weight file or weight index of some format.
pub fn is_weight_file(name: &str) -> bool {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    WEIGHT_EXTENSIONS.contains(&ext)
        || name.ends_with(".index.json")
        || (ext == "bin" && name.contains("model"))
}

/// Copies every regular, non-hidden, non-weight file at the top level of `from` into `to`
/// (except an old `merge_report.json`); returns the copied names, sorted.
/// Copies every non-hidden, non-weight file of `from` into `to`, recursing into
/// sub-directories (sentence-transformers keeps `1_Pooling/config.json`); top-level names in
/// `skip` are left out. Returns the copied paths relative to `from`, sorted.
pub fn copy_non_weight_files(
    from: &Path,
    to: &Path,
    skip: &[&str],
) -> Result<Vec<String>, IoError> {
    let mut copied = Vec::new();
    copy_into(from, to, skip, "", &mut copied)?;
    copied.sort();
    Ok(copied)
}

fn copy_into(
    from: &Path,
    to: &Path,
    skip: &[&str],
    rel: &str,
    copied: &mut Vec<String>,
) -> Result<(), IoError> {
    let io = |p: &Path, e| IoError::Io {
        path: p.to_path_buf(),
        error: e,
    };
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || is_weight_file(&name) || skip.contains(&name.as_str()) {
            continue;
        }
        let kind = entry.file_type().map_err(|e| io(&path, e))?;
        let dst = to.join(&name);
        let rel_name = format!("{rel}{name}");
        if kind.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|e| io(&dst, e))?;
            copy_into(&path, &dst, &[], &format!("{rel_name}/"), copied)?;
        } else if path.is_file() {
            std::fs::copy(&path, &dst).map_err(|e| io(&path, e))?;
            copied.push(rel_name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_weight_file;

    #[test]
    fn weight_files() {
        for w in [
            "model.safetensors",
            "model-00001-of-00002.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
            "tf_model.h5",
            "optimizer.pt",
        ] {
            assert!(is_weight_file(w), "{w}");
        }
        for f in [
            "config.json",
            "tokenizer.json",
            "tokenizer.model",
            "vocab.txt",
            "training_args.bin",
        ] {
            assert!(!is_weight_file(f), "{f}");
        }
    }
}
