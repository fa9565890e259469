//! The per-layer report of a quantization run (JSON + a readable table).

use crate::deviation::Deviation;
use serde::{Deserialize, Serialize};

/// One quantized linear.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// AWQ's choices (AWQ only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awq: Option<AwqRecord>,
    /// `--alpha auto`: the α chosen for this linear and the held-out loss of every α tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<pmq_core::alpha_selection::AlphaChoice>,
    /// What is degenerate about this linear's result (e.g. input columns no calibration
    /// sample reached).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What AWQ chose for one linear. The objectives of the [`LinearRecord`] are measured in the
/// original coordinates: `‖(Q_eff − W) X‖²` on the summed Hessian of the full-precision inputs,
/// with `Q_eff = diag(s_out)·Q(W'·diag(s))·diag(s)⁻¹` (`s_out` from a fold into this linear's
/// rows), against plain RTN of `W` for "before".
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AwqRecord {
    /// The linears scaled together with this one (its scaling group).
    pub group: Vec<String>,
    /// Where the group's `1/s` was folded; `None`: no exact fold, not scaled.
    pub folded_into: Option<String>,
    /// What measured the search loss: `self_attention`, `cross_attention`, `mlp` or `linear`.
    pub inspected: String,
    /// The chosen grid ratio `r`; `None` when the group was not scaled or the identity won.
    pub ratio: Option<f64>,
    /// Search loss (mean squared error of the inspected output) at the chosen scales.
    pub loss: Option<f64>,
    /// The same loss without scaling (plain RTN).
    pub loss_unscaled: Option<f64>,
    /// `min s`, `max s` of the chosen scales (1, 1 when not scaled).
    pub scale_min: f64,
    pub scale_max: f64,
    /// This linear's output rows were divided by the next group's scales (a fold).
    pub rows_rescaled: bool,
    /// The clip search; `None` when not clipped (queries, keys, or clipping off).
    pub clip: Option<ClipRecord>,
    /// Seconds of the group's scale search (shared by the group's linears).
    pub search_seconds: f64,
}

/// Summary of one linear's clip search.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClipRecord {
    /// Fraction of (row, group) thresholds below the group's `max |w|`.
    pub clipped_fraction: f64,
    /// Mean relative shrink `1 − m / max |w|` over all (row, group).
    pub mean_shrink: f64,
    /// Token rows the search used.
    pub tokens: usize,
}

/// Where a run's time went, in seconds (wall clock, summed over blocks).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Phases {
    /// Loading the model and experts, reading and tokenizing the calibration data.
    pub load_s: f64,
    /// Embedding the calibration batches (the states entering block 0).
    pub embed_s: f64,
    /// Block forward passes with capture, minus the time in the capture callback.
    pub forward_s: f64,
    /// Hessian accumulation `Σ x xᵀ` inside the capture callback.
    pub hessian_s: f64,
    /// Folding tasks: `H_q += H_i`, and with experts `D += (W_i − W_m) H_i` (reading expert
    /// weights).
    pub fold_s: f64,
    /// The solvers (RTN, GPTQ, E-PMQ; AWQ's searches and rounding).
    pub solve_s: f64,
    /// Report figures: objectives before/after, the deviation split.
    pub metrics_s: f64,
    /// Re-running each quantized block to get the next block's inputs.
    pub propagate_s: f64,
    /// Writing outputs (filled in by the writer's caller).
    pub write_s: f64,
    /// Block forward passes with capture (many stopped early), per block and batch.
    pub capture_passes_per_block: f64,
    /// One plain forward pass (no capture, no cache) of the first block quantized over every
    /// calibration batch (the median of three timed passes after an untimed warm-up pass): the
    /// unit of [`Phases::non_solve_block_forwards`]; measured only when asked for
    /// (`time_block_forward`), 0 otherwise.
    #[serde(default)]
    pub block_forward_s: f64,
    /// Time outside the solver per block (forward with capture, Hessians, fold, metrics,
    /// propagation), in units of [`Phases::block_forward_s`]; 0 when that was not measured.
    pub non_solve_block_forwards: f64,
    /// Resuming from a checkpoint: re-running the finished blocks to recompute the calibration
    /// states entering the first unfinished one (absent when the run was not resumed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replay_s: f64,
    /// The most memory the forward cache (what a block's capture passes reuse) held at once,
    /// MiB.
    #[serde(default)]
    pub forward_cache_peak_mib: f64,
    #[serde(skip)]
    pub(crate) capture_calls: usize,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub settings: serde_json::Value,
    pub tasks: Vec<String>,
    pub linears: Vec<LinearRecord>,
    /// Seconds; for a resumed run, those the interrupted run(s) spent on the finished blocks
    /// plus this run's.
    pub wall_seconds: f64,
    pub peak_rss_mib: Option<f64>,
    /// Where the time went.
    pub phases: Phases,
    /// The block a resumed run continued at: blocks before it (their linears, records and
    /// changed tensors) came from the checkpoint ([`crate::resume`]); absent for a run from the
    /// first block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_at_block: Option<usize>,
    /// Degenerate inputs and results (duplicate experts, empty calibration samples, linears
    /// with dead input columns), also logged as warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `--alpha auto-model`: the model-wide α chosen and the held-out loss of every candidate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_search: Option<crate::alpha_model::ModelAlphaSearch>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
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
        if !self.warnings.is_empty() {
            s.push_str("## Warnings\n\n");
            for w in &self.warnings {
                s.push_str(&format!("- {w}\n"));
            }
            s.push('\n');
        }
        if let Some(a) = &self.alpha_search {
            s.push_str(&a.to_markdown());
        }
        if let Some(b) = self.resumed_at_block {
            s.push_str(&format!(
                "resumed at block {b}: blocks 0–{} from the checkpoint (replayed in {:.1} s)\n\n",
                b - 1,
                self.phases.replay_s
            ));
        }
        let p = &self.phases;
        s.push_str(&format!(
            "phases (s): load {:.1}, embed {:.1}, forward {:.1}, Hessians {:.1}, fold {:.1}, solve {:.1}, metrics {:.1}, propagate {:.1}, write {:.1}\n\n",
            p.load_s, p.embed_s, p.forward_s, p.hessian_s, p.fold_s, p.solve_s, p.metrics_s, p.propagate_s, p.write_s
        ));
        s.push_str("| linear | shape | objective RTN | objective | λ + damping | ‖QX−W_mX‖ | rms ‖W_mX_i−W_iX_i‖ | rms ‖QX_i−W_iX_i‖ | s |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for l in &self.linears {
            let (q, m, e) = l.deviation.as_ref().map_or((None, None, None), |d| {
                (Some(d.quant), d.merge_rms, d.expert_rms)
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
        if self.linears.iter().any(|l| l.awq.is_some()) {
            s.push_str(&awq_markdown(&self.linears));
        }
        s
    }
}

/// The AWQ choices as a table: fold target, ratio, scale range, search losses, clipping.
fn awq_markdown(linears: &[LinearRecord]) -> String {
    let mut s = String::from(
        "\n## AWQ\n\n| linear | 1/s folded into | inspected | r | s range | loss RTN → AWQ | clipped | search s |\n|---|---|---|---|---|---|---|---|\n",
    );
    for l in linears {
        let Some(a) = &l.awq else { continue };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2}–{:.2} | {} → {} | {} | {:.2} |\n",
            l.name,
            a.folded_into.as_deref().unwrap_or("– (not scaled)"),
            a.inspected,
            a.ratio.map_or("–".into(), |r| format!("{r:.2}")),
            a.scale_min,
            a.scale_max,
            opt(a.loss_unscaled),
            opt(a.loss),
            a.clip.as_ref().map_or("–".into(), |c| format!(
                "{:.0} %",
                100.0 * c.clipped_fraction
            )),
            a.search_seconds,
        ));
    }
    s
}

/// Peak resident memory of this process (VmHWM), in MiB, where the OS reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak resident memory that [`peak_rss_mib`] reports to the current resident
/// memory (Linux ≥ 4.0: `/proc/self/clear_refs`), so that a process running several jobs, such
/// as the benchmark, measures each on its own. Returns whether the reset happened.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
