//! TLS for the listener: rustls with the ring provider, TLS 1.2 and 1.3 only, client
//! certificates verified against the workstation CA (optional at the TLS layer so that
//! `/healthz` works without one; the desk extractor refuses API calls that lack one).

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::card::trust::StaleCrlPolicy;
use crate::config::{Problem, TlsConfig};

/// The only crypto provider the gateway uses (DEVELOPERS.md: ring, never aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The listener's TLS configuration and the leaf certificate it presents. The workstation
/// CRLs are reread on [`ServerTls::reload_crls`]: each handshake takes the configuration in
/// force when it starts.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    /// The leaf certificate, pinned by the local health probe.
    pub leaf: CertificateDer<'static>,
    material: Arc<Material>,
}

/// What the configuration is rebuilt from.
struct Material {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: RootCertStore,
    crls: Vec<std::path::PathBuf>,
    stale: StaleCrlPolicy,
    refresh: std::time::Duration,
}

impl ServerTls {
    /// Loads and checks every file named in `[tls]`; all problems are returned together.
    pub fn load(cfg: &TlsConfig) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let chain = load_certs(&cfg.server_cert, "tls.server_cert", &mut problems);
        let key = match cfg.server_key.resolve() {
            Ok(path) => load_key(&path, &mut problems),
            Err(reason) => {
                problems.push(Problem::new("tls.server_key", reason));
                None
            }
        };
        let roots = load_roots(&cfg.workstation_ca, &mut problems);
        if let Some(leaf) = chain.first()
            && let Err(reason) = check_validity(leaf)
        {
            problems.push(Problem::new("tls.server_cert", reason));
        }
        let (Some(key), Some(roots), false) = (key, roots, chain.is_empty()) else {
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let leaf = chain[0].clone();
        let material = Material {
            chain,
            key,
            roots,
            crls: cfg.workstation_crls.clone(),
            stale: cfg.workstation_stale_crl,
            refresh: std::time::Duration::from_secs(cfg.workstation_crl_refresh_secs.max(1)),
        };
        let config = material.build().map_err(|p| vec![p])?;
        Ok(Self {
            current: Arc::new(RwLock::new(config)),
            leaf,
            material: Arc::new(material),
        })
    }

    /// The configuration for a handshake starting now.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        // A poisoned lock only means a reload panicked mid-swap: the value is whole.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How often the workstation CRLs are reread; `None` without CRLs.
    pub fn crl_refresh(&self) -> Option<std::time::Duration> {
        (!self.material.crls.is_empty()).then_some(self.material.refresh)
    }

    /// Rereads the workstation CRLs; on failure the lists in force stay.
    pub fn reload_crls(&self) -> Result<(), Problem> {
        let fresh = self.material.build()?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }
}

impl Material {
    fn build(&self) -> Result<Arc<rustls::ServerConfig>, Problem> {
        build_server_config(
            self.chain.clone(),
            self.key.clone_key(),
            self.roots.clone(),
            &self.crls,
            self.stale,
        )
    }
}

/// The workstation CRLs (PEM or DER), and whether any is past its next update.
fn load_crls(
    paths: &[std::path::PathBuf],
) -> Result<(Vec<CertificateRevocationListDer<'static>>, bool), Problem> {
    let mut lists = Vec::new();
    let mut stale = false;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (i, path) in paths.iter().enumerate() {
        let key = format!("tls.workstation_crls[{i}]");
        let bytes = std::fs::read(path)
            .map_err(|e| Problem::new(&key, format!("{}: {e}", path.display())))?;
        let der = if bytes.starts_with(b"-----BEGIN") {
            CertificateRevocationListDer::from_pem_slice(&bytes).map_err(|e| {
                Problem::new(&key, format!("{}: not a PEM CRL: {e}", path.display()))
            })?
        } else {
            CertificateRevocationListDer::from(bytes)
        };
        let (_, parsed) = x509_parser::parse_x509_crl(der.as_ref())
            .map_err(|e| Problem::new(&key, format!("{}: not a CRL: {e}", path.display())))?;
        stale |= parsed
            .next_update()
            .is_some_and(|next| next.timestamp() < now);
        lists.push(der);
    }
    Ok((lists, stale))
}

fn build_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: RootCertStore,
    crl_paths: &[std::path::PathBuf],
    policy: StaleCrlPolicy,
) -> Result<Arc<rustls::ServerConfig>, Problem> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated();
    if !crl_paths.is_empty() {
        let (crls, stale) = load_crls(crl_paths)?;
        if stale {
            tracing::error!(
                policy = ?policy,
                "a workstation CRL is past its next update: publish a fresh one"
            );
        }
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
        if policy == StaleCrlPolicy::Refuse {
            builder = builder.enforce_revocation_expiration();
        }
    }
    let verifier = builder.build().map_err(|e| {
        Problem::new(
            "tls.workstation_ca",
            format!("unusable as a client CA: {e}"),
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| Problem::new("tls", format!("TLS versions rejected by the provider: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            Problem::new(
                "tls.server_key",
                format!("does not fit tls.server_cert: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads every certificate of a PEM file; pushes a problem if there is none.
pub fn load_certs(
    path: &Path,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Vec<CertificateDer<'static>> {
    let iter = match CertificateDer::pem_file_iter(path) {
        Ok(iter) => iter,
        Err(e) => {
            problems.push(Problem::new(key, format!("{}: {e}", path.display())));
            return Vec::new();
        }
    };
    match iter.collect::<Result<Vec<_>, _>>() {
        Ok(certs) if certs.is_empty() => {
            problems.push(Problem::new(
                key,
                format!("{}: no PEM certificate found", path.display()),
            ));
            certs
        }
        Ok(certs) => certs,
        Err(e) => {
            problems.push(Problem::new(
                key,
                format!("{}: not a PEM certificate file: {e}", path.display()),
            ));
            Vec::new()
        }
    }
}

fn load_key(path: &Path, problems: &mut Vec<Problem>) -> Option<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| {
            problems.push(Problem::new(
                "tls.server_key",
                format!("{}: not a PEM private key: {e}", path.display()),
            ));
        })
        .ok()
}

fn load_roots(path: &Path, problems: &mut Vec<Problem>) -> Option<RootCertStore> {
    let certs = load_certs(path, "tls.workstation_ca", problems);
    if certs.is_empty() {
        return None;
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        if let Err(e) = roots.add(cert) {
            problems.push(Problem::new(
                "tls.workstation_ca",
                format!("{}: not a usable CA certificate: {e}", path.display()),
            ));
            return None;
        }
    }
    Some(roots)
}

/// Refuses a certificate that is expired or not yet valid: serving with it would make every
/// workstation fail its handshake with an error far from the cause.
fn check_validity(cert: &CertificateDer<'_>) -> Result<(), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("cannot parse the leaf certificate: {e}"))?;
    let validity = parsed.validity();
    if validity.is_valid() {
        return Ok(());
    }
    Err(format!(
        "certificate is outside its validity period ({} to {})",
        validity.not_before, validity.not_after
    ))
}

/// Where a mutual-TLS client's files are, and the configuration key each is reported under.
pub struct MutualClient<'a> {
    /// Key prefix of the problems, e.g. `upstream` or `audit.receivers[0]`.
    pub section: &'a str,
    /// `(key name, path)` of the CA the server must chain to.
    pub ca: (&'a str, &'a Path),
    /// `(key name, path)` of our certificate chain.
    pub cert: (&'a str, &'a Path),
    /// `(key name, secret)` of its private key.
    pub key: (&'a str, &'a crate::config::SecretPath),
}

/// A client configuration (ring, TLS 1.2/1.3) trusting `files.ca` and presenting
/// `files.cert`; every problem found is pushed, keyed under `files.section`.
pub fn mutual_client_config(
    files: &MutualClient<'_>,
    problems: &mut Vec<Problem>,
) -> Option<rustls::ClientConfig> {
    let key_of = |name: &str| format!("{}.{name}", files.section);
    let ca = load_certs(files.ca.1, &key_of(files.ca.0), problems);
    let chain = load_certs(files.cert.1, &key_of(files.cert.0), problems);
    let private = match files.key.1.resolve() {
        Ok(path) => PrivateKeyDer::from_pem_file(&path)
            .map_err(|e| {
                problems.push(Problem::new(
                    key_of(files.key.0),
                    format!("{}: not a PEM private key: {e}", path.display()),
                ))
            })
            .ok(),
        Err(e) => {
            problems.push(Problem::new(key_of(files.key.0), e));
            None
        }
    };
    let mut roots = RootCertStore::empty();
    for cert in ca {
        if let Err(e) = roots.add(cert) {
            problems.push(Problem::new(
                key_of(files.ca.0),
                format!("not a usable CA certificate: {e}"),
            ));
        }
    }
    let private = private?;
    if chain.is_empty() || roots.is_empty() {
        return None;
    }
    rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| problems.push(Problem::new(files.section, format!("TLS versions: {e}"))))
        .ok()?
        .with_root_certificates(Arc::new(roots))
        .with_client_auth_cert(chain, private)
        .map_err(|e| {
            problems.push(Problem::new(
                key_of(files.key.0),
                format!("does not fit {}: {e}", key_of(files.cert.0)),
            ))
        })
        .ok()
}

/// Client configuration that trusts exactly one server certificate, byte for byte.
///
/// Used by `healthcheck` and the watchdog to talk to their own listener: the certificate
/// comes from the configuration, so no CA (and no host name) is needed to trust it.
pub fn pinned_client_config(
    leaf: CertificateDer<'static>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let verifier = Arc::new(PinnedServer {
        leaf,
        provider: provider(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinnedServer {
    leaf: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
