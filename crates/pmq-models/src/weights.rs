//! A model's checkpoint, read by HF tensor name and converted to f32 for the forward pass.
//!
//! The files are found and mapped by pmq-io's [`TensorStore`], the project's one checkpoint
//! reader (used for experts, merges and writers too): a sharded checkpoint follows its index's
//! `weight_map` (a tensor comes from the shard the index names, never from another file),
//! index entries that leave the model directory are refused, and a tensor stored twice is an
//! error. Every tensor handed to a model is checked to be finite.
//!
//! A store opened with [`WeightStore::open_dir_streamed`] makes the models built from it keep
//! their quantizable linears in the checkpoint (memory-mapped) until a block is loaded
//! ([`crate::BlockModel::load_block`]): a model larger than memory can then be run block by
//! block. The store is shared (cheap to clone) by every linear read from it.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use pmq_io::{Dtype, TensorStore};
use std::path::Path;
use std::sync::Arc;

pub use pmq_io::{INDEX_FILE, SINGLE_FILE};

/// A read-only view of a checkpoint's tensors (cheap to clone: the mapping is shared).
#[derive(Clone)]
pub struct WeightStore {
    store: Arc<TensorStore>,
    source: String,
    device: Device,
    streamed: bool,
}

impl std::fmt::Debug for WeightStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightStore")
            .field("source", &self.source)
            .field("tensors", &self.store.len())
            .field("streamed", &self.streamed)
            .finish()
    }
}

impl WeightStore {
    /// Opens the checkpoint in `dir`: the shards of `model.safetensors.index.json` when there
    /// is one, else `model.safetensors`, else every `*.safetensors` file of `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let store = TensorStore::open_dir(dir)?;
        Ok(Self {
            store: Arc::new(store),
            source: dir.display().to_string(),
            device: Device::Cpu,
            streamed: false,
        })
    }

    /// [`open_dir`](Self::open_dir), for a model whose quantizable linears stay in the
    /// checkpoint until their block is loaded (each is still read once at load time, to check
    /// its shape and that it is finite).
    pub fn open_dir_streamed(dir: &Path) -> Result<Self> {
        Ok(Self {
            streamed: true,
            ..Self::open_dir(dir)?
        })
    }

    /// Whether models built from this store keep their linears in the checkpoint.
    pub fn streamed(&self) -> bool {
        self.streamed
    }

    /// Whether the checkpoint holds tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.store.contains(name)
    }

    /// The checkpoint's description used in error messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where tensor `name` is stored (its file), for error messages.
    fn location(&self, name: &str) -> String {
        match self.store.file_of(name) {
            Some(file) => file.display().to_string(),
            None => self.source.clone(),
        }
    }

    /// Loads tensor `name` as f32, whatever its shape. F32, F16 and BF16 are accepted (the
    /// widening is exact); a NaN or infinite value is an error naming the tensor. The
    /// tensor's mapped pages are given back once read (they stay in the page cache).
    pub fn get_any(&self, name: &str) -> Result<Tensor> {
        let Some(info) = self.store.info(name) else {
            return Err(Error::MissingTensor {
                name: name.to_string(),
                location: self.source.clone(),
            });
        };
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(Error::DType {
                name: name.to_string(),
                location: self.location(name),
                dtype: format!("{:?}", info.dtype),
            });
        }
        let shape = info.shape.clone();
        let values = self.store.read_f32(name)?;
        // the f32 copy is what is used: the mapped pages need not stay resident
        self.store.release(name)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                name: name.to_string(),
                location: self.location(name),
                index: i,
                value: values[i],
            });
        }
        Ok(Tensor::from_vec(values, shape, &self.device)?)
    }

    /// Loads tensor `name` as f32 and checks that its shape is `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Some(info) = self.store.info(name) {
            if info.shape != shape {
                return Err(Error::Shape {
                    name: name.to_string(),
                    location: self.location(name),
                    expected: shape.to_vec(),
                    found: info.shape.clone(),
                });
            }
        }
        self.get_any(name)
    }

    /// Loads `name` if present (shape-checked), `None` if absent.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The shape of tensor `name`, without reading it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.store.info(name).map(|i| i.shape.as_slice())
    }
}

pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmq_io::write_safetensors;

    fn write(path: &Path, tensors: &[(&str, Vec<f32>, Vec<usize>)]) {
        let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, v, s)| (n.to_string(), Dtype::F32, s.clone(), pmq_io::f32_bytes(v)))
            .collect();
        write_safetensors(path, &owned, None).unwrap();
    }

    fn index(dir: &Path, map: &[(&str, &str)]) {
        let m: serde_json::Map<String, serde_json::Value> = map
            .iter()
            .map(|(t, f)| (t.to_string(), serde_json::Value::from(*f)))
            .collect();
        let j = serde_json::json!({"metadata": {}, "weight_map": m});
        std::fs::write(dir.join(INDEX_FILE), j.to_string()).unwrap();
    }

    #[test]
    fn sharded_checkpoint_follows_the_weight_map() {
        let d = tempfile::tempdir().unwrap();
        write(
            &d.path().join("a.safetensors"),
            &[("w", vec![1.0, 2.0], vec![2])],
        );
        // an unmapped shard holding a zeroed copy of `w` must not replace the mapped one
        write(
            &d.path().join("b.safetensors"),
            &[("w", vec![0.0, 0.0], vec![2]), ("v", vec![3.0], vec![1])],
        );
        index(d.path(), &[("w", "a.safetensors"), ("v", "b.safetensors")]);
        let ws = WeightStore::open_dir(d.path()).unwrap();
        let w: Vec<f32> = ws.get("w", &[2]).unwrap().to_vec1().unwrap();
        assert_eq!(w, vec![1.0, 2.0]);
        let v: Vec<f32> = ws.get("v", &[1]).unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![3.0]);
    }

    #[test]
    fn index_paths_outside_the_directory_are_refused() {
        for bad in ["../x.safetensors", "/etc/passwd", "sub/../../x.safetensors"] {
            let d = tempfile::tempdir().unwrap();
            write(
                &d.path().join("a.safetensors"),
                &[("w", vec![1.0], vec![1])],
            );
            index(d.path(), &[("w", bad)]);
            let e = WeightStore::open_dir(d.path()).unwrap_err().to_string();
            assert!(e.contains("not a file inside"), "{bad}: {e}");
            assert!(e.contains(INDEX_FILE), "{e}");
        }
    }

    #[test]
    fn duplicate_tensors_without_an_index_are_refused() {
        let d = tempfile::tempdir().unwrap();
        write(
            &d.path().join("a.safetensors"),
            &[("w", vec![1.0], vec![1])],
        );
        write(
            &d.path().join("b.safetensors"),
            &[("w", vec![2.0], vec![1])],
        );
        let e = WeightStore::open_dir(d.path()).unwrap_err().to_string();
        assert!(e.contains("stored twice") && e.contains("`w`"), "{e}");
    }

    #[test]
    fn non_finite_values_and_wrong_shapes_name_the_tensor() {
        let d = tempfile::tempdir().unwrap();
        write(
            &d.path().join("model.safetensors"),
            &[
                ("w", vec![1.0, f32::NAN], vec![2]),
                ("ok", vec![1.0; 6], vec![2, 3]),
            ],
        );
        let ws = WeightStore::open_dir(d.path()).unwrap();
        let e = ws.get("w", &[2]).unwrap_err().to_string();
        assert!(
            e.contains("`w`") && e.contains("NaN") && e.contains("model.safetensors"),
            "{e}"
        );
        let e = ws.get("ok", &[3, 2]).unwrap_err().to_string();
        assert!(
            e.contains("`ok`") && e.contains("[3, 2]") && e.contains("[2, 3]"),
            "{e}"
        );
        let e = ws.get("absent", &[1]).unwrap_err().to_string();
        assert!(e.contains("`absent`") && e.contains("not found"), "{e}");
    }
}
