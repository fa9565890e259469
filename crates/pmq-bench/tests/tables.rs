//! Tables, plot and result merging on hand-made results.

use pmq_bench::results::{BenchResults, CellResult, Meta, RefRow};
use pmq_bench::{plot, render_markdown, tables, Cell, Defaults, MergeKind, QuantKind};
use pmq_eval::TaskAccuracy;

fn acc(values: &[(&str, usize, usize)]) -> Vec<TaskAccuracy> {
    values
        .iter()
        .map(|&(t, c, n)| TaskAccuracy {
            task: t.into(),
            accuracy: c as f64 / n as f64,
            correct: c,
            total: n,
            hits: None,
        })
        .collect()
}

fn cell(c: Cell, a: Vec<TaskAccuracy>, secs: Option<f64>) -> CellResult {
    CellResult {
        key: c.key(),
        cell: c,
        average: pmq_bench::results::average(&a),
        accuracies: a,
        quant_seconds: secs,
        quant_peak_rss_mib: secs.map(|_| 500.0),
        eval_seconds: 1.0,
        finished: "2026-12-01T00:00:00Z".into(),
        alpha_summary: None,
    }
}

fn meta(context: &str) -> Meta {
    Meta {
        command: "pmq bench".into(),
        date: "2026-12-01T00:00:00Z".into(),
        cores: 2,
        cpu: "test".into(),
        tasks: vec!["a".into(), "b".into()],
        settings: serde_json::json!({}),
        context: context.into(),
    }
}

fn defaults() -> Defaults {
    Defaults {
        bits: 4,
        group_size: 128,
        alpha: 0.01,
        wudi_alpha: 10.0,
        samples: 128,
    }
}

fn results() -> BenchResults {
    let q = |k, b| Cell::quant(MergeKind::Ta, k, b, 128, 0.01, 128);
    BenchResults::merge_in(
        None,
        meta("x"),
        vec![RefRow {
            name: "Fine-tuned (STL)".into(),
            accuracies: acc(&[("a", 90, 100), ("b", 80, 100)]),
            average: 0.85,
        }],
        vec![
            cell(
                Cell::fp(MergeKind::Ta),
                acc(&[("a", 80, 100), ("b", 70, 100)]),
                None,
            ),
            cell(
                q(QuantKind::Gptq, 4),
                acc(&[("a", 70, 100), ("b", 60, 100)]),
                Some(10.0),
            ),
            cell(
                q(QuantKind::Epmq, 4),
                acc(&[("a", 79, 100), ("b", 70, 100)]),
                Some(25.0),
            ),
            cell(
                q(QuantKind::Gptq, 2),
                acc(&[("a", 50, 100), ("b", 50, 100)]),
                Some(10.0),
            ),
            cell(
                q(QuantKind::Epmq, 2),
                acc(&[("a", 60, 100), ("b", 55, 100)]),
                Some(25.0),
            ),
        ],
    )
}

#[test]
fn main_table_rows_and_deltas() {
    let t = tables::main_table(&results(), &defaults(), 128, true).unwrap();
    assert!(
        t.contains("| Method | a | b | Avg | Δ vs FP merged | Δ vs GPTQ |"),
        "{t}"
    );
    assert!(
        t.contains("| Fine-tuned (STL) | 90.0 | 80.0 | **85.0** | | |"),
        "{t}"
    );
    assert!(
        t.contains("| **Task Arithmetic (λ=0.3)** | | | | | |\n"),
        "{t}"
    );
    for line in t.lines() {
        assert_eq!(
            line.matches('|').count(),
            7,
            "every row has 6 cells: {line}"
        );
    }
    assert!(
        t.contains("| FP merged | 80.0 | 70.0 | **75.0** | – | |"),
        "{t}"
    );
    assert!(
        t.contains("| GPTQ 4-bit | 70.0 | 60.0 | **65.0** | -10.0 | |"),
        "{t}"
    );
    assert!(
        t.contains("| E-PMQ 4-bit | 79.0 | 70.0 | **74.5** | -0.5 | +9.5 |"),
        "{t}"
    );
    assert!(!t.contains("AWQ"), "cells not run are not invented: {t}");
    assert!(tables::main_table(&results(), &defaults(), 64, false).is_none());
}

#[test]
fn bits_and_budget_tables() {
    let r = results();
    let t = tables::bits_table(&r, 128, 0.01, 128).unwrap();
    assert!(t.contains("| 2 | 50.0 | 57.5 | +7.5 |"), "{t}");
    assert!(t.contains("| 4 | 65.0 | 74.5 | +9.5 |"), "{t}");
    let b = tables::budget_table(&r, 4, 128, 0.01).unwrap();
    assert!(b.contains("| 128 | 65.0 | 74.5 | 10 | 25 | 2.50× |"), "{b}");
    let svg = plot::bits_svg(&r, 128, 0.01, 128).unwrap().unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("E-PMQ") && svg.contains("GPTQ"));
    let md = render_markdown(&r, &defaults());
    assert!(md.contains("## Main table") && md.contains("## Bit width"));
    assert!(
        !md.contains("## Anchor ablation"),
        "no α cells beyond the default"
    );
}

#[test]
fn merging_results_replaces_cells_and_respects_context() {
    let r = results();
    let n = r.cells.len();
    let again = cell(
        Cell::fp(MergeKind::Ta),
        acc(&[("a", 10, 100), ("b", 10, 100)]),
        None,
    );
    let merged = BenchResults::merge_in(Some(r.clone()), meta("x"), vec![], vec![again]);
    assert_eq!(merged.cells.len(), n);
    assert_eq!(merged.refs.len(), 1);
    assert!((merged.cell("ta-fp").unwrap().average - 0.1).abs() < 1e-12);
    let other = BenchResults::merge_in(Some(r), meta("y"), vec![], vec![]);
    assert!(
        other.cells.is_empty(),
        "results of other settings are dropped"
    );
}

#[test]
fn main_table_uses_each_merges_alpha_and_the_default_budget() {
    let wudi = |k, a, n| Cell::quant(MergeKind::Wudi, k, 4, 128, a, n);
    let mut extra = vec![
        cell(
            Cell::fp(MergeKind::Wudi),
            acc(&[("a", 80, 100), ("b", 80, 100)]),
            None,
        ),
        // α = 0.01 under WUDI: an ablation cell, not the main-table row
        cell(
            wudi(QuantKind::Epmq, 0.01, 128),
            acc(&[("a", 10, 100), ("b", 10, 100)]),
            Some(1.0),
        ),
        cell(
            wudi(QuantKind::Epmq, 10.0, 128),
            acc(&[("a", 81, 100), ("b", 81, 100)]),
            Some(1.0),
        ),
    ];
    // a budget cell of GPTQ under TA with 64 samples must not replace the 128-sample one
    extra.push(cell(
        Cell::quant(MergeKind::Ta, QuantKind::Gptq, 4, 128, 0.0, 64),
        acc(&[("a", 1, 100), ("b", 1, 100)]),
        Some(5.0),
    ));
    let r = BenchResults::merge_in(Some(results()), meta("x"), vec![], extra);
    let t = tables::main_table(&r, &defaults(), 128, true).unwrap();
    assert!(
        t.contains("| E-PMQ 4-bit (α = 10) | 81.0 | 81.0 | **81.0** | +1.0 |"),
        "{t}"
    );
    assert!(!t.contains("| 10.0 |"), "{t}");
    assert!(
        t.contains("| GPTQ 4-bit | 70.0 | 60.0 | **65.0** | -10.0 | |"),
        "{t}"
    );
    // the α table gains a WUDI column with both of its α values
    let a = tables::alpha_table(&r, 4, 128, 128).unwrap();
    assert!(
        a.contains("| Task Arithmetic (λ=0.3) | TIES (λ=0.3) | WUDI |"),
        "{a}"
    );
    assert!(a.contains("| E-PMQ α = 0.01 | 74.5 | – | 10.0 |"), "{a}");
    assert!(a.contains("| E-PMQ α = 10 | – | – | 81.0 |"), "{a}");
}

/// Per-task accuracies with per-example outcomes: task `t` has `right[t]` of its first
/// examples right (out of `n`).
fn acc_hits(right: &[(&str, usize, usize)]) -> Vec<TaskAccuracy> {
    right
        .iter()
        .map(|&(t, c, n)| {
            let v: Vec<bool> = (0..n).map(|j| j < c).collect();
            TaskAccuracy {
                task: t.into(),
                accuracy: c as f64 / n as f64,
                correct: c,
                total: n,
                hits: Some(pmq_eval::encode_hits(&v)),
            }
        })
        .collect()
}

#[test]
fn differences_carry_paired_bootstrap_intervals_and_auto_and_regmean_tables() {
    let d = defaults();
    let q = |m, k, a| Cell::quant(m, k, 4, 128, a, 128);
    let mut auto = cell(
        q(MergeKind::Ta, QuantKind::EpmqAuto, 0.0),
        acc_hits(&[("a", 85, 100), ("b", 72, 100)]),
        Some(30.0),
    );
    auto.alpha_summary = Some("0×3, 0.01×5".into());
    // the per-model search chose 0.01: the same model as the fixed α = 0.01 cell
    let mut per_model = cell(
        q(MergeKind::Ta, QuantKind::EpmqAutoModel, 0.0),
        acc_hits(&[("a", 84, 100), ("b", 72, 100)]),
        Some(60.0),
    );
    per_model.alpha_summary = Some("α = 0.01 (held-out loss 0: 0.5, 0.01: 0.4)".into());
    let res = BenchResults::merge_in(
        None,
        meta("x"),
        vec![],
        vec![
            cell(
                Cell::fp(MergeKind::Ta),
                acc_hits(&[("a", 80, 100), ("b", 70, 100)]),
                None,
            ),
            cell(
                q(MergeKind::Ta, QuantKind::Gptq, 0.0),
                acc_hits(&[("a", 80, 100), ("b", 69, 100)]),
                Some(10.0),
            ),
            cell(
                q(MergeKind::Ta, QuantKind::Epmq, 0.01),
                acc_hits(&[("a", 84, 100), ("b", 72, 100)]),
                Some(20.0),
            ),
            cell(
                q(MergeKind::Ta, QuantKind::Epmq, 0.1),
                acc_hits(&[("a", 83, 100), ("b", 71, 100)]),
                Some(20.0),
            ),
            auto,
            per_model,
            cell(
                Cell::fp(MergeKind::RegMean),
                acc_hits(&[("a", 82, 100), ("b", 71, 100)]),
                None,
            ),
            cell(
                q(MergeKind::RegMean, QuantKind::Gptq, 0.0),
                acc_hits(&[("a", 82, 100), ("b", 70, 100)]),
                Some(10.0),
            ),
        ],
    );
    let t = tables::main_table(&res, &d, 128, true).unwrap();
    // E-PMQ − FP: every differing example favours E-PMQ (nested prefixes): a significant gain
    assert!(
        t.contains("| E-PMQ 4-bit | 84.0 | 72.0 | **78.0** | +3.0 [+"),
        "{t}"
    );
    assert!(t.contains("]* |"), "{t}");
    assert!(t.contains("| **RegMean** |"), "{t}");
    let a = tables::auto_alpha_table(&res, &d).unwrap();
    assert!(
        a.contains(
            "| Task Arithmetic (λ=0.3) | per linear | 74.5 | 78.0 (α = 0.01, of 2) | 78.5 | +0.5 ["
        ),
        "{a}"
    );
    assert!(a.contains("| 0×3, 0.01×5 |"), "{a}");
    assert!(
        a.contains("| Task Arithmetic (λ=0.3) | per model | 74.5 | 78.0 (α = 0.01, of 2) | 78.0 | +0.0 [+0.0, +0.0] | +3.5 ["),
        "{a}"
    );
    assert!(
        a.contains("| α = 0.01 (held-out loss 0: 0.5, 0.01: 0.4) |"),
        "{a}"
    );
    // the main table lists neither auto cell and has E-PMQ − GPTQ on the fixed-α row
    assert!(!t.contains("auto"), "{t}");
    assert!(t.contains("| **78.0** | +3.0 [+"), "{t}");
    let r = tables::regmean_table(&res, &d).unwrap();
    assert!(r.contains("| RegMean FP | 76.5 | | |"), "{r}");
    assert!(r.contains("| RegMean + GPTQ 4-bit | 76.0 | -0.5 ["), "{r}");
    assert!(
        r.contains("| Task Arithmetic (λ=0.3) + E-PMQ 4-bit | 78.0 | +1.5 ["),
        "{r}"
    );
    let md = render_markdown(&res, &d);
    assert!(
        md.contains("## E-PMQ with --alpha auto") && md.contains("## RegMean"),
        "{md}"
    );
    // without outcomes (older results) the plain difference is shown
    let t = tables::main_table(&results(), &d, 128, true).unwrap();
    assert!(!t.contains('['), "{t}");
}
