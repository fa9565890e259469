//! TensorStore: round trips through the writer, sharded directories, and errors that name files.

use std::collections::BTreeMap;
use std::path::Path;

use pmq_io::{
    encode_f32, f32_bytes, i32_bytes, write_safetensors, Dtype, IoError, TensorInfo, TensorStore,
};

type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn t(name: &str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) -> Tensor {
    (name.to_string(), dtype, shape.to_vec(), bytes)
}

fn write(path: &Path, tensors: &[Tensor]) {
    write_safetensors(path, tensors, None).unwrap();
}

#[test]
fn round_trip_f32_f16_bf16_i32() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let vals = [1.0f32, -2.5, 0.125, 3.0, 65504.0, -0.0];
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let tensors = vec![
        t("a.f32", Dtype::F32, &[2, 3], f32_bytes(&vals)),
        t(
            "b.f16",
            Dtype::F16,
            &[6],
            encode_f32(Dtype::F16, &vals).unwrap(),
        ),
        t(
            "c.bf16",
            Dtype::BF16,
            &[3, 2],
            encode_f32(Dtype::BF16, &vals).unwrap(),
        ),
        t("d.i32", Dtype::I32, &[3], i32_bytes(&[7, -8, 9])),
        t("e.scalar", Dtype::F32, &[], f32_bytes(&[4.0])),
    ];
    write_safetensors(&path, &tensors, Some(meta)).unwrap();

    // The file is a valid safetensors file for the reference parser.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 5);
    assert_eq!(
        st.tensor("d.i32").unwrap().data(),
        i32_bytes(&[7, -8, 9]).as_slice()
    );
    let (n, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!((8 + n) % 8, 0, "data section starts 8-byte aligned");
    assert_eq!(header.metadata().as_ref().unwrap()["format"], "pt");
    // Data laid out in the declared order.
    assert_eq!(
        header.offset_keys(),
        ["a.f32", "b.f16", "c.bf16", "d.i32", "e.scalar"]
    );

    let store = TensorStore::open_file(&path).unwrap();
    assert_eq!(store.root(), path.as_path());
    assert_eq!(
        store.names(),
        ["a.f32", "b.f16", "c.bf16", "d.i32", "e.scalar"]
    );
    assert_eq!(store.metadata().unwrap()["format"], "pt");
    assert_eq!(
        store.info("c.bf16").unwrap(),
        &TensorInfo::new("c.bf16", Dtype::BF16, vec![3, 2])
    );
    assert!(store.contains("a.f32") && !store.contains("zzz"));
    assert_eq!(store.read_f32("a.f32").unwrap(), vals);
    // All test values are exactly representable in f16 and bf16 except 65504 in bf16.
    assert_eq!(store.read_f32("b.f16").unwrap(), vals);
    let bf = store.read_f32("c.bf16").unwrap();
    assert_eq!(bf[..4], vals[..4]);
    assert_eq!(bf[4], 65536.0, "65504 rounds to nearest bf16");
    assert_eq!(store.read_f64("b.f16").unwrap()[2], 0.125);
    assert_eq!(
        store.raw_bytes("d.i32").unwrap(),
        i32_bytes(&[7, -8, 9]).as_slice()
    );
    assert_eq!(store.read_f32("e.scalar").unwrap(), [4.0]);
    let (r, c, m) = store.read_matrix_f64("a.f32").unwrap();
    assert_eq!((r, c), (2, 3));
    assert_eq!(m, vals.iter().map(|&v| v as f64).collect::<Vec<_>>());
}

#[test]
fn wrong_dtype_and_shape_errors_name_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    write(
        &path,
        &[
            t("ids", Dtype::I32, &[2], i32_bytes(&[1, 2])),
            t("v", Dtype::F32, &[2], f32_bytes(&[1.0, 2.0])),
        ],
    );
    let store = TensorStore::open_file(&path).unwrap();
    let err = store.read_f32("ids").unwrap_err();
    assert!(matches!(
        err,
        IoError::Dtype {
            dtype: Dtype::I32,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("`ids`") && msg.contains("I32") && msg.contains("m.safetensors"),
        "{msg}"
    );
    let msg = store.read_matrix_f64("v").unwrap_err().to_string();
    assert!(msg.contains("`v`") && msg.contains("2-D"), "{msg}");
    let msg = store.read_f32("nope").unwrap_err().to_string();
    assert!(
        msg.contains("`nope`") && msg.contains("m.safetensors"),
        "{msg}"
    );
}

fn write_index(dir: &Path, map: &[(&str, &str)]) {
    let weight_map: serde_json::Map<String, serde_json::Value> = map
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), json.to_string()).unwrap();
}

#[test]
fn sharded_index_dir() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        &d.join("model-00001-of-00002.safetensors"),
        &[
            t(
                "layer.0.w",
                Dtype::F32,
                &[2, 2],
                f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
            ),
            t(
                "z.bias",
                Dtype::F16,
                &[2],
                encode_f32(Dtype::F16, &[0.5, 1.5]).unwrap(),
            ),
        ],
    );
    write(
        &d.join("model-00002-of-00002.safetensors"),
        &[t(
            "layer.1.w",
            Dtype::BF16,
            &[2],
            encode_f32(Dtype::BF16, &[-1.0, 8.0]).unwrap(),
        )],
    );
    write_index(
        d,
        &[
            ("layer.0.w", "model-00001-of-00002.safetensors"),
            ("z.bias", "model-00001-of-00002.safetensors"),
            ("layer.1.w", "model-00002-of-00002.safetensors"),
        ],
    );
    let store = TensorStore::open_dir(d).unwrap();
    assert_eq!(store.root(), d);
    assert_eq!(store.names(), ["layer.0.w", "layer.1.w", "z.bias"]);
    assert_eq!(store.read_f32("layer.1.w").unwrap(), [-1.0, 8.0]);
    assert_eq!(store.read_f32("z.bias").unwrap(), [0.5, 1.5]);
    assert!(store
        .file_of("layer.1.w")
        .unwrap()
        .ends_with("model-00002-of-00002.safetensors"));
    assert_eq!(store.files().len(), 2);
}

#[test]
fn unsharded_dir_with_several_files_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        &d.join("a.safetensors"),
        &[t("x", Dtype::F32, &[1], f32_bytes(&[1.0]))],
    );
    write(
        &d.join("b.safetensors"),
        &[t("y", Dtype::F32, &[1], f32_bytes(&[2.0]))],
    );
    std::fs::write(d.join("config.json"), "{}").unwrap();
    let store = TensorStore::open_dir(d).unwrap();
    assert_eq!(store.names(), ["x", "y"]);
    write(
        &d.join("c.safetensors"),
        &[t("x", Dtype::F32, &[1], f32_bytes(&[3.0]))],
    );
    let err = TensorStore::open_dir(d).unwrap_err();
    assert!(matches!(err, IoError::DuplicateTensor { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("a.safetensors") && msg.contains("c.safetensors"),
        "{msg}"
    );
}

#[test]
fn empty_dir_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let err = TensorStore::open_dir(dir.path()).unwrap_err();
    assert!(matches!(err, IoError::NoWeights { .. }), "{err}");
    let missing = dir.path().join("nothere.safetensors");
    let msg = TensorStore::open_file(&missing).unwrap_err().to_string();
    assert!(msg.contains("nothere.safetensors"), "{msg}");
    let msg = TensorStore::open_dir(&dir.path().join("nodir"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nodir"), "{msg}");
}

#[test]
fn corrupt_and_truncated_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(
        &garbage,
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!",
    )
    .unwrap();
    let err = TensorStore::open_file(&garbage).unwrap_err();
    assert!(matches!(err, IoError::Format { .. }));
    assert!(err.to_string().contains("garbage.safetensors"), "{err}");

    let tiny = dir.path().join("tiny.safetensors");
    std::fs::write(&tiny, b"abc").unwrap();
    assert!(TensorStore::open_file(&tiny)
        .unwrap_err()
        .to_string()
        .contains("tiny.safetensors"));

    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(TensorStore::open_file(&empty).is_err());

    let good = dir.path().join("trunc.safetensors");
    write(
        &good,
        &[t("w", Dtype::F32, &[4], f32_bytes(&[1.0, 2.0, 3.0, 4.0]))],
    );
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&good, &bytes[..bytes.len() - 3]).unwrap();
    let err = TensorStore::open_file(&good).unwrap_err();
    assert!(matches!(err, IoError::Format { .. }));
    assert!(err.to_string().contains("trunc.safetensors"), "{err}");
}

#[test]
fn bad_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        &d.join("s1.safetensors"),
        &[t("a", Dtype::F32, &[1], f32_bytes(&[1.0]))],
    );
    // Shard file missing.
    write_index(d, &[("a", "s1.safetensors"), ("b", "s2.safetensors")]);
    let msg = TensorStore::open_dir(d).unwrap_err().to_string();
    assert!(
        msg.contains("s2.safetensors") && msg.contains("`b`"),
        "{msg}"
    );
    // Tensor not in its shard.
    write_index(d, &[("a", "s1.safetensors"), ("b", "s1.safetensors")]);
    let msg = TensorStore::open_dir(d).unwrap_err().to_string();
    assert!(
        msg.contains("`b`") && msg.contains("does not contain"),
        "{msg}"
    );
    // Path escaping the directory.
    write_index(d, &[("a", "../s1.safetensors")]);
    let msg = TensorStore::open_dir(d).unwrap_err().to_string();
    assert!(msg.contains("index.json"), "{msg}");
    // Not JSON.
    std::fs::write(d.join("model.safetensors.index.json"), "{").unwrap();
    let err = TensorStore::open_dir(d).unwrap_err();
    assert!(matches!(err, IoError::Index { .. }), "{err}");
}

#[test]
fn model_safetensors_wins_over_stray_files() {
    // A task head or adapter saved next to the checkpoint is not part of the model.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        &d.join("model.safetensors"),
        &[t("x", Dtype::F32, &[1], f32_bytes(&[1.0]))],
    );
    write(
        &d.join("pmq_head.safetensors"),
        &[t("weight", Dtype::F32, &[1], f32_bytes(&[2.0]))],
    );
    let store = TensorStore::open_dir(d).unwrap();
    assert_eq!(store.names(), ["x"]);
    assert_eq!(store.files().len(), 1);
}

/// Resident pages of this process's mappings of `path` (from /proc/self/smaps), in KiB.
fn resident_kib(path: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let name = path.canonicalize().unwrap().display().to_string();
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let (first, second) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if first.contains('-') && second.len() == 4 {
            // a mapping's header: "start-end perms offset dev inode [path]"
            inside = line.ends_with(&name);
        } else if let (true, Some(rest)) = (inside, line.strip_prefix("Rss:")) {
            total += rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap();
        }
    }
    total
}

#[test]
fn release_drops_resident_pages_and_keeps_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    let vals: Vec<f32> = (0..1 << 20).map(|i| (i % 977) as f32 * 0.5).collect();
    write(
        &path,
        &[t("w", Dtype::F32, &[1024, 1024], f32_bytes(&vals))],
    );
    let store = TensorStore::open_file(&path).unwrap();
    assert_eq!(store.read_f32("w").unwrap(), vals);
    let before = resident_kib(&path);
    store.release("w").unwrap();
    let after = resident_kib(&path);
    assert!(before >= 3000, "reading 4 MiB should map it: {before} KiB");
    assert!(
        after + 3000 <= before,
        "release should drop the pages: {before} → {after} KiB"
    );
    // read again: the same values come back from the file
    assert_eq!(store.read_f32("w").unwrap(), vals);
    assert!(store.release("missing").is_err());
}
