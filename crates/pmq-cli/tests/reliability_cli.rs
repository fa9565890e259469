//! Reliability of every writing command: outputs never overwrite or land inside inputs, invalid
//! outputs and flags are refused before any work, interrupts and crashes leave no debris, and
//! bad inputs give messages that say what is wrong where.

mod common;
use common::pmq;
use pmq_io::{encode_f32, write_safetensors, Dtype, TensorStore};
use pmq_testkit::{write_calib, write_model, write_perturbed, write_tiny_bert, Fam, TinyBert};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// base + 2 experts of a tiny BERT and 2 calibration files (`t0=…`, `t1=…`) in `root`.
struct Family {
    base: PathBuf,
    experts: Vec<PathBuf>,
    calib: Vec<String>,
}

fn family(root: &Path) -> Family {
    let base = root.join("base");
    write_model(Fam::Bert, &base, 1);
    let experts: Vec<PathBuf> = (0..2)
        .map(|i| {
            let d = root.join(format!("expert{i}"));
            write_perturbed(Fam::Bert, &d, 1, 100 + i as u64, 0.05);
            d
        })
        .collect();
    let calib = (0..2)
        .map(|i| write_calib(Fam::Bert, root, &format!("t{i}"), 8, 7 + i as u64))
        .collect();
    Family {
        base,
        experts,
        calib,
    }
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `pmq quantize --model MODEL --method METHOD --out OUT` + experts, calib and `extra`.
fn quantize(model: &Path, method: &str, out: &Path, f: &Family, extra: &[&str]) -> Vec<String> {
    let mut a = args(&[
        "quantize",
        "--model",
        &s(model),
        "--method",
        method,
        "--out",
        &s(out),
    ]);
    for e in &f.experts {
        a.extend(args(&["--expert", &s(e)]));
    }
    for c in &f.calib {
        a.extend(args(&["--calib", c]));
    }
    a.extend(args(&["--group-size", "32", "--batch-size", "4"]));
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// `pmq quantize --merge task-arithmetic --base BASE --method METHOD --out OUT` + experts and
/// `calib`.
fn quantize_merge(
    f: &Family,
    method: &str,
    out: &Path,
    calib: &[String],
    extra: &[&str],
) -> Vec<String> {
    let mut a = args(&[
        "quantize",
        "--merge",
        "task-arithmetic",
        "--base",
        &s(&f.base),
        "--method",
        method,
        "--out",
        &s(out),
        "--group-size",
        "32",
        "--batch-size",
        "4",
    ]);
    for e in &f.experts {
        a.extend(args(&["--expert", &s(e)]));
    }
    for c in calib {
        a.extend(args(&["--calib", c]));
    }
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// Hidden entries (temporaries) directly in `dir`.
fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Every file under `dir` with its bytes, sorted by path (to prove inputs are untouched).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

fn spawn(a: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pmq"))
        .args(a)
        .env("PMQ_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits up to `secs` for `cond`.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// The PID of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn quantize_refuses_outputs_that_are_contain_or_lie_inside_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("work");
    std::fs::create_dir(&root).unwrap();
    let f = family(&root);
    let model = root.join("merged");
    write_perturbed(Fam::Bert, &model, 1, 50, 0.01);
    let before: Vec<_> = [&f.base, &model, &f.experts[0], &f.experts[1]]
        .iter()
        .map(|d| snapshot(d))
        .collect();
    let calib_dir = PathBuf::from(f.calib[0].split_once('=').unwrap().1)
        .parent()
        .unwrap()
        .to_path_buf();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            quantize(&model, "epmq", &model, &f, &["--overwrite"]),
            "is input",
        ),
        (
            quantize(&model, "epmq", &f.experts[1], &f, &["--overwrite"]),
            "is input",
        ),
        (
            quantize(&model, "epmq", &root, &f, &["--overwrite"]),
            "contains input",
        ),
        (
            quantize(&model, "epmq", tmp.path(), &f, &["--overwrite"]),
            "contains input",
        ),
        (
            quantize(&model, "epmq", &calib_dir, &f, &["--overwrite"]),
            "contains input",
        ),
        (
            quantize(&model, "rtn", &model.join("q"), &f, &[]),
            "lies inside input",
        ),
        (
            quantize_merge(&f, "epmq", &f.base, &f.calib, &["--overwrite"]),
            "is input",
        ),
        (
            quantize_merge(&f, "rtn", &root, &[], &["--overwrite"]),
            "contains input",
        ),
        (
            quantize_merge(&f, "rtn", &f.experts[0], &[], &["--overwrite"]),
            "is input",
        ),
    ];
    for (a, needle) in cases {
        let (ok, _, err) = pmq(&a);
        assert!(!ok, "must be refused: {a:?}");
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
        assert!(err.contains("inputs are never modified"), "{err}");
        assert!(hidden(&root).is_empty() && hidden(tmp.path()).is_empty());
    }
    let after: Vec<_> = [&f.base, &model, &f.experts[0], &f.experts[1]]
        .iter()
        .map(|d| snapshot(d))
        .collect();
    assert!(before == after, "an input was modified");
    // pmq merge (the same shared check) and the other writers
    let (ok, _, err) = pmq(&args(&[
        "merge",
        "--base",
        &s(&f.base),
        "--expert",
        &s(&f.experts[0]),
        "--method",
        "average",
        "--out",
        &s(&root),
        "--overwrite",
    ]));
    assert!(!ok && err.contains("contains input"), "{err}");
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(cache.join("data/spam")).unwrap();
    std::fs::write(cache.join("data/spam/x.csv"), b"keep").unwrap();
    for (a, needle) in [
        (
            args(&[
                "testbed",
                "--cache",
                &s(&cache),
                "export",
                "--task",
                "spam",
                "--out",
                &s(&cache.join("data/spam/x.csv")),
            ]),
            "lies inside input",
        ),
        (
            args(&[
                "finetune",
                "--cache",
                &s(&cache),
                "--task",
                "spam",
                "--out",
                &s(&cache),
            ]),
            "contains input",
        ),
        (
            args(&[
                "bench",
                "--cache",
                &s(&cache),
                "--work",
                &s(&cache.join("data")),
            ]),
            "is input",
        ),
        (
            args(&[
                "demo",
                "--cache",
                &s(&cache),
                "--ci",
                "--work",
                &s(&cache.join("data/w")),
            ]),
            "lies inside input",
        ),
    ] {
        let (ok, _, err) = pmq(&a);
        assert!(!ok, "must be refused: {a:?}");
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
    assert_eq!(
        std::fs::read(cache.join("data/spam/x.csv")).unwrap(),
        b"keep"
    );
}

#[test]
fn invalid_outputs_and_inputs_are_found_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let f = family(root);
    let model = root.join("merged");
    write_perturbed(Fam::Bert, &model, 1, 50, 0.01);
    // calibration that only the run itself would find broken: if --out were checked late,
    // the error would be about this file
    let broken = root.join("broken.jsonl");
    std::fs::write(&broken, "not json\n").unwrap();
    let g = Family {
        base: f.base.clone(),
        experts: f.experts.clone(),
        calib: vec![format!("t0={}", s(&broken)), f.calib[1].clone()],
    };
    let file = root.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let link = root.join("link");
    std::os::unix::fs::symlink(root.join("somewhere"), &link).unwrap();
    std::fs::create_dir(root.join("somewhere")).unwrap();
    for (out, needle) in [
        (file.clone(), "not a directory"),
        (PathBuf::from("."), "does not name a new directory"),
        (PathBuf::from("/"), "does not name a new directory"),
        (link.clone(), "symbolic link"),
        (file.join("sub"), "not a directory"),
    ] {
        for a in [
            quantize(&model, "epmq", &out, &g, &["--overwrite"]),
            quantize_merge(&g, "gptq", &out, &g.calib, &["--overwrite"]),
        ] {
            let (ok, _, err) = pmq(&a);
            assert!(!ok, "{a:?}");
            assert!(err.contains(needle), "expected {needle:?} in: {err}");
            assert!(!err.contains("broken.jsonl"), "checked too late: {err}");
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    assert!(hidden(root).is_empty(), "{:?}", hidden(root));

    // --merge: the calibration count is checked before the merge (which would fail on the
    // invalid --include pattern if it ran first)
    let out = root.join("out");
    let (ok, _, err) = pmq(&quantize_merge(
        &f,
        "gptq",
        &out,
        &f.calib[..1],
        &["--include", "["],
    ));
    assert!(!ok);
    assert!(err.contains("2 experts but 1 calibration tasks"), "{err}");
    // a missing calibration file, too
    let missing = vec![f.calib[0].clone(), "t1=/nonexistent/c.jsonl".to_string()];
    let (ok, _, err) = pmq(&quantize_merge(
        &f,
        "gptq",
        &out,
        &missing,
        &["--include", "["],
    ));
    assert!(!ok && err.contains("not found"), "{err}");
    // merge options are validated up front as well
    let (ok, _, err) = pmq(&quantize_merge(&f, "rtn", &out, &[], &["--lambda", "NaN"]));
    assert!(!ok && err.contains("lambda"), "{err}");
    assert!(!out.exists());
    assert!(hidden(root).is_empty(), "{:?}", hidden(root));

    // RTN with --merge needs no calibration file per expert
    let (ok, stdout, err) = pmq(&quantize_merge(&f, "rtn", &out, &[], &["--format", "fake"]));
    assert!(ok, "{err}");
    assert!(stdout.contains("\"linears\":12"), "{stdout}");
    assert!(TensorStore::open_dir(&out).is_ok());
    assert!(hidden(root).is_empty(), "{:?}", hidden(root));
}

#[test]
fn quantize_without_merge_makes_no_merge_directory_and_sigterm_leaves_no_debris() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let f = family(root);
    let model = root.join("merged");
    write_perturbed(Fam::Bert, &model, 1, 50, 0.01);
    let fifo = root.join("calib.fifo");
    mkfifo(&fifo);
    let out = root.join("out");
    let g = Family {
        base: f.base.clone(),
        experts: vec![],
        calib: vec![format!("t0={}", s(&fifo))],
    };

    // 1. --model: blocked reading the calibration FIFO, mid-run; no .pmq-merged-* exists
    let mut child = spawn(&quantize(&model, "gptq", &out, &g, &[]));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "should be waiting on the FIFO"
    );
    assert!(hidden(root).is_empty(), "{:?}", hidden(root));
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(status.code(), Some(128 + 15));

    // 2. inline merge: SIGTERM after the merge, while the pipeline waits on the FIFO
    let mut calib = vec![format!("t0={}", s(&fifo))];
    calib.push(f.calib[1].clone());
    let child = spawn(&quantize_merge(
        &f,
        "gptq",
        &out,
        &calib,
        &["--format", "both"],
    ));
    let merged = wait_for(60, || {
        hidden(root).iter().any(|n| {
            n.starts_with(".pmq-merged-") && root.join(n).join("merged/model.safetensors").is_file()
        })
    });
    assert!(merged, "the merge did not finish: {:?}", hidden(root));
    let pid = child.id();
    assert!(
        hidden(root)[0].contains(&format!("-{pid}-")),
        "{:?}",
        hidden(root)
    );
    sigterm(&child);
    let out_status = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out_status.stderr);
    assert!(!out_status.status.success());
    assert!(err.contains("SIGTERM"), "{err}");
    assert!(hidden(root).is_empty(), "debris left: {:?}", hidden(root));
    assert!(!out.exists());
}

/// A `pmq merge` big enough that its writing phase can be interrupted: SIGTERM while the
/// output's temporary directory exists removes it; earlier dead runs' debris is removed.
#[test]
fn sigterm_during_writing_and_stale_debris() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut caught = false;
    for attempt in 0..4 {
        let n = 24 << attempt;
        let write = |dir: &Path, seed: f32| {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("config.json"), r#"{"model_type":"toy"}"#).unwrap();
            let t: Vec<_> = (0..n)
                .map(|i| {
                    let v: Vec<f32> = (0..256 * 256)
                        .map(|j| ((i * 31 + j) % 97) as f32 * 0.01 + seed)
                        .collect();
                    (
                        format!("w{i}"),
                        Dtype::F32,
                        vec![256, 256],
                        encode_f32(Dtype::F32, &v).unwrap(),
                    )
                })
                .collect();
            write_safetensors(&dir.join("model.safetensors"), &t, None).unwrap();
        };
        let base = root.join(format!("base{attempt}"));
        write(&base, 0.0);
        let experts: Vec<PathBuf> = (0..3)
            .map(|k| {
                let d = root.join(format!("e{attempt}-{k}"));
                write(&d, 0.1 * (k + 1) as f32);
                d
            })
            .collect();
        let out = root.join(format!("out{attempt}"));
        let mut a = args(&[
            "merge",
            "--base",
            &s(&base),
            "--method",
            "dare",
            "--out",
            &s(&out),
        ]);
        for e in &experts {
            a.extend(args(&["--expert", &s(e)]));
        }
        let mut child = spawn(&a);
        let prefix = format!(".out{attempt}.tmp-{}-", child.id());
        let seen = wait_for(60, || {
            hidden(root).iter().any(|h| h.starts_with(&prefix))
                || child.try_wait().ok().flatten().is_some()
        });
        let running = seen && child.try_wait().unwrap().is_none();
        if running {
            sigterm(&child);
        }
        let status = child.wait().unwrap();
        if !running || status.success() {
            // finished before the signal: try a bigger model
            let _ = std::fs::remove_dir_all(&out);
            continue;
        }
        assert_eq!(status.code(), Some(128 + 15));
        assert!(hidden(root).is_empty(), "debris left: {:?}", hidden(root));
        assert!(!out.exists());
        caught = true;

        // debris of dead runs next to the output is removed by the next run
        let dead = dead_pid();
        for d in [
            format!(".out{attempt}.tmp-{dead}-0"),
            format!(".out{attempt}.old-{dead}"),
            format!(".pmq-merged-{dead}-3"),
        ] {
            std::fs::create_dir(root.join(&d)).unwrap();
            std::fs::write(root.join(&d).join("model.safetensors"), b"partial").unwrap();
        }
        std::fs::write(root.join(format!(".x.tmp-{dead}")), b"partial").unwrap();
        let alive = format!(".out{attempt}.tmp-1-0");
        std::fs::create_dir(root.join(&alive)).unwrap();
        // the moved-aside old output is put back first, so replacing it needs --overwrite
        a.push("--overwrite".into());
        let (ok, _, err) = pmq(&a);
        assert!(ok, "{err}");
        assert_eq!(hidden(root), vec![alive.clone(), format!(".x.tmp-{dead}")]);
        let x = root.join("x");
        let (ok, _, err) = pmq(&args(&[
            "merge",
            "--base",
            &s(&base),
            "--expert",
            &s(&experts[0]),
            "--method",
            "average",
            "--out",
            &s(&x),
        ]));
        assert!(ok, "{err}");
        assert_eq!(hidden(root), vec![alive]);
        break;
    }
    assert!(caught, "could not interrupt a merge while it was writing");
}

#[test]
fn compare_and_eval_refuse_zero_counts_other_widths_and_non_finite_results() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = root.join("a");
    let wide = root.join("wide");
    write_tiny_bert(&a, TinyBert::default(), 1);
    write_tiny_bert(
        &wide,
        TinyBert {
            hidden: 32,
            heads: 4,
            ..TinyBert::default()
        },
        2,
    );
    let texts = root.join("t.jsonl");
    // a UTF-8 byte-order mark at the start is accepted
    std::fs::write(
        &texts,
        "\u{feff}{\"text\": \"the movie was great\"}\r\n{\"text\": \"bad story\"}\n",
    )
    .unwrap();
    let compare = |m: &Path, r: &Path, extra: &[&str]| {
        let mut v = args(&[
            "compare",
            "--model",
            &s(m),
            "--reference",
            &s(r),
            "--texts",
            &s(&texts),
        ]);
        v.extend(args(extra));
        pmq(&v)
    };
    let (ok, stdout, err) = compare(&a, &a, &[]);
    assert!(ok, "{err}");
    assert!(stdout.contains("\"texts\":2"), "{stdout}");
    for flag in ["--max-texts", "--batch-size", "--max-seq-len"] {
        let (ok, _, err) = compare(&a, &a, &[flag, "0"]);
        assert!(!ok, "{flag} 0");
        assert!(err.contains(flag) && err.contains("at least 1"), "{err}");
    }
    let (ok, _, err) = compare(&a, &wide, &[]);
    assert!(!ok);
    assert!(
        err.contains("hidden size 16") && err.contains("has 32"),
        "{err}"
    );
    // finite but huge weights: the embeddings overflow, so there is no cosine to report
    let huge = root.join("huge");
    write_tiny_bert(&huge, TinyBert::default(), 1);
    let store = TensorStore::open_dir(&huge).unwrap();
    let tensors: Vec<_> = store
        .names()
        .into_iter()
        .map(|n| {
            let i = store.info(&n).unwrap().clone();
            let bytes = if n.ends_with("LayerNorm.weight") {
                encode_f32(i.dtype, &vec![3e38; i.numel()]).unwrap()
            } else {
                store.raw_bytes(&n).unwrap().to_vec()
            };
            (n, i.dtype, i.shape, bytes)
        })
        .collect();
    drop(store);
    write_safetensors(&huge.join("model.safetensors"), &tensors, None).unwrap();
    let (ok, stdout, err) = compare(&huge, &a, &[]);
    assert!(!ok, "{stdout}");
    assert!(err.contains("non-finite") && err.contains("huge"), "{err}");
    // a non-UTF-8 text line is named
    std::fs::write(&texts, b"{\"text\": \"ok\"}\n{\"text\": \"caf\xe9\"}\n").unwrap();
    let (ok, _, err) = compare(&a, &a, &[]);
    assert!(
        !ok && err.contains("t.jsonl:2:") && err.contains("UTF-8"),
        "{err}"
    );

    // pmq eval: zero counts are flag errors (before the testbed is even looked at)
    for flag in ["--max-examples", "--batch-size", "--max-seq-len"] {
        let (ok, _, err) = pmq(&args(&[
            "eval",
            "--model",
            &s(&a),
            "--cache",
            &s(root),
            "--task",
            "spam=x",
            flag,
            "0",
        ]));
        assert!(
            !ok && err.contains(flag) && err.contains("at least 1"),
            "{err}"
        );
    }
    // and so are bad numbers of the other commands
    for a in [
        args(&["bench", "--alpha", "NaN"]),
        args(&["bench", "--default-alpha", "-1"]),
        args(&["bench", "--samples", "0"]),
        args(&["bench", "--bits", "5"]),
        args(&["bench", "--group-size", "0"]),
        args(&["bench", "--eval-max-examples", "0"]),
        args(&["demo", "--samples", "0"]),
        args(&["demo", "--bits", "1"]),
    ] {
        let (ok, _, err) = pmq(&a);
        assert!(!ok && err.contains("invalid value"), "{a:?}: {err}");
    }
}

#[test]
fn messages_say_what_is_wrong_where() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let f = family(root);
    let model = root.join("merged");
    write_perturbed(Fam::Bert, &model, 1, 50, 0.01);

    // a GPTQ checkpoint given where a full-precision model is needed
    let gptq = root.join("gptq");
    let (ok, _, err) = pmq(&quantize(
        &model,
        "rtn",
        &gptq,
        &Family {
            experts: vec![],
            calib: vec![],
            ..family_like(&f)
        },
        &[],
    ));
    assert!(ok, "{err}");
    let e = Family {
        experts: vec![],
        calib: vec![],
        ..family_like(&f)
    };
    let (ok, _, err) = pmq(&quantize(&gptq, "rtn", &root.join("q2"), &e, &[]));
    assert!(!ok);
    assert!(err.contains("is a GPTQ-quantized checkpoint"), "{err}");
    assert!(!err.contains("not found"), "{err}");
    // ... also without quantize_config.json and quantization_config (packed tensors only)
    std::fs::remove_file(gptq.join("quantize_config.json")).unwrap();
    let cfg_path = gptq.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("quantization_config");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (ok, _, err) = pmq(&quantize(&gptq, "rtn", &root.join("q2"), &e, &[]));
    assert!(
        !ok && err.contains("GPTQ-quantized") && err.contains(".qweight"),
        "{err}"
    );
    let (ok, _, err) = pmq(&args(&[
        "merge",
        "--base",
        &s(&f.base),
        "--expert",
        &s(&gptq),
        "--method",
        "average",
        "--out",
        &s(&root.join("m")),
    ]));
    assert!(!ok && err.contains("GPTQ-quantized"), "{err}");

    // experts are numbered from 1 by merge and quantize alike
    let llama = root.join("llama");
    write_model(Fam::LlamaGqa, &llama, 1);
    let mixed = Family {
        experts: vec![f.experts[0].clone(), llama.clone()],
        ..family_like(&f)
    };
    let (ok, _, err) = pmq(&quantize(&model, "epmq", &root.join("q3"), &mixed, &[]));
    assert!(!ok && err.contains("expert 2 ("), "{err}");
    let (ok, _, err) = pmq(&args(&[
        "merge",
        "--base",
        &s(&f.base),
        "--expert",
        &s(&f.experts[0]),
        "--expert",
        &s(&llama),
        "--method",
        "average",
        "--out",
        &s(&root.join("m")),
    ]));
    assert!(!ok && err.contains("expert 2 ("), "{err}");

    // calibration: a BOM is accepted, a non-UTF-8 line is named with its number
    let bom = root.join("bom.jsonl");
    std::fs::write(
        &bom,
        "\u{feff}{\"text\": \"the movie was great\"}\n{\"text\": \"disk full\"}\n",
    )
    .unwrap();
    let one = Family {
        experts: vec![],
        calib: vec![format!("t={}", s(&bom))],
        ..family_like(&f)
    };
    let (ok, _, err) = pmq(&quantize(
        &model,
        "gptq",
        &root.join("q4"),
        &one,
        &["--format", "fake"],
    ));
    assert!(ok, "{err}");
    std::fs::write(&bom, b"{\"text\": \"fine\"}\n\n{\"text\": \"\xff\xfe\"}\n").unwrap();
    let (ok, _, err) = pmq(&quantize(&model, "gptq", &root.join("q5"), &one, &[]));
    assert!(
        !ok && err.contains("bom.jsonl:3:") && err.contains("not valid UTF-8"),
        "{err}"
    );

    // an I/O error's cause is printed once; the overwrite hint names the flag
    let (ok, _, err) = pmq(&args(&[
        "merge",
        "--base",
        &s(&root.join("nope")),
        "--expert",
        &s(&f.experts[0]),
        "--method",
        "average",
        "--out",
        &s(&root.join("m")),
    ]));
    assert!(!ok);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    let (ok, _, err) = pmq(&args(&[
        "merge",
        "--base",
        &s(&f.base),
        "--expert",
        &s(&f.experts[0]),
        "--method",
        "average",
        "--out",
        &s(&f.experts[0]),
    ]));
    assert!(!ok && err.contains("is input"), "{err}");
    std::fs::create_dir(root.join("exists")).unwrap();
    let (ok, _, err) = pmq(&args(&[
        "merge",
        "--base",
        &s(&f.base),
        "--expert",
        &s(&f.experts[0]),
        "--method",
        "average",
        "--out",
        &s(&root.join("exists")),
    ]));
    assert!(!ok && err.contains("pass --overwrite"), "{err}");
}

fn family_like(f: &Family) -> Family {
    Family {
        base: f.base.clone(),
        experts: f.experts.clone(),
        calib: f.calib.clone(),
    }
}
