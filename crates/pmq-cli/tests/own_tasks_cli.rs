//! `pmq finetune` / `pmq eval` on a user's image folders (CLIP, linear probe) and text-to-text
//! pairs (T5, exact match), as a user runs them, on tiny random checkpoints.

mod common;
use common::pmq;
use pmq_testkit::{write_image_folder, write_model, Fam, WORDS};
use serde_json::Value;

#[test]
fn image_folders_are_probed_and_scored_on_clip() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("clip");
    write_model(Fam::Clip, &model, 4);
    let classes = [("0", [220, 50, 40]), ("1", [40, 60, 220])];
    write_image_folder(&t.join("train"), &classes, 8, 30, 1);
    write_image_folder(&t.join("test"), &classes, 5, 30, 2);
    let experts = t.join("experts");
    let (ok, out, err) = pmq(&[
        "finetune",
        "--mode",
        "probe",
        "--preset",
        "ci",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &format!("colour={}", t.join("train").display()),
        "--out",
        experts.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        summary["experts"][0]["labels"],
        serde_json::json!(["0", "1"])
    );
    let json = t.join("acc.json");
    let (ok, out, err) = pmq(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        &format!("colour={}", experts.join("colour").display()),
        "--data",
        &format!("colour={}", t.join("test").display()),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("colour"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["tasks"][0]["total"], 10);
    assert!(v["tasks"][0]["accuracy"].as_f64().unwrap() >= 0.9, "{v}");

    // full fine-tuning of the CLIP tower: an HF expert directory that pmq eval reads
    let data = format!("colour={}", t.join("train").display());
    let full = t.join("full");
    let (ok, _, err) = pmq(&[
        "finetune",
        "--preset",
        "ci",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        full.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let expert = full.join("colour");
    assert!(expert.join("model.safetensors").is_file());
    let (ok, out, err) = pmq(&[
        "eval",
        "--model",
        expert.to_str().unwrap(),
        "--task",
        &format!("colour={}", expert.display()),
        "--data",
        &format!("colour={}", t.join("test").display()),
    ]);
    assert!(ok && out.contains("/10"), "{err}{out}");
    // a missing model, a missing head: refused with the way out
    let (ok, _, err) = pmq(&["finetune", "--mode", "probe", "--data", &data, "--out", "x"]);
    assert!(!ok && err.contains("--model"), "{err}");
    let test = format!("colour={}", t.join("test").display());
    let (ok, _, err) = pmq(&["eval", "--model", model.to_str().unwrap(), "--data", &test]);
    assert!(
        !ok && err.contains("image classification") && err.contains("head"),
        "{err}"
    );
    // a class folder the head does not know
    write_image_folder(&t.join("test"), &[("7", [0, 0, 0])], 1, 0, 3);
    let (ok, _, err) = pmq(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        &format!("colour={}", experts.join("colour").display()),
        "--data",
        &test,
    ]);
    assert!(
        !ok && err.contains("\"7\"") && err.contains("not one of"),
        "{err}"
    );
}

#[test]
fn text_to_text_pairs_are_scored_on_t5_without_a_head() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("t5");
    write_model(Fam::T5Relu, &model, 8);
    // targets no 2-step decoding can produce (3 words) and an empty one
    let lines: Vec<String> = (0..5)
        .map(|i| {
            serde_json::json!({
                "input": format!("{} {}", WORDS[i], WORDS[i + 5]),
                "target": if i == 4 { String::new() } else { format!("{} {} {}", WORDS[i], WORDS[1], WORDS[2]) },
            })
            .to_string()
        })
        .collect();
    std::fs::write(t.join("pairs.jsonl"), lines.join("\n")).unwrap();
    let json = t.join("acc.json");
    let data = format!("qa={}", t.join("pairs.jsonl").display());
    let (ok, out, err) = pmq(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &data,
        "--max-new-tokens",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("qa"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &v["tasks"][0];
    assert_eq!(r["total"], 5);
    assert!(r["correct"].as_u64().unwrap() <= 1, "{v}");
    // a head for text-to-text, fine-tuning T5: refused with the reason
    let head = t.join("head.safetensors");
    pmq_eval::Head::new(
        "qa",
        vec!["a".into(), "b".into()],
        4,
        vec![0.0; 8],
        vec![0.0; 2],
    )
    .unwrap()
    .save(&head)
    .unwrap();
    let (ok, _, err) = pmq(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        &format!("qa={}", head.display()),
        "--data",
        &data,
    ]);
    assert!(!ok && err.contains("drop its head"), "{err}");
    let (ok, _, err) = pmq(&[
        "finetune",
        "--mode",
        "probe",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        "x",
    ]);
    assert!(!ok && err.contains("no classification head"), "{err}");
    // full fine-tuning of the T5: an HF expert directory without a head (targets must not be
    // empty for training)
    let train: Vec<String> = lines.iter().take(4).cloned().collect();
    std::fs::write(t.join("train.jsonl"), train.join("\n")).unwrap();
    let full = t.join("full");
    let (ok, _, err) = pmq(&[
        "finetune",
        "--preset",
        "ci",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &format!("qa={}", t.join("train.jsonl").display()),
        "--out",
        full.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(full.join("qa/model.safetensors").is_file());
    assert!(!full.join("qa").join(pmq_eval::HEAD_FILE).exists());
    let (ok, _, err) = pmq(&[
        "eval",
        "--model",
        full.join("qa").to_str().unwrap(),
        "--data",
        &data,
    ]);
    assert!(ok, "{err}");
}
