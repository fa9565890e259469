//! The paper's experiments on pmq's real testbed (all-MiniLM-L6-v2 + 8 real text tasks).
//!
//! One expert per task is fine-tuned from the backbone (cached), the experts are merged
//! ({Simple Averaging, Task Arithmetic, TIES, WUDI}), the merged model is quantized
//! ({RTN, GPTQ, AWQ, E-PMQ}) and every model is scored by per-task test accuracy with the
//! experts' own heads (heads are never merged or quantized) — the structure of the paper's
//! Tables 1–3 (main), the α ablation, the bit-width sweep and Table 6 (calibration budget and
//! time). See `bench/README.md` for the settings and the committed results.

pub mod bootstrap;
pub mod cell;
pub mod plan;
pub mod plot;
pub mod results;
pub mod runner;
pub mod suite;
pub mod tables;

pub use cell::{Cell, MergeKind, QuantKind};
pub use plan::{plan, Defaults, Experiment, Selection};
pub use results::{BenchResults, CellResult, Meta, RefRow};
pub use runner::{Bench, BenchConfig};
pub use suite::Suite;

use anyhow::Result;
use std::path::Path;

/// Writes `results.json`, `tables.md` (every table that has cells) and `bits.svg` into `dir`.
pub fn write_results(dir: &Path, res: &BenchResults, d: &Defaults) -> Result<()> {
    runner::write_json(&dir.join("results.json"), res)?;
    let md = render_markdown(res, d);
    pmq_testbed::write_atomic(&dir.join("tables.md"), md.as_bytes())?;
    if let Some(svg) = plot::bits_svg(res, d.group_size, d.alpha, d.samples)? {
        pmq_testbed::write_atomic(&dir.join("bits.svg"), svg.as_bytes())?;
    }
    Ok(())
}

/// All tables as one markdown document, headed by how they were produced.
pub fn render_markdown(res: &BenchResults, d: &Defaults) -> String {
    let m = &res.meta;
    let mut s = format!(
        "# pmq bench results\n\nCommand: `{}`  \nLatest run: {} · {} cores ({}) · settings hash `{}`  \nTest accuracy (%) per task with each expert's head; Δ in percentage points.\n\n",
        m.command, m.date, m.cores, m.cpu, m.context
    );
    for g in [d.group_size, 64] {
        if let Some(t) = tables::main_table(res, d, g, g == d.group_size) {
            s.push_str(&format!(
                "## Main table: {}-bit, group {g} (E-PMQ α = {}; WUDI: α = {}, as in the paper)\n\n{t}\n",
                d.bits, d.alpha, d.wudi_alpha
            ));
        }
        if g == 64 && d.group_size == 64 {
            break;
        }
    }
    if let Some(t) = tables::alpha_table(res, d.bits, d.group_size, d.samples) {
        s.push_str(&format!("## Anchor ablation (α)\n\n{t}\n"));
    }
    if let Some(t) = tables::bits_table(res, d.group_size, d.alpha, d.samples) {
        s.push_str(&format!("## Bit width\n\n{t}\n![bits](bits.svg)\n\n"));
    }
    if let Some(t) = tables::budget_table(res, d.bits, d.group_size, d.alpha) {
        s.push_str(&format!("## Calibration budget and time\n\n{t}\n"));
    }
    if let Some(t) = tables::auto_alpha_table(res, d) {
        s.push_str(&format!(
            "## E-PMQ with --alpha auto (per linear) and auto-model (per model)\n\n{t}\n"
        ));
    }
    if let Some(t) = tables::regmean_table(res, d) {
        s.push_str(&format!(
            "## RegMean: the data-driven merge beside E-PMQ\n\n{t}\n"
        ));
    }
    s
}
