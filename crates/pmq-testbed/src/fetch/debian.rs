//! Debian: `apt-get download NAME=VERSION`, refreshing the apt index once when needed, and
//! accepting a version other than the pinned one only when the caller allows it (its sha256 is
//! then recorded, not checked).

use super::download::single_file;
use super::FetchOptions;
use crate::error::FetchError;
use crate::sources::Artifact;
use crate::tools::{run, Tool, Tools};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// `apt-get download NAME=VERSION`, with one `apt-get update` when the index does not know it;
/// a newer version only with `allow_new_versions`.
pub(super) fn download(a: &Artifact, dir: &Path, opts: &FetchOptions) -> Result<(PathBuf, String)> {
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

#[cfg(all(test, unix))]
mod tests {
    use crate::error::FetchError;
    use crate::fetch::test_util::{fake_tool, no_tools, tmp_cache};
    use crate::fetch::{fetch, FetchAction, FetchOptions};
    use crate::tools::Tools;

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
}
