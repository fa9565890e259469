//! Which checkpoint directories of a list are the same directory, however the paths spell it
//! (merge and quantize warn about an expert given twice or equal to the base/model).

use std::path::{Path, PathBuf};

/// A path of the list that names a directory named before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alias {
    /// `others[i]` is `reference`.
    Reference(usize),
    /// `others[later]` is `others[earlier]` (the first earlier one).
    Earlier { earlier: usize, later: usize },
}

/// The aliases among `others`, in order, comparing canonical paths (the path itself where it
/// cannot be canonicalized).
pub fn checkpoint_aliases(reference: &Path, others: &[PathBuf]) -> Vec<Alias> {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let reference = canon(reference);
    let others: Vec<PathBuf> = others.iter().map(|p| canon(p)).collect();
    let mut out = Vec::new();
    for (i, p) in others.iter().enumerate() {
        if *p == reference {
            out.push(Alias::Reference(i));
        }
        if let Some(j) = others[..i].iter().position(|q| q == p) {
            out.push(Alias::Earlier {
                earlier: j,
                later: i,
            });
        }
    }
    out
}
