//! Helpers shared by the registry clients: finding the one file a client just downloaded and
//! checking it is the pinned file name.

use crate::sources::Artifact;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub(super) fn expect_name(file: &Path, a: &Artifact) -> Result<()> {
    let got = file.file_name().map(|n| n.to_string_lossy().into_owned());
    if got.as_deref() != Some(a.file_name) {
        bail!(
            "downloading {} {} produced {} instead of the pinned file {}",
            a.name,
            a.version,
            got.unwrap_or_default(),
            a.file_name
        );
    }
    Ok(())
}

/// The only regular file in `dir` (what a client just downloaded there).
pub(super) fn single_file(dir: &Path, command: &str) -> Result<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            files.push(e.path());
        }
    }
    match files.len() {
        1 => Ok(files.remove(0)),
        0 => bail!(
            "`{command}` succeeded but saved no file in {}",
            dir.display()
        ),
        _ => bail!(
            "`{command}` saved {} files in {}, expected one: {:?}",
            files.len(),
            dir.display(),
            files
        ),
    }
}
