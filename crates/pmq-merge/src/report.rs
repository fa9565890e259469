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
    /// Degenerate inputs that do not stop the merge: the base given as an expert (a zero task
    /// vector), an expert given twice (it counts twice). Also logged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The warnings about a merge's inputs ([`MergeReport::warnings`]).
pub fn input_warnings(base: &std::path::Path, experts: &[PathBuf]) -> Vec<String> {
    pmq_io::checkpoint_aliases(base, experts)
        .into_iter()
        .map(|a| match a {
            pmq_io::Alias::Reference(i) => format!(
                "expert {} ({}) is the base: its task vector is zero",
                i + 1,
                experts[i].display()
            ),
            pmq_io::Alias::Earlier { earlier, later } => format!(
                "experts {} and {} are the same checkpoint ({}): it counts twice",
                earlier + 1,
                later + 1,
                experts[later].display()
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::input_warnings;

    #[test]
    fn base_as_expert_and_duplicates_are_warned() {
        let d = tempfile::tempdir().unwrap();
        let (base, a) = (d.path().join("base"), d.path().join("a"));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&a).unwrap();
        // the same directory spelled differently still counts
        let a2 = d.path().join("base/../a");
        let w = input_warnings(&base, &[a.clone(), base.clone(), a2]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("expert 2") && w[0].contains("is the base"),
            "{w:?}"
        );
        assert!(
            w[1].contains("experts 1 and 3 are the same checkpoint"),
            "{w:?}"
        );
        assert!(input_warnings(&base, &[a]).is_empty());
    }
}
