//! A software PKCS#11 module (SoftHSM2, Debian package `softhsm2`, installed by
//! `.ci/deps`) with a CPS-like token: the virtual card's keys, certificates and labels
//! written by `samu-gateway card emulate-token`. Each harness has its own token
//! directory and configuration (`SOFTHSM2_CONF`, given to the processes it starts).

use std::path::{Path, PathBuf};

/// The token's label.
pub(crate) const TOKEN: &str = "CPS3v3-VIRTUELLE";
/// Its PIN.
pub(crate) const PIN: &str = "1234";

/// SoftHSM2's module, where Debian installs it.
pub(crate) fn module() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("SoftHSM2's module (Debian package softhsm2, installed by .ci/deps)")
}

/// A PKCS#11 module wrapping SoftHSM2's that blocks the PIN after three wrong tries in a
/// row and reports the count as a card's module does (`pkcs11-lockout.c`, built here with
/// gcc once per test run); it needs `lockout_env()` beside the token's.
pub(crate) fn lockout_module() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let source =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pkcs11-lockout.c");
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pkcs11-lockout");
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join(format!("pkcs11-lockout-{}.so", std::process::id()));
            let status = std::process::Command::new("gcc")
                .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
                .arg(&out)
                .arg(&source)
                .arg("-ldl")
                .status()
                .expect("gcc runs (the toolchain's C compiler)");
            assert!(status.success(), "pkcs11-lockout.c does not build");
            out
        })
        .clone()
}

/// What the lockout module needs to find SoftHSM2's.
pub(crate) fn lockout_env() -> (&'static str, String) {
    ("PKCS11_LOCKOUT_TARGET", module().display().to_string())
}

/// A private SoftHSM2 holding one CPS-like token.
pub(crate) struct SoftHsm {
    conf: PathBuf,
    /// The card's files (card.pem, card-sign.pem, card-ca.pem…).
    pub card_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl SoftHsm {
    /// A new token holding the virtual card saved in `card_dir` (made there if absent).
    pub(crate) fn with_card(card_dir: Option<&Path>) -> Self {
        Self::with_card_and(card_dir, &[])
    }

    /// The same, `extra` given to `card emulate-token` (e.g. `--activity …`).
    pub(crate) fn with_card_and(card_dir: Option<&Path>, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let card_dir = card_dir.map_or_else(|| dir.path().join("card"), Path::to_path_buf);
        let out = std::process::Command::new(super::BIN)
            .args(["card", "emulate-token", "--pkcs11-module"])
            .arg(module())
            .arg("--dir")
            .arg(&card_dir)
            .args(["--token", TOKEN, "--pin", PIN])
            .args(extra)
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            conf,
            card_dir,
            _dir: dir,
        }
    }

    /// The environment a process needs to see this token.
    pub(crate) fn env(&self) -> (&'static str, String) {
        ("SOFTHSM2_CONF", self.conf.display().to_string())
    }
}
