//! A throwaway PKI made with rcgen: the demo's server and workstation certificates, and the
//! test suite's (which adds expired and foreign certificates). Never used by `serve`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or failed to sign.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Who a test CPS card certificate names.
#[derive(Debug, Clone)]
pub struct CardHolder {
    /// idNat_PS (certificate CN).
    pub id_nat: String,
    /// Given name.
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// Profession as the subject `title` carries it (`None`: no title attribute).
    pub profession: Option<String>,
}

impl CardHolder {
    /// A physician (profession code `10`, see docs/domain.md §3).
    pub fn physician(id_nat: &str, given_name: &str, surname: &str) -> Self {
        Self {
            id_nat: id_nat.into(),
            given_name: given_name.into(),
            surname: surname.into(),
            profession: Some(crate::card::trust::PHYSICIAN.into()),
        }
    }
}

/// A certificate and its private key, as issued.
pub struct Issued {
    /// DER of the certificate.
    pub der: CertificateDer<'static>,
    /// PEM of the certificate.
    pub cert_pem: String,
    /// PEM (PKCS#8) of the private key.
    pub key_pem: String,
}

/// A certificate authority that can issue server and client certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Authority {
    /// A self-signed root CA valid from yesterday for ten years.
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let params = authority_params(common_name, BasicConstraints::Unconstrained, 3650)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// An intermediate authority under this one, valid from yesterday for five years: a
    /// card issued by it chains to this root only through it, as IGC-Santé's cards do
    /// (docs/domain.md §3).
    pub fn intermediate(&self, common_name: &str) -> Result<Self, PkiError> {
        let params = authority_params(common_name, BasicConstraints::Constrained(0), 1825)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A TLS server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, PkiError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, -1, 365);
        self.sign(params)
    }

    /// A workstation (TLS client) certificate valid from yesterday for a year.
    pub fn issue_client(&self, common_name: &str) -> Result<Issued, PkiError> {
        self.issue_client_between(common_name, -1, 365)
    }

    /// A client certificate valid between `from_days` and `to_days` relative to today
    /// (negative values are in the past: `(-30, -1)` is an expired certificate).
    pub fn issue_client_between(
        &self,
        common_name: &str,
        from_days: i64,
        to_days: i64,
    ) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, from_days, to_days);
        self.sign(params)
    }

    /// A workstation certificate whose subject holds every name of `common_names` as a CN
    /// (for the tests that such a certificate is refused: which CN would count?).
    pub fn issue_client_with_cns(&self, common_names: &[&str]) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for (i, name) in common_names.iter().enumerate() {
            // rcgen keeps one value per attribute type: further CNs go in under the CN OID.
            let kind = if i == 0 {
                DnType::CommonName
            } else {
                DnType::CustomDnType(vec![2, 5, 4, 3])
            };
            params.distinguished_name.push(kind, *name);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, -1, 365);
        self.sign(params)
    }

    /// A CPS-like card authentication certificate for `key` (the card's own key pair):
    /// CN = the professional's idNat, given name, surname, profession in `title`,
    /// digitalSignature usage.
    pub fn issue_card(
        &self,
        holder: &CardHolder,
        key: &KeyPair,
        validity_days: (i64, i64),
    ) -> Result<Issued, PkiError> {
        self.issue_card_key(holder, key, validity_days, false)
    }

    /// The card's signature certificate for its second key pair: the same holder,
    /// non-repudiation usage only (what signs a VIHF; the authentication certificate is
    /// refused there).
    pub fn issue_card_signature(
        &self,
        holder: &CardHolder,
        key: &KeyPair,
        validity_days: (i64, i64),
    ) -> Result<Issued, PkiError> {
        self.issue_card_key(holder, key, validity_days, true)
    }

    /// A card authentication certificate for a public key whose private half is elsewhere
    /// (one rcgen cannot hold, such as an earlier card generation's RSA 1024 key).
    pub fn issue_card_for(
        &self,
        holder: &CardHolder,
        public_key: &impl rcgen::PublicKeyData,
        validity_days: (i64, i64),
    ) -> Result<CertificateDer<'static>, PkiError> {
        let params = card_params(holder, validity_days, false)?;
        Ok(params.signed_by(public_key, &self.issuer)?.der().clone())
    }

    fn issue_card_key(
        &self,
        holder: &CardHolder,
        key: &KeyPair,
        validity_days: (i64, i64),
        signature: bool,
    ) -> Result<Issued, PkiError> {
        let params = card_params(holder, validity_days, signature)?;
        let cert = params.signed_by(key, &self.issuer)?;
        Ok(Issued {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A CRL (PEM) revoking the certificates with these serial numbers, issued
    /// `issued_days_ago` days ago and due for renewal `next_update_days` days from today.
    pub fn crl(
        &self,
        revoked_serials: &[Vec<u8>],
        issued_days_ago: i64,
        next_update_days: i64,
    ) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::days(issued_days_ago),
            next_update: now + Duration::days(next_update_days),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(serial),
                    revocation_time: now - Duration::hours(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// An authority's parameters: named `common_name`, signing certificates and CRLs, valid
/// from yesterday for `days`.
fn authority_params(
    common_name: &str,
    constraints: BasicConstraints,
    days: i64,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "samu-gateway demo");
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, -1, days);
    Ok(params)
}

/// A CPS-like card certificate's parameters (see `Authority::issue_card`).
fn card_params(
    holder: &CardHolder,
    validity_days: (i64, i64),
    signature: bool,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let dn = &mut params.distinguished_name;
    dn.push(DnType::CommonName, holder.id_nat.as_str());
    dn.push(
        DnType::CustomDnType(vec![2, 5, 4, 42]),
        holder.given_name.as_str(),
    );
    dn.push(
        DnType::CustomDnType(vec![2, 5, 4, 4]),
        holder.surname.as_str(),
    );
    if let Some(profession) = &holder.profession {
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 12]), profession.as_str());
    }
    dn.push(DnType::OrganizationName, "samu-gateway test CPS");
    if signature {
        params.key_usages = vec![KeyUsagePurpose::ContentCommitment];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    }
    set_validity(&mut params, validity_days.0, validity_days.1);
    Ok(params)
}

fn set_validity(params: &mut CertificateParams, from_days: i64, to_days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now + Duration::days(from_days);
    params.not_after = now + Duration::days(to_days);
}

/// Writes `NAME.pem` and `NAME.key` (mode 0600) into `dir`; returns both paths.
pub fn write_pair(dir: &Path, name: &str, issued: &Issued) -> Result<(PathBuf, PathBuf), PkiError> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    write_file(&cert, &issued.cert_pem, 0o644)?;
    write_file(&key, &issued.key_pem, 0o600)?;
    Ok((cert, key))
}

/// Writes a file created with `mode` (so a key is never briefly world-readable).
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)
}
