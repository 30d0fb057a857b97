//! TLS building blocks every TLS user of the crate shares: the ring provider, the protocol
//! versions, PEM certificate loading, and the client configurations (mutual TLS to the
//! record service and the audit repositories, a pinned one for the local health probe).
//! A leaf: it uses only [`crate::problem`] and [`crate::secret`].

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::problem::ConfigProblem;

/// The only crypto provider the gateway uses: ring (the design rules out aws-lc-rs, and
/// CI checks that it is not in the dependency graph).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The earliest `notAfter` (Unix seconds) among the PEM certificates in `path`, for
/// monitoring; `None` when the file cannot be read or holds no certificate that parses.
pub(crate) fn earliest_not_after(path: &Path) -> Option<i64> {
    CertificateDer::pem_file_iter(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(der.as_ref())
                .ok()
                .map(|(_, cert)| cert.validity().not_after.timestamp())
        })
        .min()
}

/// `thisUpdate` and `nextUpdate` (Unix seconds) of the CRL in `path` (PEM or DER), for
/// monitoring; `None` when it cannot be read or parsed.
pub(crate) fn crl_dates(path: &Path) -> Option<(i64, Option<i64>)> {
    let bytes = std::fs::read(path).ok()?;
    let der = if bytes.starts_with(b"-----BEGIN") {
        rustls::pki_types::CertificateRevocationListDer::from_pem_slice(&bytes)
            .ok()?
            .as_ref()
            .to_vec()
    } else {
        bytes
    };
    let (_, crl) = x509_parser::parse_x509_crl(&der).ok()?;
    Some((
        crl.last_update().timestamp(),
        crl.next_update().map(|t| t.timestamp()),
    ))
}

/// TLS 1.3 and 1.2, nothing older.
pub(crate) const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Reads every certificate of a PEM file; pushes a problem if there is none.
pub(crate) fn load_certs(
    path: &Path,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<CertificateDer<'static>> {
    let iter = match CertificateDer::pem_file_iter(path) {
        Ok(iter) => iter,
        Err(e) => {
            problems.push(ConfigProblem::new(key, format!("{}: {e}", path.display())));
            return Vec::new();
        }
    };
    match iter.collect::<Result<Vec<_>, _>>() {
        Ok(certs) if certs.is_empty() => {
            problems.push(ConfigProblem::new(
                key,
                format!("{}: no PEM certificate found", path.display()),
            ));
            certs
        }
        Ok(certs) => certs,
        Err(e) => {
            problems.push(ConfigProblem::new(
                key,
                format!("{}: not a PEM certificate file: {e}", path.display()),
            ));
            Vec::new()
        }
    }
}

/// The trust anchors of `certs` (read from the file reported as `key`); an unusable one
/// is a problem.
pub(crate) fn root_store(
    certs: Vec<CertificateDer<'static>>,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        if let Err(e) = roots.add(cert) {
            problems.push(ConfigProblem::new(
                key,
                format!("not a usable CA certificate: {e}"),
            ));
        }
    }
    roots
}

/// Where a mutual-TLS client's files are, and the configuration key each is reported under.
pub(crate) struct MutualClient<'a> {
    /// Key prefix of the problems, e.g. `upstream` or `audit.receivers[0]`.
    pub section: &'a str,
    /// `(key name, path)` of the CA the server must chain to.
    pub ca: (&'a str, &'a Path),
    /// `(key name, path)` of our certificate chain.
    pub cert: (&'a str, &'a Path),
    /// `(key name, secret)` of its private key.
    pub key: (&'a str, &'a crate::secret::SecretPath),
}

/// A client configuration (ring, TLS 1.2/1.3) trusting `files.ca` and presenting
/// `files.cert`; every problem found is pushed, keyed under `files.section`.
pub(crate) fn mutual_client_config(
    files: &MutualClient<'_>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<rustls::ClientConfig> {
    let key_of = |name: &str| format!("{}.{name}", files.section);
    let ca = load_certs(files.ca.1, &key_of(files.ca.0), problems);
    let chain = load_certs(files.cert.1, &key_of(files.cert.0), problems);
    let private = match files.key.1.resolve() {
        Ok(path) => PrivateKeyDer::from_pem_file(&path)
            .map_err(|e| {
                problems.push(ConfigProblem::new(
                    key_of(files.key.0),
                    format!("{}: not a PEM private key: {e}", path.display()),
                ))
            })
            .ok(),
        Err(e) => {
            problems.push(ConfigProblem::new(key_of(files.key.0), e));
            None
        }
    };
    let roots = root_store(ca, &key_of(files.ca.0), problems);
    let private = private?;
    if chain.is_empty() || roots.is_empty() {
        return None;
    }
    rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| {
            problems.push(ConfigProblem::new(
                files.section,
                format!("TLS versions: {e}"),
            ))
        })
        .ok()?
        .with_root_certificates(Arc::new(roots))
        .with_client_auth_cert(chain, private)
        .map_err(|e| {
            problems.push(ConfigProblem::new(
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
/// With `identity` (a certificate chain and its key), it presents that client certificate.
pub(crate) fn pinned_client_config(
    leaf: CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let verifier = Arc::new(PinnedServer {
        leaf,
        provider: provider(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
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
