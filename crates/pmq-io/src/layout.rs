//! Which files make up a Hugging Face checkpoint directory.
//!
//! `model.safetensors.index.json` (or, failing that, the only `*.safetensors.index.json`) maps
//! every tensor name to its shard (`"weight_map"`); without an index every `*.safetensors` file
//! in the directory is part of the checkpoint.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::IoError;

/// The standard index file name of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single-file checkpoint name of the HF convention.
pub const SINGLE_FILE: &str = "model.safetensors";

/// The weight files of a checkpoint directory.
pub enum Layout {
    /// Sharded: the index file and, per tensor name, the shard that holds it.
    Sharded {
        index: PathBuf,
        weight_map: BTreeMap<String, PathBuf>,
    },
    /// Unsharded: every `*.safetensors` file of the directory, sorted.
    Files(Vec<PathBuf>),
}

/// Finds the weight files of `dir`.
pub fn discover(dir: &Path) -> Result<Layout, IoError> {
    let meta = std::fs::metadata(dir).map_err(|e| IoError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(IoError::Destination {
            path: dir.to_path_buf(),
            reason: "is not a directory".into(),
        });
    }
    let mut safetensors = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| IoError::io(dir, e))? {
        let entry = entry.map_err(|e| IoError::io(dir, e))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !path.is_file() {
            continue;
        }
        if name.ends_with(".safetensors.index.json") {
            indexes.push(path);
        } else if name.ends_with(".safetensors") {
            safetensors.push(path);
        }
    }
    indexes.sort();
    safetensors.sort();
    let index = match indexes.iter().find(|p| p.ends_with(INDEX_FILE)) {
        Some(p) => Some(p.clone()),
        None if indexes.len() == 1 => Some(indexes[0].clone()),
        None => None,
    };
    if let Some(index) = index {
        let weight_map = read_index(dir, &index)?;
        return Ok(Layout::Sharded { index, weight_map });
    }
    if safetensors.is_empty() {
        return Err(IoError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    // HF convention: a lone `model.safetensors` is the checkpoint; other safetensors files next
    // to it (task heads, adapters) are not part of the model.
    if let Some(single) = safetensors.iter().find(|p| p.ends_with(SINGLE_FILE)) {
        return Ok(Layout::Files(vec![single.clone()]));
    }
    Ok(Layout::Files(safetensors))
}

/// Reads `"weight_map": {tensor name: shard file name}` from an index file.
fn read_index(dir: &Path, index: &Path) -> Result<BTreeMap<String, PathBuf>, IoError> {
    let bad = |reason: String| IoError::Index {
        path: index.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| IoError::io(index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("missing the \"weight_map\" object".into()))?;
    if map.is_empty() {
        return Err(bad("\"weight_map\" is empty".into()));
    }
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("entry for tensor `{name}` is not a file name")))?;
        let rel = Path::new(file);
        // plain relative names only: no `..`, no root, no `.`, and not a directory's name
        // (`a.safetensors/`, which `Path` would otherwise read as `a.safetensors`)
        let plain = !file.is_empty()
            && !file.ends_with('/')
            && !file.ends_with("/.")
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(bad(format!(
                "tensor `{name}` maps to `{file}`, which is not a file inside {}",
                dir.display()
            )));
        }
        out.insert(name.clone(), dir.join(rel));
    }
    Ok(out)
}
