//! The experts' weights (numbered from 1 in messages, as `pmq merge` numbers them), read one linear at a time from memory-mapped checkpoints, so memory
//! does not grow with the number of experts beyond one linear each.

use anyhow::{bail, Context, Result};
use faer::Mat;
use pmq_core::matrix::from_row_major;
use pmq_io::TensorStore;
use pmq_models::LinearSpec;
use std::path::{Path, PathBuf};

/// `architectures` and `model_type` of a checkpoint's config.json.
fn identity(dir: &Path) -> Result<(serde_json::Value, serde_json::Value)> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok((v["architectures"].clone(), v["model_type"].clone()))
}

/// Expert checkpoints, validated against the merged model's linears.
pub struct Experts {
    dirs: Vec<PathBuf>,
    stores: Vec<TensorStore>,
}

impl Experts {
    /// Opens the experts and checks that each has the merged model's architecture and every
    /// quantized linear's weight with the right shape.
    pub fn open(dirs: &[PathBuf], merged_dir: &Path, linears: &[LinearSpec]) -> Result<Self> {
        let want = identity(merged_dir)?;
        let mut stores = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let k = i + 1;
            let got = identity(dir).with_context(|| format!("expert {k} ({})", dir.display()))?;
            if got != want {
                bail!(
                    "expert {k} ({}) has architectures {} / model_type {}, but the merged model has {} / {}",
                    dir.display(),
                    got.0,
                    got.1,
                    want.0,
                    want.1
                );
            }
            let store = TensorStore::open_dir(dir)
                .with_context(|| format!("expert {k} ({})", dir.display()))?;
            for l in linears {
                let name = l.weight_name();
                let info = store.info(&name).ok_or_else(|| {
                    anyhow::anyhow!("expert {k} ({}) has no tensor `{name}`", dir.display())
                })?;
                if info.shape != [l.out_features, l.in_features] {
                    bail!(
                        "expert {k} ({}): tensor `{name}` has shape {:?}, expected [{}, {}]",
                        dir.display(),
                        info.shape,
                        l.out_features,
                        l.in_features
                    );
                }
            }
            stores.push(store);
        }
        Ok(Self {
            dirs: dirs.to_vec(),
            stores,
        })
    }

    pub fn len(&self) -> usize {
        self.stores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    /// Every expert's weight of `linear`, `[out, in]`.
    pub fn weights(&self, linear: &LinearSpec) -> Result<Vec<Mat<f64>>> {
        (0..self.len()).map(|i| self.weight(i, linear)).collect()
    }

    /// Expert `i`'s weight of `linear`, `[out, in]`.
    pub fn weight(&self, i: usize, linear: &LinearSpec) -> Result<Mat<f64>> {
        let (r, c, data) = self.weight_rows(i, linear)?;
        Ok(from_row_major(r, c, &data))
    }

    /// Expert `i`'s weight of `linear` as `(out, in, row-major values)`, for a zero-copy view
    /// (`MatRef::from_row_major_slice`).
    pub fn weight_rows(&self, i: usize, linear: &LinearSpec) -> Result<(usize, usize, Vec<f64>)> {
        let (s, dir) = (&self.stores[i], &self.dirs[i]);
        let (r, c, data) = s
            .read_matrix_f64(&linear.weight_name())
            .with_context(|| format!("expert {} ({})", i + 1, dir.display()))?;
        // read once per linear: keep resident memory flat in the number of experts
        s.release(&linear.weight_name())?;
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            let name = linear.weight_name();
            bail!(
                "expert {} ({}): tensor `{name}` in {} holds {} at flat index {pos} (weights must \
                 be finite)",
                i + 1,
                dir.display(),
                s.file_of(&name).unwrap_or(dir).display(),
                data[pos]
            );
        }
        Ok((r, c, data))
    }
}
