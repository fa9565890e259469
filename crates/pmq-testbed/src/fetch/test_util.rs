//! Helpers shared by the fetch tests: a throw-away cache, tools that are all missing, and
//! shell scripts standing in for the registry clients.

use crate::cache::TempDir;
use crate::tools::Tools;
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;

pub(super) fn tmp_cache(tag: &str) -> TempDir {
    TempDir::next_to(&std::env::temp_dir().join("pmq-testbed-fetch"), tag).unwrap()
}

pub(super) fn no_tools() -> Tools {
    let missing = PathBuf::from("/nonexistent/pmq-testbed-test/tool");
    Tools {
        python: missing.clone(),
        npm: missing.clone(),
        apt_get: missing.clone(),
        apt_cache: missing.clone(),
        dpkg_deb: missing,
    }
}

/// Writes an executable shell script standing in for a registry client.
#[cfg(unix)]
pub(super) fn fake_tool(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}
