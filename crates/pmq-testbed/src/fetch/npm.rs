//! npm: `npm pack NAME@VERSION` (the package tarball, install scripts never run).

use super::download::{expect_name, single_file};
use crate::sources::Artifact;
use crate::tools::{run, Tool, Tools};
use anyhow::Result;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Runs `npm pack` for `a` in `dir`; returns the downloaded file and its (pinned) version.
pub(super) fn download(a: &Artifact, dir: &Path, t: &Tools) -> Result<(PathBuf, String)> {
    let spec = format!("{}@{}", a.name, a.version);
    let what = format!("{spec} from the npm registry");
    let args: Vec<OsString> = vec![
        "pack".into(),
        spec.clone().into(),
        "--ignore-scripts".into(),
        "--loglevel=warn".into(),
    ];
    let o = run(Tool::Npm, &t.npm, &args, Some(dir), &what)?;
    if !o.success {
        return Err(o
            .failed(
                &what,
                "Check network access to the npm registry (npm config get registry).",
            )
            .into());
    }
    let file = single_file(dir, &o.command)?;
    expect_name(&file, a)?;
    Ok((file, a.version.to_string()))
}
