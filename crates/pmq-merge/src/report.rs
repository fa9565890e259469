//! `merge_report.json`: what was merged, how, and how long it took.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

/// Summary of a finished merge (also written as `merge_report.json` in the output).
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// Method name (`average`, `task-arithmetic`, `ties`, `dare`, `wudi`).
    pub method: String,
    /// The method's parameters.
    pub params: Value,
    /// Number of experts K.
    pub k: usize,
    pub base: PathBuf,
    pub experts: Vec<PathBuf>,
    pub out: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Requested output dtype of float tensors (`null`: each tensor keeps the base dtype).
    pub dtype: Option<String>,
    pub tensors_total: usize,
    pub tensors_merged: usize,
    pub tensors_copied: usize,
    /// Copied because not selected by `--include`/`--exclude`.
    pub tensors_copied_unselected: usize,
    /// Copied because not floating point.
    pub tensors_copied_non_float: usize,
    /// Non-weight files copied from the base directory.
    pub copied_files: Vec<String>,
    /// Wall-clock seconds of the whole merge.
    pub seconds: f64,
    /// Method-wide facts (TIES global thresholds, ...).
    pub method_details: Value,
    /// Per-tensor facts (WUDI losses, TIES per-tensor thresholds), by tensor name.
    pub tensors: BTreeMap<String, Value>,
}
