//! TLS building blocks every TLS user of the crate shares: the ring provider, the protocol
//! versions, PEM certificate and CRL loading, the verification of the servers the gateway
//! connects to (with their CRLs, reread as they change), and the client configurations
//! (mutual TLS to the record service and the audit repositories, a pinned one for the local
//! health probe). One layer above the leaves: it uses only [`crate::problem`] and
//! [`crate::secret`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
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
/// monitoring; `None` when it cannot be read or parsed. Of a file holding several lists,
/// the dates of the list due first among each authority's newest.
pub(crate) fn crl_dates(path: &Path) -> Option<(i64, Option<i64>)> {
    let lists = crls_in(&std::fs::read(path).ok()?).ok()?;
    let mut dates = Vec::new();
    for der in &lists {
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).ok()?;
        dates.push((
            crl.issuer().as_raw().to_vec(),
            crl.last_update().timestamp(),
            crl.next_update().map(|t| t.timestamp()),
        ));
    }
    in_force(dates)
        .into_iter()
        .min_by_key(|(_, next)| next.unwrap_or(i64::MAX))
}

/// Of lists given as (issuer, thisUpdate, nextUpdate), each issuer's newest: its dates.
fn in_force(lists: Vec<(Vec<u8>, i64, Option<i64>)>) -> Vec<(i64, Option<i64>)> {
    let mut newest: std::collections::HashMap<Vec<u8>, (i64, Option<i64>)> =
        std::collections::HashMap::new();
    for (issuer, this, next) in lists {
        let slot = newest.entry(issuer).or_insert((this, next));
        if this > slot.0 {
            *slot = (this, next);
        }
    }
    newest.into_values().collect()
}

/// The CRLs a file holds: one in DER, one or more in PEM (a bundle of authorities' lists,
/// as web servers take them, is read whole, not only its first list).
pub(crate) fn crls_in(bytes: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(vec![CertificateRevocationListDer::from(bytes.to_vec())]);
    }
    let lists = CertificateRevocationListDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM CRL: {e}"))?;
    if lists.is_empty() {
        return Err("no CRL in this PEM file".to_owned());
    }
    Ok(lists)
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

/// The CRLs in `paths` (PEM, one or more lists per file, or DER; problems reported as
/// `key[i]`), newest first, and when the first of them in force is past its next update.
///
/// Newest first because a verifier takes the first list of a certificate's issuer it
/// finds: an older copy listed first, from before a revocation, would let the revoked
/// certificate in. Only each issuer's newest list is in force for `CrlsDue`.
pub(crate) fn load_crls(
    paths: &[PathBuf],
    key: &str,
) -> Result<(Vec<CertificateRevocationListDer<'static>>, CrlsDue), ConfigProblem> {
    let mut lists = Vec::new();
    let mut dates = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let bytes = std::fs::read(path)
            .map_err(|e| ConfigProblem::new(&key, format!("{}: {e}", path.display())))?;
        let unusable = |e: &dyn std::fmt::Display| {
            ConfigProblem::new(&key, format!("{}: {e}", path.display()))
        };
        for der in crls_in(&bytes).map_err(|e| unusable(&e))? {
            let (_, parsed) = x509_parser::parse_x509_crl(der.as_ref())
                .map_err(|e| unusable(&format!("not a CRL: {e}")))?;
            let this = parsed.last_update().timestamp();
            dates.push((
                parsed.issuer().as_raw().to_vec(),
                this,
                parsed.next_update().map(|t| t.timestamp()),
            ));
            lists.push((this, der));
        }
    }
    lists.sort_by_key(|(this, _)| std::cmp::Reverse(*this));
    let due = CrlsDue(
        in_force(dates)
            .into_iter()
            .filter_map(|(_, next)| next)
            .min(),
    );
    Ok((lists.into_iter().map(|(_, der)| der).collect(), due))
}

/// The earliest next update of a set of CRLs (Unix seconds), when one says it: from then
/// on a list is past its next update, whether or not the files are read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CrlsDue(pub Option<i64>);

impl CrlsDue {
    /// Whether a list is past its next update now.
    pub(crate) fn stale(self) -> bool {
        self.0
            .is_some_and(|next| next < time::OffsetDateTime::now_utc().unix_timestamp())
    }
}

/// How often a [`ServerTrust`]'s CRL files are looked at again (their size and time).
const CRL_RECHECK: Duration = Duration::from_secs(300);

/// Verifies the certificate of a server the gateway connects to (the record service, an
/// audit repository): it must chain to the configured anchors and, when CRL files are
/// configured, not be revoked by them. The files are looked at again at a handshake at
/// most every five minutes and reread when they changed, so that a centre's CRL refresh
/// (a timer replacing the files) takes effect without a restart; a reread that fails
/// keeps the lists in force, and says so. Handshakes are rare (connections are pooled),
/// and a server CA's CRL is small: the reread is done in the handshake. Only the server's
/// own certificate is checked for revocation, so the lists must include its issuer's; a
/// list past its next update is still used (the record service stays reachable), and the
/// monitoring shows its dates.
pub(crate) struct ServerTrust {
    roots: Arc<RootCertStore>,
    crls: Vec<PathBuf>,
    /// The configuration key the CRLs are reported under.
    key: String,
    recheck: Duration,
    state: RwLock<Loaded>,
}

/// The verifier in force, when the files were last looked at, and what they were then.
struct Loaded {
    verifier: Arc<WebPkiServerVerifier>,
    checked: Instant,
    stamps: Vec<Option<(SystemTime, u64)>>,
}

impl std::fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTrust")
            .field("crls", &self.crls)
            .finish_non_exhaustive()
    }
}

impl ServerTrust {
    /// Trust in `roots`, with the CRLs in `crls` (reported under `key`) when there are any.
    pub(crate) fn new(
        roots: RootCertStore,
        crls: &[PathBuf],
        key: &str,
    ) -> Result<Arc<Self>, ConfigProblem> {
        let roots = Arc::new(roots);
        let stamps = stamps(crls);
        let verifier = build_verifier(&roots, crls, key)?;
        Ok(Arc::new(Self {
            roots,
            crls: crls.to_vec(),
            key: key.to_owned(),
            recheck: CRL_RECHECK,
            state: RwLock::new(Loaded {
                verifier,
                checked: Instant::now(),
                stamps,
            }),
        }))
    }

    /// The same, looking at the files at every handshake (tests).
    #[cfg(test)]
    fn rechecking_always(mut self: Arc<Self>) -> Arc<Self> {
        if let Some(this) = Arc::get_mut(&mut self) {
            this.recheck = Duration::ZERO;
        }
        self
    }

    /// The verifier in force, after rereading the CRLs if they changed since last looked at.
    fn current(&self) -> Arc<WebPkiServerVerifier> {
        // A poisoned lock only means a reread panicked mid-swap: the value is whole.
        {
            let loaded = self
                .state
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if self.crls.is_empty() || loaded.checked.elapsed() < self.recheck {
                return loaded.verifier.clone();
            }
        }
        let now = stamps(&self.crls);
        let mut loaded = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loaded.checked = Instant::now();
        // The stamps change only with a successful reread: a failed one is tried (and
        // said) again at the next look.
        if now != loaded.stamps {
            match build_verifier(&self.roots, &self.crls, &self.key) {
                Ok(verifier) => {
                    tracing::info!(key = %self.key, "CRLs reread");
                    loaded.verifier = verifier;
                    loaded.stamps = now;
                }
                Err(problem) => {
                    tracing::error!(
                        key = %problem.key,
                        reason = %problem.reason,
                        "cannot reread a CRL: the lists in force stay"
                    );
                }
            }
        }
        loaded.verifier.clone()
    }
}

/// Each file's modification time and size, `None` when it cannot be read.
fn stamps(paths: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

fn build_verifier(
    roots: &Arc<RootCertStore>,
    crls: &[PathBuf],
    key: &str,
) -> Result<Arc<WebPkiServerVerifier>, ConfigProblem> {
    let mut builder = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider());
    if !crls.is_empty() {
        let (lists, due) = load_crls(crls, key)?;
        if due.stale() {
            tracing::warn!(%key, "a CRL is past its next update: publish a fresh one");
        }
        builder = builder.with_crls(lists).only_check_end_entity_revocation();
    }
    builder
        .build()
        .map_err(|e| ConfigProblem::new(key, format!("unusable trust anchors: {e}")))
}

impl ServerCertVerifier for ServerTrust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// Where a mutual-TLS client's files are, and the configuration key each is reported under.
pub(crate) struct MutualClient<'a> {
    /// Key prefix of the problems, e.g. `upstream` or `audit.receivers[0]`.
    pub section: &'a str,
    /// `(key name, path)` of the CA the server must chain to.
    pub ca: (&'a str, &'a Path),
    /// `(key name, paths)` of the CRLs the server's certificate is checked against.
    pub crls: (&'a str, &'a [PathBuf]),
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
    let trust = ServerTrust::new(roots, files.crls.1, &key_of(files.crls.0))
        .map_err(|problem| problems.push(problem))
        .ok()?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| {
            problems.push(ConfigProblem::new(
                files.section,
                format!("TLS versions: {e}"),
            ))
        })
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(trust)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_pki::{Authority, write_file};

    /// Lists are stale from their earliest next update on, judged when asked (the
    /// readiness asks at each probe), not when the files were read: a list read fresh
    /// becomes stale by the clock alone. The earliest of several lists counts.
    #[test]
    fn crls_are_stale_once_their_earliest_next_update_passes() {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(!CrlsDue(None).stale());
        assert!(!CrlsDue(Some(now + 3600)).stale());
        assert!(CrlsDue(Some(now - 1)).stale());
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("CRL Test CA").unwrap();
        let paths: Vec<PathBuf> = [("soon.crl", 1), ("later.crl", 30)]
            .iter()
            .map(|(name, days)| {
                let path = dir.path().join(name);
                write_file(&path, &ca.crl(&[], 1, *days).unwrap(), 0o644).unwrap();
                path
            })
            .collect();
        let (lists, due) = load_crls(&paths, "crls").unwrap();
        assert_eq!(lists.len(), 2);
        let due = due.0.unwrap();
        assert!((now + 86_300..=now + 86_500).contains(&due), "{due}");
    }

    /// A PEM file holding several lists is read whole (a bundle of authorities' lists, as
    /// web servers take them), newest first: a verifier takes the first list of an issuer,
    /// and an older copy before a revocation let the revoked certificate in. Only each
    /// issuer's newest list counts for staleness and monitoring. Before, only the file's
    /// first list was read.
    #[test]
    fn every_list_of_a_bundle_counts_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("test record service CA").unwrap();
        let server = ca.issue_server(&["localhost"]).unwrap();
        let other = Authority::new("another CA").unwrap();
        let bundle = dir.path().join("bundle.pem");
        // The other authority's list first, then an old copy (past its next update)
        // before the revocation, then the current one revoking the server.
        let text = [
            other.crl(&[], 0, 30).unwrap(),
            ca.crl(&[], 10, -1).unwrap(),
            ca.crl(&[serial(&server.der)], 0, 7).unwrap(),
        ]
        .concat();
        write_file(&bundle, &text, 0o644).unwrap();
        let (lists, due) = load_crls(std::slice::from_ref(&bundle), "crls").unwrap();
        assert_eq!(lists.len(), 3);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(!due.stale(), "the old copy is not in force");
        assert!(
            (now + 6 * 86_400..=now + 8 * 86_400).contains(&due.0.unwrap()),
            "{due:?}"
        );
        let (_, next) = crl_dates(&bundle).unwrap();
        assert_eq!(next, due.0);

        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let trust = ServerTrust::new(roots, &[bundle], "upstream.server_crls").unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        assert!(matches!(
            trust.verify_server_cert(&server.der, &[], &name, &[], UnixTime::now()),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked
            ))
        ));
    }

    fn serial(der: &CertificateDer<'_>) -> Vec<u8> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        cert.raw_serial().to_vec()
    }

    /// A server certificate its CRL revokes is refused; a CRL replaced on disk is taken
    /// at the next look, and a file that no longer reads keeps the lists in force.
    #[test]
    fn server_certificates_are_checked_against_crls_reread_as_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("test record service CA").unwrap();
        let server = ca.issue_server(&["localhost"]).unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let crl = dir.path().join("server-ca.crl");
        write_file(&crl, &ca.crl(&[], 0, 7).unwrap(), 0o644).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let verify = |trust: &ServerTrust| {
            trust.verify_server_cert(&server.der, &[], &name, &[], UnixTime::now())
        };

        let trust = ServerTrust::new(
            roots.clone(),
            std::slice::from_ref(&crl),
            "upstream.server_crls",
        )
        .unwrap()
        .rechecking_always();
        assert!(verify(&trust).is_ok());
        // Revoked: refused at the next handshake, without a restart.
        write_file(&crl, &ca.crl(&[serial(&server.der)], 0, 7).unwrap(), 0o644).unwrap();
        assert!(matches!(
            verify(&trust),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked
            ))
        ));
        // A CRL file that no longer parses: the lists in force stay (still revoked).
        std::fs::write(&crl, b"not a CRL").unwrap();
        assert!(verify(&trust).is_err());
        // Without CRLs, the anchors alone decide; another CA's server is refused.
        let plain = ServerTrust::new(roots.clone(), &[], "upstream.server_crls").unwrap();
        assert!(verify(&plain).is_ok());
        let stranger = Authority::new("another CA").unwrap();
        let foreign = stranger.issue_server(&["localhost"]).unwrap();
        assert!(
            plain
                .verify_server_cert(&foreign.der, &[], &name, &[], UnixTime::now())
                .is_err()
        );
        // A CRL that does not parse is a configuration problem, named by its key.
        let problem = ServerTrust::new(roots, &[crl], "dmp.server_crls").unwrap_err();
        assert_eq!(problem.key, "dmp.server_crls[0]");
    }
}
