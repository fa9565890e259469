//! Line reading of JSONL files: UTF-8 (a leading byte-order mark allowed), `\n` or `\r\n` line
//! ends, blank lines skipped; errors name the file and line.

use anyhow::{Context, Result};
use std::path::Path;

/// `(line number, line)` of every non-blank line of `path`; `what` names the file in errors.
pub fn read_lines(path: &Path, what: &str) -> Result<Vec<(usize, String)>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not valid UTF-8 (byte 0x{:02x} at column {}); {what}s must be UTF-8 text",
                path.display(),
                i + 1,
                line[e.valid_up_to()],
                e.valid_up_to() + 1
            )
        })?;
        if !text.trim().is_empty() {
            out.push((i + 1, text.to_string()));
        }
    }
    Ok(out)
}
