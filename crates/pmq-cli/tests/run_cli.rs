//! `pmq run RECIPE.yaml` end to end on a tiny BERT with two experts (heads saved next to
//! them, as `pmq finetune` does): a mergekit merge section, GPTQ with both outputs, the
//! evaluation table; the merge equals the same `pmq merge` command; a rerun skips every step;
//! an edited quantization section reruns quantization and evaluation only.

mod common;
use common::pmq;
use pmq_eval::{Head, HEAD_FILE};
use pmq_testkit::{write_calib, write_model, write_perturbed, Fam};
use serde_json::Value;
use std::path::Path;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Base, two experts with heads, calibration and labelled evaluation files in `root`.
fn setup(root: &Path) {
    write_model(Fam::Bert, &root.join("base"), 1);
    for i in 0..2u64 {
        let e = root.join(format!("e{i}"));
        write_perturbed(Fam::Bert, &e, 1, 100 + i, 0.05);
        let h = pmq_testkit::families::H;
        let w: Vec<f32> = (0..2 * h)
            .map(|j| ((j * 7 + i as usize) % 11) as f32 / 11.0 - 0.45)
            .collect();
        Head::new(
            format!("t{i}"),
            vec!["neg".into(), "pos".into()],
            h,
            w,
            vec![0.0, 0.1],
        )
        .unwrap()
        .save(&e.join(HEAD_FILE))
        .unwrap();
        let spec = write_calib(Fam::Bert, root, &format!("t{i}"), 10, 7 + i);
        let calib = spec.split_once('=').unwrap().1.to_string();
        std::fs::rename(&calib, root.join(format!("t{i}-calib.jsonl"))).unwrap();
        let lines: Vec<String> = std::fs::read_to_string(root.join(format!("t{i}-calib.jsonl")))
            .unwrap()
            .lines()
            .enumerate()
            .map(|(j, l)| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v["label"] = if j % 2 == 0 {
                    "pos".into()
                } else {
                    Value::from(0)
                };
                v.to_string()
            })
            .collect();
        std::fs::write(root.join(format!("t{i}-test.jsonl")), lines.join("\n")).unwrap();
    }
}

const RECIPE: &str = "out: out
experts:
  - model: e0
    task: t0
    calib: t0-calib.jsonl
    eval: t0-test.jsonl
  - model: e1
    task: t1
    calib: t1-calib.jsonl
    eval: t1-test.jsonl
merge:
  merge_method: ties
  base_model: base
  models:
    - model: e0
      parameters: {weight: 1.0, density: 0.5}
    - model: e1
      parameters: {weight: 1.0, density: 0.5}
quantize:
  method: gptq
  bits: BITS
  group_size: -1
  samples_per_task: 10
  batch_size: 4
outputs: [fake, gptq]
evaluate: {max_examples: 10}
";

fn run(root: &Path, bits: u32) -> Value {
    std::fs::write(
        root.join("recipe.yaml"),
        RECIPE.replace("BITS", &bits.to_string()),
    )
    .unwrap();
    let (ok, _, err) = pmq(&["run", &s(&root.join("recipe.yaml"))]);
    assert!(ok, "{err}");
    serde_json::from_str(&std::fs::read_to_string(root.join("out/run.json")).unwrap()).unwrap()
}

fn skipped(summary: &Value) -> Vec<(String, bool)> {
    summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["skipped"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_recipe_runs_every_step_and_reruns_only_what_changed() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    setup(root);
    let first = run(root, 4);
    let names = |v: &[(String, bool)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&skipped(&first)), ["merge", "quantize", "evaluate"]);
    assert!(skipped(&first).iter().all(|(_, s)| !s));
    for p in [
        "merged/merge_report.json",
        "quantized/fake",
        "quantized/gptq",
        "accuracy.md",
        "recipe.json",
    ] {
        assert!(root.join("out").join(p).exists(), "{p}");
    }
    let md = std::fs::read_to_string(root.join("out/accuracy.md")).unwrap();
    assert!(md.contains("| Model | t0 | t1 | Avg |"), "{md}");
    for row in [
        "| Fine-tuned (each expert on its task) |",
        "| FP merged |",
        "| GPTQ 4-bit |",
    ] {
        assert!(md.contains(row), "{md}");
    }
    // the mergekit section means exactly this pmq merge
    let (ok, _, err) = pmq(&[
        "merge",
        "--method",
        "ties",
        "--base",
        &s(&root.join("base")),
        "--expert",
        &s(&root.join("e0")),
        "--expert",
        &s(&root.join("e1")),
        "--density",
        "0.5",
        "--ties-trim",
        "mergekit",
        "--ties-merge",
        "mean",
        "--lambda",
        "1",
        "--out",
        &s(&root.join("direct")),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(root.join("direct/model.safetensors")).unwrap(),
        std::fs::read(root.join("out/merged/model.safetensors")).unwrap()
    );
    // same recipe again: nothing recomputed
    let again = run(root, 4);
    assert!(skipped(&again).iter().all(|(_, s)| *s), "{again}");
    // another bit width: the merge is kept, quantization and evaluation rerun
    let third = run(root, 3);
    assert_eq!(
        skipped(&third),
        [
            ("merge".into(), true),
            ("quantize".into(), false),
            ("evaluate".into(), false)
        ]
    );
    let md = std::fs::read_to_string(root.join("out/accuracy.md")).unwrap();
    assert!(md.contains("| GPTQ 3-bit |"), "{md}");
    // a damaged output is rebuilt, and what reads it re-evaluated
    std::fs::remove_dir_all(root.join("out/quantized/gptq")).unwrap();
    let fourth = run(root, 3);
    assert_eq!(
        skipped(&fourth),
        [
            ("merge".into(), true),
            ("quantize".into(), false),
            ("evaluate".into(), false)
        ]
    );
    assert!(root.join("out/quantized/gptq").is_dir());
}

#[test]
fn bad_recipes_fail_with_the_file_and_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    setup(root);
    let bad = RECIPE.replace("BITS", "4").replace(
        "density: 0.5}\n    - model: e1\n      parameters: {weight: 1.0, density: 0.5}",
        "density: 0.5}\n    - model: e1\n      parameters: {weight: 1.0, density: 0.3}",
    );
    std::fs::write(root.join("bad.yaml"), bad).unwrap();
    let (ok, _, err) = pmq(&["run", &s(&root.join("bad.yaml"))]);
    assert!(!ok);
    assert!(
        err.contains("bad.yaml") && err.contains("density differs"),
        "{err}"
    );
    assert!(
        !root.join("out").exists(),
        "nothing is written for a refused recipe"
    );
    let (ok, _, err) = pmq(&["run", &s(&root.join("missing.yaml"))]);
    assert!(!ok && err.contains("missing.yaml"), "{err}");
}

/// `(task, correct, total)` of one row of an accuracy table.
type Scores = Vec<(String, u64, u64)>;

/// The accuracy table of a finished run: every row's name and scores.
fn accuracy_rows(root: &Path) -> Vec<(String, Scores)> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("out/accuracy.json")).unwrap())
            .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let tasks = r["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["task"].as_str().unwrap().to_string(),
                        t["correct"].as_u64().unwrap(),
                        t["total"].as_u64().unwrap(),
                    )
                })
                .collect();
            (r["model"].as_str().unwrap().to_string(), tasks)
        })
        .collect()
}

/// A user's own image tasks (CLIP) and text-to-text tasks (T5) through a whole recipe: heads
/// probed with `pmq finetune --data … --model EXPERT`, E-PMQ, every model scored; the expert
/// row equals `pmq eval` of the expert.
#[test]
fn recipes_evaluate_image_folders_on_clip_and_pairs_on_t5() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    write_model(Fam::Clip, &root.join("base"), 2);
    let colours = [
        [("warm", [220, 60, 40]), ("cold", [40, 70, 220])],
        [("light", [220, 220, 220]), ("dark", [30, 30, 30])],
    ];
    for (i, classes) in colours.iter().enumerate() {
        let e = root.join(format!("e{i}"));
        write_perturbed(Fam::Clip, &e, 2, 200 + i as u64, 0.05);
        write_calib(Fam::Clip, root, &format!("t{i}"), 6, 30 + i as u64);
        pmq_testkit::write_image_folder(&root.join(format!("t{i}-train")), classes, 6, 30, 1);
        pmq_testkit::write_image_folder(&root.join(format!("t{i}-test")), classes, 4, 30, 2);
        let (ok, _, err) = pmq(&[
            "finetune",
            "--mode",
            "probe",
            "--preset",
            "ci",
            "--model",
            &s(&e),
            "--data",
            &format!("t{i}={}", s(&root.join(format!("t{i}-train")))),
            "--out",
            &s(&root.join("heads")),
        ]);
        assert!(ok, "{err}");
    }
    let recipe = "out: out
base: base
experts:
  - {model: e0, task: t0, calib: t0-images, eval: t0-test, head: heads/t0}
  - {model: e1, task: t1, calib: t1-images, eval: t1-test, head: heads/t1}
merge: {method: task-arithmetic, lambda: 0.5}
quantize: {method: epmq, alpha: 0.1, samples_per_task: 6, batch_size: 3}
outputs: [fake, gptq]
evaluate: {}
";
    std::fs::write(root.join("recipe.yaml"), recipe).unwrap();
    let (ok, _, err) = pmq(&["run", &s(&root.join("recipe.yaml"))]);
    assert!(ok, "{err}");
    let rows = accuracy_rows(root);
    assert_eq!(rows.len(), 3, "{rows:?}"); // experts, FP merged, E-PMQ (fake = gptq)
    for (_, tasks) in &rows {
        let names: Vec<(&str, u64)> = tasks.iter().map(|t| (t.0.as_str(), t.2)).collect();
        assert_eq!(names, [("t0", 8), ("t1", 8)]);
    }
    let (ok, out, err) = pmq(&[
        "eval",
        "--model",
        &s(&root.join("e1")),
        "--task",
        &format!("t1={}", s(&root.join("heads/t1"))),
        "--data",
        &format!("t1={}", s(&root.join("t1-test"))),
    ]);
    assert!(ok, "{err}");
    let expert_t1 = &rows[0].1[1];
    assert!(
        out.contains(&format!("{}/{}", expert_t1.1, expert_t1.2)),
        "{out} vs {rows:?}"
    );

    // T5: text-to-text pairs are scored by exact match, no head
    let t5 = root.join("t5");
    std::fs::create_dir_all(&t5).unwrap();
    write_model(Fam::T5Gated, &t5.join("base"), 5);
    for i in 0..2u64 {
        write_perturbed(Fam::T5Gated, &t5.join(format!("e{i}")), 5, 300 + i, 0.05);
        let spec = write_calib(Fam::T5Gated, &t5, &format!("t{i}"), 6, 40 + i);
        let calib = spec.split_once('=').unwrap().1.to_string();
        std::fs::copy(&calib, t5.join(format!("t{i}-test.jsonl"))).unwrap();
    }
    let recipe = "out: out
base: base
experts:
  - {model: e0, task: t0, calib: t0.jsonl, eval: t0-test.jsonl}
  - {model: e1, task: t1, calib: t1.jsonl, eval: t1-test.jsonl}
merge: {method: task-arithmetic, lambda: 0.5}
quantize: {method: gptq, samples_per_task: 6, batch_size: 3}
outputs: [fake]
evaluate: {}
";
    std::fs::write(t5.join("recipe.yaml"), recipe).unwrap();
    let (ok, _, err) = pmq(&["run", &s(&t5.join("recipe.yaml"))]);
    assert!(ok, "{err}");
    let rows = accuracy_rows(&t5);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows
        .iter()
        .all(|(_, t)| t.len() == 2 && t.iter().all(|x| x.2 == 6)));
}
