//! Integration tests: every test runs the `rnntrace` binary the way a user would.
//!
//! Golden numbers come from real Keras (see `fixtures/generate.py` and `fixtures/VERSIONS.json`); this
//! file never computes an expected value itself.

mod diagnose;
mod display;
mod errors;
mod explain;
mod explain_baselines;
mod explain_float16;
mod explain_ties;
mod faults;
mod float16_models;
mod golden;
mod models;
mod output;
mod real_models;
mod report;
mod torch_files;

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// The binary under test.
pub fn rnntrace() -> Command {
    let mut c = Command::cargo_bin("rnntrace").expect("binary built");
    c.env_remove("NO_COLOR");
    // Not a terminal: output fits 100 columns unless a test sets COLUMNS.
    c.env_remove("COLUMNS");
    c
}

/// `fixtures/` in the repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// One golden case directory.
pub fn case_dir(name: &str) -> PathBuf {
    fixtures().join("cases").join(name)
}

/// Reads an `.npy` fixture as (shape, values).
pub fn npy(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let a =
        rnntrace::io::read_npy(path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    (a.shape, a.data)
}

/// Runs the binary, returning (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Builds `.npy` bytes for a header `descr`, a shape and a raw payload.
pub fn npy_bytes(descr: &str, shape: &[usize], payload: &[u8]) -> Vec<u8> {
    let mut bytes = rnntrace::io::npy::header(descr, false, shape);
    bytes.extend_from_slice(payload);
    bytes
}

/// Runs `cmd` (arguments for the binary), reads a few bytes of its stdout and closes the pipe, as
/// `rnntrace … | head` does; returns (exit code, stderr).
pub fn run_into_closed_pipe(args: &[&std::ffi::OsStr], dir: &Path) -> (Option<i32>, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("rnntrace"))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let out = child.wait_with_output().expect("binary ends");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
