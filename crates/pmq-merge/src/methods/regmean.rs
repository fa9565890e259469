//! RegMean: **W = (Σᵢ Wᵢ G̃ᵢ)(Σᵢ G̃ᵢ)⁻¹** for every linear weight with a Gram matrix, where
//! `G̃ᵢ = r·Gᵢ + (1 − r)·diag(Gᵢ)` and `Gᵢ` is expert i's mean input Gram matrix on its own
//! task's data (from its Gram file, [`crate::gram_file`]); every other tensor (biases, norms,
//! embeddings) is the experts' mean, as in FusionBench. The base is not used. The per-linear
//! math is [`pmq_core::regmean`].

use pmq_core::matrix::{from_row_major_f32, to_row_major_f32};
use pmq_core::regmean::RegMeanFold;
use serde_json::{json, Value};

use super::{average::average, MergeMethod, Merged};
use crate::gram_file::GramFile;
use crate::inputs::{Inputs, Loaded};
use crate::plan::TensorPlan;
use crate::progress::Progress;
use crate::{MergeError, RegMeanOptions};

pub(crate) struct RegMean {
    opts: RegMeanOptions,
    files: Vec<GramFile>,
}

impl RegMean {
    pub(crate) fn new(opts: RegMeanOptions) -> Self {
        Self {
            opts,
            files: Vec::new(),
        }
    }
}

impl MergeMethod for RegMean {
    fn prepare(
        &mut self,
        inputs: &Inputs,
        merged: &[&TensorPlan],
        _progress: &dyn Progress,
    ) -> Result<(), MergeError> {
        if self.opts.grams.len() != inputs.k() {
            return Err(MergeError::option(
                "grams",
                format!(
                    "RegMean needs one Gram file per expert: {} experts, {} Gram files",
                    inputs.k(),
                    self.opts.grams.len()
                ),
            ));
        }
        self.files = self
            .opts
            .grams
            .iter()
            .map(|p| GramFile::open(p))
            .collect::<Result<_, _>>()?;
        let first: Vec<&str> = self.files[0].linears().collect();
        for f in &self.files[1..] {
            if f.linears().ne(first.iter().copied()) {
                return Err(MergeError::Grams {
                    path: f.path().to_path_buf(),
                    reason: format!(
                        "covers other linears than {} (all experts' Gram files must come from the same architecture)",
                        self.files[0].path().display()
                    ),
                });
            }
        }
        for name in &first {
            let Some(plan) = merged.iter().find(|p| p.name() == *name) else {
                // a linear left out of the merge (--exclude) keeps the base value
                if inputs.base.store.contains(name) {
                    continue;
                }
                return Err(MergeError::Grams {
                    path: self.files[0].path().to_path_buf(),
                    reason: format!("has a Gram matrix for `{name}`, which the model lacks"),
                });
            };
            if plan.info.shape.len() != 2 {
                return Err(MergeError::Grams {
                    path: self.files[0].path().to_path_buf(),
                    reason: format!("`{name}` is not a 2-D weight: shape {:?}", plan.info.shape),
                });
            }
            for f in &self.files {
                let d = f.dim(name).unwrap_or(0);
                if d != plan.info.shape[1] {
                    return Err(MergeError::Grams {
                        path: f.path().to_path_buf(),
                        reason: format!(
                            "the Gram matrix of `{name}` is {d}×{d}, the weight has {} input columns",
                            plan.info.shape[1]
                        ),
                    });
                }
            }
        }
        if first.is_empty() {
            tracing::warn!("the Gram files cover no linear: RegMean reduces to the experts' mean");
        }
        Ok(())
    }

    fn merge_tensor(&self, plan: &TensorPlan, data: &Loaded) -> Result<Merged, MergeError> {
        let name = plan.name();
        if !self.files.first().is_some_and(|f| f.has(name)) {
            return Ok(Merged::plain(average(&data.experts)));
        }
        let (rows, cols) = (plan.info.shape[0], plan.info.shape[1]);
        let bad = |e: pmq_core::CoreError| MergeError::BadResult {
            tensor: name.to_string(),
            reason: format!("RegMean: {e}"),
        };
        let mut fold = RegMeanFold::new(rows, cols, self.opts.non_diagonal_ratio).map_err(bad)?;
        for (file, w) in self.files.iter().zip(&data.experts) {
            let Some(g) = file.gram(name)? else {
                return Err(MergeError::Grams {
                    path: file.path().to_path_buf(),
                    reason: format!("has no Gram matrix for `{name}`"),
                });
            };
            fold.add(from_row_major_f32(rows, cols, w).as_ref(), g.as_ref())
                .map_err(bad)?;
        }
        let sol = fold.solve().map_err(bad)?;
        let detail: Option<Value> =
            (sol.dead_columns > 0).then(|| json!({ "regmean_dead_columns": sol.dead_columns }));
        Ok(Merged {
            values: to_row_major_f32(sol.weight.as_ref()),
            detail,
        })
    }

    fn details(&self) -> Value {
        json!({
            "non_diagonal_ratio": self.opts.non_diagonal_ratio,
            "linears": self.files.first().map_or(0, |f| f.linears().count()),
        })
    }
}
