//! End-to-end `pmq quantize` (every method, AWQ included) on tiny random BERT and Llama
//! checkpoints with real HF tensor names, synthetic experts and tiny calibration sets.

mod common;
use common::pmq;
use pmq_formats::gptq_checkpoint::GptqReader;
use pmq_io::TensorStore;
use pmq_testkit::{write_calib, write_model, write_perturbed, Fam};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// base + K experts (the base plus uniform noise on every tensor) of a tiny BERT or Llama (GQA)
/// in `root`; returns (base, experts).
fn family(root: &Path, llama: bool, k: usize) -> (PathBuf, Vec<PathBuf>) {
    let fam = if llama { Fam::LlamaGqa } else { Fam::Bert };
    let base = root.join("base");
    write_model(fam, &base, 1);
    let experts = (0..k)
        .map(|i| {
            let d = root.join(format!("expert{i}"));
            write_perturbed(fam, &d, 1, 100 + i as u64, 0.05);
            d
        })
        .collect();
    (base, experts)
}

/// K calibration files of 12 sentences; `t{i}=PATH`.
fn calib(root: &Path, k: usize) -> Vec<String> {
    (0..k)
        .map(|i| write_calib(Fam::Bert, root, &format!("t{i}"), 12, 7 + i as u64))
        .collect()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn quantize_args(
    model: &Path,
    method: &str,
    experts: &[PathBuf],
    calib: &[String],
    out: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "quantize".into(),
        "--model".into(),
        s(model),
        "--method".into(),
        method.into(),
        "--out".into(),
        s(out),
    ];
    for e in experts {
        a.extend(["--expert".into(), s(e)]);
    }
    for c in calib {
        a.extend(["--calib".into(), c.clone()]);
    }
    a.extend([
        "--group-size".into(),
        "32".into(),
        "--batch-size".into(),
        "5".into(),
    ]);
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// Elements equal between the tensors `keep` selects of two checkpoint directories, and
/// their total.
fn equal_elements(a: &Path, b: &Path, keep: impl Fn(&str) -> bool) -> (usize, usize) {
    let (a, b) = (
        TensorStore::open_dir(a).unwrap(),
        TensorStore::open_dir(b).unwrap(),
    );
    let (mut equal, mut total) = (0usize, 0usize);
    for n in a.names().into_iter().filter(|n| keep(n)) {
        let (x, y) = (a.read_f32(&n).unwrap(), b.read_f32(&n).unwrap());
        equal += x.iter().zip(&y).filter(|(p, q)| p == q).count();
        total += x.len();
    }
    (equal, total)
}

fn assert_gptq_matches_fake(gptq: &Path, fake: &Path) {
    let reader = GptqReader::open(gptq).unwrap();
    let fake = TensorStore::open_dir(fake).unwrap();
    assert_eq!(reader.names(), fake.names());
    assert!(reader.quantized_prefixes().count() > 0);
    for n in fake.names() {
        let a = reader.read_f32(&n).unwrap();
        let b = fake.read_f32(&n).unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{n} differs"
        );
    }
}

#[test]
fn every_method_on_bert_and_llama_writes_loadable_matching_checkpoints() {
    for llama in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let (base, experts) = family(tmp.path(), llama, 2);
        let cal = calib(tmp.path(), 2);
        // inline merge → quantize, every method, both formats
        for (method, sym) in [
            ("rtn", false),
            ("gptq", true),
            ("epmq", false),
            ("awq", false),
            ("awq", true),
        ] {
            let out = tmp.path().join(format!("q-{method}-{sym}"));
            let args = inline_merge_args(method, &base, &experts, &cal, &out, sym);
            let (ok, stdout, stderr) = pmq(&args);
            assert!(ok, "llama={llama} {method}: {stderr}");
            let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
            let n_linears = if llama { 14 } else { 12 };
            assert_eq!(summary["linears"], n_linears, "{stdout}");
            assert_gptq_matches_fake(&out.join("gptq"), &out.join("fake"));
            let qc: Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("gptq/quantize_config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(
                qc["checkpoint_format"],
                if sym { "gptq" } else { "gptq_v2" }
            );
            // the fake-quant model loads as a normal model and runs
            let loaded = pmq_models::load_model(&out.join("fake")).unwrap();
            let tok =
                pmq_models::TextTokenizer::from_file(&out.join("fake/tokenizer.json"), 16).unwrap();
            let batch = tok.batch(&["the movie was great", "disk full"]).unwrap();
            let y = loaded.as_block_model().forward(&batch).unwrap();
            assert!(y
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|v| v.is_finite()));
            let report: Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("fake/pmq_report.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(report["linears"].as_array().unwrap().len(), n_linears);
            if method == "awq" {
                // AWQ folds its scales into norms/biases, written with the checkpoint
                assert!(
                    summary["replaced_tensors"].as_u64().unwrap() > 0,
                    "{stdout}"
                );
                for l in report["linears"].as_array().unwrap() {
                    let a = &l["awq"];
                    assert!(a["inspected"].is_string(), "{l}");
                    assert!(l["objective"].as_f64().unwrap().is_finite(), "{l}");
                }
            } else {
                assert_eq!(summary["replaced_tensors"], 0);
            }
            // no temporary merge directory is left behind
            let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
    }
}

fn inline_merge_args(
    method: &str,
    base: &Path,
    experts: &[PathBuf],
    cal: &[String],
    out: &Path,
    sym: bool,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "quantize".into(),
        "--merge".into(),
        "task-arithmetic".into(),
        "--base".into(),
        s(base),
        "--method".into(),
        method.into(),
        "--out".into(),
        s(out),
        "--format".into(),
        "both".into(),
    ];
    for e in experts {
        a.extend(["--expert".into(), s(e)]);
    }
    for c in cal {
        a.extend(["--calib".into(), c.clone()]);
    }
    a.extend([
        "--group-size".into(),
        "32".into(),
        "--batch-size".into(),
        "5".into(),
    ]);
    if sym {
        a.push("--sym".into());
    }
    a
}

fn merged_with_pmq(tmp: &Path, base: &Path, experts: &[PathBuf]) -> PathBuf {
    let merged = tmp.join("merged");
    let mut a: Vec<String> = vec![
        "merge".into(),
        "--base".into(),
        s(base),
        "--method".into(),
        "task-arithmetic".into(),
        "--out".into(),
        s(&merged),
    ];
    for e in experts {
        a.extend(["--expert".into(), s(e)]);
    }
    let (ok, _, err) = pmq(&a);
    assert!(ok, "{err}");
    merged
}

#[test]
fn epmq_with_the_merged_model_as_only_expert_is_gptq_damped_by_alpha() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, experts) = family(tmp.path(), false, 2);
    let merged = merged_with_pmq(tmp.path(), &base, &experts);
    let cal = calib(tmp.path(), 1);
    let e_out = tmp.path().join("e");
    let g_out = tmp.path().join("g");
    let (ok, _, err) = pmq(&quantize_args(
        &merged,
        "epmq",
        std::slice::from_ref(&merged),
        &cal,
        &e_out,
        &["--format", "fake", "--alpha", "0.05"],
    ));
    assert!(ok, "{err}");
    let (ok, _, err) = pmq(&quantize_args(
        &merged,
        "gptq",
        &[],
        &cal,
        &g_out,
        &["--format", "fake", "--damp", "0.05"],
    ));
    assert!(ok, "{err}");
    let (equal, total) = equal_elements(&e_out, &g_out, |_| true);
    let differ = total - equal;
    // W* = W_m and H_E = H + α·mean(diag H)·I: the same problem up to rounding of the solve.
    assert!(
        (differ as f64) < 1e-3 * total as f64,
        "{differ} of {total} weights differ"
    );
}

#[test]
fn the_deviation_split_adds_up_per_task() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, experts) = family(tmp.path(), false, 3);
    let merged = merged_with_pmq(tmp.path(), &base, &experts);
    let cal = calib(tmp.path(), 3);
    let out = tmp.path().join("q");
    let (ok, _, err) = pmq(&quantize_args(
        &merged,
        "gptq",
        &experts,
        &cal,
        &out,
        &["--format", "fake", "--deviation", "per-task"],
    ));
    assert!(ok, "{err}");
    let report = read_report(&out);
    for l in report["linears"].as_array().unwrap() {
        let d = &l["deviation"];
        let tasks = d["per_task"].as_array().unwrap();
        assert_eq!(tasks.len(), 3);
        let mut quant_sq = 0.0;
        for t in tasks {
            let f = |k: &str| t[k].as_f64().unwrap();
            let lhs = f("expert").powi(2);
            let rhs = f("quant").powi(2) + f("merge").powi(2) + 2.0 * f("cross");
            assert!(
                (lhs - rhs).abs() <= 1e-6 * lhs.max(1e-9),
                "{}: {lhs} vs {rhs}",
                l["name"]
            );
            quant_sq += f("quant").powi(2);
        }
        assert!(
            (d["quant"].as_f64().unwrap().powi(2) - quant_sq).abs() <= 1e-9 * quant_sq.max(1e-12)
        );
        assert!(
            l["objective"].as_f64().unwrap() <= l["objective_rtn"].as_f64().unwrap() * (1.0 + 1e-9)
        );
    }
}

#[test]
fn bad_inputs_give_clear_errors_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, experts) = family(tmp.path(), false, 2);
    let (_, llama_experts) = family(&tmp.path().join("llama"), true, 1);
    let merged = merged_with_pmq(tmp.path(), &base, &experts);
    let cal = calib(tmp.path(), 2);
    let out = tmp.path().join("out");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            quantize_args(
                &merged,
                "epmq",
                &[experts[0].clone(), llama_experts[0].clone()],
                &cal,
                &out,
                &[],
            ),
            "architectures",
        ),
        (
            quantize_args(&merged, "epmq", &experts[..1], &cal, &out, &[]),
            "1 experts but 2 calibration tasks",
        ),
        (
            quantize_args(
                &merged,
                "gptq",
                &[],
                &["x=/nonexistent/calib.jsonl".to_string()],
                &out,
                &[],
            ),
            "not found",
        ),
        (
            quantize_args(&merged, "epmq", &[], &cal, &out, &[]),
            "needs the experts",
        ),
        (
            quantize_args(&merged, "gptq", &[], &[], &out, &[]),
            "needs calibration",
        ),
        (
            quantize_args(&tmp.path().join("nope"), "rtn", &[], &[], &out, &[]),
            "nope",
        ),
        (
            quantize_args(&merged, "gptq", &[], &cal, &out, &["--awq-grid", "10"]),
            "only apply to --method awq",
        ),
        (
            quantize_args(&merged, "awq", &[], &cal, &out, &["--act-order"]),
            "do not apply",
        ),
        (
            quantize_args(&merged, "awq", &[], &[], &out, &[]),
            "needs calibration",
        ),
        (
            quantize_args(
                &merged,
                "gptq",
                &[],
                &cal,
                &out,
                &["--format", "gguf", "--grid", "uniform"],
            ),
            "needs one of GGUF's grids",
        ),
        (
            quantize_args(&merged, "gptq", &[], &cal, &out, &["--grid", "q4_0"]),
            "a GPTQ checkpoint cannot declare",
        ),
        (
            quantize_args(
                &merged,
                "gptq",
                &[],
                &cal,
                &out,
                &["--format", "gguf", "--act-order"],
            ),
            "--static-groups",
        ),
        (
            quantize_args(
                &merged,
                "gptq",
                &[],
                &cal,
                &out,
                &["--preset", "paper-llama"],
            ),
            "cannot be used with",
        ),
    ];
    for (args, needle) in cases {
        let (ok, _, err) = pmq(&args);
        assert!(!ok, "should fail: {args:?}");
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
        assert!(!out.exists(), "output written despite the error {err}");
    }
    let hidden: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

/// On the real all-MiniLM-L6-v2 (gated: `PMQ_REAL_MODEL_DIR`, fetched by
/// scripts/fetch_minilm.sh): 8-bit GPTQ keeps the sentence embeddings close to the
/// full-precision model's, and so do E-PMQ with the model itself as expert and AWQ.
#[test]
fn real_minilm_quantizes_with_close_embeddings() {
    let Some(model) = std::env::var_os("PMQ_REAL_MODEL_DIR").map(PathBuf::from) else {
        println!(
            "skipping real_minilm_quantizes_with_close_embeddings: PMQ_REAL_MODEL_DIR is not set"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let texts = [
        "A man is playing a guitar on the street.",
        "The quarterly earnings beat analyst expectations.",
        "Restart the database replica before the failover test.",
        "She baked a chocolate cake for her grandmother.",
        "The telescope captured images of a distant galaxy.",
        "Traffic was heavy on the highway this morning.",
    ];
    let cal = tmp.path().join("cal.jsonl");
    std::fs::write(
        &cal,
        texts
            .iter()
            .map(|t| json!({"text": t}).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    for method in ["gptq", "epmq", "awq"] {
        let out = tmp.path().join(method);
        let experts = if method == "epmq" {
            vec![model.clone()]
        } else {
            vec![]
        };
        let (ok, _, err) = pmq(&quantize_args(
            &model,
            method,
            &experts,
            &[format!("t={}", cal.display())],
            &out,
            &["--bits", "8"],
        ));
        assert!(ok, "{err}");
        let (ok, stdout, err) = pmq(&[
            "compare".into(),
            "--model".into(),
            s(&out),
            "--reference".into(),
            s(&model),
            "--texts".into(),
            s(&cal),
        ]);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        let mean = v["mean_cosine"].as_f64().unwrap();
        assert!(mean > 0.99, "{method}: 8-bit mean cosine {mean}");
    }
}

#[test]
fn speed_and_memory_flags_run_and_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, experts) = family(tmp.path(), false, 2);
    let merged = merged_with_pmq(tmp.path(), &base, &experts);
    let cal = calib(tmp.path(), 2);
    let runs: [(&[&str], &str, bool, &str); 2] = [
        (
            &["--state-dtype", "bf16", "--no-true-sequential"],
            "bf16",
            false,
            "f32",
        ),
        (
            &["--work-precision", "f64", "--deviation", "per-task"],
            "f32",
            true,
            "f64",
        ),
    ];
    for (i, (flags, dtype, true_sequential, precision)) in runs.iter().enumerate() {
        let out = tmp.path().join(format!("q{i}"));
        let mut extra = vec!["--format", "fake"];
        extra.extend(flags.iter());
        let (ok, _, err) = pmq(&quantize_args(
            &merged, "epmq", &experts, &cal, &out, &extra,
        ));
        assert!(ok, "{flags:?}: {err}");
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("pmq_report.json")).unwrap())
                .unwrap();
        let s = &report["settings"];
        assert_eq!(s["state_dtype"], *dtype, "{flags:?}");
        assert_eq!(s["true_sequential"], *true_sequential, "{flags:?}");
        assert_eq!(s["work_precision"], *precision, "{flags:?}");
        let p = &report["phases"];
        for k in ["forward_s", "hessian_s", "solve_s", "propagate_s"] {
            assert!(p[k].as_f64().unwrap() > 0.0, "{flags:?}: {k}");
        }
        // one capture pass per block and batch without true-sequential, one per group with it
        let passes = p["capture_passes_per_block"].as_f64().unwrap();
        assert_eq!(passes == 1.0, !true_sequential, "{flags:?}: {passes}");
        for l in report["linears"].as_array().unwrap() {
            assert!(l["objective"].as_f64().unwrap().is_finite());
            let d = &l["deviation"];
            assert_eq!(
                d["per_task"].as_array().map_or(0, Vec::len),
                if *true_sequential { 2 } else { 0 }
            );
            assert!(d["expert_rms"].as_f64().unwrap() >= 0.0);
        }
    }
}

/// A 2-expert merged BERT with calibration data, for the `--alpha auto` tests.
struct AlphaFixture {
    tmp: tempfile::TempDir,
    merged: PathBuf,
    experts: Vec<PathBuf>,
    cal: Vec<String>,
}

impl AlphaFixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (base, experts) = family(tmp.path(), false, 2);
        let merged = merged_with_pmq(tmp.path(), &base, &experts);
        let cal = calib(tmp.path(), 2);
        Self {
            tmp,
            merged,
            experts,
            cal,
        }
    }

    /// `pmq quantize --method epmq --format fake` into `name` with `extra` flags:
    /// (success, stderr, output directory).
    fn epmq(&self, name: &str, extra: &[&str]) -> (bool, String, PathBuf) {
        let (ok, _, err, out) = self.epmq_with_stdout(name, extra);
        (ok, err, out)
    }

    /// [`Self::epmq`] with the command's standard output (its JSON summary).
    fn epmq_with_stdout(&self, name: &str, extra: &[&str]) -> (bool, String, String, PathBuf) {
        let out = self.tmp.path().join(name);
        let mut args = vec!["--format", "fake"];
        args.extend_from_slice(extra);
        let (ok, stdout, err) = pmq(&quantize_args(
            &self.merged,
            "epmq",
            &self.experts,
            &self.cal,
            &out,
            &args,
        ));
        (ok, stdout, err, out)
    }
}

/// The `pmq_report.json` of an output directory.
fn read_report(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("pmq_report.json")).unwrap()).unwrap()
}

/// `--alpha auto` scores every α of the grid on held-out batches and keeps the best per
/// linear; with a one-value grid it is the fixed-α run (refitted on all batches); misuse is
/// refused.
#[test]
fn alpha_auto_picks_the_best_held_out_alpha_per_linear() {
    let f = AlphaFixture::new();
    let run = |name: &str, extra: &[&str]| f.epmq(name, extra);
    // 12 samples in batches of 5: batches 0, 1 fit, batch 2 held out
    let (ok, err, out) = run(
        "auto",
        &[
            "--alpha",
            "auto",
            "--alpha-grid",
            "0,0.1,10",
            "--alpha-holdout-every",
            "3",
        ],
    );
    assert!(ok, "{err}");
    let report = read_report(&out);
    let (fixed_ok, err, fixed) = run("fixed", &["--alpha", "0.1"]);
    assert!(fixed_ok, "{err}");
    let fixed_report = read_report(&fixed);
    let mut chosen = std::collections::BTreeSet::new();
    for (l, f) in report["linears"]
        .as_array()
        .unwrap()
        .iter()
        .zip(fixed_report["linears"].as_array().unwrap())
    {
        let a = &l["alpha"];
        let scores = a["scores"].as_array().unwrap();
        assert_eq!(scores.len(), 3, "{}", l["name"]);
        let best = scores
            .iter()
            .min_by(|x, y| {
                let v = |s: &Value| s["held_out_loss"].as_f64().unwrap();
                v(x).partial_cmp(&v(y)).unwrap()
            })
            .unwrap();
        assert_eq!(a["alpha"], best["alpha"], "{}", l["name"]);
        chosen.insert(a["alpha"].to_string());
        // the final solve saw every batch
        assert_eq!(l["tokens"], f["tokens"], "{}", l["name"]);
        assert!(f.get("alpha").is_none());
    }
    assert!(!chosen.is_empty());

    // a one-value grid is the fixed-α run, up to the summation order of the Hessians
    let (ok, err, one) = run(
        "one",
        &[
            "--alpha",
            "auto",
            "--alpha-grid",
            "0.1",
            "--alpha-holdout-every",
            "3",
        ],
    );
    assert!(ok, "{err}");
    let (same, total) = equal_elements(&one, &fixed, |n| n.ends_with(".weight"));
    assert!(
        same as f64 >= 0.99 * total as f64,
        "{same} of {total} equal"
    );

    for (extra, want) in [
        (
            vec!["--alpha", "auto", "--alpha-holdout-every", "4"],
            "held-out",
        ),
        (vec!["--alpha-grid", "0,1"], "only apply with --alpha auto"),
        (
            vec!["--alpha", "auto", "--alpha-grid", "-1"],
            "--alpha-grid",
        ),
        (
            vec!["--alpha", "auto", "--alpha-holdout-every", "1"],
            "at least 2",
        ),
        (vec!["--alpha", "often"], "neither a number nor `auto`"),
    ] {
        let (ok, err, _) = run("bad", &extra);
        assert!(!ok && err.contains(want), "{extra:?}: {err}");
    }
    let (ok, _, err) = pmq(&quantize_args(
        &f.merged,
        "gptq",
        &[],
        &f.cal,
        &f.tmp.path().join("g"),
        &["--alpha", "auto"],
    ));
    assert!(!ok && err.contains("applies to --method epmq"), "{err}");
}

/// `--alpha auto-model` runs E-PMQ once per candidate on the fit batches, scores each by the
/// held-out last-block error against the experts, and quantizes with the winner on all
/// batches: the result is the fixed-α run with the chosen α, bit for bit.
#[test]
fn alpha_auto_model_picks_one_alpha_by_the_held_out_model_error() {
    let f = AlphaFixture::new();
    let run = |name: &str, extra: &[&str]| f.epmq(name, extra);
    // 12 samples in batches of 5: batches 0, 1 fit, batch 2 held out
    let auto_model = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "--alpha",
            "auto-model",
            "--alpha-grid",
            "0,0.1,1000",
            "--alpha-holdout-every",
            "3",
        ];
        args.extend_from_slice(extra);
        let (ok, stdout, err, out) = f.epmq_with_stdout(name, &args);
        assert!(ok, "{name}: {err}");
        let report = read_report(&out);
        // the summary names the α the model was quantized with
        let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(
            summary["method"]["alpha"], report["alpha_search"]["alpha"],
            "{stdout}"
        );
        (out, report)
    };
    let (out, report) = auto_model("auto-model", &[]);
    let search = &report["alpha_search"];
    let first_candidates = search["candidates"].clone();
    let candidates = search["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 3);
    let loss = |c: &Value| c["loss"].as_f64().unwrap();
    for c in candidates {
        let per_task: Vec<f64> = c["per_task"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(per_task.len(), 2);
        assert!(per_task.iter().all(|v| v.is_finite() && *v > 0.0), "{c}");
        assert!((loss(c) - (per_task[0] + per_task[1]) / 2.0).abs() <= 1e-12 * loss(c));
    }
    // the anchor changes the model: the candidates' losses differ
    assert_ne!(loss(&candidates[0]), loss(&candidates[2]));
    let best = candidates
        .iter()
        .min_by(|x, y| loss(x).total_cmp(&loss(y)))
        .unwrap();
    assert_eq!(search["alpha"], best["alpha"]);
    assert!(report["linears"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l.get("alpha").is_none()));
    let markdown = std::fs::read_to_string(out.join("pmq_report.md")).unwrap();
    assert!(markdown.contains("--alpha auto-model"), "{markdown}");

    let chosen = best["alpha"].as_f64().unwrap().to_string();
    let (ok, err, fixed) = run("fixed", &["--alpha", &chosen]);
    assert!(ok, "{err}");
    let (same, total) = equal_elements(&out, &fixed, |_| true);
    assert_eq!(
        same, total,
        "the final model is the fixed-α run (α = {chosen})"
    );

    for (extra, want) in [
        (
            vec!["--alpha", "auto-model", "--alpha-holdout-every", "4"],
            "too few to hold out",
        ),
        (
            vec!["--alpha", "auto-model", "--alpha-grid", "nan"],
            "--alpha-grid",
        ),
        // the experts have no heads yet
        (
            vec!["--alpha", "auto-model", "--alpha-criterion", "head-kl"],
            "classification heads",
        ),
        (
            vec!["--alpha", "auto", "--alpha-criterion", "head-kl"],
            "applies to --alpha auto-model",
        ),
    ] {
        let (ok, err, _) = run("bad", &extra);
        assert!(!ok && err.contains(want), "{extra:?}: {err}");
    }
    let (ok, _, err) = pmq(&quantize_args(
        &f.merged,
        "gptq",
        &f.experts,
        &f.cal,
        &f.tmp.path().join("gptq"),
        &["--alpha", "auto-model"],
    ));
    assert!(!ok && err.contains("applies to --method epmq"), "{err}");
    assert_eq!(
        search["criterion"], "hidden-state",
        "the experts have no heads"
    );

    // experts with classification heads (as `pmq finetune` writes them): the candidates are
    // scored by the heads' KL divergence, and the winner is still refitted on all batches
    for (i, dir) in f.experts.iter().enumerate() {
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let hidden = config["hidden_size"].as_u64().unwrap() as usize;
        let weight: Vec<f32> = (0..3 * hidden)
            .map(|j| (((j * 7 + i * 3) % 11) as f32 - 5.0) / 5.0)
            .collect();
        let labels = vec!["a".into(), "b".into(), "c".into()];
        let head = pmq_eval::Head::new(
            format!("t{i}"),
            labels,
            hidden,
            weight,
            vec![0.1, 0.0, -0.1],
        )
        .unwrap();
        head.save(&dir.join(pmq_eval::HEAD_FILE)).unwrap();
    }
    let (heads_out, report) = auto_model("auto-model-heads", &[]);
    let search = &report["alpha_search"];
    assert_eq!(search["criterion"], "head-kl");
    let candidates = search["candidates"].as_array().unwrap();
    for c in candidates {
        let per_task = c["per_task"].as_array().unwrap();
        assert_eq!(per_task.len(), 2);
        // a KL divergence: finite and ≥ 0 (> 0: the quantized model is not the expert)
        assert!(per_task.iter().all(|v| v.as_f64().unwrap() > 0.0), "{c}");
    }
    let best = candidates
        .iter()
        .min_by(|x, y| loss(x).total_cmp(&loss(y)))
        .unwrap();
    assert_eq!(search["alpha"], best["alpha"]);
    let chosen = best["alpha"].as_f64().unwrap().to_string();
    let (ok, err, fixed) = run("fixed-heads", &["--alpha", &chosen]);
    assert!(ok, "{err}");
    let (same, total) = equal_elements(&heads_out, &fixed, |_| true);
    assert_eq!(same, total, "α = {chosen}");
    // the hidden-state criterion on request, heads or not: the first search's scores again
    let (_, forced) = auto_model("auto-model-hidden", &["--alpha-criterion", "hidden-state"]);
    assert_eq!(forced["alpha_search"]["criterion"], "hidden-state");
    assert_eq!(
        forced["alpha_search"]["candidates"], first_candidates,
        "same runs, same scores"
    );
}
