//! Secret files: where a key lives (a path, or a systemd credential), the permissions a key
//! file must have, and loading the Ed25519 keys that sign checkpoints and assertions. A
//! leaf: it uses nothing else from the crate.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ring::signature::Ed25519KeyPair;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

/// Prefix of a key path that names a systemd credential (`LoadCredential=`).
const CREDENTIAL_PREFIX: &str = "credential:";

/// A path to a secret: a plain file path, or `credential:NAME` for a file under
/// `$CREDENTIALS_DIRECTORY` as systemd's `LoadCredential=` provides it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretPath(pub String);

impl SecretPath {
    /// The file to read.
    pub fn resolve(&self) -> Result<PathBuf, String> {
        let Some(name) = self.0.strip_prefix(CREDENTIAL_PREFIX) else {
            return Ok(PathBuf::from(&self.0));
        };
        if name.is_empty() || name.contains('/') {
            return Err(format!("invalid credential name '{name}'"));
        }
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
            format!(
                "'{}' needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=)",
                self.0
            )
        })?;
        Ok(Path::new(&dir).join(name))
    }
}

impl From<PathBuf> for SecretPath {
    fn from(path: PathBuf) -> Self {
        Self(path.to_string_lossy().into_owned())
    }
}

/// A private key must be readable by its owner and at most its group, and writable by
/// nobody else: anyone who can read it can impersonate the gateway.
pub fn check_key_file_mode(path: &Path) -> Result<(), String> {
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("file {} cannot be read: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    let what = if mode & 0o004 != 0 {
        "world-readable"
    } else if mode & 0o003 != 0 {
        "accessible to other users"
    } else if mode & 0o020 != 0 {
        "group-writable"
    } else {
        return Ok(());
    };
    Err(format!(
        "file {} is {what} (mode {mode:04o}); expected 0600 or 0640",
        path.display()
    ))
}

/// Loads a PKCS#8 PEM Ed25519 key (from ring or `openssl genpkey -algorithm ed25519`),
/// refusing a file others can read. Audit checkpoints and upstream access assertions are signed with such keys.
pub fn load_ed25519(path: &Path) -> Result<Ed25519KeyPair, String> {
    check_key_file_mode(path)?;
    let der = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: not a PEM private key: {e}", path.display()))?;
    let PrivateKeyDer::Pkcs8(pkcs8) = der else {
        return Err(format!("{}: expected a PKCS#8 Ed25519 key", path.display()));
    };
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.secret_pkcs8_der())
        .map_err(|e| format!("{}: not an Ed25519 key: {e}", path.display()))
}
