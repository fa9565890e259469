//! Fault suite of the GPTQ checkpoint reader: thousands of mutated checkpoints (qweight, qzeros,
//! scales, g_idx and bias with wrong dtypes and shapes, random contents, NaN/±inf scales,
//! out-of-range g_idx, tensors removed or added; quantization settings with wrong values and
//! types) read with [`GptqReader`] and rewritten with [`dequantize_checkpoint`].
//!
//! Each case is judged against an independent reading of the GPTQ layout: a consistent
//! checkpoint opens, every logical tensor reads back (quantized weights equal to a reference
//! dequantization) and dequantizes to a complete output; anything else is refused with an error
//! naming the file (or directory, for a missing tensor) and the tensor or settings file at
//! fault, and leaves no output and no temporary behind. Inputs stay byte-identical.
//!
//! `PROPTEST_CASES` sets the number of cases, `PROPTEST_RNG_SEED` the seed.

use pmq_core::packing::CheckpointFormat;
use pmq_core::{QuantGrid, QuantizedLayer, ScalePrecision};
use pmq_formats::gptq_checkpoint::{dequantize_checkpoint, write_gptq, GptqReader, GptqSettings};
use pmq_formats::{Destination, PackedLinear, QuantizedModel};
use pmq_io::{decode_f32, encode_f32, write_safetensors, Dtype, TensorStore};
use pmq_testkit::fault::{draw, runner, CappedAlloc, Outcome, Tally};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// A stored tensor.
#[derive(Debug, Clone)]
struct T {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

type Tensors = BTreeMap<String, T>;

/// The quantized linears of the base checkpoint: prefix, outputs, inputs.
const LINEARS: [(&str, usize, usize); 2] = [("l", 8, 32), ("m", 16, 48)];

/// A GPTQ checkpoint (4 bits, group 16, symmetric, v1) of two linears (8×32 with a bias,
/// 16×48) and an embedding; returns its directory.
fn write_base(root: &Path) -> PathBuf {
    let src_dir = root.join("src");
    std::fs::create_dir_all(&src_dir).unwrap();
    std::fs::write(src_dir.join("config.json"), r#"{"model_type":"bert"}"#).unwrap();
    let weight = |rows: usize, cols: usize, seed: usize| -> Vec<f32> {
        (0..rows * cols)
            .map(|i| (((i + seed) * 7919) % 101) as f32 / 101.0 - 0.5)
            .collect()
    };
    let mut tensors = vec![
        (
            "l.bias".to_string(),
            Dtype::F32,
            vec![8],
            encode_f32(Dtype::F32, &[0.125; 8]).unwrap(),
        ),
        (
            "emb.weight".to_string(),
            Dtype::F16,
            vec![4, 8],
            encode_f32(Dtype::F16, &weight(4, 8, 3)).unwrap(),
        ),
    ];
    let grid = QuantGrid::new(4, true, 16, ScalePrecision::F16).unwrap();
    let mut layers = BTreeMap::new();
    for (k, (p, rows, cols)) in LINEARS.iter().enumerate() {
        let w = weight(*rows, *cols, k);
        tensors.push((
            format!("{p}.weight"),
            Dtype::F32,
            vec![*rows, *cols],
            encode_f32(Dtype::F32, &w).unwrap(),
        ));
        let wm = faer::Mat::from_fn(*rows, *cols, |r, c| w[r * cols + c] as f64);
        let q: QuantizedLayer = pmq_core::rtn::rtn(wm.as_ref(), &grid).unwrap();
        layers.insert(p.to_string(), PackedLinear::from(q));
    }
    write_safetensors(&src_dir.join("model.safetensors"), &tensors, None).unwrap();
    let src = TensorStore::open_dir(&src_dir).unwrap();
    let settings = GptqSettings {
        bits: 4,
        group_size: 16,
        sym: true,
        desc_act: false,
        static_groups: false,
        true_sequential: true,
        damp_percent: 0.01,
        format: CheckpointFormat::V1,
        quantizer: "pmq:test".into(),
    };
    let out = root.join("base");
    write_gptq(
        &QuantizedModel::new(&src, &layers),
        &settings,
        &Destination::new(&out),
    )
    .unwrap();
    out
}

fn read_tensors(dir: &Path) -> Tensors {
    let store = TensorStore::open_dir(dir).unwrap();
    store
        .names()
        .into_iter()
        .map(|n| {
            let i = store.info(&n).unwrap();
            let t = T {
                dtype: i.dtype,
                shape: i.shape.clone(),
                bytes: store.raw_bytes(&n).unwrap().to_vec(),
            };
            (n, t)
        })
        .collect()
}

/// Writes a safetensors file directly (no fsync: the cases are many and throwaway).
fn write_raw(path: &Path, tensors: &Tensors) {
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (n, t) in tensors {
        let s = data.len();
        data.extend(&t.bytes);
        header.insert(
            n.clone(),
            json!({"dtype": t.dtype.to_string(), "shape": t.shape, "data_offsets": [s, data.len()]}),
        );
    }
    let text = serde_json::to_vec(&Value::Object(header)).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn byte_len(dtype: Dtype, shape: &[usize]) -> usize {
    shape.iter().product::<usize>() * dtype.bitsize() / 8
}

// ---------------------------------------------------------------------------------------------
// Mutations.

#[derive(Debug, Clone)]
enum Mutation {
    /// Tensor `name` stored with another dtype (float values converted, else new bytes).
    Dtype(String, Dtype),
    /// Tensor `name` with another shape (new bytes).
    Shape(String, Vec<usize>),
    /// Tensor `name` with random contents of the same size.
    Bytes(String, u64),
    /// Scale number `pos` of linear `prefix` set to a non-finite value.
    Scale(String, usize, f32),
    /// `g_idx[pos]` of linear `prefix` set to `value`.
    GIdx(String, usize, i32),
    /// Tensor `name` removed.
    Remove(String),
    /// A tensor added (an orphan `*.qweight`, a stored `P.weight` next to `P.qweight`, ...).
    Add(String, Dtype, Vec<usize>),
    /// A quantization setting set to a value (`None`: removed).
    Setting(&'static str, Option<Value>),
    /// No quantize_config.json: the settings come from config.json's `quantization_config`.
    NoQuantizeConfig,
    /// quantize_config.json replaced by these bytes.
    QuantizeConfigText(Vec<u8>),
}

fn tensor_names() -> Vec<String> {
    let mut v: Vec<String> = LINEARS
        .iter()
        .flat_map(|(p, _, _)| {
            ["qweight", "qzeros", "scales", "g_idx"]
                .iter()
                .map(move |s| format!("{p}.{s}"))
        })
        .collect();
    v.push("l.bias".into());
    v.push("emb.weight".into());
    v
}

fn dtype_strategy() -> impl Strategy<Value = Dtype> {
    prop::sample::select(vec![
        Dtype::I32,
        Dtype::F16,
        Dtype::F32,
        Dtype::BF16,
        Dtype::F64,
        Dtype::I64,
        Dtype::U8,
        Dtype::I8,
        Dtype::U32,
        Dtype::BOOL,
    ])
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![4 => 0usize..10, 1 => 10usize..64], 0..4)
}

fn setting_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        6 => prop::sample::select(vec![
            json!(0), json!(-1), json!(1), json!(2), json!(3), json!(4), json!(5), json!(8),
            json!(16), json!(17), json!(32), json!(64), json!(-2), json!(4294967300u64),
            json!(u64::MAX), json!(i64::MIN), json!(4.0), json!(16.5), json!("4"), json!("NaN"),
            json!(true), json!(false), json!(null), json!([]), json!({}), json!("gptq"),
            json!("gptq_v2"), json!("awq"), json!("marlin"),
        ])
        .prop_map(Some),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let name = prop::sample::select(tensor_names());
    let prefix = prop::sample::select(vec!["l".to_string(), "m".to_string()]);
    prop_oneof![
        3 => (name.clone(), dtype_strategy()).prop_map(|(n, d)| Mutation::Dtype(n, d)),
        3 => (name.clone(), shape_strategy()).prop_map(|(n, s)| Mutation::Shape(n, s)),
        3 => (name.clone(), any::<u64>()).prop_map(|(n, s)| Mutation::Bytes(n, s)),
        2 => (
            prefix.clone(),
            0usize..48,
            prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY])
        )
            .prop_map(|(p, i, v)| Mutation::Scale(p, i, v)),
        2 => (
            prefix,
            0usize..48,
            prop_oneof![
                Just(-1i32), Just(2), Just(3), Just(4), Just(i32::MIN), Just(i32::MAX),
                Just(0), Just(1)
            ]
        )
            .prop_map(|(p, i, v)| Mutation::GIdx(p, i, v)),
        1 => name.prop_map(Mutation::Remove),
        1 => prop_oneof![
            Just(Mutation::Add("l.weight".into(), Dtype::F32, vec![8, 32])),
            Just(Mutation::Add("k.qweight".into(), Dtype::I32, vec![4, 8])),
            Just(Mutation::Add("k.qzeros".into(), Dtype::I32, vec![2, 1])),
            Just(Mutation::Add("emb.qweight".into(), Dtype::I32, vec![1, 4])),
            Just(Mutation::Add("x.scales".into(), Dtype::F16, vec![2, 8])),
        ],
        3 => (
            prop::sample::select(vec![
                "bits", "group_size", "sym", "desc_act", "checkpoint_format", "quant_method"
            ]),
            setting_value()
        )
            .prop_map(|(f, v)| Mutation::Setting(f, v)),
        1 => Just(Mutation::NoQuantizeConfig),
        1 => prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            prop::sample::select(vec![
                b"{}".to_vec(), b"[]".to_vec(), b"null".to_vec(), b"{\"bits\":".to_vec(),
                b"\xEF\xBB\xBF{\"bits\": 4, \"group_size\": 16}".to_vec(),
                b"{\"bits\": 4, \"group_size\": 16}".to_vec(),
            ]),
        ]
        .prop_map(Mutation::QuantizeConfigText),
    ]
}

/// A case's checkpoint: tensors and settings files (`None`: absent).
#[derive(Clone)]
struct Case {
    tensors: Tensors,
    quantize_config: Option<Vec<u8>>,
    config: Vec<u8>,
}

fn apply(case: &mut Case, m: &Mutation) {
    let t = &mut case.tensors;
    match m {
        Mutation::Dtype(n, d) => {
            if let Some(x) = t.get_mut(n) {
                let floats = decode_f32(x.dtype, &x.bytes);
                x.bytes = match (floats, encode_f32(*d, &[])) {
                    (Some(v), Ok(_)) => encode_f32(*d, &v).unwrap(),
                    _ => pattern(byte_len(*d, &x.shape), 7),
                };
                x.dtype = *d;
            }
        }
        Mutation::Shape(n, s) => {
            if let Some(x) = t.get_mut(n) {
                x.bytes = pattern(byte_len(x.dtype, s), 11);
                x.shape = s.clone();
            }
        }
        Mutation::Bytes(n, seed) => {
            if let Some(x) = t.get_mut(n) {
                x.bytes = pattern(x.bytes.len(), *seed);
            }
        }
        Mutation::Scale(p, pos, v) => {
            if let Some(x) = t.get_mut(&format!("{p}.scales")) {
                if let Some(mut vals) = decode_f32(x.dtype, &x.bytes).filter(|v| !v.is_empty()) {
                    let i = pos % vals.len();
                    vals[i] = *v;
                    x.bytes = encode_f32(x.dtype, &vals).unwrap();
                }
            }
        }
        Mutation::GIdx(p, pos, v) => {
            if let Some(x) = t.get_mut(&format!("{p}.g_idx")) {
                if x.dtype == Dtype::I32 && !x.bytes.is_empty() {
                    let i = pos % (x.bytes.len() / 4);
                    x.bytes[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        Mutation::Remove(n) => {
            t.remove(n);
        }
        Mutation::Add(n, d, s) => {
            let bytes = match d {
                Dtype::F32 | Dtype::F16 => encode_f32(*d, &vec![0.5; s.iter().product()]).unwrap(),
                _ => pattern(byte_len(*d, s), 5),
            };
            t.insert(
                n.clone(),
                T {
                    dtype: *d,
                    shape: s.clone(),
                    bytes,
                },
            );
        }
        Mutation::Setting(field, v) => {
            let edit = |bytes: &[u8], nested: bool| -> Vec<u8> {
                let mut j: Value = serde_json::from_slice(bytes).unwrap_or(json!({}));
                let obj = if nested {
                    j.get_mut("quantization_config")
                } else {
                    Some(&mut j)
                };
                if let Some(Value::Object(o)) = obj {
                    match v {
                        Some(v) => {
                            o.insert(field.to_string(), v.clone());
                        }
                        None => {
                            o.remove(*field);
                        }
                    }
                }
                serde_json::to_vec(&j).unwrap()
            };
            match &case.quantize_config {
                Some(qc) => case.quantize_config = Some(edit(qc, false)),
                None => case.config = edit(&case.config, true),
            }
        }
        Mutation::NoQuantizeConfig => case.quantize_config = None,
        Mutation::QuantizeConfigText(b) => case.quantize_config = Some(b.clone()),
    }
}

// ---------------------------------------------------------------------------------------------
// The reference: what a checkpoint must lead to.

/// The settings, or the settings file to name.
fn settings_ref(dir: &Path, case: &Case) -> Result<(u32, i64, bool), PathBuf> {
    let (path, v) = match &case.quantize_config {
        Some(b) => {
            let p = dir.join("quantize_config.json");
            let v: Value = std::str::from_utf8(b)
                .ok()
                .and_then(|t| serde_json::from_str(t).ok())
                .ok_or(p.clone())?;
            (p, v)
        }
        None => {
            let p = dir.join("config.json");
            let v: Value = serde_json::from_slice(&case.config).map_err(|_| p.clone())?;
            (p.clone(), v.get("quantization_config").cloned().ok_or(p)?)
        }
    };
    if v.get("quant_method")
        .and_then(Value::as_str)
        .is_some_and(|m| m != "gptq")
    {
        return Err(path);
    }
    let v2 = match v
        .get("checkpoint_format")
        .and_then(Value::as_str)
        .unwrap_or("gptq")
    {
        "gptq" => false,
        "gptq_v2" => true,
        _ => return Err(path),
    };
    let bits = match v.get("bits").and_then(Value::as_u64) {
        Some(b @ (2 | 3 | 4 | 8)) => b as u32,
        _ => return Err(path),
    };
    let group = match v.get("group_size").and_then(Value::as_i64) {
        Some(g) if g == -1 || g > 0 => g,
        _ => return Err(path),
    };
    Ok((bits, group, v2))
}

/// Layout of quantized linear `p`: `(rows, cols, groups)` or the reason it is refused.
fn layout_ref(
    t: &Tensors,
    p: &str,
    bits: usize,
    group: i64,
) -> Result<(usize, usize, usize), String> {
    if t.contains_key(&format!("{p}.weight")) {
        return Err("a stored weight next to the packed one".into());
    }
    let get = |s: &str| t.get(&format!("{p}.{s}")).ok_or(format!("{p}.{s} missing"));
    let (qw, qz, sc, gi) = (
        get("qweight")?,
        get("qzeros")?,
        get("scales")?,
        get("g_idx")?,
    );
    if [qw, qz, gi].iter().any(|x| x.dtype != Dtype::I32) || !pmq_io::is_float(sc.dtype) {
        return Err("dtype".into());
    }
    if qw.shape.len() != 2 || qw.shape[0] == 0 || !(qw.shape[0] * 32).is_multiple_of(bits) {
        return Err("qweight shape".into());
    }
    let (rows, cols) = (qw.shape[1], qw.shape[0] * 32 / bits);
    let groups = if group == -1 {
        1
    } else {
        cols.div_ceil(group as usize)
    };
    if !(rows * bits).is_multiple_of(32)
        || qz.shape != [groups, rows * bits / 32]
        || sc.shape != [groups, rows]
        || gi.shape != [cols]
    {
        return Err("shapes".into());
    }
    if let Some(b) = t.get(&format!("{p}.bias")) {
        if b.shape != [rows] {
            return Err("bias shape".into());
        }
    }
    Ok((rows, cols, groups))
}

fn i32s(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The dequantized weight of 4-bit linear `p`, or `Err` if a scale is non-finite or a g_idx
/// entry out of range.
fn dequant_ref(
    t: &Tensors,
    p: &str,
    (rows, cols, groups): (usize, usize, usize),
    v2: bool,
) -> Result<Vec<f32>, String> {
    let g = |s: &str| &t[&format!("{p}.{s}")];
    let scales: Vec<f32> = decode_f32(g("scales").dtype, &g("scales").bytes).unwrap();
    if scales.iter().any(|s| !s.is_finite()) {
        return Err("scales".into());
    }
    let g_idx = i32s(&g("g_idx").bytes);
    if g_idx.iter().any(|&x| x < 0 || x as usize >= groups) {
        return Err("g_idx".into());
    }
    let (qw, qz) = (i32s(&g("qweight").bytes), i32s(&g("qzeros").bytes));
    let zw = rows / 8;
    let mut w = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let code = (qw[(c / 8) * rows + r] as u32 >> ((c % 8) * 4)) & 0xF;
            let gr = g_idx[c] as usize;
            let stored = (qz[gr * zw + r / 8] as u32 >> ((r % 8) * 4)) & 0xF;
            let zero = if v2 { stored } else { stored + 1 };
            let s = scales[gr * rows + r] as f64;
            w.push((s * (code as f64 - zero as f64)) as f32);
        }
    }
    if w.iter().any(|v| !v.is_finite()) {
        // finite scales too large for f32 once multiplied by a code
        return Err("scales".into());
    }
    Ok(w)
}

/// What opening and reading a checkpoint must give.
struct Expected {
    /// `Err(culprits)`: refused at open, naming one of them.
    open: Result<(), Vec<String>>,
    /// Logical tensor → its values (`None`: not a float tensor, read fails and is copied raw)
    /// or the culprits to name.
    reads: BTreeMap<String, Result<Option<Vec<f32>>, Vec<String>>>,
}

fn expected(dir: &Path, case: &Case) -> Expected {
    let file = dir.join("model.safetensors").display().to_string();
    let (bits, group, v2) = match settings_ref(dir, case) {
        Ok(s) => s,
        Err(path) => {
            return Expected {
                open: Err(vec![path.display().to_string()]),
                reads: BTreeMap::new(),
            }
        }
    };
    let t = &case.tensors;
    let mut layouts = BTreeMap::new();
    for n in t.keys() {
        let Some(p) = n.strip_suffix(".qweight") else {
            continue;
        };
        match layout_ref(t, p, bits as usize, group) {
            Ok(l) => {
                layouts.insert(p.to_string(), l);
            }
            Err(_) => {
                return Expected {
                    open: Err(vec![format!("`{p}.")]),
                    reads: BTreeMap::new(),
                }
            }
        }
    }
    let mut reads = BTreeMap::new();
    for (n, x) in t {
        let quantized_part = n.rsplit_once('.').is_some_and(|(p, s)| {
            layouts.contains_key(p) && matches!(s, "qweight" | "qzeros" | "scales" | "g_idx")
        });
        if quantized_part {
            continue;
        }
        let r = match decode_f32(x.dtype, &x.bytes) {
            Some(v) if v.iter().all(|v| v.is_finite()) => Ok(Some(v)),
            Some(_) => Err(vec![format!("`{n}`"), file.clone()]),
            None => Ok(None),
        };
        reads.insert(n.clone(), r);
    }
    for (p, l) in &layouts {
        let r = if bits == 4 {
            dequant_ref(t, p, *l, v2)
                .map(Some)
                .map_err(|part| vec![format!("`{p}.{part}`"), file.clone()])
        } else {
            // never consistent with the 4-bit base's shapes; checked anyway
            Ok(None)
        };
        reads.insert(format!("{p}.weight"), r);
    }
    Expected {
        open: Ok(()),
        reads,
    }
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + y.abs()))
}

/// `Ok` if `msg` names the checkpoint and every one of `all` (`any`: at least one of them).
fn names(msg: &str, dir: &Path, culprits: &[String]) -> Result<(), String> {
    if !msg.contains(&dir.display().to_string()) {
        return Err(format!("the error does not name {}: {msg}", dir.display()));
    }
    if !culprits.iter().all(|c| msg.contains(c.as_str())) {
        return Err(format!("the error does not name {culprits:?}: {msg}"));
    }
    Ok(())
}

fn run_case(dir: &Path, out: &Path, case: &Case) -> Result<Outcome, String> {
    let want = expected(dir, case);
    let reader = match (GptqReader::open(dir), &want.open) {
        (Ok(r), Ok(())) => r,
        (Ok(_), Err(c)) => return Err(format!("opened, but must be refused naming {c:?}")),
        (Err(e), Ok(())) => return Err(format!("refused at open: {e}")),
        (Err(e), Err(culprits)) => {
            // any one culprit named suffices for an open error
            let msg = e.to_string();
            names(&msg, dir, &[])?;
            if !culprits.iter().any(|c| msg.contains(c.as_str())) {
                return Err(format!(
                    "the error does not name any of {culprits:?}: {msg}"
                ));
            }
            let d = dequantize_checkpoint(dir, out, false);
            if d.is_ok() || out.exists() {
                return Err("dequantize_checkpoint wrote a refused checkpoint".into());
            }
            return Ok(Outcome::Refused);
        }
    };
    let logical = reader.names();
    let expected_names: Vec<&String> = want.reads.keys().collect();
    if logical.iter().collect::<Vec<_>>() != expected_names {
        return Err(format!(
            "logical names {logical:?}, expected {expected_names:?}"
        ));
    }
    let mut refused = false;
    for (n, w) in &want.reads {
        match (reader.read_f32(n), w) {
            (Ok(v), Ok(Some(want))) => {
                if !close(&v, want) {
                    return Err(format!("`{n}` reads other values"));
                }
            }
            (Ok(v), Ok(None)) => {
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(format!("`{n}` reads non-finite values"));
                }
            }
            (Ok(_), Err(c)) => return Err(format!("`{n}` read, but must be refused naming {c:?}")),
            (Err(e), Ok(Some(_))) => return Err(format!("`{n}` refused: {e}")),
            (Err(e), Ok(None)) => {
                // a stored tensor that is not float: named when asked for as f32
                names(&e.to_string(), dir, &[format!("`{n}`")])?;
            }
            (Err(e), Err(c)) => {
                names(&e.to_string(), dir, c)?;
                refused = true;
            }
        }
    }
    // the dequantizing path refuses exactly what a read refuses, and writes all or nothing
    match dequantize_checkpoint(dir, out, false) {
        Ok(()) if refused => {
            Err("dequantize_checkpoint wrote a checkpoint with a refused tensor".into())
        }
        Ok(()) => {
            let store = TensorStore::open_dir(out).map_err(|e| e.to_string())?;
            if store.names() != logical {
                return Err(format!("dequantized names {:?}", store.names()));
            }
            for (n, w) in &want.reads {
                match w {
                    Ok(Some(want)) => {
                        let v = store.read_f32(n).map_err(|e| e.to_string())?;
                        if !close(&v, want) {
                            return Err(format!("dequantized `{n}` differs"));
                        }
                    }
                    _ => {
                        let raw = store.raw_bytes(n).map_err(|e| e.to_string())?;
                        if raw != case.tensors[n].bytes.as_slice() {
                            return Err(format!("`{n}` not copied as stored"));
                        }
                    }
                }
            }
            let cfg =
                std::fs::read_to_string(out.join("config.json")).map_err(|e| e.to_string())?;
            if cfg.contains("quantization_config") || out.join("quantize_config.json").exists() {
                return Err("the dequantized checkpoint still declares GPTQ".into());
            }
            std::fs::remove_dir_all(out).unwrap();
            Ok(Outcome::Accepted)
        }
        Err(e) if refused => {
            if out.exists() {
                return Err("output left after a refusal".into());
            }
            names(&e.to_string(), dir, &[])?;
            Ok(Outcome::Refused)
        }
        Err(e) => Err(format!(
            "dequantize_checkpoint refused a readable checkpoint: {e}"
        )),
    }
}

#[test]
fn mutated_gptq_checkpoints_dequantize_exactly_or_are_refused_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_base(tmp.path());
    let base_case = Case {
        tensors: read_tensors(&base),
        quantize_config: Some(std::fs::read(base.join("quantize_config.json")).unwrap()),
        config: std::fs::read(base.join("config.json")).unwrap(),
    };
    let dir = tmp.path().join("case");
    let outs = tmp.path().join("outs");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&outs).unwrap();
    let out = outs.join("dequantized");
    let write = |case: &Case| {
        write_raw(&dir.join("model.safetensors"), &case.tensors);
        std::fs::write(dir.join("config.json"), &case.config).unwrap();
        let qc = dir.join("quantize_config.json");
        match &case.quantize_config {
            Some(b) => std::fs::write(&qc, b).unwrap(),
            None => {
                let _ = std::fs::remove_file(&qc);
            }
        }
    };
    let mut tally = Tally::new("GPTQ checkpoints (pmq-formats GptqReader, dequantize_checkpoint)");
    // the intact checkpoint reads
    write(&base_case);
    tally.case("intact", &[&dir, &outs], || {
        run_case(&dir, &out, &base_case)
    });
    let mut runner = runner(3000);
    let strategy = prop::collection::vec(mutation(), 1..3);
    for k in 0..runner.config().cases {
        let muts = draw(&mut runner, &strategy);
        let mut case = base_case.clone();
        for m in &muts {
            apply(&mut case, m);
        }
        write(&case);
        tally.case(&format!("case {k}: {muts:?}"), &[&dir, &outs], || {
            run_case(&dir, &out, &case)
        });
        // an output a wrong case left (counted as debris) must not fail the next cases
        let _ = std::fs::remove_dir_all(&out);
    }
    assert!(tally.accepted() > 0 && tally.refused() > 0);
    tally.finish();
}
