//! [`TensorStore`]: memory-mapped safetensors files, read one tensor at a time.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::convert::{decode_f32, decode_f64};
use crate::layout::{discover, Layout};
use crate::{IoError, TensorInfo};

/// One memory-mapped safetensors file.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    metadata: Option<HashMap<String, String>>,
}

/// Where one tensor lives: its shard and byte range within that shard's mapping.
struct Entry {
    info: TensorInfo,
    shard: usize,
    start: usize,
    end: usize,
}

/// A read-only view of the tensors of a checkpoint (one file or a directory of shards).
///
/// Files are memory-mapped: tensors are read lazily, so memory use is that of the tensors
/// actually converted. The files must not be modified while the store is alive.
pub struct TensorStore {
    root: PathBuf,
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
}

impl TensorStore {
    /// Opens a Hugging Face checkpoint directory: `model.safetensors.index.json` (sharded,
    /// `"weight_map"`) if present, else every `*.safetensors` file in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self, IoError> {
        let mut store = Self::empty(dir);
        match discover(dir)? {
            Layout::Files(files) => {
                for file in files {
                    let tensors = store.map_shard(&file)?;
                    store.add_all(tensors)?;
                }
            }
            Layout::Sharded { index, weight_map } => {
                let mut by_file: BTreeMap<&PathBuf, Vec<&String>> = BTreeMap::new();
                for (name, file) in &weight_map {
                    by_file.entry(file).or_default().push(name);
                }
                for (file, names) in by_file {
                    if !file.is_file() {
                        return Err(IoError::Index {
                            path: index.clone(),
                            reason: format!(
                                "tensor `{}` maps to {}, which does not exist",
                                names[0],
                                file.display()
                            ),
                        });
                    }
                    let mut tensors = store.map_shard(file)?;
                    for name in names {
                        let entry =
                            tensors
                                .remove(name.as_str())
                                .ok_or_else(|| IoError::Index {
                                    path: index.clone(),
                                    reason: format!(
                                    "tensor `{name}` is mapped to {}, which does not contain it",
                                    file.display()
                                ),
                                })?;
                        store.insert(name.clone(), entry)?;
                    }
                }
            }
        }
        Ok(store)
    }

    /// Opens a single `.safetensors` file.
    pub fn open_file(path: &Path) -> Result<Self, IoError> {
        let mut store = Self::empty(path);
        let tensors = store.map_shard(path)?;
        store.add_all(tensors)?;
        Ok(store)
    }

    fn empty(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            shards: Vec::new(),
            entries: BTreeMap::new(),
        }
    }

    /// Maps `path`, validates its header and returns, per tensor name, its
    /// dtype, shape and absolute byte range.
    fn map_shard(&mut self, path: &Path) -> Result<HashMap<String, Entry>, IoError> {
        let file = File::open(path).map_err(|e| IoError::io(path, e))?;
        // SAFETY: the mapping is read-only and the store documents that its files must not be
        // modified while it is alive (the usual contract of memory-mapped model loading).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| IoError::io(path, e))?;
        let (n, metadata) = SafeTensors::read_metadata(&mmap).map_err(|error| IoError::Format {
            path: path.to_path_buf(),
            error,
        })?;
        let shard = self.shards.len();
        let base = 8 + n;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                let entry = Entry {
                    info: TensorInfo::new(name.clone(), t.dtype, t.shape.clone()),
                    shard,
                    start: base + t.data_offsets.0,
                    end: base + t.data_offsets.1,
                };
                (name, entry)
            })
            .collect();
        self.shards.push(Shard {
            path: path.to_path_buf(),
            metadata: metadata.metadata().clone(),
            mmap,
        });
        Ok(tensors)
    }

    fn add_all(&mut self, tensors: HashMap<String, Entry>) -> Result<(), IoError> {
        for (name, entry) in tensors {
            self.insert(name, entry)?;
        }
        Ok(())
    }

    fn insert(&mut self, name: String, entry: Entry) -> Result<(), IoError> {
        if let Some(prev) = self.entries.get(&name) {
            return Err(IoError::DuplicateTensor {
                name,
                first: self.shards[prev.shard].path.clone(),
                second: self.shards[entry.shard].path.clone(),
            });
        }
        self.entries.insert(name, entry);
        Ok(())
    }

    /// The directory (or file) the store was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The files mapped by this store.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// The `__metadata__` of the first file that has one.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.shards.iter().find_map(|s| s.metadata.as_ref())
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Name, dtype and shape of a tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.entries.get(name).map(|e| &e.info)
    }

    /// Whether the store holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The file that holds a tensor.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.entries
            .get(name)
            .map(|e| self.shards[e.shard].path.as_path())
    }

    fn entry(&self, name: &str) -> Result<&Entry, IoError> {
        self.entries
            .get(name)
            .ok_or_else(|| IoError::MissingTensor {
                name: name.to_string(),
                root: self.root.clone(),
            })
    }

    /// The tensor's raw little-endian bytes: a zero-copy view into the mapping.
    pub fn raw_bytes(&self, name: &str) -> Result<&[u8], IoError> {
        let e = self.entry(name)?;
        Ok(&self.shards[e.shard].mmap[e.start..e.end])
    }

    /// Drops the tensor's pages from this process's resident memory (they stay in the page
    /// cache and are read back on the next access). For callers that stream through large
    /// checkpoints, e.g. K experts one linear at a time, so resident memory does not grow with
    /// what was read. A no-op where the OS does not support it.
    pub fn release(&self, name: &str) -> Result<(), IoError> {
        const PAGE: usize = 4096;
        let e = self.entry(name)?;
        // whole pages inside the tensor only: neighbours may still be in use
        let start = e.start.div_ceil(PAGE) * PAGE;
        let end = (e.end / PAGE) * PAGE;
        if end > start {
            // SAFETY: the mapping is read-only (file-backed) and nothing of ours keeps a
            // reference into this range across the call (`&self` views are re-faulted from
            // the file, unchanged, on the next access).
            let _ = unsafe {
                self.shards[e.shard].mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
        Ok(())
    }

    fn not_float(&self, e: &Entry, wanted: &str) -> IoError {
        IoError::Dtype {
            name: e.info.name.clone(),
            path: self.shards[e.shard].path.clone(),
            dtype: e.info.dtype,
            what: format!("cannot be read as {wanted} (only F32, F16, BF16, F64 can)"),
        }
    }

    /// The tensor's values as `f32` (from F32, F16, BF16; F64 is narrowed).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, IoError> {
        let e = self.entry(name)?;
        let bytes = &self.shards[e.shard].mmap[e.start..e.end];
        decode_f32(e.info.dtype, bytes).ok_or_else(|| self.not_float(e, "f32"))
    }

    /// The tensor's values as `f64` (from F32, F16, BF16, F64; exact).
    pub fn read_f64(&self, name: &str) -> Result<Vec<f64>, IoError> {
        let e = self.entry(name)?;
        let bytes = &self.shards[e.shard].mmap[e.start..e.end];
        decode_f64(e.info.dtype, bytes).ok_or_else(|| self.not_float(e, "f64"))
    }

    /// A 2-D tensor as `(rows, cols, values)`, row-major with `rows = shape[0]`.
    pub fn read_matrix_f64(&self, name: &str) -> Result<(usize, usize, Vec<f64>), IoError> {
        let e = self.entry(name)?;
        if e.info.shape.len() != 2 {
            return Err(IoError::Shape {
                name: name.to_string(),
                path: self.shards[e.shard].path.clone(),
                shape: e.info.shape.clone(),
                what: "expected a 2-D matrix".into(),
            });
        }
        let (rows, cols) = (e.info.shape[0], e.info.shape[1]);
        Ok((rows, cols, self.read_f64(name)?))
    }

    /// The dtype of a tensor, or an error naming it if absent.
    pub fn dtype(&self, name: &str) -> Result<Dtype, IoError> {
        Ok(self.entry(name)?.info.dtype)
    }
}

impl std::fmt::Debug for TensorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorStore")
            .field("root", &self.root)
            .field("files", &self.files())
            .field("tensors", &self.entries.len())
            .finish()
    }
}
