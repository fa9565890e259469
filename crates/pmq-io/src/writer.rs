//! [`SafetensorsWriter`]: streams tensors into a safetensors file, atomically.
//!
//! The header (every name, dtype, shape and the optional `__metadata__`) is declared up front
//! and serialised with the `safetensors` crate's own [`Metadata`] type; tensor data is then
//! appended one tensor at a time, in the declared order, to `.<name>.tmp-<pid>-<n>` in the
//! destination's directory (registered for removal on interrupt, see [`crate::debris`]). [`SafetensorsWriter::finish`] checks completeness, fsyncs and
//! renames onto the destination; a writer dropped before that removes its temporary file.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo as HeaderEntry};
use safetensors::Dtype;

use crate::debris::sync_parent;
use crate::{IoError, TensorInfo};

/// Writes one safetensors file tensor by tensor; see the module docs.
pub struct SafetensorsWriter {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    tensors: Vec<TensorInfo>,
    lens: Vec<usize>,
    next: usize,
}

impl SafetensorsWriter {
    /// Declares the file's tensors (data will be laid out in this order) and writes the header
    /// into a temporary file next to `dest`.
    pub fn create(
        dest: &Path,
        tensors: &[TensorInfo],
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<Self, IoError> {
        let bad = |name: &str, reason: String| IoError::Write {
            path: dest.to_path_buf(),
            name: name.to_string(),
            reason,
        };
        let mut seen = HashSet::new();
        let mut lens = Vec::with_capacity(tensors.len());
        let mut entries = Vec::with_capacity(tensors.len());
        let mut offset = 0usize;
        for t in tensors {
            if t.name == "__metadata__" {
                return Err(bad(&t.name, "this name is reserved by the format".into()));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(bad(&t.name, "declared twice".into()));
            }
            let len = t.byte_len().ok_or_else(|| {
                bad(
                    &t.name,
                    format!("shape {:?} of {} has no whole byte size", t.shape, t.dtype),
                )
            })?;
            let end = offset
                .checked_add(len)
                .ok_or_else(|| bad(&t.name, "file size overflows".into()))?;
            entries.push((
                t.name.clone(),
                HeaderEntry {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    data_offsets: (offset, end),
                },
            ));
            lens.push(len);
            offset = end;
        }
        let header = Metadata::new(None, entries)
            .map_err(|e| bad("", format!("the safetensors crate rejects the header: {e}")))?;
        let header = header_json(&header, metadata.as_ref())
            .map_err(|e| bad("", format!("cannot serialise the header: {e}")))?;
        let mut header = header.into_bytes();
        header.resize(header.len().next_multiple_of(8), b' ');

        let tmp = crate::debris::temp_sibling(dest, "tmp");
        let file = crate::debris::create_registered_file(&tmp).map_err(|e| IoError::io(&tmp, e))?;
        let mut writer = Self {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tensors: tensors.to_vec(),
            lens,
            next: 0,
        };
        writer.put(&(header.len() as u64).to_le_bytes())?;
        writer.put(&header)?;
        Ok(writer)
    }

    /// The destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Name of the tensor expected by the next [`write`](Self::write), if any.
    pub fn next_name(&self) -> Option<&str> {
        self.tensors.get(self.next).map(|t| t.name.as_str())
    }

    /// Appends the data of `name`, which must be the next declared tensor, with exactly its
    /// declared byte length.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), IoError> {
        let bad = |reason: String| IoError::Write {
            path: self.dest.clone(),
            name: name.to_string(),
            reason,
        };
        let Some(expected) = self.tensors.get(self.next) else {
            return Err(bad("all declared tensors were already written".into()));
        };
        if expected.name != name {
            return Err(bad(format!(
                "written out of order: the next declared tensor is `{}`",
                expected.name
            )));
        }
        if bytes.len() != self.lens[self.next] {
            return Err(bad(format!(
                "got {} bytes, but {} {:?} needs {}",
                bytes.len(),
                expected.dtype,
                expected.shape,
                self.lens[self.next]
            )));
        }
        self.put(bytes)?;
        self.next += 1;
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        let file = self.file.as_mut().expect("file is open until finish");
        file.write_all(bytes).map_err(|e| IoError::io(&self.tmp, e))
    }

    /// Checks that every declared tensor was written, fsyncs and renames onto the destination.
    pub fn finish(mut self) -> Result<(), IoError> {
        if let Some(missing) = self.tensors.get(self.next) {
            return Err(IoError::Write {
                path: self.dest.clone(),
                name: missing.name.clone(),
                reason: format!(
                    "never written ({} of {} tensors written)",
                    self.next,
                    self.tensors.len()
                ),
            });
        }
        let file = self.file.take().expect("file is open until finish");
        let file = file
            .into_inner()
            .map_err(|e| IoError::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| IoError::io(&self.tmp, e))?;
        drop(file);
        crate::debris::rename_registered(&self.tmp, &self.dest)
            .map_err(|e| IoError::io(&self.dest, e))?;
        sync_parent(&self.dest);
        // Renamed: nothing left for Drop to clean up.
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for SafetensorsWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.tmp);
            crate::debris::unregister(&self.tmp);
        }
    }
}

/// The header JSON: the crate's own serialisation of the tensor entries (in offset order),
/// preceded by `__metadata__` with its keys sorted, so equal inputs give identical bytes.
/// The result is checked by parsing it back into the crate's [`Metadata`].
fn header_json(
    tensors: &Metadata,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<String, serde_json::Error> {
    let entries = serde_json::to_string(tensors)?;
    let json = match metadata {
        None => entries,
        Some(m) => {
            let rest = entries.strip_prefix('{').unwrap_or(&entries);
            let sep = if rest == "}" { "" } else { "," };
            format!(
                "{{\"__metadata__\":{}{sep}{rest}",
                serde_json::to_string(m)?
            )
        }
    };
    serde_json::from_str::<Metadata>(&json)?;
    Ok(json)
}

/// Writes a small safetensors file from in-memory tensors `(name, dtype, shape, bytes)`,
/// laid out in the given order, atomically.
pub fn write_safetensors(
    dest: &Path,
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<BTreeMap<String, String>>,
) -> Result<(), IoError> {
    let infos: Vec<TensorInfo> = tensors
        .iter()
        .map(|(name, dtype, shape, _)| TensorInfo::new(name.clone(), *dtype, shape.clone()))
        .collect();
    let mut writer = SafetensorsWriter::create(dest, &infos, metadata)?;
    for (name, _, _, bytes) in tensors {
        writer.write(name, bytes)?;
    }
    writer.finish()
}

/// Writes `bytes` to the file `dest` through a registered temporary file next to it
/// (`.NAME.tmp-PID-N`), fsynced and renamed into place: readers see the old file or the new
/// one, never a partial one.
pub fn write_file_atomic(dest: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| IoError::io(parent, e))?;
    let tmp = crate::debris::temp_sibling(dest, "tmp");
    let result = (|| {
        let mut f = crate::debris::create_registered_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        crate::debris::rename_registered(&tmp, dest)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        crate::debris::unregister(&tmp);
        return Err(IoError::io(dest, e));
    }
    sync_parent(dest);
    Ok(())
}
