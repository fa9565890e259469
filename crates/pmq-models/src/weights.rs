//! Memory-mapped safetensors checkpoints (single file or sharded with an index), read by HF
//! tensor name and converted to f32.

use crate::error::{Error, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Name of the index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// A read-only view of a checkpoint's tensors.
pub struct WeightStore {
    st: MmapedSafetensors,
    names: HashSet<String>,
    source: String,
    device: Device,
}

impl std::fmt::Debug for WeightStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightStore")
            .field("source", &self.source)
            .field("tensors", &self.names.len())
            .finish()
    }
}

impl WeightStore {
    /// Opens the checkpoint in `dir`: `model.safetensors.index.json` (sharded) if present, else
    /// `model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            let text = read_to_string(&index)?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Config {
                    file: index.clone(),
                    field: "(root)".into(),
                    msg: format!("invalid JSON: {e}"),
                })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Config {
                    file: index.clone(),
                    field: "weight_map".into(),
                    msg: "missing or not an object".into(),
                })?;
            let mut files = BTreeSet::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| Error::Config {
                    file: index.clone(),
                    field: format!("weight_map.{tensor}"),
                    msg: "expected a file name string".into(),
                })?;
                files.insert(dir.join(file));
            }
            let files: Vec<PathBuf> = files.into_iter().collect();
            Self::open_files(&files)
        } else {
            let single = dir.join(SINGLE_FILE);
            if !single.is_file() {
                return Err(Error::Io {
                    path: single,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "neither {SINGLE_FILE} nor {INDEX_FILE} found in the model directory"
                        ),
                    ),
                });
            }
            Self::open_files(&[single])
        }
    }

    /// Opens one or more safetensors files as one checkpoint (later files win on duplicates).
    pub fn open_files(files: &[PathBuf]) -> Result<Self> {
        for f in files {
            if !f.is_file() {
                return Err(Error::Io {
                    path: f.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
                });
            }
        }
        // SAFETY: the files are mapped read-only; like every mmap-based reader we rely on them
        // not being truncated while the store is alive.
        let st = unsafe { MmapedSafetensors::multi(files) }?;
        let names = st.tensors().into_iter().map(|(n, _)| n).collect();
        let source = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            st,
            names,
            source,
            device: Device::Cpu,
        })
    }

    /// Whether the checkpoint holds tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The checkpoint's description used in error messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Loads tensor `name` as f32, whatever its shape.
    pub fn get_any(&self, name: &str) -> Result<Tensor> {
        if !self.contains(name) {
            return Err(Error::MissingTensor {
                name: name.to_string(),
                location: self.source.clone(),
            });
        }
        let t = self.st.load(name, &self.device)?;
        match t.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => {}
            other => {
                return Err(Error::DType {
                    name: name.to_string(),
                    location: self.source.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        }
        Ok(t.to_dtype(DType::F32)?)
    }

    /// Loads tensor `name` as f32 and checks that its shape is `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get_any(name)?;
        if t.dims() != shape {
            return Err(Error::Shape {
                name: name.to_string(),
                location: self.source.clone(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        Ok(t)
    }

    /// Loads `name` if present (shape-checked), `None` if absent.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
