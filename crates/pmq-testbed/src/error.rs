//! Errors a caller may want to tell apart (reach them with `anyhow::Error::downcast_ref`).

use std::path::PathBuf;

/// An external program the fetch needs but could not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingTool {
    /// The program, e.g. `npm`.
    pub tool: String,
    /// What it is needed for, e.g. `the spam task (npm registry)`.
    pub needed_for: String,
    /// How to get it.
    pub install_hint: String,
}

/// Failures of [`crate::fetch`] that have a specific remedy.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// One or more required programs are not installed.
    #[error("{}", describe_missing(.0))]
    MissingTools(Vec<MissingTool>),
    /// A registry client ran but failed (network, registry or package error).
    #[error("`{command}` failed ({status}) while fetching {what}:\n{output}\n{hint}")]
    ToolFailed {
        command: String,
        status: String,
        what: String,
        /// The tail of the program's output.
        output: String,
        hint: String,
    },
    /// A downloaded file does not have the pinned sha256.
    #[error("checksum mismatch for {}: expected sha256 {expected}, found {actual}. {advice}", file.display())]
    ChecksumMismatch {
        file: PathBuf,
        expected: String,
        actual: String,
        advice: String,
    },
    /// The Debian archive no longer offers the pinned version of a package.
    #[error(
        "Debian package {package}: the pinned version {expected} is not available; the apt index \
         offers {found}. Re-run with allow-new-versions (pmq testbed fetch --allow-new-versions) \
         to accept it: its sha256 is then recorded in manifest.json instead of checked, and the \
         language-id splits may differ from the documented ones"
    )]
    VersionMismatch {
        package: String,
        expected: String,
        found: String,
    },
    /// A task name that is not one of [`crate::task_names`].
    #[error("unknown task {name:?}; the tasks are: {known}")]
    UnknownTask { name: String, known: String },
}

fn describe_missing(tools: &[MissingTool]) -> String {
    let mut s = String::from("cannot fetch the testbed, required programs are missing:");
    for t in tools {
        s.push_str(&format!(
            "\n  - {} (needed for {}): {}",
            t.tool, t.needed_for, t.install_hint
        ));
    }
    s
}
