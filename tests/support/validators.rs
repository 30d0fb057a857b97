//! The independent validators under `tests/validators/` (Python, in the venv `.ci/deps`
//! prepares): they check what the gateway produces without sharing any of its code.

use std::path::{Path, PathBuf};

fn validators() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/validators")
}

/// Runs `script` (a file of `tests/validators/`) on `input`: its exit status, standard
/// output and standard error.
pub(crate) fn run(script: &str, input: &Path) -> (bool, String, String) {
    let python = validators().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash .ci/deps` (it installs the independent validators)",
        python.display()
    );
    let out = std::process::Command::new(python)
        .arg(validators().join(script))
        .arg(input)
        .output()
        .expect("run a validator");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
