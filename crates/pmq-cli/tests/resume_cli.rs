//! `pmq quantize --resume`: a run killed after a block (the hidden `--stop-after-block` ends it
//! with an error right after that block's checkpoint) and resumed writes files byte-identical
//! to an uninterrupted run's (the report's times aside), also when the experts are merged
//! inline (into a new temporary directory each run); a changed setting is refused.

mod common;
use common::pmq;
use pmq_testkit::{write_calib, write_model, write_perturbed, Fam};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Every file under `dir` by relative path, with its contents.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn checkpoint(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap().to_os_string();
    name.push(".pmq-resume");
    out.with_file_name(name)
}

#[test]
fn a_killed_quantization_resumes_to_byte_identical_files() {
    // (family, method, merge the experts inline first)
    for (fam, method, merge) in [
        (Fam::LlamaGqa, "epmq", false),
        (Fam::LlamaGqa, "awq", false),
        (Fam::Bert, "gptq", false),
        (Fam::Bert, "awq", true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let base = root.join("base");
        write_model(fam, &base, 1);
        let experts: Vec<PathBuf> = (0..2)
            .map(|i| {
                let d = root.join(format!("expert{i}"));
                write_perturbed(fam, &d, 1, 100 + i, 0.05);
                d
            })
            .collect();
        let calib: Vec<String> = (0..2)
            .map(|i| write_calib(fam, root, &format!("t{i}"), 12, 7 + i))
            .collect();
        let args = |out: &Path, extra: &[&str]| {
            let mut a: Vec<String> = vec!["quantize".into()];
            if merge {
                // merged into a new temporary directory by every run
                a.extend(["--merge".into(), "task-arithmetic".into(), "--base".into()]);
            } else {
                a.push("--model".into());
            }
            a.extend([
                s(&base),
                "--method".into(),
                method.into(),
                "--out".into(),
                s(out),
                "--format".into(),
                "both".into(),
                "--group-size".into(),
                "32".into(),
                "--batch-size".into(),
                "5".into(),
            ]);
            for e in &experts {
                a.extend(["--expert".into(), s(e)]);
            }
            for c in &calib {
                a.extend(["--calib".into(), c.clone()]);
            }
            a.extend(extra.iter().map(|x| x.to_string()));
            a
        };
        let tag = format!("{fam:?} {method} merge={merge}");

        // uninterrupted; its checkpoint is removed once the output is written
        let whole = root.join("whole");
        let (ok, _, err) = pmq(&args(&whole, &[]));
        assert!(ok, "{tag}: {err}");
        assert!(!checkpoint(&whole).exists(), "{tag}");

        // killed right after block 0: no output, the checkpoint of block 0
        let out = root.join("out");
        let (ok, _, err) = pmq(&args(&out, &["--stop-after-block", "0"]));
        assert!(!ok, "{tag}");
        assert!(err.contains("stopped after block 0"), "{tag}: {err}");
        assert!(!out.exists(), "{tag}");
        assert!(
            checkpoint(&out).join("block-00000.safetensors").is_file(),
            "{tag}"
        );
        assert!(
            !checkpoint(&out).join("block-00001.safetensors").exists(),
            "{tag}"
        );

        // resuming with another setting is refused, saying which
        let (ok, _, err) = pmq(&args(&out, &["--resume", "--max-seq-len", "16"]));
        assert!(!ok, "{tag}");
        assert!(err.contains("cannot resume"), "{tag}: {err}");
        assert!(
            err.contains("setting max_seq_len: 128 in the checkpoint, 16 now"),
            "{tag}: {err}"
        );
        assert!(!out.exists(), "{tag}");

        // resumed: the same files, byte for byte, but the report
        let (ok, _, err) = pmq(&args(&out, &["--resume"]));
        assert!(ok, "{tag}: {err}");
        assert!(err.contains("resumed at block 1"), "{tag}: {err}");
        assert!(!checkpoint(&out).exists(), "{tag}");
        // reports (pmq's, the inline merge's) hold times
        let is_report = |k: &String| k.ends_with("_report.json") || k.ends_with("_report.md");
        let (a, b) = (files(&whole), files(&out));
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{tag}"
        );
        assert!(a.keys().any(|k| k.ends_with(".safetensors")), "{tag}");
        for (k, x) in a.iter().filter(|(k, _)| !is_report(k)) {
            assert!(x == &b[k], "{tag}: {k} differs");
        }
        let report: Value =
            serde_json::from_slice(&b["fake/pmq_report.json"]).expect("a JSON report");
        assert_eq!(report["resumed_at_block"], 1, "{tag}");
        let untimed = |r: &[u8]| {
            let mut v: Value = serde_json::from_slice(r).unwrap();
            for l in v["linears"].as_array_mut().unwrap() {
                l["seconds"] = Value::Null;
                if let Some(a) = l.get_mut("awq").filter(|a| a.is_object()) {
                    a["search_seconds"] = Value::Null;
                }
            }
            v["linears"].take()
        };
        assert_eq!(
            untimed(&a["fake/pmq_report.json"]),
            untimed(&b["fake/pmq_report.json"]),
            "{tag}: the report's figures"
        );
    }
}
