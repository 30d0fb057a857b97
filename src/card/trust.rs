//! Trust in a card's certificate: it must chain to a configured trust anchor (the IGC-Santé
//! roots in production), be within its validity period, be usable for client
//! authentication and digital signature, and not be revoked according to the configured
//! CRLs. When a CRL the card's chain is checked against is older than its allowed age, the
//! configured policy decides: refuse, or accept and flag the access (the audit record says
//! so). The age is that of the oldest CRL of the card's own issuer: a fresh CRL of another
//! authority vouches for nothing about this card.
//!
//! Chain building, validity and revocation are rustls-webpki's; CRL dates and identity
//! fields are read with x509-parser. Nothing here parses DER by hand.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::{Deserialize, Serialize};
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::oid_registry::{
    OID_X509_COMMON_NAME, OID_X509_GIVEN_NAME, OID_X509_SURNAME, OID_X509_TITLE,
};

use crate::encoding::hex;

/// What to do when a CRL covering the card's chain is older than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleCrlPolicy {
    /// Refuse the login: revocation cannot be vouched for.
    Refuse,
    /// Accept, and flag the login and every access of its session in the audit trail.
    AcceptAndFlag,
}

/// Where trust comes from, and how fresh revocation data must be.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// PEM files of the trust anchors (e.g. `AC RACINE IGC-SANTE FORT`).
    pub anchors: Vec<PathBuf>,
    /// PEM files of intermediate CAs (e.g. `AC IGC-SANTE FORT PERSONNES`).
    #[serde(default)]
    pub intermediates: Vec<PathBuf>,
    /// CRL files (DER or PEM), at least one per issuing CA; reloaded on schedule.
    pub crls: Vec<PathBuf>,
    /// A CRL issued longer ago than this is stale.
    #[serde(default = "default_crl_max_age_hours")]
    pub crl_max_age_hours: u64,
    /// What a stale CRL means.
    #[serde(default = "default_stale_policy")]
    pub stale_crl: StaleCrlPolicy,
    /// How often CRL files are reloaded.
    #[serde(default = "default_crl_refresh_minutes")]
    pub crl_refresh_minutes: u64,
}

impl TrustConfig {
    /// Anchors and CRLs with every other setting at its default.
    pub fn new(anchors: Vec<PathBuf>, crls: Vec<PathBuf>) -> Self {
        Self {
            anchors,
            intermediates: Vec::new(),
            crls,
            crl_max_age_hours: default_crl_max_age_hours(),
            stale_crl: default_stale_policy(),
            crl_refresh_minutes: default_crl_refresh_minutes(),
        }
    }
}

fn default_crl_max_age_hours() -> u64 {
    48
}
fn default_stale_policy() -> StaleCrlPolicy {
    StaleCrlPolicy::Refuse
}
fn default_crl_refresh_minutes() -> u64 {
    60
}

/// Why a card certificate is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// A configured file is missing or unusable.
    #[error("{key}: {reason}")]
    Config {
        /// The configuration key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The certificate does not parse.
    #[error("card certificate unreadable: {0}")]
    Unreadable(String),
    /// It does not chain to a configured anchor.
    #[error("card certificate not issued by a trusted authority")]
    UnknownIssuer,
    /// It expired.
    #[error("card certificate expired")]
    Expired,
    /// It is not valid yet.
    #[error("card certificate not yet valid")]
    NotYetValid,
    /// It is on a CRL.
    #[error("card certificate revoked")]
    Revoked,
    /// Its key usages do not allow authentication.
    #[error("card certificate not usable for authentication: {0}")]
    Usage(String),
    /// Revocation cannot be checked: no CRL covers its issuer.
    #[error("no CRL covers the card certificate's issuer")]
    RevocationUnknown,
    /// A CRL covering the card's chain is too old and the policy refuses.
    #[error(
        "the CRL of the card's issuer is {age_hours} hours old (limit {limit_hours}): revocation cannot be vouched for"
    )]
    StaleCrl {
        /// Its age.
        age_hours: u64,
        /// The configured limit.
        limit_hours: u64,
    },
    /// Its RSA key is shorter than the gateway can check a signature of (an earlier card
    /// generation's 1024 bits): refused at insertion, before any PIN is sent, rather than
    /// failing the login's proof of possession as if the card were forged.
    #[error("card key too short: {bits} bits (at least {MIN_RSA_BITS})")]
    KeyTooShort {
        /// Its length.
        bits: usize,
    },
    /// Any other chain error from webpki.
    #[error("card certificate rejected: {0}")]
    Other(String),
}

/// The shortest RSA key whose signatures the gateway checks (ring's bound).
pub const MIN_RSA_BITS: usize = 2048;

impl TrustError {
    /// The physician's screen message.
    pub fn message_fr(&self) -> &'static str {
        match self {
            Self::Expired => "Carte expirée : utilisez une carte en cours de validité.",
            Self::Revoked => "Carte révoquée : elle ne peut plus être utilisée.",
            Self::UnknownIssuer => {
                "Carte non reconnue : elle n'a pas été émise par une autorité de confiance."
            }
            Self::StaleCrl { .. } | Self::RevocationUnknown => {
                "Vérification de la carte impossible (liste de révocation périmée). Contactez l'informatique du centre."
            }
            Self::KeyTooShort { .. } => {
                "Carte d'ancienne génération (clé trop courte), non prise en charge : utilisez une carte CPS récente."
            }
            _ => "Carte non reconnue : son certificat n'est pas valide.",
        }
    }
}

/// The professional a trusted certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Professional {
    /// idNat_PS from the subject CN (`8` + RPPS or `0` + ADELI).
    pub id_nat: String,
    /// Whether an RPPS-based idNat passes its Luhn key (real cards often do not: warn only).
    pub id_nat_key_ok: bool,
    /// Given name.
    pub given_name: Option<String>,
    /// Surname.
    pub surname: Option<String>,
    /// Profession / specialty as carried in the subject `title` (assumption to confirm on
    /// real CPS certificates, see `profile.rs`).
    pub title: Option<String>,
    /// SHA-256 of the certificate (hex): binds a session to this card.
    pub certificate_sha256: String,
}

/// Profession code of a physician (`médecin`, nomenclature `1.2.250.1.71.1.2.7`).
pub const PHYSICIAN: &str = "10";

impl Professional {
    /// A physician with no names, for the crate's tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self {
            id_nat: "810002813839".into(),
            id_nat_key_ok: false,
            given_name: None,
            surname: None,
            title: None,
            certificate_sha256: "ab".repeat(32),
        }
    }

    /// Whether the certificate's profession (subject `title`) is one of `allowed`, codes
    /// or labels compared ignoring case and surrounding spaces. An empty list allows every
    /// profession; a certificate without a title matches no non-empty list.
    pub fn profession_allowed(&self, allowed: &[String]) -> bool {
        if allowed.is_empty() {
            return true;
        }
        let Some(title) = self.title.as_deref().map(str::trim) else {
            return false;
        };
        allowed
            .iter()
            .any(|a| a.trim().to_lowercase() == title.to_lowercase())
    }
}

/// A certificate found trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Who it names.
    pub professional: Professional,
    /// Accepted with a stale CRL under `accept_and_flag`: the audit record must say so.
    pub crl_stale: bool,
}

struct Crls {
    /// Parsed once at load, newest first (by `thisUpdate`); every verification borrows
    /// them. The order matters: the path check reads, of an issuer's lists, only the
    /// first, so an old copy left before the new one would hide a revocation the new one
    /// lists.
    lists: Vec<CertRevocationList<'static>>,
    /// Unix seconds of each list's `thisUpdate`, in the same order.
    this_update: Vec<u64>,
}

impl Crls {
    /// The `thisUpdate` of the list that vouches for a card of `issuer` (DER name): its
    /// issuer's newest, the one revocation was checked against. Every issuer has one
    /// (unknown status is refused).
    fn used_for(&self, issuer: &[u8]) -> u64 {
        self.lists
            .iter()
            .zip(&self.this_update)
            .find(|(list, _)| list.issuer() == issuer)
            .map_or(0, |(_, at)| *at)
    }
}

/// The configured trust: anchors, intermediates, and the current CRLs.
pub struct CardTrust {
    config: TrustConfig,
    anchors: Vec<TrustAnchor<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
    crls: RwLock<Crls>,
}

impl CardTrust {
    /// Loads every file; a missing or unusable one is a configuration error.
    pub fn load(config: TrustConfig) -> Result<Self, TrustError> {
        if config.anchors.is_empty() {
            return Err(TrustError::Config {
                key: "cards.trust.anchors",
                reason: "at least one trust anchor is required".into(),
            });
        }
        let anchors = load_pem_certs(&config.anchors, "cards.trust.anchors")?
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|e| TrustError::Config {
                        key: "cards.trust.anchors",
                        reason: format!("not a usable trust anchor: {e}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let intermediates = load_pem_certs(&config.intermediates, "cards.trust.intermediates")?;
        let crls = load_crls(&config.crls)?;
        Ok(Self {
            config,
            anchors,
            intermediates,
            crls: RwLock::new(crls),
        })
    }

    /// Reloads the CRL files (on schedule, or when an operator replaced them). On failure
    /// the previous CRLs stay in force.
    pub fn reload_crls(&self) -> Result<(), TrustError> {
        let fresh = load_crls(&self.config.crls)?;
        if let Ok(mut crls) = self.crls.write() {
            *crls = fresh;
        }
        Ok(())
    }

    /// How often to call [`CardTrust::reload_crls`].
    pub fn refresh_interval(&self) -> Duration {
        // Bounded by configtest; saturating all the same, a reload task must not panic.
        Duration::from_secs(self.config.crl_refresh_minutes.max(1).saturating_mul(60))
    }

    /// Decides whether `certificate` can log in at time `now`.
    pub fn verify(&self, certificate: &[u8], now: SystemTime) -> Result<Verified, TrustError> {
        self.check(
            certificate,
            now,
            KeyUsage::client_auth(),
            Use::Authentication,
            false,
        )
        .map(|(verified, _)| verified)
    }

    /// The chain a TLS client presents with the authentication `certificate`: the
    /// certificate, then the intermediates of its path to an anchor, issuer first. A peer
    /// that trusts only the root (IGC-Santé's, say) cannot find the card's issuer
    /// otherwise (docs/dmp.md, "Transport"). Checked as at login: a certificate that
    /// could not log in now has no chain.
    pub fn authentication_chain(
        &self,
        certificate: &[u8],
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, TrustError> {
        self.check(
            certificate,
            now,
            KeyUsage::client_auth(),
            Use::Authentication,
            true,
        )
        .map(|(_, intermediates)| {
            std::iter::once(CertificateDer::from(certificate.to_vec()))
                .chain(intermediates)
                .collect()
        })
    }

    /// Decides whether `certificate`, the signature certificate a logged-in card holds,
    /// can sign for `holder` (idNat) at time `now`: issued under the same anchors, not
    /// revoked, a signing key, and naming the same holder as the card's authentication
    /// certificate. A card whose two certificates name two people, or whose signature
    /// certificate comes from elsewhere, signs nothing (docs/domain.md §3).
    pub fn verify_signature(
        &self,
        certificate: &[u8],
        holder: &str,
        now: SystemTime,
    ) -> Result<Verified, TrustError> {
        let (verified, _) = self.check(certificate, now, AnyPurpose, Use::Signature, false)?;
        // The login certificate is never the signature one: a profile or labels that
        // point at it would have the VIHF signed with the authentication key.
        let for_login = x509_parser::parse_x509_certificate(certificate)
            .ok()
            .and_then(|(_, cert)| {
                cert.extended_key_usage()
                    .ok()
                    .flatten()
                    .map(|e| e.value.client_auth)
            })
            .unwrap_or(false);
        if for_login {
            return Err(TrustError::Usage(
                "the signature certificate is a login certificate (client authentication): check the card profile's signature certificate and key, or the PKCS#11 labels".into(),
            ));
        }
        if verified.professional.id_nat != holder {
            return Err(TrustError::Usage(
                "the signature certificate names another holder than the card's login".into(),
            ));
        }
        Ok(verified)
    }

    fn check(
        &self,
        certificate: &[u8],
        now: SystemTime,
        purpose: impl webpki::ExtendedKeyUsageValidator,
        usage: Use,
        keep_chain: bool,
    ) -> Result<(Verified, Vec<CertificateDer<'static>>), TrustError> {
        let der = CertificateDer::from(certificate);
        let end_entity =
            EndEntityCert::try_from(&der).map_err(|e| TrustError::Unreadable(e.to_string()))?;
        let crls = self
            .crls
            .read()
            .map_err(|_| TrustError::Other("CRL state unavailable".into()))?;
        let refs: Vec<&CertRevocationList<'_>> = crls.lists.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&refs)
            .map_err(|_| TrustError::RevocationUnknown)?
            .with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(UnknownStatusPolicy::Deny)
            // Freshness is our own policy below (refuse or flag), not a hard error here.
            .with_expiration_policy(ExpirationPolicy::Ignore)
            .build();
        let seconds = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| TrustError::Other("clock before 1970".into()))?;
        let algorithms = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all;
        let path = end_entity
            .verify_for_usage(
                algorithms,
                &self.anchors,
                &self.intermediates,
                UnixTime::since_unix_epoch(seconds),
                purpose,
                Some(revocation),
                None,
            )
            .map_err(map_webpki)?;
        // The card's own issuer's list: it is the one reissued daily, and the one that
        // says whether this card was revoked. The lists above it (a root's, for the
        // intermediates) are reissued every few months; revocation is still checked
        // against them, their age is not held to `crl_max_age_hours`.
        let issuer = path.end_entity().issuer();
        let professional = identity(certificate, usage)?;
        let crl_stale = self.is_stale(crls.used_for(issuer), seconds.as_secs())?;
        // Copied only for the one caller that sends them: a login and each access's
        // signature check (per request) need the verdict alone.
        let intermediates = if keep_chain {
            path.intermediate_certificates()
                .map(|cert| cert.der().into_owned())
                .collect()
        } else {
            Vec::new()
        };
        Ok((
            Verified {
                professional,
                crl_stale,
            },
            intermediates,
        ))
    }

    fn is_stale(&self, this_update: u64, now: u64) -> Result<bool, TrustError> {
        let age_hours = now.saturating_sub(this_update) / 3600;
        if age_hours < self.config.crl_max_age_hours {
            return Ok(false);
        }
        match self.config.stale_crl {
            StaleCrlPolicy::AcceptAndFlag => Ok(true),
            StaleCrlPolicy::Refuse => Err(TrustError::StaleCrl {
                age_hours,
                limit_hours: self.config.crl_max_age_hours,
            }),
        }
    }
}

fn map_webpki(e: webpki::Error) -> TrustError {
    match e {
        // A certificate naming a trusted issuer without its signature is a forgery: for the
        // physician, as for the audit, it was not issued by a trusted authority.
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            TrustError::UnknownIssuer
        }
        // A CRL claiming the issuer's name without its signature proves nothing.
        webpki::Error::InvalidCrlSignatureForPublicKey => TrustError::RevocationUnknown,
        webpki::Error::CertExpired { .. } => TrustError::Expired,
        webpki::Error::CertNotValidYet { .. } => TrustError::NotYetValid,
        webpki::Error::CertRevoked => TrustError::Revoked,
        webpki::Error::UnknownRevocationStatus => TrustError::RevocationUnknown,
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            TrustError::Usage("no client authentication usage".into())
        }
        other => TrustError::Other(other.to_string()),
    }
}

fn load_pem_certs(
    paths: &[PathBuf],
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let mut out = Vec::new();
    for path in paths {
        let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
            .map_err(|e| TrustError::Config {
                key,
                reason: format!("{}: {e}", path.display()),
            })?
            .collect();
        let certs = certs.map_err(|e| TrustError::Config {
            key,
            reason: format!("{}: {e}", path.display()),
        })?;
        if certs.is_empty() {
            return Err(TrustError::Config {
                key,
                reason: format!("{}: no PEM certificate found", path.display()),
            });
        }
        out.extend(certs);
    }
    Ok(out)
}

fn load_crls(paths: &[PathBuf]) -> Result<Crls, TrustError> {
    let key = "cards.trust.crls";
    if paths.is_empty() {
        return Err(TrustError::Config {
            key,
            reason: "at least one CRL is required: revocation must be checked".into(),
        });
    }
    let mut dated = Vec::new();
    for path in paths {
        for der in read_crl(path, key)? {
            let (_, parsed) =
                x509_parser::parse_x509_crl(&der).map_err(|e| TrustError::Config {
                    key,
                    reason: format!("{}: not a CRL: {e}", path.display()),
                })?;
            let this_update = u64::try_from(parsed.last_update().timestamp()).unwrap_or(0);
            let owned =
                OwnedCertRevocationList::from_der(&der).map_err(|e| TrustError::Config {
                    key,
                    reason: format!("{}: {e}", path.display()),
                })?;
            dated.push((this_update, CertRevocationList::from(owned)));
        }
    }
    // Newest first (stable: lists of one date keep the configured order).
    dated.sort_by_key(|(this_update, _)| std::cmp::Reverse(*this_update));
    let (this_update, lists) = dated.into_iter().unzip();
    Ok(Crls { lists, this_update })
}

/// The lists a file holds: one in DER, one or more in PEM (a bundle of authorities'
/// lists is read whole, not only its first).
fn read_crl(path: &Path, key: &'static str) -> Result<Vec<Vec<u8>>, TrustError> {
    let unusable = |e: &dyn std::fmt::Display| TrustError::Config {
        key,
        reason: format!("{}: {e}", path.display()),
    };
    let bytes = std::fs::read(path).map_err(|e| unusable(&e))?;
    crate::tls::crls_in(&bytes)
        .map(|lists| lists.iter().map(|d| d.as_ref().to_vec()).collect())
        .map_err(|e| unusable(&e))
}

/// What a card certificate is checked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Logging in: TLS client authentication, a digitalSignature key.
    Authentication,
    /// Signing (the VIHF): a nonRepudiation (contentCommitment) or digitalSignature key.
    Signature,
}

/// Any extended key usage, or none: a signature certificate's are its authority's choice
/// (the login certificate's client authentication is what `verify` requires).
struct AnyPurpose;

impl webpki::ExtendedKeyUsageValidator for AnyPurpose {
    fn validate(&self, mut iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        // Each one still has to be a well-formed OID.
        iter.try_for_each(|purpose| purpose.map(drop))
    }
}

/// The professional named by a certificate whose chain was already verified.
fn identity(certificate: &[u8], usage: Use) -> Result<Professional, TrustError> {
    let (_, cert) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|e| TrustError::Unreadable(e.to_string()))?;
    if let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = cert.public_key().parsed()
        && rsa.key_size() < MIN_RSA_BITS
    {
        return Err(TrustError::KeyTooShort {
            bits: rsa.key_size(),
        });
    }
    if let Ok(Some(key_usage)) = cert.key_usage() {
        let bits = &key_usage.value;
        match usage {
            Use::Authentication if !bits.digital_signature() => {
                return Err(TrustError::Usage("key usage lacks digitalSignature".into()));
            }
            Use::Signature if !(bits.non_repudiation() || bits.digital_signature()) => {
                return Err(TrustError::Usage(
                    "key usage lacks nonRepudiation and digitalSignature".into(),
                ));
            }
            _ => {}
        }
    }
    let attribute = |oid: &x509_parser::der_parser::oid::Oid<'static>| {
        cert.subject()
            .iter_attributes()
            .find(|a| a.attr_type() == oid)
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned)
    };
    let id_nat = attribute(&OID_X509_COMMON_NAME)
        .ok_or_else(|| TrustError::Unreadable("no subject CN (idNat)".into()))?;
    if !(id_nat.len() >= 2
        && id_nat.bytes().all(|b| b.is_ascii_digit())
        && (id_nat.starts_with('8') || id_nat.starts_with('0')))
    {
        return Err(TrustError::Unreadable(format!(
            "subject CN '{id_nat}' is not an idNat (8 + RPPS or 0 + ADELI)"
        )));
    }
    Ok(Professional {
        id_nat_key_ok: !id_nat.starts_with('8') || luhn_ok(&id_nat[1..]),
        id_nat,
        given_name: attribute(&OID_X509_GIVEN_NAME),
        surname: attribute(&OID_X509_SURNAME),
        title: attribute(&OID_X509_TITLE),
        certificate_sha256: hex(&crate::encoding::sha256(certificate)),
    })
}

/// Luhn check of an RPPS number (its last digit is the key).
fn luhn_ok(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    digits.len() == 11 && sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests;
