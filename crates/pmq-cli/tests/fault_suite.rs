//! Fault suite of the `pmq` commands: a table of bad inputs for `quantize`, `merge`, `solve`,
//! `compare` and `eval` (missing, empty and corrupt model directories, bad configs, NaN/±inf
//! weights, wrong shapes and dtypes, sharded indexes leaving the directory, GPTQ checkpoints
//! where float weights are needed and corrupt ones where they are read, bad calibration and text
//! files, bad experts, layer files and heads, bad `--out`/`--json`, bad flags), each run as a
//! user runs it.
//!
//! Every case must: exit with a failure status (not 0, not a panic's 101, not a signal), print an
//! error naming the offending file, tensor, field or flag, leave nothing at the output path and
//! no debris (`.tmp-`, `.old-`, `.pmq-merged-` or anything else) next to it, in the inputs or in
//! `$TMPDIR`, and leave every input file byte-identical (the input tree is hashed after every
//! case). The figures are printed per command.

use pmq_io::{encode_f32, write_safetensors, Dtype, TensorStore, INDEX_FILE};
use pmq_testkit::fault::{Outcome, Tally};
use pmq_testkit::{write_calib, write_model, write_perturbed, write_tiny_bert, Fam, TinyBert};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Runs `pmq ARGS` with `TMPDIR=tmpdir`; returns (exit code, stderr).
fn pmq(a: &[String], tmpdir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pmq"))
        .args(a)
        .env("PMQ_LOG", "warn")
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::null())
        .output()
        .expect("the pmq binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(path, v.to_string()).unwrap();
}

type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// A layer file's tensors before encoding: name, dtype, shape, values.
type LayerTensors = Vec<(&'static str, Dtype, Vec<usize>, Vec<f32>)>;

/// Rewrites `dir/file` with `f` applied to every tensor (`false`: the tensor is dropped).
fn rewrite(dir: &Path, file: &str, mut f: impl FnMut(&mut Tensor) -> bool) {
    let path = dir.join(file);
    let store = TensorStore::open_file(&path).unwrap();
    let tensors: Vec<Tensor> = store
        .names()
        .into_iter()
        .filter_map(|n| {
            let i = store.info(&n).unwrap().clone();
            let mut t = (
                n.clone(),
                i.dtype,
                i.shape,
                store.raw_bytes(&n).unwrap().to_vec(),
            );
            f(&mut t).then_some(t)
        })
        .collect();
    drop(store);
    write_safetensors(&path, &tensors, None).unwrap();
}

/// Sets element `i` of the float tensor `name` to `v`.
fn poison(dir: &Path, file: &str, name: &str, i: usize, v: f32) {
    rewrite(dir, file, |t| {
        if t.0 == name {
            let mut vals = pmq_io::decode_f32(t.1, &t.3).unwrap();
            vals[i] = v;
            t.3 = encode_f32(t.1, &vals).unwrap();
        }
        true
    });
}

fn tensor_names(dir: &Path) -> Vec<String> {
    TensorStore::open_dir(dir).unwrap().names()
}

/// One row of the table.
struct Case {
    group: &'static str,
    name: &'static str,
    args: Vec<String>,
    /// The output the command was asked to write: must not exist afterwards.
    out: Option<PathBuf>,
    /// What stderr must contain.
    needles: Vec<String>,
}

fn add(
    cases: &mut Vec<Case>,
    group: &'static str,
    name: &'static str,
    args: Vec<String>,
    out: Option<PathBuf>,
    needles: &[&str],
) {
    cases.push(Case {
        group,
        name,
        args,
        out,
        needles: needles.iter().map(|n| n.to_string()).collect(),
    })
}

/// Builds the inputs under `inputs` and returns the table; outputs go under `outs`.
fn table(inputs: &Path, outs: &Path) -> Vec<Case> {
    let d = |n: &str| inputs.join(n);
    let out = |n: &str| outs.join(n);
    let mut cases = Vec::new();

    // ---- fixtures: a BERT base, two experts, a merged model, calibration; a Llama
    let (base, model) = (d("base"), d("model"));
    write_model(Fam::Bert, &base, 1);
    write_perturbed(Fam::Bert, &model, 1, 50, 0.01);
    let experts: Vec<PathBuf> = (0..2)
        .map(|i| {
            let e = d(&format!("expert{i}"));
            write_perturbed(Fam::Bert, &e, 1, 100 + i as u64, 0.05);
            e
        })
        .collect();
    let calib: Vec<String> = (0..2)
        .map(|i| write_calib(Fam::Bert, inputs, &format!("t{i}"), 8, 7 + i as u64))
        .collect();
    let llama = d("llama");
    write_model(Fam::LlamaGqa, &llama, 1);
    let names = tensor_names(&model);
    let query = names
        .iter()
        .find(|n| n.ends_with("layer.0.attention.self.query.weight"))
        .unwrap()
        .clone();
    let word = names
        .iter()
        .find(|n| n.ends_with("word_embeddings.weight"))
        .unwrap()
        .clone();
    let ln_bias = names
        .iter()
        .find(|n| n.ends_with("layer.1.output.LayerNorm.bias"))
        .unwrap()
        .clone();
    // a GPTQ checkpoint of the model, made by pmq itself
    let gptq = d("gptq");
    let (code, err) = pmq(
        &args(&[
            "quantize",
            "--model",
            &s(&model),
            "--method",
            "rtn",
            "--out",
            &s(&gptq),
            "--group-size",
            "32",
        ]),
        outs,
    );
    assert_eq!(code, Some(0), "making the GPTQ fixture: {err}");
    let scales = tensor_names(&gptq)
        .into_iter()
        .find(|n| n.ends_with("query.scales"))
        .unwrap();
    let g_idx = scales.replace(".scales", ".g_idx");

    // ---- quantize --model
    let q = |model: &Path, method: &str, o: &Path, extra: &[String]| {
        let mut a = args(&[
            "quantize",
            "--model",
            &s(model),
            "--method",
            method,
            "--out",
            &s(o),
            "--group-size",
            "32",
            "--batch-size",
            "4",
        ]);
        a.extend(extra.iter().cloned());
        a
    };
    let with_calib = |c: &[String]| -> Vec<String> {
        c.iter()
            .flat_map(|c| ["--calib".to_string(), c.clone()])
            .collect()
    };
    let with_experts = |e: &[&Path], c: &[String]| -> Vec<String> {
        let mut v: Vec<String> = e
            .iter()
            .flat_map(|e| ["--expert".to_string(), s(e)])
            .collect();
        v.extend(with_calib(c));
        v
    };
    let g = "quantize";
    // bad model directories
    let bad = d("q-missing");
    add(
        &mut cases,
        g,
        "model directory missing",
        q(&bad, "rtn", &out("q1"), &[]),
        Some(out("q1")),
        &[&s(&bad)],
    );
    let bad = d("q-empty");
    std::fs::create_dir(&bad).unwrap();
    add(
        &mut cases,
        g,
        "empty model directory",
        q(&bad, "rtn", &out("q2"), &[]),
        Some(out("q2")),
        &[&s(&bad.join("config.json"))],
    );
    let bad = d("q-noconfig");
    copy_dir(&model, &bad);
    std::fs::remove_file(bad.join("config.json")).unwrap();
    add(
        &mut cases,
        g,
        "no config.json",
        q(&bad, "rtn", &out("q3"), &[]),
        Some(out("q3")),
        &[&s(&bad.join("config.json"))],
    );
    let bad = d("q-noweights");
    copy_dir(&model, &bad);
    std::fs::remove_file(bad.join("model.safetensors")).unwrap();
    add(
        &mut cases,
        g,
        "no weights",
        q(&bad, "rtn", &out("q4"), &[]),
        Some(out("q4")),
        &["no *.safetensors", &s(&bad)],
    );
    let bad = d("q-badjson");
    copy_dir(&model, &bad);
    std::fs::write(bad.join("config.json"), "{\"hidden_size\": 64,").unwrap();
    add(
        &mut cases,
        g,
        "config not JSON",
        q(&bad, "rtn", &out("q5"), &[]),
        Some(out("q5")),
        &[&s(&bad.join("config.json")), "invalid JSON"],
    );
    let bad = d("q-cfgarray");
    copy_dir(&model, &bad);
    std::fs::write(bad.join("config.json"), "[1, 2]").unwrap();
    add(
        &mut cases,
        g,
        "config not an object",
        q(&bad, "rtn", &out("q6"), &[]),
        Some(out("q6")),
        &["config.json", "expected a JSON object"],
    );
    for (name, field, value) in [
        ("config hidden_size 2^64-1", "hidden_size", json!(u64::MAX)),
        ("config hidden_size \"NaN\"", "hidden_size", json!("NaN")),
        ("config hidden_size 0", "hidden_size", json!(0)),
        (
            "config num_hidden_layers 1000",
            "num_hidden_layers",
            json!(1000),
        ),
        (
            "config num_attention_heads 7",
            "num_attention_heads",
            json!(7),
        ),
        (
            "config layer_norm_eps \"NaN\"",
            "layer_norm_eps",
            json!("NaN"),
        ),
        ("config vocab_size -1", "vocab_size", json!(-1)),
        (
            "config intermediate_size 1.5",
            "intermediate_size",
            json!(1.5),
        ),
        ("config hidden_act unknown", "hidden_act", json!("swiglu9")),
        (
            "config architectures unknown",
            "architectures",
            json!(["GPT2LMHeadModel"]),
        ),
    ] {
        let dir = d(&format!("q-cfg-{field}-{}", cases.len()));
        copy_dir(&model, &dir);
        edit_config(&dir, |c| {
            c.insert(field.into(), value);
        });
        let o = out(&format!("q-cfg{}", cases.len()));
        let needle = if field == "architectures" {
            "unknown architecture"
        } else {
            field
        };
        add(
            &mut cases,
            g,
            name,
            q(&dir, "rtn", &o, &[]),
            Some(o.clone()),
            &[&s(&dir.join("config.json")), needle],
        );
    }
    let bad = d("q-nan");
    copy_dir(&model, &bad);
    poison(&bad, "model.safetensors", &query, 5, f32::NAN);
    add(
        &mut cases,
        g,
        "NaN weight",
        q(&bad, "rtn", &out("q7"), &[]),
        Some(out("q7")),
        &[
            &format!("`{query}`"),
            "NaN",
            &s(&bad.join("model.safetensors")),
        ],
    );
    let bad = d("q-inf");
    copy_dir(&model, &bad);
    poison(&bad, "model.safetensors", &word, 0, f32::INFINITY);
    add(
        &mut cases,
        g,
        "infinite embedding",
        q(&bad, "gptq", &out("q8"), &with_calib(&calib[..1])),
        Some(out("q8")),
        &[&format!("`{word}`"), "inf"],
    );
    let bad = d("q-trunc");
    copy_dir(&model, &bad);
    let bytes = std::fs::read(bad.join("model.safetensors")).unwrap();
    std::fs::write(bad.join("model.safetensors"), &bytes[..bytes.len() - 7]).unwrap();
    add(
        &mut cases,
        g,
        "truncated weights",
        q(&bad, "rtn", &out("q9"), &[]),
        Some(out("q9")),
        &[
            &s(&bad.join("model.safetensors")),
            "not a valid safetensors file",
        ],
    );
    let bad = d("q-header");
    copy_dir(&model, &bad);
    let mut bytes = std::fs::read(bad.join("model.safetensors")).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(bad.join("model.safetensors"), &bytes).unwrap();
    add(
        &mut cases,
        g,
        "header length 2^64-1",
        q(&bad, "rtn", &out("q10"), &[]),
        Some(out("q10")),
        &[&s(&bad.join("model.safetensors"))],
    );
    let bad = d("q-zero");
    copy_dir(&model, &bad);
    std::fs::write(bad.join("model.safetensors"), b"").unwrap();
    add(
        &mut cases,
        g,
        "empty weights file",
        q(&bad, "rtn", &out("q11"), &[]),
        Some(out("q11")),
        &[&s(&bad.join("model.safetensors"))],
    );
    let bad = d("q-shape");
    copy_dir(&model, &bad);
    rewrite(&bad, "model.safetensors", |t| {
        if t.0 == query {
            t.2 = vec![t.2[1], t.2[0] / 2, 2];
        }
        true
    });
    add(
        &mut cases,
        g,
        "wrong tensor shape",
        q(&bad, "rtn", &out("q12"), &[]),
        Some(out("q12")),
        &[&format!("`{query}`"), "expected shape"],
    );
    let bad = d("q-dtype");
    copy_dir(&model, &bad);
    rewrite(&bad, "model.safetensors", |t| {
        if t.0 == query {
            t.1 = Dtype::I32;
        }
        true
    });
    add(
        &mut cases,
        g,
        "integer weight",
        q(&bad, "rtn", &out("q13"), &[]),
        Some(out("q13")),
        &[&format!("`{query}`"), "dtype"],
    );
    let bad = d("q-missing-tensor");
    copy_dir(&model, &bad);
    rewrite(&bad, "model.safetensors", |t| t.0 != ln_bias);
    add(
        &mut cases,
        g,
        "tensor missing",
        q(&bad, "rtn", &out("q14"), &[]),
        Some(out("q14")),
        &[&format!("`{ln_bias}`"), "not found"],
    );
    // sharded checkpoints
    let shard = |dir: &Path, map: Value| {
        copy_dir(&model, dir);
        std::fs::rename(
            dir.join("model.safetensors"),
            dir.join("model-00001-of-00001.safetensors"),
        )
        .unwrap();
        std::fs::write(
            dir.join(INDEX_FILE),
            json!({"metadata": {}, "weight_map": map}).to_string(),
        )
        .unwrap();
    };
    let all = |file: &str| -> Value {
        names
            .iter()
            .map(|n| (n.clone(), json!(file)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    std::fs::create_dir_all(d("outside")).unwrap();
    std::fs::copy(model.join("model.safetensors"), d("outside/w.safetensors")).unwrap();
    for (name, target, needle) in [
        (
            "index entry ../",
            "../outside/w.safetensors",
            "not a file inside",
        ),
        ("index entry absolute", "/etc/passwd", "not a file inside"),
        (
            "index entry missing shard",
            "model-00002-of-00002.safetensors",
            "does not exist",
        ),
    ] {
        let dir = d(&format!("q-index-{}", cases.len()));
        let mut map = all("model-00001-of-00001.safetensors");
        map[&query] = json!(target);
        shard(&dir, map);
        let o = out(&format!("q-index{}", cases.len()));
        add(
            &mut cases,
            g,
            name,
            q(&dir, "rtn", &o, &[]),
            Some(o.clone()),
            &[&s(&dir.join(INDEX_FILE)), needle, &format!("`{query}`")],
        );
    }
    let bad = d("q-index-notin");
    let mut map = all("model-00001-of-00001.safetensors");
    map["not.a.tensor"] = json!("model-00001-of-00001.safetensors");
    shard(&bad, map);
    add(
        &mut cases,
        g,
        "index entry not in its shard",
        q(&bad, "rtn", &out("q15"), &[]),
        Some(out("q15")),
        &[&s(&bad.join(INDEX_FILE)), "does not contain it"],
    );
    let bad = d("q-index-nomap");
    copy_dir(&model, &bad);
    std::fs::write(bad.join(INDEX_FILE), "{\"metadata\": {}}").unwrap();
    add(
        &mut cases,
        g,
        "index without weight_map",
        q(&bad, "rtn", &out("q16"), &[]),
        Some(out("q16")),
        &[&s(&bad.join(INDEX_FILE)), "weight_map"],
    );
    let bad = d("q-dup");
    copy_dir(&model, &bad);
    std::fs::rename(bad.join("model.safetensors"), bad.join("a.safetensors")).unwrap();
    std::fs::copy(bad.join("a.safetensors"), bad.join("b.safetensors")).unwrap();
    add(
        &mut cases,
        g,
        "tensors stored twice",
        q(&bad, "rtn", &out("q17"), &[]),
        Some(out("q17")),
        &[
            "stored twice",
            &s(&bad.join("a.safetensors")),
            &s(&bad.join("b.safetensors")),
        ],
    );
    add(
        &mut cases,
        g,
        "GPTQ checkpoint as model",
        q(&gptq, "rtn", &out("q18"), &[]),
        Some(out("q18")),
        &[&s(&gptq), "GPTQ-quantized"],
    );
    add(
        &mut cases,
        g,
        "a file as model",
        q(&model.join("config.json"), "rtn", &out("q19"), &[]),
        Some(out("q19")),
        &[&s(&model.join("config.json"))],
    );
    // bad calibration
    let cal = |name: &str, bytes: &[u8]| -> (String, PathBuf) {
        let p = d(name);
        std::fs::write(&p, bytes).unwrap();
        (format!("t0={}", s(&p)), p)
    };
    for (name, file, bytes, needle) in [
        (
            "calib invalid UTF-8",
            "c-utf8.jsonl",
            &b"{\"text\": \"ok\"}\n{\"text\": \"caf\xe9\"}\n"[..],
            ":2:",
        ),
        (
            "calib without text",
            "c-notext.jsonl",
            b"{\"txt\": \"the movie\"}\n",
            ":1:",
        ),
        (
            "calib text a number",
            "c-number.jsonl",
            b"{\"text\": 5}\n",
            ":1:",
        ),
        (
            "calib not JSON",
            "c-notjson.jsonl",
            b"\n\nthe movie was great\n",
            ":3:",
        ),
        ("calib empty", "c-empty.jsonl", b"", "has no samples"),
        (
            "calib blank lines",
            "c-blank.jsonl",
            b"\n  \r\n\t\n",
            "has no samples",
        ),
        (
            "calib T5 pairs",
            "c-pairs.jsonl",
            b"{\"input\": \"a\", \"target\": \"b\"}\n",
            "are for T5",
        ),
        (
            "calib BOM then garbage",
            "c-bom.jsonl",
            b"\xEF\xBB\xBF\xff\xfe\n",
            ":1:",
        ),
    ] {
        let (spec, p) = cal(file, bytes);
        let o = out(&format!("q-cal{}", cases.len()));
        add(
            &mut cases,
            g,
            name,
            q(&model, "gptq", &o, &with_calib(&[spec])),
            Some(o.clone()),
            &[&s(&p), needle],
        );
    }
    add(
        &mut cases,
        g,
        "calib file missing",
        q(
            &model,
            "gptq",
            &out("q20"),
            &with_calib(&[format!("t0={}", s(&d("nope.jsonl")))]),
        ),
        Some(out("q20")),
        &["not found", &s(&d("nope.jsonl"))],
    );
    add(
        &mut cases,
        g,
        "calib without TASK=",
        q(
            &model,
            "gptq",
            &out("q21"),
            &["--calib".into(), s(&d("t0.jsonl"))],
        ),
        Some(out("q21")),
        &["TASK=FILE"],
    );
    add(
        &mut cases,
        g,
        "calib is a directory",
        q(
            &model,
            "gptq",
            &out("q22"),
            &with_calib(&[format!("t0={}", s(&d("outside")))]),
        ),
        Some(out("q22")),
        &[&s(&d("outside"))],
    );
    // bad experts
    let e0 = experts[0].as_path();
    add(
        &mut cases,
        g,
        "2 experts, 1 calib",
        q(
            &model,
            "epmq",
            &out("q23"),
            &with_experts(&[e0, &experts[1]], &calib[..1]),
        ),
        Some(out("q23")),
        &["2 experts but 1 calibration"],
    );
    add(
        &mut cases,
        g,
        "expert missing",
        q(
            &model,
            "epmq",
            &out("q24"),
            &with_experts(&[e0, &d("nope")], &calib),
        ),
        Some(out("q24")),
        &[&s(&d("nope"))],
    );
    add(
        &mut cases,
        g,
        "expert of another family",
        q(
            &model,
            "epmq",
            &out("q25"),
            &with_experts(&[e0, &llama], &calib),
        ),
        Some(out("q25")),
        &["expert 2 (", &s(&llama)],
    );
    add(
        &mut cases,
        g,
        "GPTQ expert",
        q(
            &model,
            "epmq",
            &out("q26"),
            &with_experts(&[e0, &gptq], &calib),
        ),
        Some(out("q26")),
        &["GPTQ-quantized", &s(&gptq)],
    );
    let bad = d("e-nan");
    copy_dir(e0, &bad);
    poison(&bad, "model.safetensors", &query, 1, f32::NAN);
    add(
        &mut cases,
        g,
        "expert with a NaN weight",
        q(
            &model,
            "epmq",
            &out("q27"),
            &with_experts(&[&bad, &experts[1]], &calib),
        ),
        Some(out("q27")),
        &[
            &format!("`{query}`"),
            "NaN",
            &s(&bad.join("model.safetensors")),
        ],
    );
    let bad = d("e-shape");
    write_tiny_bert(
        &bad,
        TinyBert {
            hidden: 32,
            heads: 4,
            ..TinyBert::default()
        },
        3,
    );
    add(
        &mut cases,
        g,
        "expert of another width",
        q(
            &model,
            "epmq",
            &out("q28"),
            &with_experts(&[e0, &bad], &calib),
        ),
        Some(out("q28")),
        &[&s(&bad)],
    );
    // flags
    for (name, flag, value, needle) in [
        ("--bits 5", "--bits", "5", "bits"),
        ("--group-size 0", "--group-size", "0", "--group-size"),
        ("--damp NaN", "--damp", "NaN", "--damp"),
        ("--alpha -1", "--alpha", "-1", "--alpha"),
        ("--block-size 0", "--block-size", "0", "--block-size"),
        ("--batch-size 0", "--batch-size", "0", "--batch-size"),
        (
            "--samples-per-task 0",
            "--samples-per-task",
            "0",
            "--samples-per-task",
        ),
        ("--max-seq-len 0", "--max-seq-len", "0", "--max-seq-len"),
        ("--max-seq-len 1", "--max-seq-len", "1", "tokenizer.json"),
    ] {
        let o = out(&format!("q-flag{}", cases.len()));
        let mut extra = with_experts(&[e0, &experts[1]], &calib);
        extra.extend(args(&[flag, value]));
        add(
            &mut cases,
            g,
            name,
            q(&model, "epmq", &o, &extra),
            Some(o.clone()),
            &[needle],
        );
    }
    add(
        &mut cases,
        g,
        "--awq-grid 0",
        q(
            &model,
            "awq",
            &out("q29"),
            &[&with_calib(&calib[..1])[..], &args(&["--awq-grid", "0"])].concat(),
        ),
        Some(out("q29")),
        &["--awq-grid"],
    );
    add(
        &mut cases,
        g,
        "--method unknown",
        q(&model, "bogus", &out("q30"), &[]),
        Some(out("q30")),
        &["--method"],
    );
    // bad --out
    let file = d("a-file");
    std::fs::write(&file, b"x").unwrap();
    add(
        &mut cases,
        g,
        "--out is a file",
        q(&model, "rtn", &file, &[]),
        None,
        &["not a directory", &s(&file)],
    );
    add(
        &mut cases,
        g,
        "--out inside the model",
        q(&model, "rtn", &model.join("q"), &[]),
        Some(model.join("q")),
        &["lies inside input"],
    );
    add(
        &mut cases,
        g,
        "--out is the model",
        q(&model, "rtn", &model, &["--overwrite".into()]),
        None,
        &["is input"],
    );
    add(
        &mut cases,
        g,
        "--out contains an input",
        q(&model, "rtn", inputs, &["--overwrite".into()]),
        None,
        &["contains input"],
    );
    let existing = d("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("keep"), b"keep").unwrap();
    add(
        &mut cases,
        g,
        "--out exists",
        q(&model, "rtn", &existing, &[]),
        None,
        &["--overwrite"],
    );
    add(
        &mut cases,
        g,
        "--out /",
        q(&model, "rtn", Path::new("/"), &["--overwrite".into()]),
        None,
        &["does not name a new directory"],
    );
    let link = d("link");
    std::os::unix::fs::symlink(d("outside"), &link).unwrap();
    add(
        &mut cases,
        g,
        "--out a symbolic link",
        q(&model, "rtn", &link, &["--overwrite".into()]),
        None,
        &["symbolic link"],
    );
    add(
        &mut cases,
        g,
        "--out under a file",
        q(&model, "rtn", &file.join("sub"), &[]),
        None,
        &["not a directory"],
    );
    // --merge
    let qm = |base: &Path, ex: &[&Path], o: &Path, extra: &[&str]| {
        let mut a = args(&[
            "quantize",
            "--merge",
            "task-arithmetic",
            "--base",
            &s(base),
            "--method",
            "rtn",
            "--out",
            &s(o),
        ]);
        a.extend(ex.iter().flat_map(|e| ["--expert".to_string(), s(e)]));
        a.extend(args(extra));
        a
    };
    let nan_expert = d("e-nan");
    add(
        &mut cases,
        g,
        "--merge with a NaN expert",
        qm(&base, &[e0, &nan_expert], &out("q31"), &[]),
        Some(out("q31")),
        &[&format!("`{query}`"), "non-finite"],
    );
    add(
        &mut cases,
        g,
        "--merge base missing",
        qm(&d("nope"), &[e0], &out("q32"), &[]),
        Some(out("q32")),
        &[&s(&d("nope"))],
    );
    add(
        &mut cases,
        g,
        "--merge GPTQ base",
        qm(&gptq, &[e0], &out("q33"), &[]),
        Some(out("q33")),
        &["GPTQ-quantized"],
    );
    add(
        &mut cases,
        g,
        "--merge --lambda NaN",
        qm(&base, &[e0], &out("q34"), &["--lambda", "NaN"]),
        Some(out("q34")),
        &["lambda"],
    );
    add(
        &mut cases,
        g,
        "--merge and --model",
        [
            qm(&base, &[e0], &out("q35"), &[]),
            args(&["--model", &s(&model)]),
        ]
        .concat(),
        Some(out("q35")),
        &["--model", "--merge"],
    );

    // ---- merge
    let g = "merge";
    let m = |base: &Path, ex: &[&Path], method: &str, o: &Path, extra: &[&str]| {
        let mut a = args(&[
            "merge",
            "--base",
            &s(base),
            "--method",
            method,
            "--out",
            &s(o),
        ]);
        a.extend(ex.iter().flat_map(|e| ["--expert".to_string(), s(e)]));
        a.extend(args(extra));
        a
    };
    let e1 = experts[1].as_path();
    add(
        &mut cases,
        g,
        "base missing",
        m(&d("nope"), &[e0], "average", &out("m1"), &[]),
        Some(out("m1")),
        &[&s(&d("nope"))],
    );
    add(
        &mut cases,
        g,
        "expert missing",
        m(&base, &[e0, &d("nope")], "average", &out("m2"), &[]),
        Some(out("m2")),
        &[&s(&d("nope"))],
    );
    let bad = d("b-nan");
    copy_dir(&base, &bad);
    poison(&bad, "model.safetensors", &word, 3, f32::NAN);
    add(
        &mut cases,
        g,
        "base with a NaN",
        m(&bad, &[e0], "task-arithmetic", &out("m3"), &[]),
        Some(out("m3")),
        &[&format!("`{word}`"), "non-finite"],
    );
    add(
        &mut cases,
        g,
        "expert with a NaN",
        m(&base, &[e0, &nan_expert], "ties", &out("m4"), &[]),
        Some(out("m4")),
        &[&format!("`{query}`"), "non-finite"],
    );
    let inf_expert = d("e-inf");
    copy_dir(e1, &inf_expert);
    poison(
        &inf_expert,
        "model.safetensors",
        &ln_bias,
        0,
        f32::NEG_INFINITY,
    );
    add(
        &mut cases,
        g,
        "expert with -inf",
        m(&base, &[e0, &inf_expert], "dare", &out("m5"), &[]),
        Some(out("m5")),
        &[&format!("`{ln_bias}`"), "non-finite"],
    );
    add(
        &mut cases,
        g,
        "expert of another width",
        m(&base, &[e0, &d("e-shape")], "average", &out("m6"), &[]),
        Some(out("m6")),
        &[&s(&d("e-shape"))],
    );
    add(
        &mut cases,
        g,
        "expert of another family",
        m(&base, &[e0, &llama], "average", &out("m7"), &[]),
        Some(out("m7")),
        &["expert 2 ("],
    );
    let bad = d("e-missing-tensor");
    copy_dir(e1, &bad);
    rewrite(&bad, "model.safetensors", |t| t.0 != ln_bias);
    add(
        &mut cases,
        g,
        "expert missing a tensor",
        m(&base, &[e0, &bad], "average", &out("m8"), &[]),
        Some(out("m8")),
        &[&format!("`{ln_bias}`")],
    );
    let bad = d("e-dtype");
    copy_dir(e1, &bad);
    rewrite(&bad, "model.safetensors", |t| {
        if t.0 == query {
            t.1 = Dtype::I32;
        }
        true
    });
    add(
        &mut cases,
        g,
        "expert with an integer weight",
        m(&base, &[e0, &bad], "average", &out("m9"), &[]),
        Some(out("m9")),
        &[&format!("`{query}`"), "I32"],
    );
    add(
        &mut cases,
        g,
        "expert truncated",
        m(&base, &[e0, &d("q-trunc")], "average", &out("m10"), &[]),
        Some(out("m10")),
        &[&s(&d("q-trunc").join("model.safetensors"))],
    );
    let escaping = cases
        .iter()
        .find(|c| c.name == "index entry ../")
        .map(|c| PathBuf::from(&c.args[2]))
        .unwrap();
    add(
        &mut cases,
        g,
        "expert index escaping",
        m(&base, &[e0, &escaping], "average", &out("m11"), &[]),
        Some(out("m11")),
        &[&s(&escaping.join(INDEX_FILE)), "not a file inside"],
    );
    add(
        &mut cases,
        g,
        "GPTQ expert",
        m(&base, &[e0, &gptq], "average", &out("m12"), &[]),
        Some(out("m12")),
        &["GPTQ-quantized"],
    );
    add(
        &mut cases,
        g,
        "--lambda NaN",
        m(
            &base,
            &[e0],
            "task-arithmetic",
            &out("m13"),
            &["--lambda", "NaN"],
        ),
        Some(out("m13")),
        &["lambda"],
    );
    add(
        &mut cases,
        g,
        "--density 2",
        m(&base, &[e0], "ties", &out("m14"), &["--density", "2"]),
        Some(out("m14")),
        &["density"],
    );
    add(
        &mut cases,
        g,
        "--dare-p 1",
        m(&base, &[e0], "dare", &out("m15"), &["--dare-p", "1"]),
        Some(out("m15")),
        &["dare-p"],
    );
    add(
        &mut cases,
        g,
        "--wudi-steps 0",
        m(&base, &[e0], "wudi", &out("m19"), &["--wudi-steps", "0"]),
        Some(out("m19")),
        &["wudi-steps"],
    );
    add(
        &mut cases,
        g,
        "--lambda with average",
        m(&base, &[e0], "average", &out("m16"), &["--lambda", "0.5"]),
        Some(out("m16")),
        &["--lambda does not apply"],
    );
    add(
        &mut cases,
        g,
        "--include [",
        m(&base, &[e0], "average", &out("m17"), &["--include", "["]),
        Some(out("m17")),
        &["invalid tensor pattern `[`"],
    );
    add(
        &mut cases,
        g,
        "--out is an expert",
        m(&base, &[e0], "average", e0, &["--overwrite"]),
        None,
        &["is input"],
    );
    add(
        &mut cases,
        g,
        "--out exists",
        m(&base, &[e0], "average", &existing, &[]),
        None,
        &["--overwrite"],
    );
    add(
        &mut cases,
        g,
        "no expert",
        args(&[
            "merge",
            "--base",
            &s(&base),
            "--method",
            "average",
            "--out",
            &s(&out("m18")),
        ]),
        Some(out("m18")),
        &["--expert"],
    );

    // ---- solve
    let g = "solve";
    let layer = |name: &str, tensors: LayerTensors| -> PathBuf {
        let p = d(name);
        let t: Vec<Tensor> = tensors
            .into_iter()
            .map(|(n, dt, sh, v)| (n.to_string(), dt, sh, encode_f32(Dtype::F32, &v).unwrap()))
            .collect();
        write_safetensors(&p, &t, None).unwrap();
        p
    };
    let (rows, cols) = (8, 16);
    let w = |seed: usize| -> Vec<f32> {
        (0..rows * cols)
            .map(|i| (((i + seed) * 37) % 17) as f32 / 17.0 - 0.5)
            .collect()
    };
    let h = |diag: f32| -> Vec<f32> {
        (0..cols * cols)
            .map(|i| if i / cols == i % cols { diag } else { 0.01 })
            .collect()
    };
    let f32t = Dtype::F32;
    let good: LayerTensors = vec![
        ("merged", f32t, vec![rows, cols], w(0)),
        ("hessian.0", f32t, vec![cols, cols], h(1.0)),
        ("hessian.1", f32t, vec![cols, cols], h(2.0)),
        ("expert.0", f32t, vec![rows, cols], w(1)),
        ("expert.1", f32t, vec![rows, cols], w(2)),
    ];
    let good_layer = layer("layer.safetensors", good.clone());
    let sv = |l: &Path, method: &str, o: &Path, extra: &[&str]| {
        let mut a = args(&[
            "solve",
            "--layer",
            &s(l),
            "--method",
            method,
            "--out",
            &s(o),
            "--group-size",
            "8",
        ]);
        a.extend(args(extra));
        a
    };
    let variant = |name: &str, f: &dyn Fn(&mut LayerTensors)| {
        let mut t = good.clone();
        f(&mut t);
        layer(name, t)
    };
    add(
        &mut cases,
        g,
        "layer file missing",
        sv(&d("nope.safetensors"), "gptq", &out("s1"), &[]),
        Some(out("s1")),
        &[&s(&d("nope.safetensors"))],
    );
    let trunc = d("layer-trunc.safetensors");
    let bytes = std::fs::read(&good_layer).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    add(
        &mut cases,
        g,
        "layer file truncated",
        sv(&trunc, "gptq", &out("s2"), &[]),
        Some(out("s2")),
        &[&s(&trunc), "not a valid safetensors"],
    );
    let p = variant("layer-nomerged.safetensors", &|t| {
        t.retain(|x| x.0 != "merged")
    });
    add(
        &mut cases,
        g,
        "no merged",
        sv(&p, "gptq", &out("s3"), &[]),
        Some(out("s3")),
        &["`merged`", "not found"],
    );
    let p = variant("layer-1d.safetensors", &|t| t[0].2 = vec![rows * cols]);
    add(
        &mut cases,
        g,
        "merged 1-D",
        sv(&p, "gptq", &out("s4"), &[]),
        Some(out("s4")),
        &["`merged`", "2-D"],
    );
    let p = variant("layer-nan.safetensors", &|t| t[0].3[7] = f32::NAN);
    add(
        &mut cases,
        g,
        "merged NaN",
        sv(&p, "rtn", &out("s5"), &[]),
        Some(out("s5")),
        &["\"merged\"", "non-finite"],
    );
    let p = variant("layer-hshape.safetensors", &|t| {
        t[1].2 = vec![cols / 2, cols * 2];
    });
    add(
        &mut cases,
        g,
        "hessian of the wrong shape",
        sv(&p, "gptq", &out("s6"), &[]),
        Some(out("s6")),
        &["\"hessian.0\"", "shape"],
    );
    let p = variant("layer-hnan.safetensors", &|t| t[2].3[3] = f32::INFINITY);
    add(
        &mut cases,
        g,
        "hessian with inf",
        sv(&p, "gptq", &out("s7"), &[]),
        Some(out("s7")),
        &["\"hessian.1\"", "non-finite"],
    );
    let p = variant("layer-gap.safetensors", &|t| t[2].0 = "hessian.2");
    add(
        &mut cases,
        g,
        "hessian indices with a gap",
        sv(&p, "gptq", &out("s8"), &[]),
        Some(out("s8")),
        &["hessian", "without gaps"],
    );
    let p = variant("layer-badindex.safetensors", &|t| t[2].0 = "hessian.x");
    add(
        &mut cases,
        g,
        "hessian index not a number",
        sv(&p, "gptq", &out("s9"), &[]),
        Some(out("s9")),
        &["\"hessian.x\"", "task index"],
    );
    let p = variant("layer-oneexpert.safetensors", &|t| {
        t.retain(|x| x.0 != "expert.1")
    });
    add(
        &mut cases,
        g,
        "epmq with 1 expert for 2 hessians",
        sv(&p, "epmq", &out("s10"), &[]),
        Some(out("s10")),
        &["one expert.<i> per hessian"],
    );
    let p = variant("layer-nohessian.safetensors", &|t| {
        t.retain(|x| !x.0.starts_with("hessian"))
    });
    add(
        &mut cases,
        g,
        "gptq without hessians",
        sv(&p, "gptq", &out("s11"), &[]),
        Some(out("s11")),
        &["needs at least one hessian"],
    );
    let p = variant("layer-zerocols.safetensors", &|t| {
        t.retain(|x| x.0 == "merged");
        t[0].2 = vec![rows, 0];
        t[0].3 = vec![];
    });
    add(
        &mut cases,
        g,
        "merged with 0 columns",
        sv(&p, "rtn", &out("s12"), &[]),
        Some(out("s12")),
        &["\"merged\"", "[8, 0]", "no weight to quantize"],
    );
    let p = variant("layer-zerorows.safetensors", &|t| {
        t.retain(|x| x.0 == "merged");
        t[0].2 = vec![0, cols];
        t[0].3 = vec![];
    });
    add(
        &mut cases,
        g,
        "merged with 0 rows",
        sv(&p, "rtn", &out("s13"), &[]),
        Some(out("s13")),
        &["\"merged\"", "[0, 16]", "no weight to quantize"],
    );
    let p = variant("layer-eshape.safetensors", &|t| t[3].2 = vec![cols, rows]);
    add(
        &mut cases,
        g,
        "expert of the wrong shape",
        sv(&p, "epmq", &out("s14"), &[]),
        Some(out("s14")),
        &["\"expert.0\"", "shape"],
    );
    add(
        &mut cases,
        g,
        "--out is the layer file",
        sv(&good_layer, "gptq", &good_layer, &["--overwrite"]),
        None,
        &["is the input layer file"],
    );
    add(
        &mut cases,
        g,
        "--out is a directory",
        sv(&good_layer, "gptq", &d("outside"), &[]),
        None,
        &["is a directory"],
    );
    add(
        &mut cases,
        g,
        "--out exists",
        sv(&good_layer, "gptq", &file, &[]),
        None,
        &["exists", "--overwrite"],
    );
    add(
        &mut cases,
        g,
        "--bits 5",
        sv(&good_layer, "gptq", &out("s15"), &["--bits", "5"]),
        Some(out("s15")),
        &["bits"],
    );
    add(
        &mut cases,
        g,
        "--group-size -2",
        sv(&good_layer, "gptq", &out("s16"), &["--group-size", "-2"]),
        Some(out("s16")),
        &["--group-size"],
    );
    add(
        &mut cases,
        g,
        "--method unknown",
        sv(&good_layer, "awq", &out("s17"), &[]),
        Some(out("s17")),
        &["--method"],
    );

    // ---- compare
    let g = "compare";
    let texts = d("texts.jsonl");
    std::fs::write(
        &texts,
        "{\"text\": \"the movie was great\"}\n{\"text\": \"disk full\"}\n",
    )
    .unwrap();
    let cmp = |m: &Path, r: &Path, t: &Path, extra: &[&str]| {
        let mut a = args(&[
            "compare",
            "--model",
            &s(m),
            "--reference",
            &s(r),
            "--texts",
            &s(t),
        ]);
        a.extend(args(extra));
        a
    };
    add(
        &mut cases,
        g,
        "model missing",
        cmp(&d("nope"), &model, &texts, &[]),
        None,
        &[&s(&d("nope")), "not a directory"],
    );
    add(
        &mut cases,
        g,
        "reference missing",
        cmp(&model, &d("nope"), &texts, &[]),
        None,
        &[&s(&d("nope"))],
    );
    add(
        &mut cases,
        g,
        "texts missing",
        cmp(&model, &base, &d("nope.jsonl"), &[]),
        None,
        &[&s(&d("nope.jsonl"))],
    );
    for (name, file, bytes, needle) in [
        (
            "texts invalid UTF-8",
            "x-utf8.jsonl",
            &b"{\"text\": \"ok\"}\n{\"text\": \"\xc3\x28\"}\n"[..],
            ":2:",
        ),
        (
            "texts without text",
            "x-notext.jsonl",
            b"{\"body\": \"ok\"}\n",
            ":1:",
        ),
        (
            "texts not JSON",
            "x-notjson.jsonl",
            b"{\"text\": \"ok\"}\nplain words\n",
            ":2:",
        ),
        ("texts empty", "x-empty.jsonl", b"\n\n", "has no texts"),
    ] {
        let p = d(file);
        std::fs::write(&p, bytes).unwrap();
        add(
            &mut cases,
            g,
            name,
            cmp(&model, &base, &p, &[]),
            None,
            &[&s(&p), needle],
        );
    }
    add(
        &mut cases,
        g,
        "model with a NaN weight",
        cmp(&d("q-nan"), &base, &texts, &[]),
        None,
        &[&format!("`{query}`"), "NaN"],
    );
    add(
        &mut cases,
        g,
        "model with a bad config",
        cmp(&d("q-badjson"), &base, &texts, &[]),
        None,
        &[&s(&d("q-badjson").join("config.json"))],
    );
    add(
        &mut cases,
        g,
        "model not BERT",
        cmp(&llama, &base, &texts, &[]),
        None,
        &["BERT"],
    );
    add(
        &mut cases,
        g,
        "reference of another width",
        cmp(&model, &d("e-shape"), &texts, &[]),
        None,
        &["hidden size"],
    );
    let bad = d("g-nanscale");
    copy_dir(&gptq, &bad);
    poison(&bad, "model.safetensors", &scales, 2, f32::NAN);
    add(
        &mut cases,
        g,
        "GPTQ model with a NaN scale",
        cmp(&bad, &model, &texts, &[]),
        None,
        &[
            &format!("`{scales}`"),
            "non-finite",
            &s(&bad.join("model.safetensors")),
        ],
    );
    let bad = d("g-gidx");
    copy_dir(&gptq, &bad);
    rewrite(&bad, "model.safetensors", |t| {
        if t.0 == g_idx {
            t.3[..4].copy_from_slice(&(-1i32).to_le_bytes());
        }
        true
    });
    add(
        &mut cases,
        g,
        "GPTQ model with g_idx -1",
        cmp(&bad, &model, &texts, &[]),
        None,
        &[
            &format!("`{g_idx}`"),
            "group -1",
            &s(&bad.join("model.safetensors")),
        ],
    );
    let bad = d("g-bits");
    copy_dir(&gptq, &bad);
    let qc = bad.join("quantize_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&qc).unwrap()).unwrap();
    v["bits"] = json!(4294967300u64);
    std::fs::write(&qc, v.to_string()).unwrap();
    add(
        &mut cases,
        g,
        "GPTQ model with bits 2^32+4",
        cmp(&bad, &model, &texts, &[]),
        None,
        &[&s(&qc), "bits"],
    );
    let bad = d("g-nobits");
    copy_dir(&gptq, &bad);
    let qc = bad.join("quantize_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&qc).unwrap()).unwrap();
    v["group_size"] = json!(0);
    std::fs::write(&qc, v.to_string()).unwrap();
    add(
        &mut cases,
        g,
        "GPTQ model with group_size 0",
        cmp(&bad, &model, &texts, &[]),
        None,
        &[&s(&qc), "group_size"],
    );
    add(
        &mut cases,
        g,
        "--max-seq-len 1",
        cmp(&model, &base, &texts, &["--max-seq-len", "1"]),
        None,
        &["tokenizer.json", "special tokens"],
    );
    add(
        &mut cases,
        g,
        "--max-texts 0",
        cmp(&model, &base, &texts, &["--max-texts", "0"]),
        None,
        &["--max-texts"],
    );
    add(
        &mut cases,
        g,
        "--batch-size 0",
        cmp(&model, &base, &texts, &["--batch-size", "0"]),
        None,
        &["--batch-size"],
    );

    // ---- eval (everything that fails before the testbed data is read)
    let g = "eval";
    let cache = d("cache");
    std::fs::create_dir(&cache).unwrap();
    let ev = |m: &Path, task: &str, extra: &[&str]| {
        let mut a = args(&[
            "eval",
            "--model",
            &s(m),
            "--cache",
            &s(&cache),
            "--task",
            task,
        ]);
        a.extend(args(extra));
        a
    };
    let head = d("head.safetensors");
    let labels = head_meta();
    let write_head = |p: &Path, w: Vec<f32>, meta: bool| {
        let t = vec![
            (
                "weight".to_string(),
                Dtype::F32,
                vec![2, 64],
                encode_f32(Dtype::F32, &w).unwrap(),
            ),
            (
                "bias".to_string(),
                Dtype::F32,
                vec![2],
                encode_f32(Dtype::F32, &[0.0, 0.0]).unwrap(),
            ),
        ];
        let meta = meta.then(|| labels.clone());
        write_safetensors(p, &t, meta).unwrap();
    };
    write_head(&head, vec![0.1; 128], true);
    add(
        &mut cases,
        g,
        "unknown task",
        ev(&model, &format!("nosuchtask={}", s(&head)), &[]),
        None,
        &["unknown task", "nosuchtask"],
    );
    add(
        &mut cases,
        g,
        "--task without =",
        ev(&model, "spam", &[]),
        None,
        &["TASK=HEAD"],
    );
    add(
        &mut cases,
        g,
        "head missing",
        ev(
            &model,
            &format!("spam={}", s(&d("nohead.safetensors"))),
            &[],
        ),
        None,
        &["does not exist", &s(&d("nohead.safetensors"))],
    );
    add(
        &mut cases,
        g,
        "head directory without a head",
        ev(&model, &format!("spam={}", s(&base)), &[]),
        None,
        &["does not exist", "pmq_head.safetensors"],
    );
    let bad = d("head-garbage.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"weight\": 1}").unwrap();
    add(
        &mut cases,
        g,
        "head garbage",
        ev(&model, &format!("spam={}", s(&bad)), &[]),
        None,
        &[&s(&bad)],
    );
    let bad = d("head-nometa.safetensors");
    write_head(&bad, vec![0.1; 128], false);
    add(
        &mut cases,
        g,
        "head without metadata",
        ev(&model, &format!("spam={}", s(&bad)), &[]),
        None,
        &[&s(&bad), "metadata"],
    );
    let bad = d("head-nan.safetensors");
    let mut w = vec![0.1; 128];
    w[9] = f32::NAN;
    write_head(&bad, w, true);
    add(
        &mut cases,
        g,
        "head with a NaN",
        ev(&model, &format!("spam={}", s(&bad)), &[]),
        None,
        &[&s(&bad), "non-finite"],
    );
    let spam = format!("spam={}", s(&head));
    add(
        &mut cases,
        g,
        "--json is a directory",
        ev(&model, &spam, &["--json", &s(&d("outside"))]),
        None,
        &["--json", "is a directory"],
    );
    add(
        &mut cases,
        g,
        "--json inside the model",
        ev(&model, &spam, &["--json", &s(&model.join("r.json"))]),
        Some(model.join("r.json")),
        &["--json", "lies inside input"],
    );
    add(
        &mut cases,
        g,
        "--json is the head",
        ev(&model, &spam, &["--json", &s(&head)]),
        None,
        &["--json", "is input"],
    );
    add(
        &mut cases,
        g,
        "--max-examples 0",
        ev(&model, &spam, &["--max-examples", "0"]),
        None,
        &["--max-examples"],
    );
    add(
        &mut cases,
        g,
        "--batch-size 0",
        ev(&model, &spam, &["--batch-size", "0"]),
        None,
        &["--batch-size"],
    );
    cases
}

/// Head metadata as pmq-eval reads it.
fn head_meta() -> std::collections::BTreeMap<String, String> {
    [
        ("task".to_string(), "spam".to_string()),
        ("labels".to_string(), "[\"ham\", \"spam\"]".to_string()),
    ]
    .into_iter()
    .collect()
}

#[test]
fn bad_inputs_fail_cleanly_naming_the_culprit_with_no_output_no_debris_and_inputs_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let (inputs, outs, scratch) = (
        tmp.path().join("in"),
        tmp.path().join("out"),
        tmp.path().join("tmp"),
    );
    for d in [&inputs, &outs, &scratch] {
        std::fs::create_dir(d).unwrap();
    }
    let cases = table(&inputs, &outs);
    let mut groups: Vec<&'static str> = cases.iter().map(|c| c.group).collect();
    groups.dedup();
    let mut tallies: Vec<(&str, Tally)> = groups
        .iter()
        .map(|g| (*g, Tally::new(&format!("pmq {g} (CLI)"))))
        .collect();
    for c in &cases {
        let tally = &mut tallies.iter_mut().find(|(g, _)| *g == c.group).unwrap().1;
        let label = format!("pmq {} / {}: {:?}", c.group, c.name, c.args);
        tally.case(&label, &[&inputs, &outs, &scratch], || {
            let (code, err) = pmq(&c.args, &scratch);
            match code {
                Some(0) => return Err("exit status 0".into()),
                Some(101) => return Err(format!("panicked (exit 101): {err}")),
                None => return Err(format!("killed by a signal: {err}")),
                Some(_) => {}
            }
            if err.contains("panicked") || !err.contains("error") {
                return Err(format!("not a clean error: {err}"));
            }
            if let Some(o) = &c.out {
                if o.exists() {
                    return Err(format!("{} exists", o.display()));
                }
            }
            let missing: Vec<&String> = c
                .needles
                .iter()
                .filter(|n| !err.contains(n.as_str()))
                .collect();
            if !missing.is_empty() {
                return Err(format!("stderr does not name {missing:?}: {err}"));
            }
            Ok(Outcome::Refused)
        });
    }
    let mut failed = Vec::new();
    for (g, t) in tallies {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.finish())) {
            failed.push((g, e));
        }
    }
    assert!(
        failed.is_empty(),
        "failing groups: {:?}",
        failed.iter().map(|f| f.0).collect::<Vec<_>>()
    );
}
