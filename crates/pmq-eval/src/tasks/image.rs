//! Image classification data: a directory with one sub-folder per class (the `ImageFolder`
//! layout of torchvision and of HF `datasets`' imagefolder), each holding that class's images
//! (`.png`, `.jpg`, `.jpeg`, also in nested folders). Hidden entries (`.name`) are skipped.
//!
//! For training the classes are the sub-folder names (integers in numeric order, otherwise
//! sorted); for evaluation each sub-folder must be one of the head's classes (a test folder may
//! lack some classes).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One image and its class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageExample {
    pub path: PathBuf,
    /// Index into [`ImageTask::labels`].
    pub label: usize,
}

/// An image classification task.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTask {
    pub name: String,
    /// Class names; an example's `label` indexes this list.
    pub labels: Vec<String>,
    /// Classes interleaved (the first image of every class, then the second, …; each class's
    /// images by path), so that a prefix — `--max-examples` — keeps every class.
    pub examples: Vec<ImageExample>,
}

/// Whether `p` names an image file pmq reads (`.png`, `.jpg`, `.jpeg`, any case).
pub fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if !hidden(&p) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// The image files under `dir`, recursively, sorted.
fn images_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in entries(dir)? {
        if p.is_dir() {
            out.extend(images_under(&p)?);
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// `(class folder name, its images)` of `root`.
fn class_folders(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    if !root.is_dir() {
        bail!("image folder {} does not exist", root.display());
    }
    let mut out = Vec::new();
    for p in entries(root)? {
        if !p.is_dir() {
            continue;
        }
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            bail!("{}: class folder names must be UTF-8", p.display());
        };
        let images = images_under(&p)?;
        if images.is_empty() {
            bail!("class folder {} has no .png/.jpg/.jpeg images", p.display());
        }
        out.push((name.to_string(), images));
    }
    if out.is_empty() {
        bail!(
            "{} has no class folders: an image task is a directory with one sub-folder of \
             images per class",
            root.display()
        );
    }
    Ok(out)
}

impl ImageTask {
    /// A training task: the classes are `root`'s sub-folders.
    pub fn from_folder(name: &str, root: &Path) -> Result<Self> {
        let folders = class_folders(root)?;
        let labels = super::sorted_classes(folders.iter().map(|(c, _)| c.clone()));
        if labels.len() < 2 {
            bail!(
                "{}: a classifier needs at least 2 class folders, found {labels:?}",
                root.display()
            );
        }
        Self::assemble(name, labels, folders, root)
    }

    /// A test task scored with a head over `labels`: every sub-folder of `root` must be one
    /// of them.
    pub fn from_folder_with_labels(name: &str, root: &Path, labels: &[String]) -> Result<Self> {
        let folders = class_folders(root)?;
        Self::assemble(name, labels.to_vec(), folders, root)
    }

    fn assemble(
        name: &str,
        labels: Vec<String>,
        folders: Vec<(String, Vec<PathBuf>)>,
        root: &Path,
    ) -> Result<Self> {
        let mut examples = Vec::new();
        let mut by_class: Vec<(usize, Vec<PathBuf>)> = Vec::new();
        for (class, images) in folders {
            let Some(label) = labels.iter().position(|l| *l == class) else {
                bail!(
                    "{}: class folder {class:?} is not one of the head's classes {labels:?}",
                    root.display()
                );
            };
            by_class.push((label, images));
        }
        by_class.sort_by_key(|(l, _)| *l);
        let longest = by_class.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        for k in 0..longest {
            for (label, images) in &by_class {
                if let Some(path) = images.get(k) {
                    examples.push(ImageExample {
                        path: path.clone(),
                        label: *label,
                    });
                }
            }
        }
        Ok(Self {
            name: name.to_string(),
            labels,
            examples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn folders_are_classes_in_order() {
        // classes named with leading zeros keep their names (GTSRB-style 00000…)
        let d0 = tempfile::tempdir().unwrap();
        touch(&d0.path().join("00010/a.png"));
        touch(&d0.path().join("00002/a.png"));
        let t = ImageTask::from_folder("t", d0.path()).unwrap();
        assert_eq!(t.labels, ["00002", "00010"]);
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("10/b.png"));
        touch(&r.join("10/a.JPG"));
        touch(&r.join("2/x/y.jpeg"));
        touch(&r.join("2/notes.txt"));
        touch(&r.join(".cache/z.png"));
        touch(&r.join("readme.md"));
        let t = ImageTask::from_folder("t", r).unwrap();
        assert_eq!(t.labels, ["2", "10"]);
        let got: Vec<(String, usize)> = t
            .examples
            .iter()
            .map(|e| {
                (
                    e.path.strip_prefix(r).unwrap().display().to_string(),
                    e.label,
                )
            })
            .collect();
        // interleaved: one image of each class, then the next
        assert_eq!(
            got,
            [
                ("2/x/y.jpeg".to_string(), 0),
                ("10/a.JPG".to_string(), 1),
                ("10/b.png".to_string(), 1)
            ]
        );
        touch(&r.join("2/z.png"));
        let t = ImageTask::from_folder("t", r).unwrap();
        let labels: Vec<usize> = t.examples.iter().map(|e| e.label).collect();
        assert_eq!(labels, [0, 1, 0, 1]);
        // evaluation: labels come from the head, folders may be a subset
        let labels: Vec<String> = ["10", "2", "7"].iter().map(|s| s.to_string()).collect();
        let t = ImageTask::from_folder_with_labels("t", r, &labels).unwrap();
        let got: Vec<usize> = t.examples.iter().map(|e| e.label).collect();
        assert_eq!(got, [0, 1, 0, 1]);
        let e = ImageTask::from_folder_with_labels("t", r, &labels[..1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"2\"") && e.contains("not one of"), "{e}");
    }

    #[test]
    fn bad_folders_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("a/1.png"));
        let e = ImageTask::from_folder("t", r).unwrap_err().to_string();
        assert!(e.contains("at least 2"), "{e}");
        std::fs::create_dir_all(r.join("b")).unwrap();
        let e = ImageTask::from_folder("t", r).unwrap_err().to_string();
        assert!(e.contains("b") && e.contains("no .png"), "{e}");
        let e = ImageTask::from_folder("t", &r.join("a/1.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
