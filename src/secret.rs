//! Secret files: where a key lives (a path, or a systemd credential), the permissions a key
//! file must have, and loading the Ed25519 keys that sign checkpoints and assertions. A
//! leaf: it uses nothing else from the crate.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ring::signature::Ed25519KeyPair;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

/// Why a secret file is unusable. The messages name the file and what is expected, never
/// the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `credential:NAME` with an empty name or a path in it.
    #[error("invalid credential name '{0}'")]
    CredentialName(String),
    /// Neither an absolute path nor `credential:NAME`: maybe the key itself pasted in the
    /// configuration, so the value is never repeated.
    #[error(
        "is neither an absolute file path nor credential:NAME (the value is not repeated: a key is never written in the configuration, it goes in a file)"
    )]
    NotAPath,
    /// `credential:NAME` that neither systemd's credentials nor the credential store hold.
    #[error("'{name}': no such credential in {looked} (put the key file there as {file})")]
    NoSuchCredential {
        /// The `credential:NAME` value.
        name: String,
        /// Where it was looked for.
        looked: String,
        /// The file name the credential store expects.
        file: String,
    },
    /// The file cannot be read.
    #[error("file {path} cannot be read: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// Others may read or write it.
    #[error("file {path} is {what} (mode {mode:04o}); expected 0600 or 0640")]
    Permissions {
        /// The file.
        path: String,
        /// What is wrong with the mode.
        what: &'static str,
        /// The mode.
        mode: u32,
    },
    /// Group-readable by a group that is neither root's nor the service's.
    #[error(
        "file {path} is readable by group {gid}, which is neither root's nor the service's ({SERVICE_GROUP}); chgrp it or make it 0600"
    )]
    ForeignGroup {
        /// The file.
        path: String,
        /// The file's group.
        gid: u32,
    },
    /// Owned by another user than root or this process's: theirs to read or replace,
    /// whatever its mode.
    #[error(
        "file {path} is owned by user {uid}, neither root nor the user running this check; chown it to root"
    )]
    ForeignOwner {
        /// The file.
        path: String,
        /// The file's owner.
        uid: u32,
    },
    /// Not the key it should be.
    #[error("{path}: {reason}")]
    NotAKey {
        /// The file.
        path: String,
        /// What it is not.
        reason: String,
    },
}

/// Prefix of a key path that names a credential.
const CREDENTIAL_PREFIX: &str = "credential:";

/// The credential store: one file per credential, named after it (root only). The unit
/// hands the whole directory to the service as systemd credentials
/// (`LoadCredential=gateway:/etc/samu-gateway/credentials`, so that only the keys
/// present are loaded, and a key an unconfigured section would use need not exist).
pub(crate) const CREDENTIAL_STORE: &str = "/etc/samu-gateway/credentials";

/// The ID the unit loads the store under: systemd names each file's credential
/// `gateway_FILE`.
const STORE_ID: &str = "gateway";

/// Overrides [`CREDENTIAL_STORE`] outside systemd (tests, a store elsewhere).
const STORE_ENV: &str = "SAMU_GATEWAY_CREDENTIAL_STORE";

/// A path to a secret: a plain file path, or `credential:NAME` for the key the credential
/// store holds as `NAME` (docs: README, "Keys and credentials").
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretPath(pub String);

impl SecretPath {
    /// Whether it names a credential (systemd reads it for the service) rather than a
    /// file the service opens itself.
    pub fn is_credential(&self) -> bool {
        self.0.starts_with(CREDENTIAL_PREFIX)
    }

    /// The file to read. Under systemd (`$CREDENTIALS_DIRECTORY` set) it is the credential
    /// systemd made of the store's file (`gateway_NAME`), or one a `LoadCredential=NAME:…`
    /// line of the administrator's own named `NAME`. From a shell it is the store's file
    /// itself, so `configtest` reads what the unit will load.
    ///
    /// A plain path must be absolute: the unit runs from `/`, so a relative one that
    /// `configtest` found from `/etc/samu-gateway` would not be found. A value that looks
    /// like a key rather than a path (a PEM block, a long run of hex digits) is refused
    /// without being repeated: the error would carry the key to the journal.
    pub fn resolve(&self) -> Result<PathBuf, SecretError> {
        let Some(name) = self.0.strip_prefix(CREDENTIAL_PREFIX) else {
            let value = self.0.as_str();
            let key_like = value.contains('\n')
                || value.contains("-----BEGIN")
                || (value.len() >= 32 && value.bytes().all(|b| b.is_ascii_hexdigit()));
            if key_like || !Path::new(value).is_absolute() {
                return Err(SecretError::NotAPath);
            }
            return Ok(PathBuf::from(value));
        };
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(SecretError::CredentialName(name.to_owned()));
        }
        let missing = |looked: String| SecretError::NoSuchCredential {
            name: self.0.clone(),
            looked,
            file: Path::new(&credential_store())
                .join(name)
                .display()
                .to_string(),
        };
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let dir = Path::new(&dir);
            let candidates = [dir.join(format!("{STORE_ID}_{name}")), dir.join(name)];
            return candidates
                .into_iter()
                .find(|path| path.exists())
                .ok_or_else(|| missing(format!("systemd's credentials ({})", dir.display())));
        }
        let path = Path::new(&credential_store()).join(name);
        if path.exists() {
            Ok(path)
        } else {
            Err(missing(format!(
                "the credential store {}",
                credential_store()
            )))
        }
    }
}

/// Where the credential store is: [`CREDENTIAL_STORE`] unless the environment says.
pub(crate) fn credential_store() -> String {
    std::env::var(STORE_ENV).unwrap_or_else(|_| CREDENTIAL_STORE.to_owned())
}

impl From<PathBuf> for SecretPath {
    fn from(path: PathBuf) -> Self {
        Self(path.to_string_lossy().into_owned())
    }
}

/// The group the unit runs the service as (systemd/samu-gateway.sysusers).
pub(crate) const SERVICE_GROUP: &str = "samu-gateway";

/// A private key must be owned by root or the user running (another owner may read it
/// or put their own key in its place), readable by its owner and at most its group, and
/// writable by nobody else: anyone who can read it can impersonate the gateway. A group that may read
/// it must be one that is meant to: root's, the service's, or the group this process runs
/// as (an administrator's own choice); a key left 0640 in `users` or `adm` is readable by
/// every login on the appliance.
pub(crate) fn check_key_file_mode(path: &Path) -> Result<(), SecretError> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).map_err(|e| SecretError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let owner = metadata.uid();
    if owner != 0 && owner != rustix::process::geteuid().as_raw() {
        return Err(SecretError::ForeignOwner {
            path: path.display().to_string(),
            uid: owner,
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    let what = if mode & 0o004 != 0 {
        "world-readable"
    } else if mode & 0o003 != 0 {
        "accessible to other users"
    } else if mode & 0o020 != 0 {
        "group-writable"
    } else if mode & 0o040 != 0 && !trusted_group(metadata.gid()) {
        return Err(SecretError::ForeignGroup {
            path: path.display().to_string(),
            gid: metadata.gid(),
        });
    } else {
        return Ok(());
    };
    Err(SecretError::Permissions {
        path: path.display().to_string(),
        what,
        mode,
    })
}

/// Whether members of `gid` may read a key: root's group, the group this process runs as,
/// or the service's group as the system's group file names it (the unit's group is a local
/// system group: systemd-sysusers writes it there).
fn trusted_group(gid: u32) -> bool {
    gid == 0
        || gid == rustix::process::getegid().as_raw()
        || gid == rustix::process::getgid().as_raw()
        || std::fs::read_to_string("/etc/group")
            .is_ok_and(|groups| group_id(&groups, SERVICE_GROUP) == Some(gid))
}

/// The id of the group `name` in a group file's text (`name:password:gid:members`).
fn group_id(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name)
            .then(|| fields.nth(1)?.trim().parse().ok())
            .flatten()
    })
}

/// Loads an RSA private key (PKCS#8 or PKCS#1 PEM), refusing a file others can read: the
/// structure's certificate key, which signs VIHF assertions in the indirect modes.
pub(crate) fn load_rsa(path: &Path) -> Result<ring::signature::RsaKeyPair, SecretError> {
    check_key_file_mode(path)?;
    let not_a_key = |reason: String| SecretError::NotAKey {
        path: path.display().to_string(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| not_a_key(format!("not a PEM private key: {e}")))?;
    let key = match &der {
        PrivateKeyDer::Pkcs8(pkcs8) => {
            ring::signature::RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der())
        }
        PrivateKeyDer::Pkcs1(pkcs1) => {
            ring::signature::RsaKeyPair::from_der(pkcs1.secret_pkcs1_der())
        }
        _ => return Err(not_a_key("expected an RSA key (PKCS#8 or PKCS#1)".into())),
    };
    key.map_err(|e| not_a_key(format!("not a usable RSA key: {e}")))
}

/// Loads a PKCS#8 PEM Ed25519 key (from ring or `openssl genpkey -algorithm ed25519`),
/// refusing a file others can read. Audit checkpoints and upstream access assertions are signed with such keys.
pub(crate) fn load_ed25519(path: &Path) -> Result<Ed25519KeyPair, SecretError> {
    check_key_file_mode(path)?;
    let not_a_key = |reason: String| SecretError::NotAKey {
        path: path.display().to_string(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| not_a_key(format!("not a PEM private key: {e}")))?;
    let PrivateKeyDer::Pkcs8(pkcs8) = der else {
        return Err(not_a_key("expected a PKCS#8 Ed25519 key".into()));
    };
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.secret_pkcs8_der())
        .map_err(|e| not_a_key(format!("not an Ed25519 key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_found_by_its_name_only() {
        let groups = "root:x:0:\nusers:x:100:\nsamu-gateway-old:x:998:\nsamu-gateway:x:999:\n";
        assert_eq!(group_id(groups, "samu-gateway"), Some(999));
        assert_eq!(group_id(groups, "root"), Some(0));
        assert_eq!(group_id(groups, "samu"), None);
        assert_eq!(
            group_id("samu-gateway:x:not-a-number:\n", "samu-gateway"),
            None
        );
        assert_eq!(group_id("samu-gateway\n", "samu-gateway"), None);
    }

    /// A 0640 key whose group is some other group is readable by that group's members.
    /// Giving a file away takes root (CI runs as root); elsewhere the test says it skips.
    #[test]
    fn a_key_readable_by_a_foreign_group_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "not read").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        // The process's own group is trusted.
        check_key_file_mode(&key).unwrap();
        // A gid no group file names, neither root's nor this process's.
        let foreign = 48_879;
        let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
        assert_ne!(group_id(&groups, SERVICE_GROUP), Some(foreign));
        if std::os::unix::fs::chown(&key, None, Some(foreign)).is_err() {
            eprintln!("SKIPPED: giving a file to another group takes root");
            return;
        }
        assert_eq!(
            check_key_file_mode(&key),
            Err(SecretError::ForeignGroup {
                path: key.display().to_string(),
                gid: foreign
            })
        );
        // Readable by its owner alone, its group does not matter.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_key_file_mode(&key).unwrap();
        // Root's group may read it.
        std::os::unix::fs::chown(&key, None, Some(0)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        check_key_file_mode(&key).unwrap();
        // Another user's key, however private its mode, is theirs to read or replace.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&key, Some(foreign), None).unwrap();
        assert_eq!(
            check_key_file_mode(&key),
            Err(SecretError::ForeignOwner {
                path: key.display().to_string(),
                uid: foreign
            })
        );
    }
}
