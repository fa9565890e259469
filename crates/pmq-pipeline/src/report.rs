//! The per-layer report of a quantization run (JSON + a readable table).

use crate::deviation::Deviation;
use serde::Serialize;

/// One quantized linear.
#[derive(Clone, Debug, Serialize)]
pub struct LinearRecord {
    pub name: String,
    pub block: usize,
    pub group: usize,
    pub rows: usize,
    pub cols: usize,
    /// Calibration tokens seen per task.
    pub tokens: Vec<usize>,
    /// The method's objective at RTN of the merged weight ("before").
    pub objective_rtn: Option<f64>,
    /// The method's objective at the result ("after").
    pub objective: Option<f64>,
    pub percdamp: Option<f64>,
    pub damping: Option<f64>,
    pub lambda: Option<f64>,
    pub extra_damping: Option<f64>,
    pub seconds: f64,
    /// The Eq. 9 split on the calibration inputs.
    pub deviation: Option<Deviation>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub settings: serde_json::Value,
    pub tasks: Vec<String>,
    pub linears: Vec<LinearRecord>,
    pub wall_seconds: f64,
    pub peak_rss_mib: Option<f64>,
}

fn opt(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.4e}"))
}

impl Report {
    /// A markdown table, one row per linear.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# pmq quantization report\n\nmodel: `{}`  \nsettings: `{}`  \ntasks: {}  \nwall time: {:.1} s, peak RSS: {}\n\n",
            self.model,
            self.settings,
            self.tasks.join(", "),
            self.wall_seconds,
            self.peak_rss_mib.map_or("unknown".into(), |m| format!("{m:.0} MiB")),
        );
        s.push_str("| linear | shape | objective RTN | objective | λ + damping | ‖QX−W_mX‖ | mean ‖W_mX_i−W_iX_i‖ | mean ‖QX_i−W_iX_i‖ | s |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for l in &self.linears {
            let (q, m, e) = l.deviation.as_ref().map_or((None, None, None), |d| {
                let has_experts = !d.per_task.is_empty();
                (
                    Some(d.quant),
                    has_experts.then_some(d.merge_mean),
                    has_experts.then_some(d.expert_mean),
                )
            });
            s.push_str(&format!(
                "| {} | {}×{} | {} | {} | {} | {} | {} | {} | {:.2} |\n",
                l.name,
                l.rows,
                l.cols,
                opt(l.objective_rtn),
                opt(l.objective),
                opt(match (l.lambda, l.damping, l.extra_damping) {
                    (None, None, None) => None,
                    (a, b, c) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0) + c.unwrap_or(0.0)),
                }),
                opt(q),
                opt(m),
                opt(e),
                l.seconds
            ));
        }
        s
    }
}

/// Peak resident memory of this process (VmHWM), in MiB, where the OS reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
