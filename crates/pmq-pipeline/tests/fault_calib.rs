//! Fault suite of the calibration readers: thousands of generated JSONL files (random bytes,
//! byte-order marks at the start and elsewhere, invalid UTF-8, CRLF and blank lines, lines that
//! are not JSON, not objects, lack `text`, or hold numbers, arrays or null where strings are
//! expected, T5 `input`/`target` pairs), image lists naming missing files, and `TASK=FILE`
//! arguments, read with [`read_samples`] for a text family and for T5.
//!
//! Each case is judged against the format the module documents: the samples read are exactly
//! the ones the file holds (first `limit`, in order), else the error names `file:line` of the
//! first offending line (or the file, when it holds no sample). Texts read are tokenized (any
//! truncation length): never a panic. Inputs stay byte-identical and nothing is left behind.
//!
//! `PROPTEST_CASES` sets the number of cases, `PROPTEST_RNG_SEED` the seed.

use pmq_models::{Family, TextTokenizer};
use pmq_pipeline::calib::{read_samples, Sample};
use pmq_pipeline::CalibSpec;
use pmq_testkit::fault::{draw, refused_naming, runner, CappedAlloc, Outcome, Tally};
use pmq_testkit::tokenizer_json;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;
use std::str::FromStr;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

// ---------------------------------------------------------------------------------------------
// JSONL files.

#[derive(Debug, Clone)]
enum Line {
    /// `{"text": s}`.
    Text(String),
    /// `{"input": s, "target": t}` (target possibly absent).
    Pair(String, Option<String>),
    /// Any JSON value on one line.
    Json(Value),
    /// Raw bytes (possibly invalid UTF-8, a BOM, a CR or a newline).
    Raw(Vec<u8>),
    /// Whitespace only.
    Blank(&'static str),
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(the|movie|was|great|bad|server|disk|full|a|story) ?(the|movie|was|great|bad|love|error|in|market){0,6}",
        2 => any::<String>(),
        1 => prop::sample::select(vec![
            "", " ", "\u{feff}text", "\u{0}", "\u{2028}line\u{2029}", "🙂🙂", "a\tb", "\\n",
            "Ünïcödé wörds", "\u{202e}rtl",
        ])
        .prop_map(str::to_string),
        1 => (1usize..400).prop_map(|n| "story ".repeat(n)),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        8 => text().prop_map(Line::Text),
        2 => (text(), prop::option::of(text())).prop_map(|(i, t)| Line::Pair(i, t)),
        3 => prop::sample::select(vec![
            json!({"text": 5}), json!({"text": null}), json!({"text": ["a"]}), json!({"txt": "a"}),
            json!({}), json!([1, 2]), json!("text"), json!(null), json!(3.5), json!(true),
            json!({"input": 3, "text": "fallback"}), json!({"input": "in", "target": 7}),
            json!({"text": "ok", "input": null}), json!({"text": {"nested": "x"}}),
            json!({"text": "\u{0}"}), json!({"input": "", "target": ""}),
        ])
        .prop_map(Line::Json),
        2 => prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            prop::sample::select(vec![
                b"{\"text\": \"caf\xe9\"}".to_vec(), b"\xEF\xBB\xBF{\"text\": \"bom\"}".to_vec(),
                b"{\"text\": \"a\"".to_vec(), b"{\"text\": \"\\ud800\"}".to_vec(),
                b"{'text': 'single'}".to_vec(), b"{\"text\": \"x\"}\r".to_vec(),
                b"\xff\xfe".to_vec(), b"\xe2\x82".to_vec(), b"{\"text\": \"a\"} trailing".to_vec(),
                b"{\"text\": \"a\", \"text\": 5}".to_vec(), b"\x00\x00".to_vec(),
            ]),
        ]
        .prop_map(Line::Raw),
        1 => prop::sample::select(vec!["", " ", "\t", "  \u{3000} "]).prop_map(Line::Blank),
    ]
}

#[derive(Debug, Clone)]
struct JsonlFile {
    bom: bool,
    crlf: bool,
    trailing_newline: bool,
    lines: Vec<Line>,
}

fn jsonl_file() -> impl Strategy<Value = JsonlFile> {
    (
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        any::<bool>(),
        prop::collection::vec(line(), 0..12),
    )
        .prop_map(|(bom, crlf, trailing_newline, lines)| JsonlFile {
            bom,
            crlf,
            trailing_newline,
            lines,
        })
}

fn render(f: &JsonlFile) -> Vec<u8> {
    let mut out = Vec::new();
    if f.bom {
        out.extend(b"\xEF\xBB\xBF");
    }
    for (i, l) in f.lines.iter().enumerate() {
        if i > 0 {
            out.extend(if f.crlf { &b"\r\n"[..] } else { b"\n" });
        }
        match l {
            Line::Text(t) => out.extend(json!({ "text": t }).to_string().into_bytes()),
            Line::Pair(i, t) => {
                let v = match t {
                    Some(t) => json!({"input": i, "target": t}),
                    None => json!({ "input": i }),
                };
                out.extend(v.to_string().into_bytes());
            }
            Line::Json(v) => out.extend(v.to_string().into_bytes()),
            Line::Raw(b) => out.extend(b),
            Line::Blank(s) => out.extend(s.as_bytes()),
        }
    }
    if f.trailing_newline {
        out.extend(if f.crlf { &b"\r\n"[..] } else { b"\n" });
    }
    out
}

/// What the module documents: the samples, or `Err((line, reason))` (`line` 0: the file).
fn expected(
    bytes: &[u8],
    family: Family,
    limit: usize,
) -> Result<Vec<Sample>, (usize, &'static str)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| (i + 1, "not valid UTF-8"))?;
        if !text.trim().is_empty() {
            lines.push((i + 1, text.to_string()));
        }
    }
    let mut samples = Vec::new();
    for (n, text) in lines {
        if samples.len() >= limit {
            break;
        }
        let v: Value = serde_json::from_str(&text).map_err(|_| (n, "not a JSON object"))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        samples.push(match (s("input"), s("target"), s("text")) {
            (Some(input), target, _) => Sample::Seq2Seq {
                input,
                target: target.unwrap_or_default(),
            },
            (None, _, Some(t)) => Sample::Text(t),
            _ => return Err((n, "expected a string field")),
        });
    }
    if samples.is_empty() {
        return Err((0, "has no samples"));
    }
    if family != Family::T5 && matches!(samples[0], Sample::Seq2Seq { .. }) {
        return Err((0, "are for T5"));
    }
    Ok(samples)
}

fn tokenize(tok: &TextTokenizer, samples: &[Sample]) {
    let texts: Vec<&str> = samples
        .iter()
        .flat_map(|s| match s {
            Sample::Text(t) => vec![t.as_str()],
            Sample::Seq2Seq { input, target } => vec![input.as_str(), target.as_str()],
            Sample::Image(_) => vec![],
        })
        .collect();
    // an error is a clear refusal; a panic is counted by the harness
    let _ = tok.batch(&texts);
}

#[test]
fn generated_jsonl_files_read_exactly_or_are_refused_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("calib");
    std::fs::create_dir(&dir).unwrap();
    let tok_path = tmp.path().join("tokenizer.json");
    std::fs::write(&tok_path, tokenizer_json(true).to_string()).unwrap();
    let mut tally = Tally::new("JSONL calibration files (pmq-pipeline calib::read_samples)");
    // truncation lengths: BERT's [CLS] … [SEP] do not fit in less than 2
    let mut tokenizers: Vec<TextTokenizer> = Vec::new();
    for max_len in [0, 1, 2, 3, 8, 64] {
        tally.case(
            &format!("tokenizer max_len {max_len}"),
            &[tmp.path()],
            || match TextTokenizer::from_file(&tok_path, max_len) {
                Ok(t) if max_len >= 2 => {
                    tokenizers.push(t);
                    Ok(Outcome::Accepted)
                }
                Ok(_) => Err(format!("max_len {max_len} accepted")),
                Err(e) if max_len < 2 => {
                    refused_naming(&e.to_string(), &[&tok_path.display().to_string()])
                }
                Err(e) => Err(format!("max_len {max_len} refused: {e}")),
            },
        );
    }
    let mut runner = runner(5000);
    let strategy = (
        jsonl_file(),
        prop::sample::select(vec![Family::Bert, Family::Llama, Family::T5]),
        1usize..8,
        0..tokenizers.len(),
    );
    for k in 0..runner.config().cases {
        let (file, family, limit, t) = draw(&mut runner, &strategy);
        let bytes = render(&file);
        let path = dir.join(format!("task{k}.jsonl"));
        std::fs::write(&path, &bytes).unwrap();
        let spec = CalibSpec {
            task: format!("t{k}"),
            path: path.clone(),
        };
        let label = format!(
            "case {k}: {family:?} limit {limit} {:?}",
            String::from_utf8_lossy(&bytes)
        );
        tally.case(&label, &[tmp.path()], || {
            let p = path.display().to_string();
            match (
                read_samples(&spec, family, limit),
                expected(&bytes, family, limit),
            ) {
                (Ok(got), Ok(want)) if got == want => {
                    tokenize(&tokenizers[t], &got);
                    Ok(Outcome::Accepted)
                }
                (Ok(got), Ok(want)) => Err(format!("read {got:?}, expected {want:?}")),
                (Ok(got), Err(why)) => Err(format!("read {got:?}, expected a refusal {why:?}")),
                (Err(e), Ok(want)) => Err(format!("refused ({e:#}), expected {want:?}")),
                (Err(e), Err((line, why))) => {
                    let msg = format!("{e:#}");
                    if line == 0 {
                        refused_naming(&msg, &[&p, why])
                    } else {
                        refused_naming(&msg, &[&format!("{p}:{line}:"), why])
                    }
                }
            }
        });
        std::fs::remove_file(&path).unwrap();
    }
    assert!(tally.accepted() > 0 && tally.refused() > 0);
    tally.finish();
}

// ---------------------------------------------------------------------------------------------
// Image lists (CLIP) and TASK=FILE arguments.

#[test]
fn image_lists_and_task_arguments_are_read_or_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let images = root.join("images");
    std::fs::create_dir(&images).unwrap();
    for n in ["a.png", "b.jpg", "c.jpeg"] {
        std::fs::write(images.join(n), b"not decoded here").unwrap();
    }
    std::fs::create_dir(images.join("d.png")).unwrap(); // a directory named like an image
    let mut tally = Tally::new("image lists and TASK=FILE (pmq-pipeline calib)");
    let mut runner = runner(1000);
    let entry = prop::sample::select(vec![
        "images/a.png",
        "images/b.jpg",
        "images/c.jpeg",
        "images/d.png",
        "images/missing.png",
        "  images/a.png  ",
        "",
        "   ",
        "/nonexistent/x.png",
        "images",
        "../x.png",
        "images/a.png\r",
    ]);
    let strategy = (
        prop::collection::vec(entry, 0..6),
        prop_oneof![3 => Just(None), 1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Some)],
        1usize..5,
    );
    let list = root.join("list.txt");
    for k in 0..runner.config().cases {
        let (entries, raw, limit) = draw(&mut runner, &strategy);
        let bytes = raw.unwrap_or_else(|| entries.join("\n").into_bytes());
        std::fs::write(&list, &bytes).unwrap();
        let spec = CalibSpec {
            task: "img".into(),
            path: list.clone(),
        };
        let label = format!(
            "case {k}: limit {limit} {:?}",
            String::from_utf8_lossy(&bytes)
        );
        tally.case(&label, &[root], || {
            let l = list.display().to_string();
            let want: Result<Vec<std::path::PathBuf>, String> = match std::str::from_utf8(&bytes) {
                Err(_) => Err(l.clone()),
                Ok(text) => {
                    let paths: Vec<_> = text
                        .lines()
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .take(limit)
                        .map(|x| root.join(x))
                        .collect();
                    match paths.iter().find(|p| !p.is_file()) {
                        Some(p) => Err(p.display().to_string()),
                        None if paths.is_empty() => Err(l.clone()),
                        None => Ok(paths),
                    }
                }
            };
            match (read_samples(&spec, Family::ClipVision, limit), want) {
                (Ok(got), Ok(want)) => {
                    let want: Vec<Sample> = want.into_iter().map(Sample::Image).collect();
                    if got == want {
                        Ok(Outcome::Accepted)
                    } else {
                        Err(format!("read {got:?}, expected {want:?}"))
                    }
                }
                (Ok(got), Err(w)) => Err(format!("read {got:?}, expected a refusal naming {w}")),
                (Err(e), Ok(want)) => Err(format!("refused ({e:#}), expected {want:?}")),
                (Err(e), Err(named)) => refused_naming(&format!("{e:#}"), &[&named, &l]),
            }
        });
    }
    // TASK=FILE: split at the first `=`, both parts non-empty
    let arg = "[a-z=é/. ]{0,12}";
    let mut runner2 = pmq_testkit::fault::runner(1000);
    for k in 0..runner2.config().cases {
        let s = draw(&mut runner2, &arg);
        tally.case(&format!("spec {k}: {s:?}"), &[root], || {
            let want = s
                .split_once('=')
                .filter(|(t, p)| !t.is_empty() && !p.is_empty());
            match (CalibSpec::from_str(&s), want) {
                (Ok(spec), Some((t, p))) if spec.task == t && spec.path == Path::new(p) => {
                    Ok(Outcome::Accepted)
                }
                (Err(e), None) => refused_naming(&e, &[&format!("{s:?}"), "TASK=FILE"]),
                (got, want) => Err(format!("{got:?}, expected {want:?}")),
            }
        });
    }
    assert!(tally.accepted() > 0 && tally.refused() > 0);
    tally.finish();
}
