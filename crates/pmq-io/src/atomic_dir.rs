//! [`AtomicDir`]: an output directory that appears complete or not at all.

use std::path::{Path, PathBuf};

use crate::writer::sync_parent;
use crate::IoError;

/// A directory built in a temporary sibling of `dest` and renamed onto `dest` by
/// [`commit`](Self::commit). Dropping it uncommitted removes everything written into it.
pub struct AtomicDir {
    dest: PathBuf,
    overwrite: bool,
    tmp: tempfile::TempDir,
}

impl AtomicDir {
    /// Starts building `dest`. Fails if `dest` exists, unless `overwrite` is set and `dest` is a
    /// directory (it is then replaced at commit time, not before). Missing parents are created.
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self, IoError> {
        check_dest(dest, overwrite)?;
        let name = dest
            .file_name()
            .ok_or_else(|| IoError::Destination {
                path: dest.to_path_buf(),
                reason: "has no final directory name".into(),
            })?
            .to_string_lossy()
            .into_owned();
        let parent = parent_of(dest);
        std::fs::create_dir_all(&parent).map_err(|e| IoError::io(&parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempdir_in(&parent)
            .map_err(|e| IoError::io(&parent, e))?;
        Ok(Self {
            dest: dest.to_path_buf(),
            overwrite,
            tmp,
        })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The final destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Renames the temporary directory onto the destination (replacing an existing destination
    /// directory only if `overwrite` was given).
    pub fn commit(self) -> Result<(), IoError> {
        check_dest(&self.dest, self.overwrite)?;
        let tmp = self.tmp.keep();
        let result = replace_dir(&tmp, &self.dest);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn check_dest(dest: &Path, overwrite: bool) -> Result<(), IoError> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IoError::io(dest, e)),
        Ok(_) if !overwrite => Err(IoError::Destination {
            path: dest.to_path_buf(),
            reason: "already exists (pass overwrite to replace it)".into(),
        }),
        Ok(m) if !m.is_dir() => Err(IoError::Destination {
            path: dest.to_path_buf(),
            reason: "exists and is not a directory; refusing to replace it".into(),
        }),
        Ok(_) => Ok(()),
    }
}

/// Moves `tmp` onto `dest`; an existing `dest` is first moved aside, then deleted.
fn replace_dir(tmp: &Path, dest: &Path) -> Result<(), IoError> {
    if !dest.exists() {
        std::fs::rename(tmp, dest).map_err(|e| IoError::io(dest, e))?;
        sync_parent(dest);
        return Ok(());
    }
    let mut old_name = dest.file_name().unwrap_or_default().to_os_string();
    old_name.push(format!(".old-{}", std::process::id()));
    let old = dest.with_file_name(format!(".{}", old_name.to_string_lossy()));
    std::fs::rename(dest, &old).map_err(|e| IoError::io(dest, e))?;
    if let Err(e) = std::fs::rename(tmp, dest) {
        let _ = std::fs::rename(&old, dest);
        return Err(IoError::io(dest, e));
    }
    sync_parent(dest);
    std::fs::remove_dir_all(&old).map_err(|e| IoError::io(&old, e))
}
