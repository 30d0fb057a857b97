//! The national shared record (DMP) as professionals' software reaches it: SOAP 1.2 /
//! IHE XDS.b, every request carrying a VIHF assertion signed with XML-DSig
//! (docs/dmp.md). This module owns the `[dmp]` configuration section and the signers;
//! the assertion is [`vihf`]'s, the messages [`hl7v3`]'s (TD0.2, TD0.5) and [`xds`]'s
//! (TD3.1, TD3.2), the transactions over card or structure TLS [`client`]'s.

mod card_tls;
pub mod client;
pub mod hl7v3;
pub mod inspect;
pub mod mtom;
pub mod soap;
pub mod vihf;
pub mod xds;

use std::path::PathBuf;

use ring::signature::RsaKeyPair;
use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};

use crate::problem::ConfigProblem;
use crate::secret::SecretPath;

/// Why a DMP exchange could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmpError {
    /// The signing key or certificate is unusable.
    #[error("VIHF signer: {0}")]
    Signer(String),
    /// The assertion could not be built or signed.
    #[error("VIHF: {0}")]
    Vihf(String),
    /// A request could not be written.
    #[error("DMP request: {0}")]
    Request(String),
    /// An answer that is not what the protocol promises (its defect named, never its
    /// content).
    #[error("DMP answer unusable: {0}")]
    Answer(String),
    /// A search answer holding only part of its candidates (a first page, or more than are
    /// read): its defect, never its content.
    #[error("DMP search answer partial: {0}")]
    Partial(String),
    /// An HL7 v3 acknowledgement other than "accepted", with its detail codes.
    #[error("the DMP refused the request ({code})")]
    Refused {
        /// The detail codes, or the acknowledgement type.
        code: String,
    },
    /// A SOAP fault: its codes (the text stays in the value, out of the message).
    #[error("the DMP answered with fault {} ({})", .0.most_specific(), .0.code)]
    Fault(soap::Fault),
}

/// `Authentification_Mode`: how the professional was authenticated, which decides who
/// signs the assertion (docs/dmp.md, "Who signs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AuthenticationMode {
    /// The professional's own CPS card: its signature key signs the assertion, its
    /// authentication key the TLS handshake.
    #[default]
    #[serde(rename = "DIRECTE")]
    Directe,
    /// The structure's certificate alone (the DMP refuses document search and retrieval
    /// in this mode).
    #[serde(rename = "INDIRECTE")]
    Indirecte,
    /// The structure's certificate, the professional authenticated by Pro Santé Connect.
    #[serde(rename = "INDIRECTE_RENFORCEE")]
    IndirecteRenforcee,
}

impl AuthenticationMode {
    /// The attribute's value.
    pub fn code(self) -> &'static str {
        match self {
            Self::Directe => "DIRECTE",
            Self::Indirecte => "INDIRECTE",
            Self::IndirecteRenforcee => "INDIRECTE_RENFORCEE",
        }
    }

    /// `AuthnContextClassRef`: a card is a smartcard PKI authentication.
    pub fn authn_context(self) -> &'static str {
        match self {
            Self::Directe => "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI",
            Self::Indirecte | Self::IndirecteRenforcee => {
                "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"
            }
        }
    }
}

/// `[dmp]`: reaching the national record and what the VIHF says of the centre and the
/// software. Which values come from where: docs/dmp.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DmpConfig {
    /// Base URL of the DMP services for the environment (`https://…`).
    pub base_url: String,
    /// PEM CA certificate(s) the DMP's certificate must chain to.
    pub server_ca: PathBuf,
    /// CRLs (PEM or DER) the DMP's certificate is checked against; they must include
    /// its issuer's. Reread when they change (looked at every five minutes at most).
    #[serde(default)]
    pub server_crls: Vec<PathBuf>,
    /// `DIRECTE` (cards sign), `INDIRECTE` or `INDIRECTE_RENFORCEE` (the structure's
    /// certificate signs).
    #[serde(default)]
    pub authentication_mode: AuthenticationMode,
    /// The structure's certificate (PEM), which signs and authenticates in the indirect
    /// modes.
    #[serde(default)]
    pub structure_cert: Option<PathBuf>,
    /// Its RSA private key (file or `credential:NAME`).
    #[serde(default)]
    pub structure_key: Option<SecretPath>,
    /// `Secteur_Activite` (J61; `SA01`: public health establishment).
    #[serde(default = "defaults::activity_sector")]
    pub activity_sector: String,
    /// The regulating physicians' specialty (TRE_R38), sent as their second role.
    pub specialty: String,
    /// `LPS_ID_HOMOLOGATION_DMP`, issued with the DMP homologation (the demo says
    /// `DEMO-NON-HOMOLOGUE`).
    pub homologation_number: String,
    /// `LPS_ID`, when registered.
    #[serde(default)]
    pub software_id: Option<String>,
    /// `VIHF_Version`.
    #[serde(default = "defaults::vihf_version")]
    pub vihf_version: String,
    /// How long an assertion is valid, seconds.
    #[serde(default = "defaults::assertion_lifetime_secs")]
    pub assertion_lifetime_secs: u64,
    /// The document types a summary may come from (`code^^scheme`), asked for in TD3.1.
    #[serde(default = "defaults::document_types")]
    pub document_types: Vec<String>,
    /// Connection deadline, milliseconds.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline of a whole operation (a break-glass access: TD0.2 and TD3.1 at once, then
    /// TD3.2), milliseconds.
    #[serde(default = "defaults::total_timeout_ms")]
    pub total_timeout_ms: u64,
    /// Largest answer accepted (a retrieval of two documents), bytes.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
}

mod defaults {
    pub(super) fn activity_sector() -> String {
        "SA01".into()
    }
    pub(super) fn vihf_version() -> String {
        "3.0".into()
    }
    pub(super) fn assertion_lifetime_secs() -> u64 {
        300
    }
    pub(super) fn document_types() -> Vec<String> {
        [
            "60591-5^^2.16.840.1.113883.6.1",
            "SYNTH^^1.2.250.1.213.1.1.4.12",
            "74207-2^^2.16.840.1.113883.6.1",
            "11490-0^^2.16.840.1.113883.6.1",
            "REMB^^1.2.250.1.213.1.1.4.12",
        ]
        .map(String::from)
        .to_vec()
    }
    pub(super) fn connect_timeout_ms() -> u64 {
        1_000
    }
    pub(super) fn total_timeout_ms() -> u64 {
        4_000
    }
    pub(super) fn max_body_bytes() -> usize {
        32 * 1024 * 1024
    }
}

/// A code the DMP's value sets use: letters and digits, a few separators.
fn is_code(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl DmpConfig {
    /// Every problem of the section.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if !self.base_url.starts_with("https://") {
            out.push(ConfigProblem::new(
                "dmp.base_url",
                format!("'{}' is not an https:// URL", self.base_url),
            ));
        }
        for (key, value) in [
            ("dmp.activity_sector", &self.activity_sector),
            ("dmp.specialty", &self.specialty),
            ("dmp.vihf_version", &self.vihf_version),
            ("dmp.homologation_number", &self.homologation_number),
        ] {
            if !is_code(value) {
                out.push(ConfigProblem::new(
                    key,
                    format!("'{value}' is not a code (letters, digits, '.', '_', '-')"),
                ));
            }
        }
        if !(30..=3_600).contains(&self.assertion_lifetime_secs) {
            out.push(ConfigProblem::new(
                "dmp.assertion_lifetime_secs",
                "must be between 30 and 3600",
            ));
        }
        if !(100..=10_000).contains(&self.connect_timeout_ms) {
            out.push(ConfigProblem::new(
                "dmp.connect_timeout_ms",
                "must be between 100 and 10000",
            ));
        }
        // An answer is held in memory whole (a retrieval of two documents with their MIME
        // envelope): large enough for real ones, small enough to bound a hostile one.
        if !(1024 * 1024..=128 * 1024 * 1024).contains(&self.max_body_bytes) {
            out.push(ConfigProblem::new(
                "dmp.max_body_bytes",
                format!(
                    "{} is out of range: expected 1048576 (1 MiB) to 134217728 (128 MiB)",
                    self.max_body_bytes
                ),
            ));
        }
        if !(500..=30_000).contains(&self.total_timeout_ms) {
            out.push(ConfigProblem::new(
                "dmp.total_timeout_ms",
                "must be between 500 and 30000",
            ));
        }
        // An access's calls share the total: a connection allowed longer than it could never
        // be waited for (the `[upstream]` section refuses the same).
        if self.connect_timeout_ms > self.total_timeout_ms {
            out.push(ConfigProblem::new(
                "dmp.connect_timeout_ms",
                "must not exceed dmp.total_timeout_ms",
            ));
        }
        if self.document_types.is_empty()
            || self.document_types.iter().any(|t| {
                t.split_once("^^")
                    .is_none_or(|(code, scheme)| !is_code(code) || !is_code(scheme))
            })
        {
            out.push(ConfigProblem::new(
                "dmp.document_types",
                "expected one or more code^^scheme values, e.g. 60591-5^^2.16.840.1.113883.6.1",
            ));
        }
        let indirect = self.authentication_mode != AuthenticationMode::Directe;
        if indirect && (self.structure_cert.is_none() || self.structure_key.is_none()) {
            out.push(ConfigProblem::new(
                "dmp.structure_cert",
                format!(
                    "authentication_mode {} signs with the structure's certificate: set structure_cert and structure_key",
                    self.authentication_mode.code()
                ),
            ));
        }
        out
    }

    /// What every assertion says of the centre and the software.
    pub fn vihf_settings(&self, structure_id: &str) -> vihf::VihfSettings {
        vihf::VihfSettings {
            structure_id: structure_id.to_owned(),
            activity_sector: self.activity_sector.clone(),
            specialty: Some(self.specialty.clone()),
            software_name: "samu-gateway".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            homologation_number: Some(self.homologation_number.clone()),
            software_id: self.software_id.clone(),
            vihf_version: self.vihf_version.clone(),
            authentication_mode: self.authentication_mode,
            lifetime_secs: self.assertion_lifetime_secs,
        }
    }
}

/// A signing key held in software: the structure's certificate in the indirect modes, or
/// a key given to `dmp vihf` for integration tests.
pub struct SoftwareSigner {
    key: RsaKeyPair,
    certificate: Vec<u8>,
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftwareSigner { .. }")
    }
}

impl SoftwareSigner {
    /// Loads an RSA key (PKCS#8 or PKCS#1 PEM, not readable by others) and its
    /// certificate (the first of a PEM file), which must hold the key's public half.
    pub fn load(key: &std::path::Path, certificate: &std::path::Path) -> Result<Self, DmpError> {
        let key = crate::secret::load_rsa(key).map_err(|e| DmpError::Signer(e.to_string()))?;
        let certificate = std::fs::read(certificate)
            .map_err(|e| DmpError::Signer(format!("{}: {e}", certificate.display())))
            .and_then(|pem| {
                rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                    .next()
                    .and_then(Result::ok)
                    .map(|c| c.to_vec())
                    .ok_or_else(|| {
                        DmpError::Signer(format!("{}: no PEM certificate", certificate.display()))
                    })
            })?;
        let signer = Self { key, certificate };
        // A key and a certificate that do not belong together would only be found out by
        // the DMP's refusal: try them now.
        let probe = signer.sign(b"samu-gateway key check")?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&signer.certificate)
            .map_err(|e| DmpError::Signer(format!("the certificate cannot be read: {e}")))?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            parsed.public_key().subject_public_key.data.as_ref(),
        )
        .verify(b"samu-gateway key check", &probe)
        .map_err(|_| DmpError::Signer("the key does not match the certificate".into()))?;
        Ok(signer)
    }

    /// The certificate (DER) that goes in `KeyInfo`.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// RSA PKCS#1 v1.5 with SHA-256 over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DmpError> {
        crate::random::rsa_sha256(&self.key, message).map_err(|e| DmpError::Signer(e.to_string()))
    }

    /// A signed assertion for `subject`.
    pub fn vihf(
        &self,
        settings: &vihf::VihfSettings,
        subject: vihf::VihfSubject<'_>,
    ) -> Result<String, DmpError> {
        signed_vihf(settings, subject, &self.certificate, |message| {
            self.sign(message)
        })
    }
}

/// An assertion for `subject` whose signature `sign` makes (RSA PKCS#1 v1.5, SHA-256,
/// over the canonical `SignedInfo`) with the key of `certificate` (DER); checked before
/// it is returned.
pub fn signed_vihf(
    settings: &vihf::VihfSettings,
    subject: vihf::VihfSubject<'_>,
    certificate: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, DmpError>,
) -> Result<String, DmpError> {
    let id = new_assertion_id()?;
    let unsigned = vihf::prepare(settings, subject, certificate, &id, crate::clock::now().1)?;
    let signature = sign(unsigned.to_sign())?;
    unsigned
        .finish(&signature)
        .map_err(|e| DmpError::Vihf(e.to_string()))
}

/// A fresh assertion id: an XML name (it must not start with a digit), 128 random bits.
pub fn new_assertion_id() -> Result<String, DmpError> {
    crate::random::hex_id::<16>()
        .map(|hex| format!("_{hex}"))
        .map_err(|e| DmpError::Signer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(extra: &str) -> DmpConfig {
        toml::from_str(&format!(
            "base_url = \"https://dmp.example\"\nserver_ca = \"/ca.pem\"\nspecialty = \"SM26\"\nhomologation_number = \"H-1\"\n{extra}"
        ))
        .unwrap()
    }

    fn keys(config: &DmpConfig) -> Vec<String> {
        config
            .problems()
            .into_iter()
            .map(|p| p.key)
            .collect::<Vec<_>>()
    }

    #[test]
    fn the_section_names_each_problem_at_its_key() {
        assert!(keys(&section("")).is_empty());
        // The answer's size bound: neither none (0 refuses every answer) nor unbounded.
        for bad in ["max_body_bytes = 0", "max_body_bytes = 1099511627776"] {
            assert_eq!(keys(&section(bad)), ["dmp.max_body_bytes"], "{bad}");
        }
        assert!(keys(&section("max_body_bytes = 1048576")).is_empty());
        assert_eq!(section("").authentication_mode, AuthenticationMode::Directe);
        assert_eq!(
            keys(&section("authentication_mode = \"INDIRECTE\"")),
            ["dmp.structure_cert"]
        );
        assert!(keys(&section(
            "authentication_mode = \"INDIRECTE_RENFORCEE\"\nstructure_cert = \"/c.pem\"\nstructure_key = \"/k.pem\""
        ))
        .is_empty());
        let mut bad = section("activity_sector = \"SA 01\"\nassertion_lifetime_secs = 5");
        bad.base_url = "http://dmp.example".into();
        bad.homologation_number = "x\"y".into();
        assert_eq!(
            keys(&bad),
            [
                "dmp.base_url",
                "dmp.activity_sector",
                "dmp.homologation_number",
                "dmp.assertion_lifetime_secs"
            ]
        );
        // Unknown keys and unknown modes are refused when the file is read.
        assert!(toml::from_str::<DmpConfig>("base_url = \"https://x\"\nserver_ca = \"/c\"\nspecialty = \"S\"\nhomologation_number = \"H\"\nmode = \"x\"").is_err());
        assert!(toml::from_str::<DmpConfig>("base_url = \"https://x\"\nserver_ca = \"/c\"\nspecialty = \"S\"\nhomologation_number = \"H\"\nauthentication_mode = \"NORMAL\"").is_err());
    }
}
