//! Running the registry clients (pip, npm, apt) and dpkg-deb as subprocesses.

use crate::error::{FetchError, MissingTool};
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The external programs the fetch runs; override them to use other installations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tools {
    /// A Python 3 with pip (`python3 -m pip download`).
    pub python: PathBuf,
    /// `npm` (`npm pack`).
    pub npm: PathBuf,
    /// `apt-get` (`apt-get download`, `apt-get update`).
    pub apt_get: PathBuf,
    /// `apt-cache` (`apt-cache policy`, to report which version the index offers).
    pub apt_cache: PathBuf,
    /// `dpkg-deb` (`dpkg-deb -x`, `dpkg-deb -f`).
    pub dpkg_deb: PathBuf,
}

impl Default for Tools {
    fn default() -> Self {
        Self {
            python: "python3".into(),
            npm: "npm".into(),
            apt_get: "apt-get".into(),
            apt_cache: "apt-cache".into(),
            dpkg_deb: "dpkg-deb".into(),
        }
    }
}

/// Which program, for messages and install hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tool {
    Python,
    Pip,
    Npm,
    AptGet,
    AptCache,
    DpkgDeb,
}

impl Tool {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Tool::Python => "python3",
            Tool::Pip => "pip (python3 -m pip)",
            Tool::Npm => "npm",
            Tool::AptGet => "apt-get",
            Tool::AptCache => "apt-cache",
            Tool::DpkgDeb => "dpkg-deb",
        }
    }

    pub(crate) fn install_hint(self) -> &'static str {
        match self {
            Tool::Python | Tool::Pip => {
                "install Python 3 with pip (Debian/Ubuntu: apt-get install python3-pip; \
                 elsewhere: python3 -m ensurepip)"
            }
            Tool::Npm => "install Node.js with npm (Debian/Ubuntu: apt-get install npm)",
            Tool::AptGet | Tool::AptCache => {
                "the Debian fortunes packages are fetched with apt: run the fetch on \
                 Debian/Ubuntu, or leave out the language-id task"
            }
            Tool::DpkgDeb => {
                "install dpkg (Debian/Ubuntu have it; elsewhere: the dpkg package of your \
                 distribution), or leave out the language-id task"
            }
        }
    }

    pub(crate) fn missing(self, needed_for: &str) -> MissingTool {
        MissingTool {
            tool: self.label().to_string(),
            needed_for: needed_for.to_string(),
            install_hint: self.install_hint().to_string(),
        }
    }
}

/// What a finished subprocess returned.
#[derive(Debug)]
pub(crate) struct Output {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl Output {
    /// The last lines of stderr (or stdout when stderr is empty), for error messages.
    pub(crate) fn tail(&self) -> String {
        let src = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = src.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(12);
        lines[start..]
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A [`FetchError::ToolFailed`] for this output.
    pub(crate) fn failed(&self, what: &str, hint: &str) -> FetchError {
        FetchError::ToolFailed {
            command: self.command.clone(),
            status: self.status.clone(),
            what: what.to_string(),
            output: self.tail(),
            hint: hint.to_string(),
        }
    }
}

/// Runs `program args…` (stdin closed, output captured). A program that cannot be found becomes
/// [`FetchError::MissingTools`].
pub(crate) fn run(
    tool: Tool,
    program: &Path,
    args: &[OsString],
    cwd: Option<&Path>,
    needed_for: &str,
) -> Result<Output> {
    let command = std::iter::once(program.as_os_str().to_os_string())
        .chain(args.iter().cloned())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%command, "running");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FetchError::MissingTools(vec![tool.missing(needed_for)]).into());
        }
        Err(e) => return Err(e).with_context(|| format!("could not run `{command}`")),
    };
    Ok(Output {
        success: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command,
    })
}

/// Checks that `tool` runs (`--version`); returns the missing-tool record when it does not.
pub(crate) fn probe(tool: Tool, tools: &Tools, needed_for: &str) -> Option<MissingTool> {
    let (program, args): (&Path, Vec<OsString>) = match tool {
        Tool::Python => (&tools.python, vec!["--version".into()]),
        Tool::Pip => (
            &tools.python,
            vec!["-m".into(), "pip".into(), "--version".into()],
        ),
        Tool::Npm => (&tools.npm, vec!["--version".into()]),
        Tool::AptGet => (&tools.apt_get, vec!["--version".into()]),
        Tool::AptCache => (&tools.apt_cache, vec!["--version".into()]),
        Tool::DpkgDeb => (&tools.dpkg_deb, vec!["--version".into()]),
    };
    match run(tool, program, &args, None, needed_for) {
        Ok(o) if o.success => None,
        _ => Some(tool.missing(needed_for)),
    }
}
