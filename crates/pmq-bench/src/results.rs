//! What a benchmark run produced, kept as JSON so single cells can be rerun and merged in.

use crate::cell::Cell;
use anyhow::{Context, Result};
use pmq_eval::TaskAccuracy;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One evaluated model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellResult {
    pub cell: Cell,
    pub key: String,
    /// Test accuracy per task, in task order.
    pub accuracies: Vec<TaskAccuracy>,
    /// Mean of the per-task accuracies.
    pub average: f64,
    /// Wall time of `pmq quantize` as it reported it (none for FP).
    pub quant_seconds: Option<f64>,
    /// Peak RSS of `pmq quantize` as it reported it.
    pub quant_peak_rss_mib: Option<f64>,
    /// Seconds spent evaluating.
    pub eval_seconds: f64,
    /// When the cell finished (RFC 3339, UTC).
    pub finished: String,
    /// `--alpha auto`: how many linears chose each α (`α×count`, ascending α).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_summary: Option<String>,
}

/// A reference row (not a merged model): the experts on their own tasks, or the linear probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefRow {
    pub name: String,
    pub accuracies: Vec<TaskAccuracy>,
    pub average: f64,
}

/// The machine and settings a run used.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// The command line of the latest run that wrote these results.
    pub command: String,
    pub date: String,
    pub cores: usize,
    pub cpu: String,
    pub tasks: Vec<String>,
    /// Everything that determines the numbers (splits, fine-tuning, evaluation, calibration).
    pub settings: serde_json::Value,
    /// Hash of `settings`; cells computed under other settings are not mixed in.
    pub context: String,
}

/// All results of a results directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchResults {
    pub meta: Meta,
    pub refs: Vec<RefRow>,
    pub cells: Vec<CellResult>,
}

impl BenchResults {
    /// Reads `results.json` of a results directory, if there is one.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        if !path.is_file() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let r = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a pmq bench results file", path.display()))?;
        Ok(Some(r))
    }

    /// Adds `new` cells (replacing cells with the same key) and reference rows (by name).
    /// Results of other settings are dropped when the context changed.
    pub fn merge_in(
        old: Option<Self>,
        meta: Meta,
        refs: Vec<RefRow>,
        cells: Vec<CellResult>,
    ) -> Self {
        let (mut old_refs, mut old_cells) = match old {
            Some(o) if o.meta.context == meta.context => (o.refs, o.cells),
            _ => (Vec::new(), Vec::new()),
        };
        old_refs.retain(|r| !refs.iter().any(|n| n.name == r.name));
        old_refs.extend(refs);
        old_cells.retain(|c| !cells.iter().any(|n| n.key == c.key));
        old_cells.extend(cells);
        Self {
            meta,
            refs: old_refs,
            cells: old_cells,
        }
    }

    /// The result of the cell with this key.
    pub fn cell(&self, key: &str) -> Option<&CellResult> {
        self.cells.iter().find(|c| c.key == key)
    }
}

/// Mean accuracy (0 for no tasks).
pub fn average(acc: &[TaskAccuracy]) -> f64 {
    if acc.is_empty() {
        0.0
    } else {
        acc.iter().map(|a| a.accuracy).sum::<f64>() / acc.len() as f64
    }
}

/// Now, RFC 3339 UTC to the second.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The CPU model from /proc/cpuinfo (Linux), or "unknown".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Usable cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
