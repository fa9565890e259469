//! What every CLI test needs: the `pmq` binary run as a user runs it.

use std::ffi::OsStr;
use std::process::Command;

/// Runs `pmq ARGS` (logging at warn); returns (success, stdout, stderr).
pub fn pmq<S: AsRef<OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pmq"))
        .args(args)
        .env("PMQ_LOG", "warn")
        .output()
        .expect("the pmq binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
