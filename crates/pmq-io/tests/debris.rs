//! Temporaries next to outputs: removed on interrupt (`remove_registered`) and, when a dead
//! process left them, by the next run (`remove_stale`). One test per binary: `remove_registered`
//! locks the registry for good, as it is called right before the process exits.

use pmq_io::debris::{remove_registered, remove_stale};
use pmq_io::{AtomicDir, Dtype, SafetensorsWriter, TempDir, TensorInfo};
use std::path::Path;

/// The PID of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn stale_debris_of_dead_runs_is_removed_and_registered_debris_on_interrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dead = dead_pid();
    let me = std::process::id();
    let out = root.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), b"new").unwrap();
    for d in [
        format!(".out.tmp-{dead}-0"),
        format!(".out.old-{dead}-1"),
        format!(".pmq-merged-{dead}-2"),
        format!(".out.tmp-{me}-9"),     // ours: alive
        ".out.tmp-1-0".to_string(),     // init: alive
        format!(".other.tmp-{dead}-0"), // another output's
        format!(".out.cache-{dead}-0"), // not a pmq temporary
    ] {
        std::fs::create_dir(root.join(&d)).unwrap();
        std::fs::write(root.join(&d).join("x"), b"x").unwrap();
    }
    std::fs::write(root.join(format!(".x.tmp-{dead}-0")), b"partial").unwrap();
    // a moved-aside output whose replacement never arrived is put back
    std::fs::create_dir(root.join(format!(".gone.old-{dead}-0"))).unwrap();
    std::fs::write(root.join(format!(".gone.old-{dead}-0/f")), b"old").unwrap();

    let removed = remove_stale(&out);
    assert_eq!(removed.len(), 3, "{removed:?}");
    assert_eq!(remove_stale(&root.join("x")).len(), 1);
    assert_eq!(remove_stale(&root.join("gone")).len(), 1);
    assert_eq!(std::fs::read_to_string(root.join("gone/f")).unwrap(), "old");
    let mut want = vec![
        "gone".to_string(),
        "out".to_string(),
        format!(".out.tmp-{me}-9"),
        ".out.tmp-1-0".to_string(),
        format!(".other.tmp-{dead}-0"),
        format!(".out.cache-{dead}-0"),
    ];
    want.sort();
    assert_eq!(names(root), want);
    assert_eq!(std::fs::read_to_string(out.join("keep")).unwrap(), "new");

    // what an interrupt finds: an atomic directory being written, a safetensors file being
    // streamed next to an output, a scratch directory
    let clean = root.join("clean");
    std::fs::create_dir(&clean).unwrap();
    let dir = AtomicDir::create(&clean.join("model"), false).unwrap();
    std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
    let infos = [TensorInfo::new("w", Dtype::F32, vec![2])];
    let mut w = SafetensorsWriter::create(&clean.join("w.safetensors"), &infos, None).unwrap();
    w.write("w", &[0u8; 8]).unwrap();
    let scratch = TempDir::in_dir(&clean, ".pmq-merged-").unwrap();
    std::fs::write(scratch.path().join("f"), b"f").unwrap();
    assert_eq!(names(&clean).len(), 3, "{:?}", names(&clean));
    for n in names(&clean) {
        assert!(n.contains(&format!("-{me}-")), "{n} does not carry the PID");
    }
    assert_eq!(remove_registered(), 3);
    assert!(names(&clean).is_empty(), "{:?}", names(&clean));
    std::mem::forget((dir, w, scratch));
}
