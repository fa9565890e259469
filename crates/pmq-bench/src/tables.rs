//! Markdown tables with the structure of the paper's: main table (per task, average, change vs
//! the FP merged model), anchor ablation, bit widths, calibration budget.

use crate::bootstrap::cell_difference;
use crate::cell::{Cell, MergeKind, QuantKind};
use crate::plan::{Defaults, ALPHAS, BITS, BUDGETS};
use crate::results::{BenchResults, CellResult};
use crate::runner::by_task;
use std::fmt::Write;

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

/// `a − b` in points, with its paired bootstrap 95 % interval (and `*` when it excludes 0)
/// when both cells recorded per-example outcomes.
pub fn difference(a: &CellResult, b: &CellResult) -> String {
    match cell_difference(a, b) {
        Some(i) => i.points(),
        None => format!("{:+.1}", 100.0 * (a.average - b.average)),
    }
}

fn delta(r: &CellResult, base: Option<&CellResult>) -> String {
    base.map_or("–".into(), |b| difference(r, b))
}

/// A main-table row: per-task accuracy, the average, the change vs the FP merged model and,
/// for quantizers other than GPTQ, vs GPTQ on the same merge and grid (empty otherwise).
fn row(
    name: &str,
    tasks: &[String],
    r: &CellResult,
    fp: Option<&CellResult>,
    gptq: Option<&CellResult>,
) -> String {
    let acc = by_task(&r.accuracies);
    let cols: Vec<String> = tasks
        .iter()
        .map(|t| acc.get(t.as_str()).map_or("–".into(), |a| pct(*a)))
        .collect();
    format!(
        "| {name} | {} | **{}** | {} | {}|\n",
        cols.join(" | "),
        pct(r.average),
        delta(r, fp),
        gptq.map_or(String::new(), |g| difference(r, g) + " ")
    )
}

/// The main table for one group size: reference rows, then per merge method the FP merged model
/// and each quantizer, with the average, the change vs FP merged and, for the other quantizers,
/// vs GPTQ (percentage points).
/// E-PMQ rows use each merge's α ([`Defaults::alpha_for`]). Merge methods with no quantized
/// cell at this setting are listed only with `fp_only_rows`.
pub fn main_table(
    res: &BenchResults,
    d: &Defaults,
    group: i64,
    fp_only_rows: bool,
) -> Option<String> {
    let tasks = &res.meta.tasks;
    let bits = d.bits;
    let mut body = String::new();
    let mut any = false;
    for m in MergeKind::ALL {
        let fp = res.cell(&Cell::fp(m).key());
        let quantized: Vec<&CellResult> = QuantKind::ALL[1..]
            .iter()
            .filter_map(|&q| {
                res.cells.iter().find(|c| {
                    c.cell.merge == m
                        && c.cell.quant == q
                        && c.cell.bits == bits
                        && c.cell.group_size == group
                        && (c.cell.samples == 0 || c.cell.samples == d.samples)
                        && (q != QuantKind::Epmq || (c.cell.alpha - d.alpha_for(m)).abs() < 1e-12)
                        && c.cell.holdout_every == crate::cell::DEFAULT_HOLDOUT
                })
            })
            .collect();
        if quantized.is_empty() && (fp.is_none() || !fp_only_rows) {
            continue;
        }
        any = true;
        let _ = writeln!(
            body,
            "| **{}** |{}",
            m.label(),
            " |".repeat(tasks.len() + 3)
        );
        if let Some(f) = fp {
            body.push_str(&row("FP merged", tasks, f, None, None));
        }
        let gptq = quantized
            .iter()
            .find(|c| c.cell.quant == QuantKind::Gptq)
            .copied();
        for c in quantized {
            let vs_gptq = gptq.filter(|_| c.cell.quant != QuantKind::Gptq);
            let mut name = format!("{} {}-bit", c.cell.quant.label(), c.cell.bits);
            if c.cell.quant == QuantKind::Epmq && d.alpha_for(m) != d.alpha {
                name.push_str(&format!(" (α = {})", c.cell.alpha));
            }
            body.push_str(&row(&name, tasks, c, fp, vs_gptq));
        }
    }
    if !any {
        return None;
    }
    let mut s = format!(
        "| Method | {} | Avg | Δ vs FP merged | Δ vs GPTQ |\n|---|{}---|---|---|\n",
        tasks.join(" | "),
        "---|".repeat(tasks.len())
    );
    for r in &res.refs {
        let acc = by_task(&r.accuracies);
        let cols: Vec<String> = tasks
            .iter()
            .map(|t| acc.get(t.as_str()).map_or("–".into(), |a| pct(*a)))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | **{}** | | |",
            r.name,
            cols.join(" | "),
            pct(r.average)
        );
    }
    s.push_str(&body);
    Some(s)
}

/// α ablation: average accuracy of E-PMQ per α under TA and TIES (and WUDI where it has E-PMQ
/// cells), with GPTQ and FP for reference.
pub fn alpha_table(res: &BenchResults, bits: u8, group: i64, samples: usize) -> Option<String> {
    let find = |m: MergeKind, q: QuantKind, a: f64| {
        res.cell(&Cell::quant(m, q, bits, group, a, samples).key())
    };
    let mut merges = vec![MergeKind::Ta, MergeKind::Ties];
    if ALPHAS
        .iter()
        .any(|&a| find(MergeKind::Wudi, QuantKind::Epmq, a).is_some())
    {
        merges.push(MergeKind::Wudi);
    }
    let mut rows = Vec::new();
    let fmt = |c: Option<&CellResult>| c.map_or("–".into(), |c| pct(c.average));
    rows.push(format!(
        "| FP merged | {} |",
        merges
            .iter()
            .map(|&m| fmt(res.cell(&Cell::fp(m).key())))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    rows.push(format!(
        "| GPTQ | {} |",
        merges
            .iter()
            .map(|&m| fmt(find(m, QuantKind::Gptq, 0.0)))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    let mut alphas_run = 0;
    for a in ALPHAS {
        let cells: Vec<_> = merges
            .iter()
            .map(|&m| find(m, QuantKind::Epmq, a))
            .collect();
        alphas_run += usize::from(cells.iter().any(Option::is_some));
        rows.push(format!(
            "| E-PMQ α = {a} | {} |",
            cells.into_iter().map(fmt).collect::<Vec<_>>().join(" | ")
        ));
    }
    // An ablation needs more than the default α.
    (alphas_run > 1).then(|| {
        format!(
            "| {bits}-bit, g{group}, average accuracy | {} |\n|---|{}\n{}\n",
            merges
                .iter()
                .map(|m| m.label())
                .collect::<Vec<_>>()
                .join(" | "),
            "---|".repeat(merges.len()),
            rows.join("\n")
        )
    })
}

/// Bit widths: GPTQ vs E-PMQ average accuracy under TA.
pub fn bits_table(res: &BenchResults, group: i64, alpha: f64, samples: usize) -> Option<String> {
    let fp = res.cell(&Cell::fp(MergeKind::Ta).key()).map(|c| c.average);
    let mut rows = Vec::new();
    for b in BITS {
        let g =
            res.cell(&Cell::quant(MergeKind::Ta, QuantKind::Gptq, b, group, 0.0, samples).key());
        let e =
            res.cell(&Cell::quant(MergeKind::Ta, QuantKind::Epmq, b, group, alpha, samples).key());
        if g.is_none() && e.is_none() {
            continue;
        }
        let f = |c: Option<&CellResult>| c.map_or("–".into(), |c| pct(c.average));
        let d = match (g, e) {
            (Some(g), Some(e)) => difference(e, g),
            _ => "–".into(),
        };
        rows.push(format!("| {b} | {} | {} | {d} |", f(g), f(e)));
    }
    (!rows.is_empty()).then(|| {
        format!(
            "Task Arithmetic, g{group}; FP merged: {}\n\n| bits | GPTQ | E-PMQ (α={alpha}) | E-PMQ − GPTQ |\n|---|---|---|---|\n{}\n",
            fp.map_or("–".into(), pct),
            rows.join("\n")
        )
    })
}

/// Calibration budget: accuracy and quantization wall time of GPTQ vs E-PMQ under TA.
pub fn budget_table(res: &BenchResults, bits: u8, group: i64, alpha: f64) -> Option<String> {
    let mut rows = Vec::new();
    for n in BUDGETS {
        let g = res.cell(&Cell::quant(MergeKind::Ta, QuantKind::Gptq, bits, group, 0.0, n).key());
        let e = res.cell(&Cell::quant(MergeKind::Ta, QuantKind::Epmq, bits, group, alpha, n).key());
        if g.is_none() && e.is_none() {
            continue;
        }
        let acc = |c: Option<&CellResult>| c.map_or("–".into(), |c| pct(c.average));
        let secs = |c: Option<&CellResult>| {
            c.and_then(|c| c.quant_seconds)
                .map_or("–".into(), |s| format!("{s:.0}"))
        };
        let ratio = match (
            g.and_then(|c| c.quant_seconds),
            e.and_then(|c| c.quant_seconds),
        ) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.2}×", b / a),
            _ => "–".into(),
        };
        rows.push(format!(
            "| {n} | {} | {} | {} | {} | {ratio} |",
            acc(g),
            acc(e),
            secs(g),
            secs(e)
        ));
    }
    (!rows.is_empty()).then(|| {
        format!(
            "Task Arithmetic, {bits}-bit g{group}\n\n| samples / task | GPTQ acc | E-PMQ acc | GPTQ s | E-PMQ s | time ratio E-PMQ / GPTQ |\n|---|---|---|---|---|---|\n{}\n",
            rows.join("\n")
        )
    })
}

/// `--alpha auto` against fixed α: per merge, GPTQ, the best fixed α among the cells run (the α
/// ablation's) — an oracle, picked by test accuracy, so the interval of "auto − best fixed"
/// does not account for that choice —, auto α, and the differences with their intervals.
pub fn auto_alpha_table(res: &BenchResults, d: &Defaults) -> Option<String> {
    let at = |c: &CellResult| {
        c.cell.bits == d.bits && c.cell.group_size == d.group_size && c.cell.samples == d.samples
    };
    let mut rows = Vec::new();
    for m in MergeKind::ALL {
        let fixed: Vec<&CellResult> = res
            .cells
            .iter()
            .filter(|c| c.cell.merge == m && c.cell.quant == QuantKind::Epmq && at(c))
            .collect();
        let best = fixed
            .iter()
            .copied()
            .max_by(|a, b| a.average.total_cmp(&b.average));
        let gptq = res
            .cells
            .iter()
            .find(|c| c.cell.merge == m && c.cell.quant == QuantKind::Gptq && at(c));
        let or_dash =
            |c: Option<&CellResult>, f: &dyn Fn(&CellResult) -> String| c.map_or("–".into(), f);
        for (kind, scope) in [
            (QuantKind::EpmqAuto, "per linear"),
            (QuantKind::EpmqAutoModel, "per model"),
        ] {
            let mut autos: Vec<&CellResult> = res
                .cells
                .iter()
                .filter(|c| c.cell.merge == m && c.cell.quant == kind && at(c))
                .collect();
            autos.sort_by_key(|c| std::cmp::Reverse(c.cell.holdout_every));
            for auto in autos {
                // the stride is named where it is not pmq quantize's default for the scope
                let default = match kind {
                    QuantKind::EpmqAutoModel => pmq_pipeline::DEFAULT_MODEL_HOLDOUT_EVERY,
                    _ => pmq_pipeline::DEFAULT_HOLDOUT_EVERY,
                };
                let scope = if auto.cell.holdout_every == default {
                    scope.to_string()
                } else {
                    format!("{scope}, 1 in {} held out", auto.cell.holdout_every)
                };
                rows.push(format!(
                    "| {} | {scope} | {} | {} | {} | {} | {} | {} |",
                    m.label(),
                    or_dash(gptq, &|c| pct(c.average)),
                    or_dash(best, &|c| format!(
                        "{} (α = {}, of {})",
                        pct(c.average),
                        c.cell.alpha,
                        fixed.len()
                    )),
                    pct(auto.average),
                    or_dash(best, &|b| difference(auto, b)),
                    or_dash(gptq, &|g| difference(auto, g)),
                    auto.alpha_summary.as_deref().unwrap_or("–"),
                ));
            }
        }
    }
    (!rows.is_empty()).then(|| {
        format!(
            "{}-bit, g{}, {} samples/task, average accuracy; differences in points with paired bootstrap 95 % intervals (* = excludes 0)\n\n| Merge | auto α | GPTQ | E-PMQ best fixed α (picked on the test set) | E-PMQ auto α | auto − best fixed | auto − GPTQ | α chosen |\n|---|---|---|---|---|---|---|---|\n{}\n",
            d.bits,
            d.group_size,
            d.samples,
            rows.join("\n")
        )
    })
}

/// RegMean against E-PMQ: RegMean's FP merged model and its quantized versions, then E-PMQ on
/// each data-free merge compared with RegMean FP (is E-PMQ's gain the re-merge?) and with
/// RegMean + GPTQ (the same bits, a data-driven merge quantized by the expert-blind quantizer).
pub fn regmean_table(res: &BenchResults, d: &Defaults) -> Option<String> {
    let r = MergeKind::RegMean;
    let find = |m: MergeKind, q: QuantKind| {
        res.cell(&Cell::quant(m, q, d.bits, d.group_size, d.alpha_for(m), d.samples).key())
    };
    let reg_fp = res.cell(&Cell::fp(r).key())?;
    let reg_gptq = find(r, QuantKind::Gptq);
    let mut rows = vec![format!("| RegMean FP | {} | | |", pct(reg_fp.average))];
    for q in [
        QuantKind::Rtn,
        QuantKind::Gptq,
        QuantKind::Epmq,
        QuantKind::EpmqAuto,
        QuantKind::EpmqAutoModel,
    ] {
        if let Some(c) = find(r, q) {
            rows.push(format!(
                "| RegMean + {} {}-bit | {} | {} | {} |",
                q.label(),
                d.bits,
                pct(c.average),
                difference(c, reg_fp),
                reg_gptq
                    .filter(|_| q != QuantKind::Gptq)
                    .map_or("".into(), |g| difference(c, g)),
            ));
        }
    }
    for m in MergeKind::PAPER {
        if let Some(e) = find(m, QuantKind::Epmq) {
            let mut name = format!("{} + E-PMQ {}-bit", m.label(), d.bits);
            if d.alpha_for(m) != d.alpha {
                name.push_str(&format!(" (α = {})", d.alpha_for(m)));
            }
            rows.push(format!(
                "| {name} | {} | {} | {} |",
                pct(e.average),
                difference(e, reg_fp),
                reg_gptq.map_or("–".into(), |g| difference(e, g)),
            ));
        }
    }
    Some(format!(
        "{}-bit, g{}, average accuracy; differences in points with paired bootstrap 95 % intervals (* = excludes 0)\n\n| Model | Avg | − RegMean FP | − RegMean + GPTQ |\n|---|---|---|---|\n{}\n",
        d.bits,
        d.group_size,
        rows.join("\n")
    ))
}
