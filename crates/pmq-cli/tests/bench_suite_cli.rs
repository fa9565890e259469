//! `pmq bench --suite`: the benchmark on a user's own tasks — image folders with one CLIP expert
//! given (its head probed on its own embeddings) and one pmq fine-tunes from the base, and BERT
//! experts pmq fine-tunes from JSONL training data — as a user runs it, on tiny random
//! checkpoints.

mod common;
use common::pmq;
use pmq_testkit::{write_calib, write_image_folder, write_model, write_perturbed, Fam, WORDS};
use serde_json::Value;
use std::path::Path;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `pmq bench --suite` with the main experiment's TA cells; returns results.json.
fn bench(root: &Path, methods: &str) -> Value {
    let (ok, _, err) = pmq(&[
        "bench",
        "--suite",
        &s(&root.join("suite.yaml")),
        "--experiments",
        "main",
        "--merge",
        "ta",
        "--methods",
        methods,
        "--group-size",
        "128",
        "--preset",
        "ci",
        "--default-samples",
        "8",
        "--work",
        &s(&root.join("work")),
        "--results",
        &s(&root.join("results")),
    ]);
    assert!(ok, "{err}");
    serde_json::from_str(&std::fs::read_to_string(root.join("results/results.json")).unwrap())
        .unwrap()
}

/// `(row name, [(task, total)])` of the reference rows and cells.
fn rows(v: &Value) -> Vec<(String, Vec<(String, u64)>)> {
    let tasks = |a: &Value| {
        a.as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["task"].as_str().unwrap().to_string(),
                    t["total"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let mut out: Vec<_> = v["refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                tasks(&r["accuracies"]),
            )
        })
        .collect();
    out.extend(v["cells"].as_array().unwrap().iter().map(|c| {
        (
            c["key"].as_str().unwrap().to_string(),
            tasks(&c["accuracies"]),
        )
    }));
    out
}

#[test]
fn a_suite_of_clip_image_tasks_is_benchmarked() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    write_model(Fam::Clip, &root.join("base"), 3);
    let classes = [
        [("warm", [220, 60, 40]), ("cold", [40, 70, 220])],
        [("light", [220, 220, 220]), ("dark", [30, 30, 30])],
    ];
    for (i, c) in classes.iter().enumerate() {
        write_perturbed(
            Fam::Clip,
            &root.join(format!("e{i}")),
            3,
            50 + i as u64,
            0.05,
        );
        write_calib(Fam::Clip, root, &format!("t{i}"), 8, 60 + i as u64);
        write_image_folder(&root.join(format!("t{i}-train")), c, 6, 30, 1);
        write_image_folder(&root.join(format!("t{i}-test")), c, 3, 30, 2);
    }
    std::fs::write(
        root.join("suite.yaml"),
        "base: base
tasks:
  - {name: t0, expert: e0, train: t0-train, calib: t0-images, test: t0-test}
  - {name: t1, train: t1-train, calib: t1-images, test: t1-test}
",
    )
    .unwrap();
    let v = bench(root, "fp,gptq,epmq");
    assert!(root
        .join("work/experts/expert-probe/t0/pmq_head.safetensors")
        .is_file());
    assert!(root
        .join("work/experts/full/t1/model.safetensors")
        .is_file());
    let got = rows(&v);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Pre-trained (linear probe)",
            "Fine-tuned (STL)",
            "ta-fp",
            "ta-gptq-b4-g128-n8",
            "ta-epmq-b4-g128-a0.01-n8"
        ],
        "{v}"
    );
    for (n, t) in &got {
        assert_eq!(t, &[("t0".to_string(), 6), ("t1".to_string(), 6)], "{n}");
    }
    assert_eq!(v["meta"]["tasks"], serde_json::json!(["t0", "t1"]));
    // a rerun is served from the cache; an edited suite is a new context
    let again = bench(root, "fp,gptq,epmq");
    assert_eq!(again["meta"]["context"], v["meta"]["context"]);
    assert_eq!(again["cells"], v["cells"]);
    write_image_folder(&root.join("t1-test"), &classes[1][..1], 1, 30, 9);
    let edited = bench(root, "fp");
    assert_ne!(edited["meta"]["context"], v["meta"]["context"]);
}

#[test]
fn a_suite_of_text_tasks_has_its_experts_fine_tuned_by_pmq() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    write_model(Fam::Bert, &root.join("base"), 4);
    for i in 0..2usize {
        let line = |j: usize| {
            let (a, b) = (WORDS[(i + j) % 7], WORDS[7 + (j % 5)]);
            let label = if j.is_multiple_of(2) { "yes" } else { "no" };
            serde_json::json!({"text": format!("{a} {b} {a}"), "label": label}).to_string()
        };
        let lines: Vec<String> = (0..24).map(line).collect();
        std::fs::write(
            root.join(format!("t{i}-train.jsonl")),
            lines[..16].join("\n"),
        )
        .unwrap();
        std::fs::write(
            root.join(format!("t{i}-test.jsonl")),
            lines[16..].join("\n"),
        )
        .unwrap();
        write_calib(Fam::Bert, root, &format!("t{i}"), 8, 70 + i as u64);
    }
    std::fs::write(
        root.join("suite.yaml"),
        "base: base
tasks:
  - {name: t0, train: t0-train.jsonl, calib: t0.jsonl, test: t0-test.jsonl}
  - {name: t1, train: t1-train.jsonl, calib: t1.jsonl, test: t1-test.jsonl}
",
    )
    .unwrap();
    let v = bench(root, "gptq");
    let got = rows(&v);
    assert_eq!(got.len(), 3, "{v}");
    for (n, t) in &got {
        assert_eq!(t, &[("t0".to_string(), 8), ("t1".to_string(), 8)], "{n}");
    }
    // pmq's experts and probes went to the work directory, not the testbed cache
    for kind in ["full", "probe"] {
        for t in ["t0", "t1"] {
            let rec = root.join(format!("work/experts/{kind}/{t}/pmq_expert.json"));
            assert!(rec.is_file(), "{}", rec.display());
        }
    }
    // suites that cannot run are refused with the file and task
    for (suite, needle) in [
        ("base: base\ntasks:\n  - {name: t0, calib: t0.jsonl, test: t0-test.jsonl}\n", "`expert:` or `train:`"),
        ("base: nowhere\ntasks: []\n", "not a model directory"),
        ("base: base\ntasks:\n  - {name: t0, train: t0-train.jsonl, calib: t0.jsonl, test: t0-test.jsonl, extra: 1}\n", "extra"),
        ("base: base\ntasks:\n  - {name: a/b, train: t0-train.jsonl, calib: t0.jsonl, test: t0-test.jsonl}\n", "path separators"),
    ] {
        std::fs::write(root.join("bad.yaml"), suite).unwrap();
        let (ok, _, err) = pmq(&[
            "bench", "--suite", &s(&root.join("bad.yaml")), "--work", &s(&root.join("w2")),
            "--results", &s(&root.join("r2")),
        ]);
        assert!(!ok && err.contains(needle), "{needle}: {err}");
    }
}

/// The testbed is one suite among others: two testbed tasks exported as JSONL files (train,
/// calibration, test) and benchmarked through a suite file give exactly the testbed run's
/// accuracies, example by example (gated on `PMQ_TESTBED_CACHE`).
#[test]
fn testbed_tasks_exported_as_a_suite_reproduce_the_testbed_bench() {
    let Ok(cache) = std::env::var("PMQ_TESTBED_CACHE") else {
        eprintln!(
            "SKIPPED testbed_tasks_exported_as_a_suite_reproduce_the_testbed_bench: set \
             PMQ_TESTBED_CACHE"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tasks = ["spam", "movie-sentiment"];
    let (ok, _, err) = pmq(&[
        "testbed", "--cache", &cache, "fetch", "--task", tasks[0], "--task", tasks[1],
    ]);
    assert!(ok, "{err}");
    let (ok, list, err) = pmq(&["testbed", "--cache", &cache, "list"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(list.trim()).unwrap();
    let backbone = listed["backbone"].as_str().unwrap();
    let mut suite = format!("base: {backbone}\ntasks:\n");
    for t in tasks {
        for split in ["train", "calib", "test"] {
            let (ok, _, err) = pmq(&[
                "testbed",
                "export",
                "--cache",
                &cache,
                "--task",
                t,
                "--split",
                split,
                "--out",
                &s(&root.join(format!("{t}-{split}.jsonl"))),
            ]);
            assert!(ok, "{err}");
        }
        suite.push_str(&format!(
            "  - {{name: {t}, train: {t}-train.jsonl, calib: {t}-calib.jsonl, test: {t}-test.jsonl}}\n"
        ));
    }
    std::fs::write(root.join("suite.yaml"), suite).unwrap();
    let run = |source: &[&str], out: &str| -> Value {
        let mut args = vec!["bench", "--cache", &cache];
        args.extend(source);
        let (work, results) = (s(&root.join(format!("{out}-work"))), s(&root.join(out)));
        args.extend([
            "--experiments",
            "main",
            "--merge",
            "ta",
            "--methods",
            "gptq,epmq",
            "--group-size",
            "128",
            "--preset",
            "ci",
            "--default-samples",
            "16",
            "--eval-max-examples",
            "120",
            "--no-probe",
            "--work",
            &work,
            "--results",
            &results,
        ]);
        let (ok, _, err) = pmq(&args);
        assert!(ok, "{err}");
        serde_json::from_str(&std::fs::read_to_string(root.join(out).join("results.json")).unwrap())
            .unwrap()
    };
    let testbed = run(&["--tasks", "spam,movie-sentiment"], "testbed");
    let suite_file = s(&root.join("suite.yaml"));
    let own = run(&["--suite", &suite_file], "suite");
    let outcomes = |v: &Value| -> Vec<(String, String, u64, String)> {
        let mut out = Vec::new();
        for (name, acc) in v["refs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (&r["name"], &r["accuracies"]))
            .chain(
                v["cells"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| (&c["key"], &c["accuracies"])),
            )
        {
            for a in acc.as_array().unwrap() {
                out.push((
                    name.as_str().unwrap().to_string(),
                    a["task"].as_str().unwrap().to_string(),
                    a["correct"].as_u64().unwrap(),
                    a["hits"].as_str().unwrap().to_string(),
                ));
            }
        }
        out
    };
    let (a, b) = (outcomes(&testbed), outcomes(&own));
    assert_eq!(a.len(), 6, "{a:?}");
    assert_eq!(a, b);
    assert_ne!(testbed["meta"]["context"], own["meta"]["context"]);
}
