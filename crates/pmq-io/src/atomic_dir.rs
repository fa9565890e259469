//! [`AtomicDir`]: an output directory that appears complete or not at all; and the checks of
//! an output location ([`check_output_dir`], [`check_output_location`]) that commands run
//! before any work.

use std::path::{Path, PathBuf};

use crate::debris::sync_parent;
use crate::debris::{self, TempDir};
use crate::IoError;

/// A directory built in a temporary sibling of `dest` (`.NAME.tmp-PID-N`) and renamed onto
/// `dest` by [`commit`](Self::commit). Dropping it uncommitted removes everything written into
/// it; so does an interrupt (see [`crate::debris`]).
pub struct AtomicDir {
    dest: PathBuf,
    overwrite: bool,
    tmp: TempDir,
}

impl AtomicDir {
    /// Starts building `dest`. Fails if `dest` exists, unless `overwrite` is set and `dest` is a
    /// directory (it is then replaced at commit time, not before). Missing parents are created.
    /// Temporaries that dead earlier runs left next to `dest` are removed first.
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self, IoError> {
        check_output_dir(dest, overwrite)?;
        debris::remove_stale(dest);
        let tmp = TempDir::next_to(dest, "tmp")?;
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
        check_output_dir(&self.dest, self.overwrite)?;
        if self.dest.symlink_metadata().is_err() {
            self.tmp.rename_to(&self.dest)?;
            sync_parent(&self.dest);
            return Ok(());
        }
        // Move the old output aside, rename the new one in, then delete the old one; an
        // interrupt in between puts the old one back.
        self.tmp.replace(&self.dest)
    }
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks that `dest` can become an output directory: it names a directory to create (not `.`,
/// `..` or `/`), and either does not exist, or (with `overwrite`) is a real directory — not a
/// file, not a symbolic link. Run it before any work.
pub fn check_output_dir(dest: &Path, overwrite: bool) -> Result<(), IoError> {
    let bad = |reason: &str| IoError::Destination {
        path: dest.to_path_buf(),
        reason: reason.into(),
    };
    if dest.as_os_str().is_empty() {
        return Err(bad("is empty; give a directory name"));
    }
    if dest.file_name().is_none() {
        return Err(bad(
            "does not name a new directory (it ends in `.`, `..` or is the root); give a directory name",
        ));
    }
    match std::fs::symlink_metadata(dest) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            // the nearest existing ancestor must be a directory
            let mut p = parent_of(dest);
            loop {
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_dir() => return Ok(()),
                    Ok(_) => {
                        return Err(IoError::Destination {
                            path: dest.to_path_buf(),
                            reason: format!(
                                "cannot be created: {} is not a directory",
                                p.display()
                            ),
                        })
                    }
                    Err(_) => match p.parent() {
                        Some(q) if !q.as_os_str().is_empty() => p = q.to_path_buf(),
                        _ => return Ok(()),
                    },
                }
            }
        }
        Err(e) => Err(IoError::io(dest, e)),
        Ok(m) if m.file_type().is_symlink() => Err(bad(
            "is a symbolic link; refusing to write through it (give the real directory)",
        )),
        Ok(m) if !m.is_dir() => Err(bad("exists and is not a directory; refusing to replace it")),
        Ok(_) if !overwrite => Err(bad("already exists (pass --overwrite to replace it)")),
        Ok(_) => Ok(()),
    }
}

/// Refuses an output path that is, contains, or lies inside one of `inputs` (files or
/// directories): inputs are never modified. Paths are compared canonicalised (symbolic links
/// resolved; an output that does not exist yet through its nearest existing ancestor). Inputs
/// that do not exist are skipped (opening them fails later with its own error).
pub fn check_output_location(out: &Path, inputs: &[PathBuf]) -> Result<(), IoError> {
    let Some(out_c) = canonical_target(out) else {
        return Ok(());
    };
    for input in inputs {
        let Ok(in_c) = input.canonicalize() else {
            continue;
        };
        let relation = if in_c == out_c {
            "is"
        } else if in_c.starts_with(&out_c) {
            "contains"
        } else if out_c.starts_with(&in_c) {
            "lies inside"
        } else {
            continue;
        };
        return Err(IoError::OutputOverlapsInput {
            out: out.to_path_buf(),
            input: input.clone(),
            relation,
        });
    }
    Ok(())
}

/// The canonical form of a path that may not exist yet (its nearest existing ancestor is
/// canonicalised and the rest appended).
fn canonical_target(path: &Path) -> Option<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            let mut c = c;
            for part in rest.iter().rev() {
                match part {
                    std::path::Component::ParentDir => {
                        c.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => c.push(other),
                }
            }
            return Some(c);
        }
        rest.push(cur.components().next_back()?);
        cur = cur.parent()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_locations() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let input = root.join("a/model");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();
        let inputs = [input.clone()];
        for (out, relation) in [
            (input.clone(), Some("is")),
            (root.join("a"), Some("contains")),
            (root.to_path_buf(), Some("contains")),
            (input.join("sub/new"), Some("lies inside")),
            (root.join("a/model/../model"), Some("is")),
            (root.join("a/other"), None),
            (root.join("b/new/deeper"), None),
        ] {
            let got = check_output_location(&out, &inputs);
            match relation {
                None => assert!(got.is_ok(), "{out:?}: {got:?}"),
                Some(r) => {
                    let msg = got.unwrap_err().to_string();
                    assert!(msg.contains(r), "{out:?}: {msg}");
                }
            }
        }
        #[cfg(unix)]
        {
            let link = root.join("link");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            assert!(check_output_location(&link, &inputs).is_err());
            let e = check_output_dir(&link, true).unwrap_err().to_string();
            assert!(e.contains("symbolic link"), "{e}");
        }
        for bad in [".", "/", "x/..", ""] {
            assert!(check_output_dir(Path::new(bad), true).is_err(), "{bad:?}");
        }
        let e = check_output_dir(&root.join("file"), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = check_output_dir(&root.join("file/sub"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = check_output_dir(&input, false).unwrap_err().to_string();
        assert!(e.contains("pass --overwrite"), "{e}");
        assert!(check_output_dir(&input, true).is_ok());
        assert!(check_output_dir(&root.join("new/dir"), false).is_ok());
    }

    #[test]
    fn commit_replaces_and_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        for round in 0..2 {
            let d = AtomicDir::create(&dest, true).unwrap();
            std::fs::write(d.path().join("f"), format!("{round}")).unwrap();
            d.commit().unwrap();
            assert_eq!(
                std::fs::read_to_string(dest.join("f")).unwrap(),
                format!("{round}")
            );
        }
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out")]);
        // dropped uncommitted: nothing is left
        let d = AtomicDir::create(&dest, true).unwrap();
        let p = d.path().to_path_buf();
        drop(d);
        assert!(!p.exists());
    }
}
