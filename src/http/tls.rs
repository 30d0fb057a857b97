//! TLS for the listener: rustls with the ring provider, TLS 1.2 and 1.3 only, client
//! certificates verified against the workstation CA (optional at the TLS layer so that
//! `/healthz` works without one; the desk extractor refuses API calls that lack one).

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use crate::card::trust::StaleCrlPolicy;
use crate::http::TlsConfig;
use crate::problem::ConfigProblem;
use crate::tls::{VERSIONS, load_certs, provider};

/// The listener's TLS configuration and the leaf certificate it presents. The workstation
/// CRLs are reread on [`ServerTls::reload_crls`]: each handshake takes the configuration in
/// force when it starts, and connections already open are told ([`ServerTls::reloads`])
/// so that they check their certificate again.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<RwLock<InForce>>,
    /// Counts successful rereads.
    reloaded: Arc<tokio::sync::watch::Sender<u64>>,
    /// The leaf certificate, pinned by the local health probe.
    pub leaf: CertificateDer<'static>,
    material: Arc<Material>,
    /// The earliest next update of the workstation CRLs in force (Unix seconds,
    /// `i64::MAX` without one): a list becomes stale when that passes, not when it is
    /// next read (a failed reread would otherwise keep it "fresh" forever).
    due: Arc<AtomicI64>,
}

/// The configuration in force and the client verifier inside it.
type InForce = (Arc<rustls::ServerConfig>, Arc<dyn ClientCertVerifier>);

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
    pub fn load(cfg: &TlsConfig) -> Result<Self, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let chain = load_certs(&cfg.server_cert, "tls.server_cert", &mut problems);
        let key = match cfg.server_key.resolve() {
            Ok(path) => load_key(&path, &mut problems),
            Err(reason) => {
                problems.push(ConfigProblem::new("tls.server_key", reason));
                None
            }
        };
        let roots = load_roots(&cfg.workstation_ca, &mut problems);
        if let Some(leaf) = chain.first()
            && let Err(reason) = check_validity(leaf)
        {
            problems.push(ConfigProblem::new("tls.server_cert", reason));
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
        let (config, due) = material.build().map_err(|p| vec![p])?;
        Ok(Self {
            current: Arc::new(RwLock::new(config)),
            reloaded: Arc::new(tokio::sync::watch::Sender::new(0)),
            leaf,
            material: Arc::new(material),
            due: Arc::new(AtomicI64::new(due.0.unwrap_or(i64::MAX))),
        })
    }

    /// Whether a workstation CRL in force is past its next update, and if so what the
    /// policy does with it (`Refuse`: every desk's handshake fails until a fresh list is
    /// published).
    pub fn stale_crls(&self) -> Option<StaleCrlPolicy> {
        // `i64::MAX` (no list says a date) is never past.
        crate::tls::CrlsDue(Some(self.due.load(Ordering::Relaxed)))
            .stale()
            .then_some(self.material.stale)
    }

    /// The configuration for a handshake starting now.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.in_force().0
    }

    fn in_force(&self) -> InForce {
        // A poisoned lock only means a reload panicked mid-swap: the value is whole.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes after each successful reread of the CRLs.
    pub(crate) fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
    }

    /// Whether a client chain that passed its handshake still verifies now, under the lists
    /// in force (revoked since, or expired, it does not): the reason when it does not.
    pub(crate) fn still_trusted(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Ok(());
        };
        self.in_force()
            .1
            .verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now())
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// How often the workstation CRLs are reread; `None` without CRLs.
    pub fn crl_refresh(&self) -> Option<std::time::Duration> {
        (!self.material.crls.is_empty()).then_some(self.material.refresh)
    }

    /// Rereads the workstation CRLs; on failure the lists in force stay.
    pub fn reload_crls(&self) -> Result<(), ConfigProblem> {
        let (fresh, due) = self.material.build()?;
        self.due.store(due.0.unwrap_or(i64::MAX), Ordering::Relaxed);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        self.reloaded.send_modify(|count| *count += 1);
        Ok(())
    }
}

impl Material {
    /// The configuration, and when a CRL in it is next due.
    fn build(&self) -> Result<(InForce, crate::tls::CrlsDue), ConfigProblem> {
        build_server_config(
            self.chain.clone(),
            self.key.clone_key(),
            self.roots.clone(),
            &self.crls,
            self.stale,
        )
    }
}

fn build_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: RootCertStore,
    crl_paths: &[std::path::PathBuf],
    policy: StaleCrlPolicy,
) -> Result<(InForce, crate::tls::CrlsDue), ConfigProblem> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated();
    let mut due = crate::tls::CrlsDue(None);
    if !crl_paths.is_empty() {
        let (crls, crls_due) = crate::tls::load_crls(crl_paths, "tls.workstation_crls")?;
        due = crls_due;
        if due.stale() {
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
        ConfigProblem::new(
            "tls.workstation_ca",
            format!("unusable as a client CA: {e}"),
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| {
            ConfigProblem::new("tls", format!("TLS versions rejected by the provider: {e}"))
        })?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain, key)
        .map_err(|e| {
            ConfigProblem::new(
                "tls.server_key",
                format!("does not fit tls.server_cert: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(((Arc::new(config), verifier), due))
}

fn load_key(path: &Path, problems: &mut Vec<ConfigProblem>) -> Option<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| {
            problems.push(ConfigProblem::new(
                "tls.server_key",
                format!("{}: not a PEM private key: {e}", path.display()),
            ));
        })
        .ok()
}

fn load_roots(path: &Path, problems: &mut Vec<ConfigProblem>) -> Option<RootCertStore> {
    let certs = load_certs(path, "tls.workstation_ca", problems);
    if certs.is_empty() {
        return None;
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        if let Err(e) = roots.add(cert) {
            problems.push(ConfigProblem::new(
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
fn check_validity(cert: &CertificateDer<'_>) -> Result<(), LeafUnusable> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| LeafUnusable::Unparsable(e.to_string()))?;
    let validity = parsed.validity();
    if validity.is_valid() {
        return Ok(());
    }
    Err(LeafUnusable::OutOfValidity {
        from: validity.not_before.to_string(),
        to: validity.not_after.to_string(),
    })
}

/// Why the listener's certificate cannot be served.
#[derive(Debug, thiserror::Error)]
enum LeafUnusable {
    /// Not a certificate.
    #[error("cannot parse the leaf certificate: {0}")]
    Unparsable(String),
    /// Expired or not yet valid.
    #[error("certificate is outside its validity period ({from} to {to})")]
    OutOfValidity {
        /// Not before.
        from: String,
        /// Not after.
        to: String,
    },
}
