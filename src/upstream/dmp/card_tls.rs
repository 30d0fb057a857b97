//! TLS to the DMP in `DIRECTE` mode: the client certificate is the professional's card
//! authentication certificate, sent with the intermediates of its path to the card
//! anchors, and the handshake's signature is made by the card, through
//! the card session held since the login (docs/dmp.md, "Transport"). Each card session
//! gets its own HTTP client, hence its own pooled connections: they are used for that
//! session's accesses only, and dropped (closed) when the session ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::DmpError;
use crate::card::profile::SignatureScheme as CardScheme;
use crate::card::trust::CardTrust;
use crate::card::worker::{CardKey, CardWorker, HeldSession};
use crate::upstream::CardSession;

/// How long the card may take to sign the handshake. A CPS answers in well under a
/// second; past this the handshake fails rather than hold a runtime thread.
const SIGN_WITHIN: Duration = Duration::from_secs(5);

/// TLS 1.2 only: a card signs PKCS#1 v1.5, which TLS 1.3 no longer allows in the
/// client's CertificateVerify. ring's TLS 1.2 suites are all ECDHE with AEAD: the DMP's
/// (ECDHE-RSA with AES-GCM or ChaCha20-Poly1305; not its CBC one) and their ECDSA twins.
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// The HTTP clients of the card sessions, by reader.
pub(super) struct CardTransport {
    trust: Arc<crate::tls::ServerTrust>,
    connect_timeout_ms: u64,
    clients: Arc<Mutex<HashMap<String, (u64, reqwest::Client)>>>,
}

impl CardTransport {
    pub(super) fn new(trust: Arc<crate::tls::ServerTrust>, connect_timeout_ms: u64) -> Self {
        Self {
            trust,
            connect_timeout_ms,
            clients: Arc::default(),
        }
    }

    /// The client of `card`'s session, built at its first access (its chain found in
    /// `trust`); refused once another session is held at its reader.
    pub(super) async fn client(
        &self,
        worker: &CardWorker,
        trust: &CardTrust,
        card: CardSession<'_>,
    ) -> Result<reqwest::Client, DmpError> {
        let reader = card.reader;
        let session = worker.session(reader).await.map_err(|e| {
            DmpError::Signer(format!("no card session for the TLS connection: {e}"))
        })?;
        if session.id != card.held {
            return Err(super::client::ended_card_session());
        }
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| DmpError::Signer("card TLS clients poisoned".into()))?;
        if let Some((id, client)) = clients.get(reader)
            && *id == session.id
        {
            return Ok(client.clone());
        }
        let client = self.build(worker, trust, reader, &session)?;
        // The previous session's client, if any, goes: its connections close.
        clients.insert(reader.to_owned(), (session.id, client.clone()));
        drop(clients);
        let (clients, reader, id) = (self.clients.clone(), reader.to_owned(), session.id);
        tokio::spawn(async move {
            session.ended().await;
            if let Ok(mut clients) = clients.lock()
                && clients.get(&reader).is_some_and(|(held, _)| *held == id)
            {
                clients.remove(&reader);
            }
        });
        Ok(client)
    }

    fn build(
        &self,
        worker: &CardWorker,
        trust: &CardTrust,
        reader: &str,
        session: &HeldSession,
    ) -> Result<reqwest::Client, DmpError> {
        // The certificate alone would do for a peer that holds the card's issuer; the
        // DMP's front end is only known to trust IGC-Santé's roots.
        let chain = trust
            .authentication_chain(
                &session.authentication_certificate,
                std::time::SystemTime::now(),
            )
            .map_err(|e| {
                DmpError::Signer(format!(
                    "the card's authentication certificate is refused: {e}"
                ))
            })?;
        let scheme = match session.authentication_scheme {
            CardScheme::Pkcs1Sha256 => SignatureScheme::RSA_PKCS1_SHA256,
            CardScheme::PssSha256 => SignatureScheme::RSA_PSS_SHA256,
        };
        let key = CardSigningKey {
            worker: worker.clone(),
            reader: reader.to_owned(),
            session: session.id,
            scheme,
        };
        let resolver = CardCertificate(Arc::new(CertifiedKey::new(chain, Arc::new(key))));
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| DmpError::Signer(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(self.trust.clone())
            .with_client_cert_resolver(Arc::new(resolver));
        // The connect timeout covers the handshake, in which the card signs: a card a
        // second slow must not read as the DMP unreachable (the access's own deadline
        // still bounds the whole).
        let connect_ms = self
            .connect_timeout_ms
            .saturating_add(u64::try_from(SIGN_WITHIN.as_millis()).unwrap_or(u64::MAX));
        crate::upstream::http_client(tls, connect_ms, "dmp").map_err(|problems| {
            DmpError::Signer(
                problems
                    .first()
                    .map(|p| p.reason.clone())
                    .unwrap_or_default(),
            )
        })
    }
}

/// Presents the card's certificate whenever the server asks for one.
#[derive(Debug)]
struct CardCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for CardCertificate {
    fn resolve(&self, _: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        // Without our scheme the handshake could only fail later, at the signature.
        self.0.key.choose_scheme(schemes).map(|_| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The card's authentication key, in one card session.
struct CardSigningKey {
    worker: CardWorker,
    reader: String,
    session: u64,
    scheme: SignatureScheme,
}

impl std::fmt::Debug for CardSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardSigningKey")
            .field("reader", &self.reader)
            .field("session", &self.session)
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl SigningKey for CardSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&self.scheme).then(|| {
            Box::new(CardSigner {
                worker: self.worker.clone(),
                reader: self.reader.clone(),
                session: self.session,
                scheme: self.scheme,
            }) as Box<dyn Signer>
        })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

struct CardSigner {
    worker: CardWorker,
    reader: String,
    session: u64,
    scheme: SignatureScheme,
}

impl std::fmt::Debug for CardSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardSigner")
            .field("reader", &self.reader)
            .field("session", &self.session)
            .finish()
    }
}

impl Signer for CardSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.worker
            .sign_blocking(
                &self.reader,
                CardKey::Authentication,
                Some(self.session),
                message.to_vec(),
                SIGN_WITHIN,
            )
            .map_err(|e| rustls::Error::General(format!("the card cannot sign the handshake: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
