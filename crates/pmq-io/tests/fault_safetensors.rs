//! Fault suite of the safetensors reader: thousands of mutated files (byte flips, truncations,
//! extensions, random header lengths, random header JSON with wrong dtypes, overflowing shapes,
//! out-of-range and overlapping offsets) and sharded indexes with random `weight_map` entries
//! (`../`, absolute paths, missing shards, tensors missing from their shard, non-strings).
//!
//! Every case is judged against an independent reading of the bytes: a file the format allows is
//! opened and every tensor reads back exactly the bytes (and values) at its offsets; any other
//! file is refused with an error naming it. Never a panic, never an absurd allocation (see
//! [`CappedAlloc`]), inputs byte-identical, nothing left behind.
//!
//! `PROPTEST_CASES` sets the number of cases of each test, `PROPTEST_RNG_SEED` the seed.

use half::{bf16, f16};
use pmq_io::{write_safetensors, Dtype, IoError, TensorStore, INDEX_FILE};
use pmq_testkit::fault::{draw, refused_naming, runner, CappedAlloc, Outcome, Tally};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

// ---------------------------------------------------------------------------------------------
// The valid file every mutation starts from.

fn tensor_bytes(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 37 + j * 11 + 3) as u8).collect()
}

/// A valid file with tensors of several dtypes and ranks (a scalar and an empty one included).
fn valid_file(dir: &Path) -> Vec<u8> {
    let specs: [(&str, Dtype, Vec<usize>); 8] = [
        ("a.f32", Dtype::F32, vec![2, 3]),
        ("b.f16", Dtype::F16, vec![4]),
        ("c.bf16", Dtype::BF16, vec![2, 2]),
        ("d.f64", Dtype::F64, vec![1]),
        ("e.i32", Dtype::I32, vec![3]),
        ("f.u8", Dtype::U8, vec![5]),
        ("g.scalar", Dtype::F32, vec![]),
        ("h.empty", Dtype::F32, vec![0, 4]),
    ];
    let tensors: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, (n, d, s))| {
            let len = s.iter().product::<usize>() * d.bitsize() / 8;
            (n.to_string(), *d, s.clone(), tensor_bytes(i, len))
        })
        .collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let path = dir.join("valid.safetensors");
    write_safetensors(&path, &tensors, Some(meta)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

// ---------------------------------------------------------------------------------------------
// An independent reading of safetensors bytes: what the format allows.

fn bits_of(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "F64" | "I64" | "U64" => 64,
        _ => return None,
    })
}

/// One tensor as the header declares it.
#[derive(Debug, Clone)]
struct Declared {
    dtype: String,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    range: (usize, usize),
}

/// The tensors of a valid file, or why the format refuses it.
fn reference(bytes: &[u8]) -> Result<BTreeMap<String, Declared>, String> {
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .ok_or("shorter than 8 bytes")?
            .try_into()
            .unwrap(),
    );
    let n = usize::try_from(n).map_err(|_| "header length overflows")?;
    if n > 100_000_000 {
        return Err("header too large".into());
    }
    let header = bytes.get(8..8 + n).ok_or("header beyond the end")?;
    let text = std::str::from_utf8(header).map_err(|_| "header not UTF-8")?;
    let json: Value = serde_json::from_str(text).map_err(|e| format!("header JSON: {e}"))?;
    let obj = json.as_object().ok_or("header not an object")?;
    let mut out = BTreeMap::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            match v {
                Value::Null => {}
                Value::Object(m) if m.values().all(Value::is_string) => {}
                _ => return Err("__metadata__ not a string map".into()),
            }
            continue;
        }
        let t = v.as_object().ok_or("tensor entry not an object")?;
        let dtype = t.get("dtype").and_then(Value::as_str).ok_or("no dtype")?;
        let bits = bits_of(dtype).ok_or("unknown dtype")?;
        let shape: Vec<usize> = t
            .get("shape")
            .and_then(Value::as_array)
            .ok_or("no shape")?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or("shape not non-negative integers")?;
        let offs = t
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .ok_or("no data_offsets pair")?;
        let (s, e) = match (offs[0].as_u64(), offs[1].as_u64()) {
            (Some(s), Some(e)) => (s as usize, e as usize),
            _ => return Err("offsets not integers".into()),
        };
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or("shape overflows")?;
        let nbits = numel.checked_mul(bits).ok_or("size overflows")?;
        if !nbits.is_multiple_of(8) || e < s || e - s != nbits / 8 {
            return Err("size does not match the offsets".into());
        }
        out.insert(
            name.clone(),
            Declared {
                dtype: dtype.to_string(),
                shape,
                range: (s, e),
            },
        );
    }
    let mut ranges: Vec<(usize, usize)> = out.values().map(|d| d.range).collect();
    ranges.sort();
    let mut end = 0;
    for (s, e) in ranges {
        if s != end {
            return Err("offsets not contiguous".into());
        }
        end = e;
    }
    if 8 + n + end != bytes.len() {
        return Err("data length does not match".into());
    }
    for d in out.values_mut() {
        d.range = (8 + n + d.range.0, 8 + n + d.range.1);
    }
    Ok(out)
}

fn decode(dtype: &str, b: &[u8]) -> Option<Vec<f64>> {
    Some(match dtype {
        "F32" => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        "F16" => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f64())
            .collect(),
        "BF16" => b
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f64())
            .collect(),
        "F64" => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        _ => return None,
    })
}

fn same_values(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

/// Every tensor of an opened store against the file it came from: the declared dtype and
/// shape, exactly the bytes at its offsets, the values of float tensors, and a clear refusal to
/// read other dtypes as floats or non-2-D tensors as matrices.
fn check_store(
    store: &TensorStore,
    files: &BTreeMap<String, (PathBuf, Declared, Vec<u8>)>,
) -> Result<(), String> {
    if store.len() != files.len() {
        return Err(format!(
            "{} tensors opened, {} declared",
            store.len(),
            files.len()
        ));
    }
    for (name, (path, d, file)) in files {
        let info = store.info(name).ok_or(format!("`{name}` missing"))?;
        if info.dtype.to_string() != d.dtype || info.shape != d.shape {
            return Err(format!("`{name}`: {info:?} but declared {d:?}"));
        }
        if store.file_of(name) != Some(path.as_path()) {
            return Err(format!(
                "`{name}` read from {:?}, not {path:?}",
                store.file_of(name)
            ));
        }
        let raw = store.raw_bytes(name).map_err(|e| e.to_string())?;
        if raw != &file[d.range.0..d.range.1] {
            return Err(format!("`{name}`: bytes differ from the file's"));
        }
        store.release(name).map_err(|e| e.to_string())?;
        let path_s = path.display().to_string();
        match decode(&d.dtype, raw) {
            Some(want) => {
                let f64s = store.read_f64(name).map_err(|e| e.to_string())?;
                if !same_values(&f64s, &want) {
                    return Err(format!("`{name}`: f64 values differ"));
                }
                let f32s = store.read_f32(name).map_err(|e| e.to_string())?;
                let narrowed: Vec<f64> = want.iter().map(|&v| v as f32 as f64).collect();
                let got: Vec<f64> = f32s.iter().map(|&v| v as f64).collect();
                if !same_values(&got, &narrowed) {
                    return Err(format!("`{name}`: f32 values differ"));
                }
            }
            None => match store.read_f32(name) {
                Ok(_) => return Err(format!("`{name}` ({}) read as f32", d.dtype)),
                Err(e) => {
                    refused_naming(&e.to_string(), &[&format!("`{name}`"), &path_s, &d.dtype])?;
                }
            },
        }
        match store.read_matrix_f64(name) {
            Ok((r, c, v)) => {
                if d.shape.len() != 2 || (r, c) != (d.shape[0], d.shape[1]) || v.len() != r * c {
                    return Err(format!("`{name}` {:?} read as a {r}×{c} matrix", d.shape));
                }
            }
            Err(e) => {
                let ok_refusal = d.shape.len() != 2 || decode(&d.dtype, raw).is_none();
                if !ok_refusal {
                    return Err(format!("`{name}` not read as a matrix: {e}"));
                }
                refused_naming(&e.to_string(), &[&format!("`{name}`"), &path_s])?;
            }
        }
    }
    let absent = store.read_f32("no such tensor").unwrap_err().to_string();
    refused_naming(&absent, &["`no such tensor`", "not found"])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Mutations of one file.

#[derive(Debug, Clone)]
enum Offsets {
    /// Right after the previous tensor, as long as the shape says (when that is computable).
    Contiguous,
    /// Starting where the previous tensor starts (overlap).
    Overlap,
    /// Arbitrary numbers, possibly reversed or far beyond the end.
    Raw(u64, u64),
}

#[derive(Debug, Clone)]
struct TensorSpec {
    name: String,
    dtype: String,
    shape: Vec<Value>,
    offsets: Offsets,
}

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR bytes anywhere (positions taken modulo the length).
    Flip(Vec<(usize, u8)>),
    /// XOR bytes of the header JSON only.
    HeaderFlip(Vec<(usize, u8)>),
    /// Keep the first `n` bytes (modulo the length).
    Truncate(usize),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Replace the 8-byte header length.
    HeaderLen(u64),
    /// Replace the header JSON with `text`, keeping the data.
    RawHeader(Vec<u8>),
    /// A whole new header and data of `data_len` bytes (`None`: as long as the tensors end).
    Header {
        tensors: Vec<TensorSpec>,
        metadata: Option<Value>,
        data_len: Option<usize>,
        pad: usize,
    },
}

fn dtype_strategy() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "F32", "F16", "BF16", "F64", "I32", "I64", "U8", "I8", "BOOL", "U16", "I16", "U32", "U64",
        "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "f32", "", "F128", "float32",
        "C64",
    ])
    .prop_map(str::to_string)
}

fn dim_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (0u64..6).prop_map(Value::from),
        1 => prop::sample::select(vec![
            1u64 << 31, (1 << 32) + 1, 1 << 62, 1 << 63, u64::MAX, 1 << 40
        ])
        .prop_map(Value::from),
        1 => prop::sample::select(vec![json!(-1), json!(1.5), json!("3"), json!(null), json!([2]), json!(1e300)]),
    ]
}

fn offsets_strategy() -> impl Strategy<Value = Offsets> {
    prop_oneof![
        6 => Just(Offsets::Contiguous),
        1 => Just(Offsets::Overlap),
        2 => (
            prop_oneof![0u64..200, Just(u64::MAX), Just(1u64 << 63), Just(usize::MAX as u64 - 3)],
            prop_oneof![0u64..200, Just(u64::MAX), Just(1u64 << 40)],
        )
            .prop_map(|(a, b)| Offsets::Raw(a, b)),
    ]
}

fn tensor_spec() -> impl Strategy<Value = TensorSpec> {
    (
        prop::sample::select(vec!["w", "b", "x.y", "__metadata__", "", "é", "w "]),
        dtype_strategy(),
        prop::collection::vec(dim_strategy(), 0..4),
        offsets_strategy(),
    )
        .prop_map(|(name, dtype, shape, offsets)| TensorSpec {
            name: name.to_string(),
            dtype,
            shape,
            offsets,
        })
}

fn metadata_strategy() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => Just(None),
        2 => Just(Some(json!({"format": "pt"}))),
        1 => prop::sample::select(vec![
            json!(null), json!({"n": 1}), json!("pt"), json!([]), json!({"a": {"b": "c"}})
        ])
        .prop_map(Some),
    ]
}

fn flips() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((any::<usize>(), 1u8..=255), 1..6)
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => flips().prop_map(Mutation::Flip),
        3 => flips().prop_map(Mutation::HeaderFlip),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        2 => prop_oneof![
            0u64..2048,
            Just(u64::MAX),
            Just(1u64 << 63),
            Just(100_000_001u64),
            Just(u32::MAX as u64)
        ]
        .prop_map(Mutation::HeaderLen),
        1 => prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::sample::select(vec![
                b"{}".to_vec(), b"[]".to_vec(), b"null".to_vec(), b"{\"a\":".to_vec(),
                b"{\"w\":{}}".to_vec(), "{\"\u{0}\":1}".as_bytes().to_vec(),
                b"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}".to_vec(),
            ]),
        ]
        .prop_map(Mutation::RawHeader),
        6 => (
            prop::collection::vec(tensor_spec(), 0..5),
            metadata_strategy(),
            prop_oneof![3 => Just(None), 1 => (0usize..300).prop_map(Some)],
            0usize..9,
        )
            .prop_map(|(tensors, metadata, data_len, pad)| Mutation::Header {
                tensors,
                metadata,
                data_len,
                pad,
            }),
    ]
}

fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

fn build_header(
    tensors: &[TensorSpec],
    metadata: &Option<Value>,
    data_len: Option<usize>,
    pad: usize,
) -> Vec<u8> {
    let mut obj = Map::new();
    if let Some(m) = metadata {
        obj.insert("__metadata__".into(), m.clone());
    }
    let (mut prev_start, mut end) = (0u64, 0u64);
    for t in tensors {
        let size = t
            .shape
            .iter()
            .try_fold(1u64, |a, d| d.as_u64().and_then(|d| a.checked_mul(d)))
            .and_then(|n| n.checked_mul(bits_of(&t.dtype).unwrap_or(32) as u64))
            .map(|b| b / 8)
            .filter(|&b| b <= 4096)
            .unwrap_or(4);
        let (s, e) = match t.offsets {
            Offsets::Contiguous => (end, end.saturating_add(size)),
            Offsets::Overlap => (prev_start, prev_start.saturating_add(size)),
            Offsets::Raw(a, b) => (a, b),
        };
        prev_start = s;
        end = end.max(e.min(4096));
        obj.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [s, e]}),
        );
    }
    let mut text = serde_json::to_vec(&Value::Object(obj)).unwrap();
    text.extend(std::iter::repeat_n(b' ', pad));
    let data = data_len.unwrap_or(end as usize);
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(tensor_bytes(7, data));
    out
}

fn apply(valid: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = valid.to_vec();
    let n = header_len(valid);
    match m {
        Mutation::Flip(f) => {
            for &(i, x) in f {
                let len = b.len();
                b[i % len] ^= x;
            }
        }
        Mutation::HeaderFlip(f) => {
            for &(i, x) in f {
                b[8 + i % n] ^= x;
            }
        }
        Mutation::Truncate(k) => b.truncate(k % b.len()),
        Mutation::Extend(e) => b.extend(e),
        Mutation::HeaderLen(l) => b[..8].copy_from_slice(&l.to_le_bytes()),
        Mutation::RawHeader(text) => {
            let mut out = (text.len() as u64).to_le_bytes().to_vec();
            out.extend(text);
            out.extend(&valid[8 + n..]);
            b = out;
        }
        Mutation::Header {
            tensors,
            metadata,
            data_len,
            pad,
        } => b = build_header(tensors, metadata, *data_len, *pad),
    }
    b
}

/// One file case: `open` opens the written file (directly or as a directory's checkpoint).
fn file_case(
    bytes: &[u8],
    path: &Path,
    open: impl FnOnce() -> Result<TensorStore, IoError>,
) -> Result<Outcome, String> {
    let expected = reference(bytes);
    let path_s = path.display().to_string();
    match (open(), expected) {
        (Ok(store), Ok(declared)) => {
            let files = declared
                .into_iter()
                .map(|(n, d)| (n, (path.to_path_buf(), d, bytes.to_vec())))
                .collect();
            check_store(&store, &files)?;
            Ok(Outcome::Accepted)
        }
        (Ok(store), Err(why)) => Err(format!(
            "opened ({} tensors) although the file is invalid: {why}",
            store.len()
        )),
        (Err(e), Ok(_)) => Err(format!("a valid file was refused: {e}")),
        (Err(e), Err(_)) => refused_naming(&e.to_string(), &[&path_s]),
    }
}

#[test]
fn mutated_safetensors_files_are_read_exactly_or_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let valid = valid_file(tmp.path());
    assert!(reference(&valid).is_ok());
    let file_dir = tmp.path().join("file");
    let model_dir = tmp.path().join("model");
    std::fs::create_dir(&file_dir).unwrap();
    std::fs::create_dir(&model_dir).unwrap();
    let mut tally = Tally::new("safetensors files (pmq-io TensorStore)");
    let mut runner = runner(5000);
    let strategy = mutation();
    for k in 0..runner.config().cases {
        let m = draw(&mut runner, &strategy);
        let bytes = apply(&valid, &m);
        let label = format!("case {k}: {m:?}");
        // as a file ...
        let file = file_dir.join(format!("c{k}.safetensors"));
        std::fs::write(&file, &bytes).unwrap();
        tally.case(&label, &[tmp.path()], || {
            file_case(&bytes, &file, || TensorStore::open_file(&file))
        });
        std::fs::remove_file(&file).unwrap();
        // ... and as the checkpoint of a model directory
        let file = model_dir.join("model.safetensors");
        std::fs::write(&file, &bytes).unwrap();
        tally.case(&label, &[tmp.path()], || {
            file_case(&bytes, &file, || TensorStore::open_dir(&model_dir))
        });
    }
    tally.finish();
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints: random index files.

/// Tensor name → (shard file name, byte pattern index, length) of the shards on disk.
const SHARDS: &[(&str, &[(&str, usize)])] = &[
    ("a.safetensors", &[("x", 2), ("y", 3)]),
    ("b.safetensors", &[("z", 1)]),
    ("sub/c.safetensors", &[("w", 4)]),
    // holds another `x`: the index decides which one is read
    ("dup.safetensors", &[("x", 2), ("v", 1)]),
];

fn write_shards(root: &Path) -> PathBuf {
    let model = root.join("model");
    std::fs::create_dir_all(model.join("sub")).unwrap();
    for (k, (file, tensors)) in SHARDS.iter().enumerate() {
        let t: Vec<_> = tensors
            .iter()
            .enumerate()
            .map(|(i, (n, len))| {
                (
                    n.to_string(),
                    Dtype::F32,
                    vec![*len],
                    tensor_bytes(10 * k + i, 4 * len),
                )
            })
            .collect();
        write_safetensors(&model.join(file), &t, None).unwrap();
    }
    // outside the model directory, with tensors of the same names
    write_safetensors(
        &root.join("outside.safetensors"),
        &[
            ("x".into(), Dtype::F32, vec![2], tensor_bytes(99, 8)),
            ("o".into(), Dtype::F32, vec![1], tensor_bytes(98, 4)),
        ],
        None,
    )
    .unwrap();
    model
}

#[derive(Debug, Clone)]
enum IndexText {
    /// `{"metadata": ..., "weight_map": {name: target}}`.
    Map(Vec<(String, Value)>),
    /// The JSON of a valid index with bytes flipped.
    Flipped(Vec<(String, Value)>, Vec<(usize, u8)>),
    /// Other documents: no weight_map, wrong types, not JSON.
    Other(Vec<u8>),
}

fn target_strategy(abs_a: String) -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::sample::select(vec![
            "a.safetensors", "b.safetensors", "sub/c.safetensors", "dup.safetensors",
        ])
        .prop_map(Value::from),
        4 => prop::sample::select(vec![
            "missing.safetensors", "../outside.safetensors", "/etc/passwd",
            "sub/../a.safetensors", "./a.safetensors", "", ".", "..", "a.safetensors/", "sub",
            "sub/", "a.safetensors/.", "sub/./c.safetensors", "../model/a.safetensors", "//a.safetensors", "a.safetensors\u{0}",
        ])
        .prop_map(Value::from),
        1 => Just(Value::from(abs_a)),
        1 => prop::sample::select(vec![json!(1), json!(null), json!({}), json!(["a.safetensors"]), json!(true)]),
    ]
}

fn map_strategy(abs_a: String) -> impl Strategy<Value = Vec<(String, Value)>> {
    let right: Vec<(String, Value)> = SHARDS
        .iter()
        .flat_map(|(f, ts)| {
            ts.iter()
                .map(move |(n, _)| (n.to_string(), Value::from(*f)))
        })
        .collect();
    let entry = prop_oneof![
        // a tensor and a shard that holds it
        6 => prop::sample::select(right),
        // anything
        1 => (
            prop::sample::select(vec!["x", "y", "z", "w", "v", "o", "absent", ""])
                .prop_map(str::to_string),
            target_strategy(abs_a),
        ),
    ];
    prop::collection::vec(entry, 0..7)
}

fn index_strategy(abs_a: String) -> impl Strategy<Value = IndexText> {
    prop_oneof![
        8 => map_strategy(abs_a.clone()).prop_map(IndexText::Map),
        2 => (map_strategy(abs_a), flips()).prop_map(|(m, f)| IndexText::Flipped(m, f)),
        1 => prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            prop::sample::select(vec![
                b"{}".to_vec(), b"[]".to_vec(), b"{\"weight_map\": []}".to_vec(),
                b"{\"weight_map\": \"a.safetensors\"}".to_vec(), b"{\"weight_map\": null}".to_vec(),
                b"\xEF\xBB\xBF{\"weight_map\": {\"x\": \"a.safetensors\"}}".to_vec(),
                b"{\"weight_map\": {\"x\": \"a.safetensors\", \"x\": \"dup.safetensors\"}}".to_vec(),
            ]),
        ]
        .prop_map(IndexText::Other),
    ]
}

fn index_bytes(t: &IndexText) -> Vec<u8> {
    let doc = |m: &[(String, Value)]| {
        let map: Map<String, Value> = m.iter().cloned().collect();
        serde_json::to_vec(&json!({"metadata": {"total_size": 0}, "weight_map": map})).unwrap()
    };
    match t {
        IndexText::Map(m) => doc(m),
        IndexText::Flipped(m, f) => {
            let mut b = doc(m);
            for &(i, x) in f {
                let len = b.len();
                b[i % len] ^= x;
            }
            b
        }
        IndexText::Other(b) => b.clone(),
    }
}

/// What the index must lead to.
enum Expect {
    /// Refused, the message naming the index file and containing these words.
    Refused(Vec<&'static str>),
    /// Opened with these tensors (name → shard file), or refused naming the index (entries such
    /// as `./a.safetensors` that stay inside the directory but are not plain names).
    Either(BTreeMap<String, PathBuf>),
    /// Opened with exactly these tensors, each from its named shard.
    Opened(BTreeMap<String, PathBuf>),
}

fn expect(model: &Path, bytes: &[u8]) -> Expect {
    let Some(json) = std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    else {
        return Expect::Refused(vec![]);
    };
    let Some(map) = json.get("weight_map").and_then(Value::as_object) else {
        return Expect::Refused(vec!["weight_map"]);
    };
    if map.is_empty() {
        return Expect::Refused(vec!["empty"]);
    }
    let mut plain = true;
    let mut out = BTreeMap::new();
    for (name, target) in map {
        let Some(file) = target.as_str() else {
            return Expect::Refused(vec![]);
        };
        let rel = Path::new(file);
        let leaves = file.is_empty()
            || file.ends_with('/')
            || file.ends_with("/.")
            || rel.components().any(|c| {
                matches!(
                    c,
                    Component::ParentDir | Component::RootDir | Component::Prefix(_)
                )
            });
        if leaves {
            return Expect::Refused(vec!["not a file inside"]);
        }
        if rel.components().any(|c| matches!(c, Component::CurDir)) {
            plain = false;
        }
        let path = model.join(rel);
        let shard = SHARDS.iter().find(|(f, _)| model.join(f) == path);
        match shard {
            Some((_, tensors)) if tensors.iter().any(|(n, _)| n == name) => {
                out.insert(name.clone(), path);
            }
            // a missing file, a directory, or a shard without that tensor
            _ => return Expect::Refused(vec![]),
        }
    }
    if plain {
        Expect::Opened(out)
    } else {
        Expect::Either(out)
    }
}

#[test]
fn sharded_indexes_with_random_weight_maps_follow_the_map_or_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_shards(tmp.path());
    let shard_bytes: BTreeMap<PathBuf, Vec<u8>> = SHARDS
        .iter()
        .map(|(f, _)| (model.join(f), std::fs::read(model.join(f)).unwrap()))
        .collect();
    let abs_a = model.join("a.safetensors").display().to_string();
    let mut tally = Tally::new("sharded indexes (pmq-io TensorStore::open_dir)");
    let mut runner = runner(3000);
    let strategy = (index_strategy(abs_a), prop::bool::weighted(0.8));
    for k in 0..runner.config().cases {
        let (text, standard_name) = draw(&mut runner, &strategy);
        let bytes = index_bytes(&text);
        // the standard name, or the only *.safetensors.index.json under another name
        let index = model.join(if standard_name {
            INDEX_FILE
        } else {
            "pytorch.safetensors.index.json"
        });
        std::fs::write(&index, &bytes).unwrap();
        let label = format!(
            "case {k}: {} {}",
            index.display(),
            String::from_utf8_lossy(&bytes)
        );
        let index_s = index.display().to_string();
        tally.case(&label, &[tmp.path()], || {
            let expected = expect(&model, &bytes);
            let check_opened = |store: &TensorStore, want: &BTreeMap<String, PathBuf>| {
                let files = want
                    .iter()
                    .map(|(n, path)| {
                        let file = &shard_bytes[path];
                        let declared = reference(file).unwrap().remove(n).unwrap();
                        (n.clone(), (path.clone(), declared, file.clone()))
                    })
                    .collect();
                check_store(store, &files)
            };
            match (TensorStore::open_dir(&model), expected) {
                (Ok(store), Expect::Opened(want) | Expect::Either(want)) => {
                    check_opened(&store, &want)?;
                    Ok(Outcome::Accepted)
                }
                (Ok(store), Expect::Refused(_)) => Err(format!(
                    "opened ({:?}) although the index must be refused",
                    store.names()
                )),
                (Err(e), Expect::Opened(want)) => {
                    Err(format!("refused although it maps {want:?}: {e}"))
                }
                (Err(e), Expect::Refused(words)) => {
                    let mut needles = vec![index_s.as_str()];
                    needles.extend(words);
                    refused_naming(&e.to_string(), &needles)
                }
                (Err(e), Expect::Either(_)) => refused_naming(&e.to_string(), &[&index_s]),
            }
        });
        std::fs::remove_file(&index).unwrap();
    }
    tally.finish();
}
