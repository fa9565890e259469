//! The checks every writing command runs on its output before any work: a valid location
//! (see [`pmq_io::check_output_dir`]), not one of its inputs nor containing one nor inside one
//! ([`pmq_io::check_output_location`]), and the leftovers of dead earlier runs next to it
//! removed ([`pmq_io::debris::remove_stale`]).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Checks an output directory `out` (replaced only with `overwrite`) against `inputs`
/// (directories or files) and removes dead runs' temporaries next to it. `flag` names the
/// option in messages (e.g. `--out`).
pub fn prepare_dir(out: &Path, overwrite: bool, inputs: &[PathBuf], flag: &str) -> Result<()> {
    if out.file_name().is_none() {
        // `.`, `..`, `/`, empty: say so before anything else
        pmq_io::check_output_dir(out, overwrite).with_context(|| format!("invalid {flag}"))?;
    }
    pmq_io::check_output_location(out, inputs).with_context(|| format!("invalid {flag}"))?;
    // first, so that an output a dead run had moved aside is back before it is checked
    pmq_io::debris::remove_stale(out);
    pmq_io::check_output_dir(out, overwrite).with_context(|| format!("invalid {flag}"))?;
    Ok(())
}

/// Checks a directory `out` that a command fills with files of its own (results, experts,
/// caches; existing content is kept) against `inputs`, and removes dead runs' temporaries in it.
pub fn prepare_work_dir(out: &Path, inputs: &[PathBuf], flag: &str) -> Result<()> {
    if out.file_name().is_none() && out.parent().is_none() {
        bail!("invalid {flag}: {} is the root directory", out.display());
    }
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_file() => bail!(
            "invalid {flag}: {} exists and is a file, not a directory",
            out.display()
        ),
        _ => {}
    }
    pmq_io::check_output_location(out, inputs).with_context(|| format!("invalid {flag}"))?;
    Ok(())
}

/// Checks an output file `out` (replaced if it exists): not a directory, not an input, not
/// inside an input directory; removes dead runs' temporaries next to it.
pub fn prepare_file(out: &Path, inputs: &[PathBuf], flag: &str) -> Result<()> {
    if out.file_name().is_none() {
        bail!("invalid {flag}: {} does not name a file", out.display());
    }
    if out.is_dir() {
        bail!(
            "invalid {flag}: {} is a directory; give a file name",
            out.display()
        );
    }
    pmq_io::check_output_location(out, inputs).with_context(|| format!("invalid {flag}"))?;
    pmq_io::debris::remove_stale(out);
    Ok(())
}

/// The testbed cache's inputs that no output may overwrite: the backbone and fine-tune models
/// and the fetched task data.
pub fn testbed_inputs(cache: &Path) -> Vec<PathBuf> {
    vec![
        pmq_testbed::backbone_dir(cache),
        pmq_testbed::finetune_dir(cache),
        cache.join("data"),
    ]
}
