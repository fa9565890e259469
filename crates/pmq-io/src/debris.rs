//! Temporary files and directories next to outputs, and what is done about them when a run
//! does not finish.
//!
//! Every temporary that pmq creates next to an output is named `.NAME.TAG-PID-N` (or
//! `PREFIX PID-N` for [`TempDir::in_dir`]): the process id makes the names unique across
//! processes and tells later runs whose it was. While it exists it is *registered* in this
//! process:
//!
//! - [`remove_registered`] (for a signal handler that exits right after) removes every
//!   registered temporary, puts an output that was moved aside back in place, and keeps the
//!   registry locked so that no new temporary can appear before the process exits;
//! - [`remove_stale`] (at the start of a writing command) removes the temporaries next to an
//!   output whose process is provably gone (its PID no longer exists).
//!
//! Temporaries are created and registered under one lock, so a signal can never see one that
//! exists but is not registered.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::IoError;

/// What to do with a registered path if the process is interrupted.
#[derive(Debug, Clone)]
enum OnAbort {
    /// Delete it (file or directory tree).
    Remove,
    /// An output moved aside while its replacement is renamed in: put it back at this path if
    /// nothing is there, else delete it.
    RestoreTo(PathBuf),
}

static REGISTRY: Mutex<BTreeMap<PathBuf, OnAbort>> = Mutex::new(BTreeMap::new());
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Tags of the temporaries pmq leaves next to an output while it runs.
const TAGS: &[&str] = &["tmp", "old", "merged", "unpack", "download"];

fn registry() -> MutexGuard<'static, BTreeMap<PathBuf, OnAbort>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.NAME.TAG-PID-N` next to `dest` (`NAME` its final component), a fresh `N` per call.
pub fn temp_sibling(dest: &Path, tag: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    parent_of(dest).join(format!(
        ".{name}.{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Creates `path` with `create` and registers it for removal on abort, under the registry
/// lock (so an interrupt never sees it unregistered).
fn create_registered<T>(
    path: &Path,
    create: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mut reg = registry();
    let made = create(path)?;
    reg.insert(path.to_path_buf(), OnAbort::Remove);
    Ok(made)
}

/// Creates the new file `path` (failing if it exists), registered for removal on abort.
pub(crate) fn create_registered_file(path: &Path) -> std::io::Result<File> {
    create_registered(path, |p| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
    })
}

/// Forgets a registered path (it was renamed into place or removed).
pub(crate) fn unregister(path: &Path) {
    registry().remove(path);
}

/// Replaces the existing output `dest` by the registered temporary directory `tmp`: moves
/// `dest` aside to `old`, renames `tmp` onto `dest`, then deletes `old`. Until `old` is deleted
/// it is registered to be put back at `dest` on abort; the renames happen under the registry
/// lock, so an interrupt sees either the old or the new state. On failure the old output is
/// back in place and `tmp` is removed.
pub(crate) fn replace_with(tmp: &Path, dest: &Path) -> Result<(), IoError> {
    let old = temp_sibling(dest, "old");
    {
        let mut reg = registry();
        if let Err(e) = std::fs::rename(dest, &old) {
            drop(reg);
            remove_path(tmp);
            unregister(tmp);
            return Err(IoError::io(dest, e));
        }
        reg.insert(old.clone(), OnAbort::RestoreTo(dest.to_path_buf()));
        if let Err(e) = std::fs::rename(tmp, dest) {
            let _ = std::fs::rename(&old, dest);
            reg.remove(&old);
            drop(reg);
            remove_path(tmp);
            unregister(tmp);
            return Err(IoError::io(dest, e));
        }
        reg.remove(tmp);
    }
    sync_parent(dest);
    let removed = std::fs::remove_dir_all(&old).map_err(|e| IoError::io(&old, e));
    unregister(&old);
    removed
}

/// Renames the registered `tmp` onto `dest` and forgets it, under the registry lock.
pub(crate) fn rename_registered(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    let mut reg = registry();
    std::fs::rename(tmp, dest)?;
    reg.remove(tmp);
    Ok(())
}

fn remove_path(p: &Path) -> bool {
    match p.symlink_metadata() {
        Err(_) => true,
        Ok(m) if m.is_dir() => {
            // a writer may still be adding files: try a few times
            (0..5).any(|_| std::fs::remove_dir_all(p).is_ok() || !p.exists())
        }
        Ok(_) => std::fs::remove_file(p).is_ok(),
    }
}

fn abort_one(path: &Path, action: &OnAbort) {
    match action {
        OnAbort::Remove => {
            remove_path(path);
        }
        OnAbort::RestoreTo(dest) => {
            if dest.symlink_metadata().is_err() && std::fs::rename(path, dest).is_ok() {
                return;
            }
            remove_path(path);
        }
    }
}

/// Removes every registered temporary of this process (putting back outputs that were moved
/// aside), then keeps the registry locked for good so no new temporary can be created: call it
/// only right before the process exits (from a signal handler). Returns how many paths were
/// handled.
pub fn remove_registered() -> usize {
    let mut reg = registry();
    let entries: Vec<(PathBuf, OnAbort)> = std::mem::take(&mut *reg).into_iter().collect();
    // restore moved-aside outputs before removing their replacements' temporaries
    for (p, a) in entries
        .iter()
        .filter(|(_, a)| matches!(a, OnAbort::RestoreTo(_)))
    {
        abort_one(p, a);
    }
    for (p, a) in entries.iter().filter(|(_, a)| matches!(a, OnAbort::Remove)) {
        abort_one(p, a);
    }
    std::mem::forget(reg);
    entries.len()
}

/// The process id in a temporary's name, if the name is one of pmq's temporaries:
/// `.NAME.TAG-PID-N` or `.NAME.TAG-PID` with a known tag, or `.pmq-merged-PID-N`.
fn debris_pid(name: &str) -> Option<(u32, &'static str)> {
    let rest = name.strip_prefix('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (head, last) = rest.rsplit_once('-')?;
    if !digits(last) {
        return None;
    }
    let (head, pid) = match head.rsplit_once('-') {
        Some((h, p)) if digits(p) => (h, p),
        _ => (head, last),
    };
    let pid: u32 = pid.parse().ok()?;
    if head == "pmq-merged" {
        return Some((pid, "merged"));
    }
    let (_, tag) = head.rsplit_once('.')?;
    TAGS.iter().find(|t| **t == tag).map(|t| (pid, *t))
}

/// Whether process `pid` exists: `Some(false)` only when that is certain.
fn pid_alive(pid: u32) -> Option<bool> {
    if pid == std::process::id() {
        return Some(true);
    }
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
}

/// Removes the temporaries that earlier, dead runs left next to `dest`: `.NAME.TAG-PID-N`
/// (`NAME` = `dest`'s final component) and `.pmq-merged-PID-N` in `dest`'s directory whose
/// PID no longer exists. A moved-aside old output (`.NAME.old-PID-N`) is put back at `dest`
/// when nothing is there. Returns the paths removed or restored.
pub fn remove_stale(dest: &Path) -> Vec<PathBuf> {
    let Some(name) = dest.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(parent_of(dest)) else {
        return Vec::new();
    };
    let own = format!(".{name}.");
    let mut done = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if !(file_name.starts_with(&own) || file_name.starts_with(".pmq-merged-")) {
            continue;
        }
        let Some((pid, tag)) = debris_pid(&file_name) else {
            continue;
        };
        if pid_alive(pid) != Some(false) {
            continue;
        }
        let path = entry.path();
        let action = if tag == "old" {
            OnAbort::RestoreTo(dest.to_path_buf())
        } else {
            OnAbort::Remove
        };
        note(&path, &action);
        abort_one(&path, &action);
        done.push(path);
    }
    done
}

fn note(path: &Path, action: &OnAbort) {
    match action {
        OnAbort::Remove => tracing::warn!(
            "removing {}, left by an interrupted earlier run",
            path.display()
        ),
        OnAbort::RestoreTo(dest) => tracing::warn!(
            "{} was moved aside by an interrupted earlier run: putting it back at {} (removing it if that exists)",
            path.display(),
            dest.display()
        ),
    }
}

/// A temporary directory, removed when dropped and registered for removal on interrupt.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh directory `.NAME.TAG-PID-N` next to `dest` (whose parents are created).
    pub fn next_to(dest: &Path, tag: &str) -> Result<Self, IoError> {
        let parent = parent_of(dest);
        std::fs::create_dir_all(parent).map_err(|e| IoError::io(parent, e))?;
        Self::create_with(|| temp_sibling(dest, tag))
    }

    /// A fresh directory `PARENT/PREFIXPID-N` (`parent` is created if missing).
    pub fn in_dir(parent: &Path, prefix: &str) -> Result<Self, IoError> {
        std::fs::create_dir_all(parent).map_err(|e| IoError::io(parent, e))?;
        Self::create_with(|| {
            parent.join(format!(
                "{prefix}{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ))
        })
    }

    fn create_with(mut name: impl FnMut() -> PathBuf) -> Result<Self, IoError> {
        loop {
            let path = name();
            match create_registered(&path, |p| std::fs::create_dir(p)) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(IoError::io(&path, e)),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory onto `dest` (which must not exist) and stops tracking it.
    pub fn rename_to(mut self, dest: &Path) -> Result<(), IoError> {
        rename_registered(&self.path, dest).map_err(|e| IoError::io(dest, e))?;
        self.path = PathBuf::new();
        Ok(())
    }

    /// Replaces the existing directory `dest` by this one (see [`replace_with`]).
    pub(crate) fn replace(mut self, dest: &Path) -> Result<(), IoError> {
        let path = std::mem::take(&mut self.path);
        replace_with(&path, dest)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
        unregister(&self.path);
    }
}

/// Best-effort fsync of the directory holding `path`, so the rename itself is durable.
pub(crate) fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debris_names_carry_the_pid() {
        assert_eq!(debris_pid(".out.tmp-123-0"), Some((123, "tmp")));
        assert_eq!(debris_pid(".my.model.old-77-3"), Some((77, "old")));
        assert_eq!(debris_pid(".pmq-merged-5-1"), Some((5, "merged")));
        assert_eq!(debris_pid(".out.tmp-123"), Some((123, "tmp")));
        assert_eq!(debris_pid(".out.old-9"), Some((9, "old")));
        assert_eq!(debris_pid(".out.tmp-x-0"), None);
        assert_eq!(debris_pid(".out.cache-1-0"), None);
        assert_eq!(debris_pid("out.tmp-1-0"), None);
        assert_eq!(debris_pid(".config.json"), None);
        let t = temp_sibling(Path::new("a/b/out"), "tmp");
        let name = t.file_name().unwrap().to_str().unwrap();
        assert_eq!(debris_pid(name), Some((std::process::id(), "tmp")));
        assert_eq!(t.parent(), Some(Path::new("a/b")));
    }
}
