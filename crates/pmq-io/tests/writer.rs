//! SafetensorsWriter and AtomicDir: ordering, validation, and nothing partial left behind.

use std::path::Path;

use pmq_io::{f32_bytes, AtomicDir, Dtype, IoError, SafetensorsWriter, TensorInfo, TensorStore};

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn infos() -> Vec<TensorInfo> {
    vec![
        TensorInfo::new("second", Dtype::F32, vec![2]),
        TensorInfo::new("first", Dtype::F16, vec![3]),
    ]
}

#[test]
fn streaming_writer_keeps_declared_order() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.safetensors");
    let mut w = SafetensorsWriter::create(&dest, &infos(), None).unwrap();
    assert_eq!(w.next_name(), Some("second"));
    w.write("second", &f32_bytes(&[1.0, 2.0])).unwrap();
    assert!(!dest.exists(), "nothing at the destination before finish");
    w.write("first", &[0u8; 6]).unwrap();
    w.finish().unwrap();
    assert_eq!(entries(dir.path()), ["out.safetensors"]);
    let bytes = std::fs::read(&dest).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.offset_keys(), ["second", "first"]);
    let store = TensorStore::open_file(&dest).unwrap();
    assert_eq!(store.names(), ["first", "second"]);
    assert_eq!(store.read_f32("second").unwrap(), [1.0, 2.0]);
    assert_eq!(store.read_f32("first").unwrap(), [0.0; 3]);
}

#[test]
fn writer_misuse_errors_and_drop_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.safetensors");
    {
        let mut w = SafetensorsWriter::create(&dest, &infos(), None).unwrap();
        let msg = w.write("first", &[0u8; 6]).unwrap_err().to_string();
        assert!(
            msg.contains("out of order") && msg.contains("`second`"),
            "{msg}"
        );
        let msg = w.write("second", &[0u8; 7]).unwrap_err().to_string();
        assert!(msg.contains("7 bytes") && msg.contains("8"), "{msg}");
        w.write("second", &[0u8; 8]).unwrap();
        assert_eq!(entries(dir.path()).len(), 1, "one temp file while writing");
    }
    assert!(
        entries(dir.path()).is_empty(),
        "dropped writer leaves nothing"
    );

    let mut w = SafetensorsWriter::create(&dest, &infos(), None).unwrap();
    w.write("second", &[0u8; 8]).unwrap();
    let err = w.finish().unwrap_err();
    assert!(
        matches!(err, IoError::Write { ref name, .. } if name == "first"),
        "{err}"
    );
    assert!(
        entries(dir.path()).is_empty(),
        "failed finish leaves nothing"
    );

    let dup = vec![
        TensorInfo::new("a", Dtype::F32, vec![1]),
        TensorInfo::new("a", Dtype::F32, vec![1]),
    ];
    assert!(SafetensorsWriter::create(&dest, &dup, None).is_err());
    let reserved = vec![TensorInfo::new("__metadata__", Dtype::F32, vec![1])];
    assert!(SafetensorsWriter::create(&dest, &reserved, None).is_err());
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn finished_writer_replaces_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.safetensors");
    std::fs::write(&dest, b"old").unwrap();
    let one = [TensorInfo::new("x", Dtype::F32, vec![1])];
    let mut w = SafetensorsWriter::create(&dest, &one, None).unwrap();
    w.write("x", &f32_bytes(&[5.0])).unwrap();
    w.finish().unwrap();
    assert_eq!(
        TensorStore::open_file(&dest)
            .unwrap()
            .read_f32("x")
            .unwrap(),
        [5.0]
    );
}

#[test]
fn atomic_dir_commit_drop_and_overwrite() {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("sub").join("out");
    {
        let d = AtomicDir::create(&dest, false).unwrap();
        std::fs::write(d.path().join("a.txt"), "x").unwrap();
        assert!(!dest.exists());
    }
    assert!(!dest.exists(), "uncommitted dir vanishes");
    assert!(entries(&root.path().join("sub")).is_empty());

    let d = AtomicDir::create(&dest, false).unwrap();
    std::fs::write(d.path().join("a.txt"), "one").unwrap();
    d.commit().unwrap();
    assert_eq!(std::fs::read_to_string(dest.join("a.txt")).unwrap(), "one");

    let err = AtomicDir::create(&dest, false).err().unwrap();
    assert!(matches!(err, IoError::Destination { .. }));
    assert!(err.to_string().contains("already exists"), "{err}");

    let d = AtomicDir::create(&dest, true).unwrap();
    std::fs::write(d.path().join("b.txt"), "two").unwrap();
    assert!(dest.join("a.txt").exists(), "old output kept until commit");
    d.commit().unwrap();
    assert!(!dest.join("a.txt").exists());
    assert_eq!(std::fs::read_to_string(dest.join("b.txt")).unwrap(), "two");
    assert_eq!(
        entries(&root.path().join("sub")),
        ["out"],
        "no temp or backup left"
    );

    let file = root.path().join("file");
    std::fs::write(&file, "f").unwrap();
    assert!(
        AtomicDir::create(&file, true).is_err(),
        "never replaces a plain file"
    );
}

#[test]
fn identical_inputs_give_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let meta: std::collections::BTreeMap<String, String> = (0..20)
        .map(|i| (format!("key{i}"), format!("v{i}")))
        .collect();
    let tensors = vec![("w".to_string(), Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0]))];
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    pmq_io::write_safetensors(&a, &tensors, Some(meta.clone())).unwrap();
    pmq_io::write_safetensors(&b, &tensors, Some(meta)).unwrap();
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(a, b);
    let st = safetensors::SafeTensors::deserialize(&a).unwrap();
    assert_eq!(
        st.tensor("w").unwrap().data(),
        f32_bytes(&[1.0, 2.0]).as_slice()
    );
    let (_, header) = safetensors::SafeTensors::read_metadata(&a).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["key7"], "v7");
    // Empty tensor list with metadata is still a valid file.
    let e = dir.path().join("e.safetensors");
    let meta = std::collections::BTreeMap::from([("k".to_string(), "v".to_string())]);
    pmq_io::write_safetensors(&e, &[], Some(meta)).unwrap();
    assert!(TensorStore::open_file(&e).unwrap().is_empty());
}
