//! RegMean's per-expert Gram files: one safetensors file per expert holding, for every input
//! tensor of the model's linears, the mean Gram matrix `G = XᵀX / n` of that input over the
//! expert's own calibration tokens (F32, `[in, in]`).
//!
//! Linears reading the same tensor (q/k/v, gate/up) share one entry: the metadata key
//! `pmq_gram_linears` maps every linear weight name (`….weight`) to its entry, and
//! `pmq_gram_tokens` gives the tokens behind each entry. `pmq_gram_model` and `pmq_gram_task`
//! name what produced the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use faer::Mat;
use pmq_core::matrix::{from_row_major, to_row_major_f32};
use pmq_io::{Dtype, TensorStore};

use crate::MergeError;

const LINEARS_KEY: &str = "pmq_gram_linears";
const TOKENS_KEY: &str = "pmq_gram_tokens";

/// One Gram entry to write: the input's name, its mean Gram matrix and its token count.
pub struct GramEntry {
    pub name: String,
    pub gram: Mat<f64>,
    pub tokens: usize,
}

/// Writes a Gram file atomically. `linears` maps each linear weight name to the entry it reads.
pub fn write_grams(
    path: &Path,
    entries: &[GramEntry],
    linears: &BTreeMap<String, String>,
    model: &str,
    task: &str,
) -> Result<(), MergeError> {
    let bad = |reason: String| MergeError::Grams {
        path: path.to_path_buf(),
        reason,
    };
    for target in linears.values() {
        if !entries.iter().any(|e| &e.name == target) {
            return Err(bad(format!("linear input `{target}` has no Gram entry")));
        }
    }
    let tensors = entries
        .iter()
        .map(|e| {
            let d = e.gram.nrows();
            let values = to_row_major_f32(e.gram.as_ref());
            let bytes = pmq_io::encode_f32(Dtype::F32, &values)?;
            Ok((e.name.clone(), Dtype::F32, vec![d, e.gram.ncols()], bytes))
        })
        .collect::<Result<Vec<_>, MergeError>>()?;
    let tokens: BTreeMap<&str, usize> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.tokens))
        .collect();
    let to_json = |v: serde_json::Result<String>| v.map_err(|e| bad(e.to_string()));
    let metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            LINEARS_KEY.to_string(),
            to_json(serde_json::to_string(linears))?,
        ),
        (
            TOKENS_KEY.to_string(),
            to_json(serde_json::to_string(&tokens))?,
        ),
        ("pmq_gram_model".to_string(), model.to_string()),
        ("pmq_gram_task".to_string(), task.to_string()),
    ]);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| bad(format!("creating {}: {e}", parent.display())))?;
    }
    pmq_io::write_safetensors(path, &tensors, Some(metadata))?;
    Ok(())
}

/// An opened Gram file.
pub struct GramFile {
    path: PathBuf,
    store: TensorStore,
    linears: BTreeMap<String, String>,
}

impl GramFile {
    /// Opens and checks a Gram file: its map of linears, and square F32/F64 entries.
    pub fn open(path: &Path) -> Result<Self, MergeError> {
        let bad = |reason: String| MergeError::Grams {
            path: path.to_path_buf(),
            reason,
        };
        let store = TensorStore::open_file(path)?;
        let linears: BTreeMap<String, String> = store
            .metadata()
            .and_then(|m| m.get(LINEARS_KEY))
            .ok_or_else(|| bad(format!("no `{LINEARS_KEY}` metadata: not a pmq Gram file")))
            .and_then(|s| {
                serde_json::from_str(s)
                    .map_err(|e| bad(format!("`{LINEARS_KEY}` is not a name map: {e}")))
            })?;
        for (linear, entry) in &linears {
            let info = store.info(entry).ok_or_else(|| {
                bad(format!(
                    "linear `{linear}` reads entry `{entry}`, which the file lacks"
                ))
            })?;
            if info.shape.len() != 2 || info.shape[0] != info.shape[1] {
                return Err(bad(format!(
                    "entry `{entry}` has shape {:?}; a Gram matrix is square",
                    info.shape
                )));
            }
            if !matches!(info.dtype, Dtype::F32 | Dtype::F64) {
                return Err(bad(format!(
                    "entry `{entry}` is {}, not F32/F64",
                    info.dtype
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            store,
            linears,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The linear weight names the file has a Gram matrix for.
    pub fn linears(&self) -> impl Iterator<Item = &str> {
        self.linears.keys().map(String::as_str)
    }

    /// The side of the Gram matrix read by the weight `name`.
    pub fn dim(&self, name: &str) -> Option<usize> {
        let entry = self.linears.get(name)?;
        self.store.info(entry).map(|i| i.shape[0])
    }

    /// Whether the file has a Gram matrix for the weight `name`.
    pub fn has(&self, name: &str) -> bool {
        self.linears.contains_key(name)
    }

    /// The Gram matrix read by the linear weight `name`, checked finite.
    pub fn gram(&self, name: &str) -> Result<Option<Mat<f64>>, MergeError> {
        let Some(entry) = self.linears.get(name) else {
            return Ok(None);
        };
        let (r, c, data) = self.store.read_matrix_f64(entry)?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(MergeError::Grams {
                path: self.path.clone(),
                reason: format!("entry `{entry}` holds {} at flat index {i}", data[i]),
            });
        }
        Ok(Some(from_row_major(r, c, &data)))
    }
}
