//! Cache location, checksums and atomic file operations.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The default cache directory: `$PMQ_CACHE`, else `$XDG_CACHE_HOME/pmq`, else `~/.cache/pmq`
/// (empty variables count as unset).
pub fn default_cache_dir() -> Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("PMQ_CACHE") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(p).join("pmq"));
    }
    if let Some(home) = var("HOME") {
        return Ok(PathBuf::from(home).join(".cache").join("pmq"));
    }
    bail!("cannot choose a cache directory: none of PMQ_CACHE, XDG_CACHE_HOME or HOME is set")
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A path next to `target` that no other writer in this or another process uses:
/// `.<name>.<tag>-<pid>-<n>`.
pub(crate) fn sibling_tmp(target: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    let parent = target.parent().unwrap_or_else(|| Path::new("."));
    parent.join(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader sees either the old or the new file, never a partial one (the temporary,
/// `.NAME.tmp-PID-N`, is removed on interrupt: see [`pmq_io::debris`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    pmq_io::write_file_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Moves the finished directory `staging` to `dest`, replacing what was there.
pub(crate) fn replace_dir(staging: &Path, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    let old = if dest.symlink_metadata().is_ok() {
        let old = sibling_tmp(dest, "old");
        std::fs::rename(dest, &old)
            .with_context(|| format!("moving the old {} aside", dest.display()))?;
        Some(old)
    } else {
        None
    };
    std::fs::rename(staging, dest)
        .with_context(|| format!("renaming {} to {}", staging.display(), dest.display()))?;
    if let Some(old) = old {
        remove_path(&old);
    }
    Ok(())
}

/// Best-effort removal of a file or a directory tree (used for temporaries).
pub(crate) fn remove_path(p: &Path) {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// A directory removed when dropped, and on interrupt (for staging areas and tests).
pub(crate) use pmq_io::TempDir;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_and_atomic_write() {
        let dir =
            TempDir::next_to(&std::env::temp_dir().join("pmq-testbed-cache-test"), "t").unwrap();
        let f = dir.path().join("sub").join("a.txt");
        write_atomic(&f, b"abc").unwrap();
        assert_eq!(
            sha256_file(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        write_atomic(&f, b"new").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
        let leftovers: Vec<_> = std::fs::read_dir(f.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let err = sha256_file(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("missing"));
    }

    #[test]
    fn replace_dir_swaps_contents() {
        let dir =
            TempDir::next_to(&std::env::temp_dir().join("pmq-testbed-cache-test"), "r").unwrap();
        let dest = dir.path().join("dest");
        for content in ["one", "two"] {
            let staging = dir.path().join(format!("staging-{content}"));
            std::fs::create_dir_all(&staging).unwrap();
            std::fs::write(staging.join("f"), content).unwrap();
            replace_dir(&staging, &dest).unwrap();
            assert_eq!(std::fs::read_to_string(dest.join("f")).unwrap(), content);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
