//! The hash chain and its signed checkpoints.
//!
//! A record's hash is the SHA-256 of its stored bytes; each record names the previous hash.
//! A checkpoint signs (Ed25519, ring) the head of the chain: whoever can rewrite the store
//! can recompute hashes, but cannot sign without the key, so any rewrite before a
//! checkpoint shows. The signing key is a PKCS#8 PEM file with checked permissions; its
//! public half is what verifiers trust.

use std::path::Path;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::encoding::{decode_hex, hex, parse_sha256};
use crate::secret::load_ed25519;

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// The `prev` of the first record.
pub const GENESIS: Hash = [0; 32];

/// Version of the checkpoint form and of its signed message.
pub const CHECKPOINT_VERSION: u32 = 1;

/// SHA-256 of a record's stored bytes.
pub fn hash(bytes: &[u8]) -> Hash {
    crate::encoding::sha256(bytes)
}

/// Parses a hex hash as records and checkpoints carry it.
pub fn parse_hash(text: &str) -> Option<Hash> {
    parse_sha256(text).ok()
}

/// A signed statement that the chain of `node` had head `head` at sequence `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Checkpoint form version.
    pub v: u32,
    /// Sequence number of the record the checkpoint covers (the head then).
    pub seq: u64,
    /// Hash (hex) of that record.
    pub head: String,
    /// When it was signed.
    pub time: String,
    /// The node.
    pub node: String,
    /// First 16 hex digits of the SHA-256 of the public key.
    pub key_id: String,
    /// The Ed25519 public key (hex) that signed.
    pub public_key: String,
    /// Ed25519 signature (hex) of [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes signed: every field that matters, in a fixed text form.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "samu-gateway audit checkpoint v{}\nnode {}\nseq {}\nhead {}\ntime {}\n",
            self.v, self.node, self.seq, self.head, self.time
        )
        .into_bytes()
    }

    /// Checks the signature with the checkpoint's key, which must be one of `trusted`.
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<(), SignatureProblem> {
        let key = trusted
            .find(&self.public_key)
            .ok_or(SignatureProblem::UntrustedKey)?;
        let signature = decode_hex(&self.signature).ok_or(SignatureProblem::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(&self.message(), &signature)
            .map_err(|_| SignatureProblem::BadSignature)
    }
}

/// Why a checkpoint signature does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureProblem {
    /// Signed by a key the verifier does not trust.
    UntrustedKey,
    /// The signature does not match the checkpoint's content.
    BadSignature,
}

/// The public keys a verifier accepts checkpoints from.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(Vec<Vec<u8>>);

impl TrustedKeys {
    /// Adds a public key given as hex (64 digits for Ed25519). The refusal never repeats
    /// the text: it may be a private key given by mistake.
    pub fn add_hex(&mut self, text: &str) -> Result<(), AuditError> {
        let text = text.trim();
        if text.contains("PRIVATE KEY") {
            return Err(AuditError::Key(
                "this is a private key, not a public one: give the public key (the `.pub` file `audit keygen` wrote beside it, or its 64 hex digits)".into(),
            ));
        }
        let key = decode_hex(text).filter(|k| k.len() == 32).ok_or_else(|| {
            AuditError::Key(format!(
                "not an Ed25519 public key (64 hex digits; {} characters given)",
                text.chars().count()
            ))
        })?;
        self.0.push(key);
        Ok(())
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, public_hex: &str) -> Option<&[u8]> {
        let wanted = decode_hex(public_hex)?;
        self.0.iter().find(|k| **k == wanted).map(Vec::as_slice)
    }
}

/// The checkpoint signing key.
pub struct Signer {
    key: Ed25519KeyPair,
    public_hex: String,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads a PKCS#8 PEM Ed25519 key (from ring or `openssl genpkey -algorithm ed25519`),
    /// refusing a file others can read.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        load_ed25519(path)
            .map(Self::from_pair)
            .map_err(|e| AuditError::Key(e.to_string()))
    }

    /// Creates a new key file (mode 0600; refuses to overwrite) and loads it.
    pub fn generate(path: &Path) -> Result<Self, AuditError> {
        let pkcs8 = crate::random::ed25519_pkcs8().map_err(|e| AuditError::Key(e.to_string()))?;
        let text = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
        write_new_private(path, &text)?;
        Self::load(path)
    }

    fn from_pair(key: Ed25519KeyPair) -> Self {
        let public = key.public_key().as_ref();
        let public_hex = hex(public);
        let key_id = hex(&hash(public)[..8]);
        Self {
            key,
            public_hex,
            key_id,
        }
    }

    /// The public key, hex: what verifiers must be given out of band.
    pub fn public_key_hex(&self) -> &str {
        &self.public_hex
    }

    /// Short key identifier.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs the chain head `head` at `seq`.
    pub fn checkpoint(&self, node: &str, seq: u64, head: &Hash) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            v: CHECKPOINT_VERSION,
            seq,
            head: hex(head),
            time: crate::clock::now().0,
            node: node.to_owned(),
            key_id: self.key_id.clone(),
            public_key: self.public_hex.clone(),
            signature: String::new(),
        };
        checkpoint.signature = hex(self.key.sign(&checkpoint.message()).as_ref());
        checkpoint
    }

    /// This key as a trusted set of one.
    pub fn trusted(&self) -> TrustedKeys {
        TrustedKeys(vec![self.key.public_key().as_ref().to_vec()])
    }
}

fn write_new_private(path: &Path, text: &str) -> Result<(), AuditError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AuditError::Key(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::Key(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_signature_binds_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::generate(&dir.path().join("k.pem")).unwrap();
        let trusted = signer.trusted();
        let good = signer.checkpoint("node-a", 42, &hash(b"x"));
        good.verify(&trusted).unwrap();
        for tamper in [
            |c: &mut Checkpoint| c.seq += 1,
            |c: &mut Checkpoint| c.head = hex(&hash(b"y")),
            |c: &mut Checkpoint| c.node = "node-b".into(),
            |c: &mut Checkpoint| c.time = "2020-01-01T00:00:00.000Z".into(),
            |c: &mut Checkpoint| c.signature = "zz".into(),
        ] {
            let mut bad = good.clone();
            tamper(&mut bad);
            assert_eq!(bad.verify(&trusted), Err(SignatureProblem::BadSignature));
        }
        let other = Signer::generate(&dir.path().join("other.pem")).unwrap();
        assert_eq!(
            good.verify(&other.trusted()),
            Err(SignatureProblem::UntrustedKey)
        );
    }

    #[test]
    fn key_file_is_created_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let signer = Signer::generate(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(Signer::generate(&path).is_err());
        assert_eq!(
            Signer::load(&path).unwrap().public_key_hex(),
            signer.public_key_hex()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            Signer::load(&path)
                .unwrap_err()
                .to_string()
                .contains("world-readable")
        );
    }
}
