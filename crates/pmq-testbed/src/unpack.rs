//! Taking the needed files out of wheels (zip), sdists / npm tarballs (tar.gz, possibly nested)
//! and Debian packages (`dpkg-deb -x`). Only entries named in the artifact's `keep` list are
//! written, always below the staging directory; unsafe paths (`..`, absolute) are refused.

use crate::cache::{remove_path, replace_dir, TempDir};
use crate::sources::{ArchiveKind, Artifact};
use crate::tools::{run, Tool, Tools};
use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Unpacks `archive` (a download of `a`) into `dest`, replacing it atomically.
pub(crate) fn unpack(a: &Artifact, archive: &Path, dest: &Path, tools: &Tools) -> Result<()> {
    let staging = TempDir::next_to(dest, "unpack")?;
    let mut seen = vec![false; a.keep.len()];
    let keep_dir = staging.path().join("out");
    std::fs::create_dir_all(&keep_dir)
        .with_context(|| format!("creating {}", keep_dir.display()))?;
    match a.archive {
        ArchiveKind::Zip => unzip(archive, a, staging.path(), &mut seen)?,
        ArchiveKind::TarGz => {
            let f = std::fs::File::open(archive)
                .with_context(|| format!("opening {}", archive.display()))?;
            let mut nested_seen = a.nested.as_ref().map(|n| vec![false; n.keep.len()]);
            untar(
                f,
                &archive.display().to_string(),
                a,
                staging.path(),
                &mut seen,
                nested_seen.as_deref_mut(),
            )?;
            if let (Some(n), Some(ns)) = (&a.nested, nested_seen) {
                for ((from, _), ok) in n.keep.iter().zip(ns) {
                    if !ok {
                        bail!(
                            "{}: {} has no entry {from}; the package's layout changed",
                            archive.display(),
                            n.member
                        );
                    }
                }
            }
        }
        ArchiveKind::Deb => undeb(archive, a, staging.path(), &mut seen, tools)?,
    }
    for ((from, _), ok) in a.keep.iter().zip(&seen) {
        if !ok {
            bail!(
                "{}: no entry {from} in the archive; the package's layout changed",
                archive.display()
            );
        }
    }
    replace_dir(&keep_dir, dest)?;
    Ok(())
}

/// Splits an archive path into safe components, or `None` for `..`, absolute or empty paths.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let p = Path::new(name.trim_start_matches("./"));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Where entry `name` goes under the output directory, per the `keep` list.
fn map_entry(
    name: &str,
    keep: &[(&str, &str)],
    skip_suffixes: &[&str],
) -> Option<(usize, PathBuf)> {
    let name = name.trim_start_matches("./");
    if skip_suffixes.iter().any(|s| name.ends_with(s)) {
        return None;
    }
    for (i, (from, to)) in keep.iter().enumerate() {
        let rel = if from.ends_with('/') {
            match name.strip_prefix(from) {
                Some(rest) if !rest.is_empty() => format!("{to}{rest}"),
                _ => continue,
            }
        } else if name == *from {
            to.to_string()
        } else {
            continue;
        };
        return safe_relative(&rel).map(|p| (i, p));
    }
    None
}

fn write_entry(out_root: &Path, rel: &Path, reader: &mut dyn Read, what: &str) -> Result<()> {
    let target = out_root.join(rel);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut f =
        std::fs::File::create(&target).with_context(|| format!("creating {}", target.display()))?;
    std::io::copy(reader, &mut f)
        .with_context(|| format!("extracting {what} to {}", target.display()))?;
    Ok(())
}

fn unzip(archive: &Path, a: &Artifact, staging: &Path, seen: &mut [bool]) -> Result<()> {
    let f =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f))
        .with_context(|| format!("{} is not a readable zip file", archive.display()))?;
    let out = staging.join("out");
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .with_context(|| format!("{}: reading zip entry {i}", archive.display()))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry
            .name()
            .with_context(|| {
                format!(
                    "{}: zip entry {i} has an unreadable name",
                    archive.display()
                )
            })?
            .into_owned();
        if let Some((k, rel)) = map_entry(&name, a.keep, a.skip_suffixes) {
            seen[k] = true;
            let what = format!("{}:{name}", archive.display());
            write_entry(&out, &rel, &mut entry, &what)?;
        }
    }
    Ok(())
}

fn untar(
    reader: impl Read,
    what: &str,
    a: &Artifact,
    staging: &Path,
    seen: &mut [bool],
    mut nested_seen: Option<&mut [bool]>,
) -> Result<()> {
    let mut tar = tar::Archive::new(GzDecoder::new(std::io::BufReader::new(reader)));
    let out = staging.join("out");
    let entries = tar
        .entries()
        .with_context(|| format!("{what} is not a readable tar.gz file"))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{what}: reading a tar entry"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .with_context(|| format!("{what}: a tar entry has an unreadable name"))?
            .to_string_lossy()
            .into_owned();
        if let (Some(n), Some(ns)) = (&a.nested, nested_seen.as_deref_mut()) {
            if name.trim_start_matches("./") == n.member {
                seen_nested(&mut entry, &format!("{what}:{name}"), n.keep, &out, ns)?;
                continue;
            }
        }
        if let Some((k, rel)) = map_entry(&name, a.keep, a.skip_suffixes) {
            seen[k] = true;
            write_entry(&out, &rel, &mut entry, &format!("{what}:{name}"))?;
        }
    }
    Ok(())
}

/// Extracts the `keep` entries of a tar.gz read from `reader` (an entry of the outer archive).
fn seen_nested(
    reader: &mut dyn Read,
    what: &str,
    keep: &[(&str, &str)],
    out: &Path,
    seen: &mut [bool],
) -> Result<()> {
    let mut tar = tar::Archive::new(GzDecoder::new(reader));
    let entries = tar
        .entries()
        .with_context(|| format!("{what} is not a readable tar.gz file"))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{what}: reading a tar entry"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .with_context(|| format!("{what}: a tar entry has an unreadable name"))?
            .to_string_lossy()
            .into_owned();
        if let Some((k, rel)) = map_entry(&name, keep, &[]) {
            seen[k] = true;
            write_entry(out, &rel, &mut entry, &format!("{what}:{name}"))?;
        }
    }
    Ok(())
}

fn undeb(
    archive: &Path,
    a: &Artifact,
    staging: &Path,
    seen: &mut [bool],
    tools: &Tools,
) -> Result<()> {
    let root = staging.join("root");
    let out = staging.join("out");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let needed_for = format!("unpacking {}", archive.display());
    let o = run(
        Tool::DpkgDeb,
        &tools.dpkg_deb,
        &["-x".into(), archive.into(), root.clone().into()],
        None,
        &needed_for,
    )?;
    if !o.success {
        return Err(o
            .failed(
                &format!("the contents of {}", archive.display()),
                "the .deb file may be damaged: delete it and re-run the fetch",
            )
            .into());
    }
    for (k, (from, to)) in a.keep.iter().enumerate() {
        let (Some(src_rel), Some(dst_rel)) = (
            safe_relative(from.trim_end_matches('/')),
            safe_relative(to.trim_end_matches('/')),
        ) else {
            bail!("bad keep entry {from:?} → {to:?} for {}", a.key);
        };
        let src = root.join(src_rel);
        if src.symlink_metadata().is_err() {
            continue;
        }
        seen[k] = true;
        let dst = out.join(dst_rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::rename(&src, &dst)
            .with_context(|| format!("moving {} to {}", src.display(), dst.display()))?;
    }
    prune_suffixes(&out, a.skip_suffixes)?;
    remove_path(&root);
    Ok(())
}

/// Removes regular files and links below `dir` whose names end with one of `suffixes`.
fn prune_suffixes(dir: &Path, suffixes: &[&str]) -> Result<()> {
    if suffixes.is_empty() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .with_context(|| format!("inspecting {}", path.display()))?;
        if ft.is_dir() {
            prune_suffixes(&path, suffixes)?;
        } else if suffixes
            .iter()
            .any(|s| entry.file_name().to_string_lossy().ends_with(s))
        {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_mapping() {
        let keep = [("pkg/data/", "d/"), ("pkg/LICENSE", "LICENSE"), ("m/", "")];
        assert_eq!(
            map_entry("pkg/data/a/b.txt", &keep, &[]),
            Some((0, PathBuf::from("d/a/b.txt")))
        );
        assert_eq!(
            map_entry("./pkg/LICENSE", &keep, &[]),
            Some((1, PathBuf::from("LICENSE")))
        );
        assert_eq!(
            map_entry("m/config.json", &keep, &[]),
            Some((2, PathBuf::from("config.json")))
        );
        assert_eq!(map_entry("pkg/data/x.json", &keep, &[".json"]), None);
        assert_eq!(map_entry("pkg/other", &keep, &[]), None);
        assert_eq!(map_entry("pkg/data/", &keep, &[]), None);
        assert_eq!(map_entry("pkg/data/../../etc/passwd", &keep, &[]), None);
        assert_eq!(safe_relative("/abs"), None);
    }

    #[test]
    fn tar_gz_with_nested_archive() {
        use crate::sources::{Nested, Registry};
        fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
            let mut b = tar::Builder::new(Vec::new());
            for (name, data) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, *data).unwrap();
            }
            let raw = b.into_inner().unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &raw).unwrap();
            gz.finish().unwrap()
        }
        let inner = tgz(&[("h/data.txt", b"1\t0.5\tgood"), ("h/other.pdf", b"x")]);
        let outer = tgz(&[("p-1/LICENSE", b"MIT"), ("p-1/res/h.tar.gz", &inner)]);
        static ART: Artifact = Artifact {
            key: "t",
            registry: Registry::Pypi,
            sdist: true,
            name: "p",
            version: "1",
            file_name: "p-1.tar.gz",
            sha256: "",
            licence: "",
            archive: ArchiveKind::TarGz,
            dest: "",
            keep: &[("p-1/LICENSE", "LICENSE")],
            skip_suffixes: &[],
            nested: Some(Nested {
                member: "p-1/res/h.tar.gz",
                keep: &[("h/data.txt", "data.txt")],
            }),
        };
        let dir = TempDir::next_to(&std::env::temp_dir().join("pmq-testbed-unpack"), "t").unwrap();
        let archive = dir.path().join("p-1.tar.gz");
        std::fs::write(&archive, &outer).unwrap();
        let dest = dir.path().join("dest");
        unpack(&ART, &archive, &dest, &Tools::default()).unwrap();
        assert_eq!(std::fs::read(dest.join("LICENSE")).unwrap(), b"MIT");
        assert_eq!(
            std::fs::read(dest.join("data.txt")).unwrap(),
            b"1\t0.5\tgood"
        );
        assert!(!dest.join("other.pdf").exists());
        // The input is untouched and nothing is left next to dest but dest and the archive.
        assert_eq!(std::fs::read(&archive).unwrap(), outer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

        // A damaged archive gives an error naming it, and leaves dest as it was.
        std::fs::write(&archive, b"not gzip").unwrap();
        let err = format!(
            "{:#}",
            unpack(&ART, &archive, &dest, &Tools::default()).unwrap_err()
        );
        assert!(err.contains("p-1.tar.gz"), "{err}");
        assert!(dest.join("data.txt").exists());
        // A missing entry is reported.
        let no_license = tgz(&[("p-1/res/h.tar.gz", &inner)]);
        std::fs::write(&archive, &no_license).unwrap();
        let err = format!(
            "{:#}",
            unpack(&ART, &archive, &dest, &Tools::default()).unwrap_err()
        );
        assert!(err.contains("no entry p-1/LICENSE"), "{err}");
    }
}
