//! The card worker: one dedicated thread owning the monitoring PC/SC context (its handles
//! must stay on one thread). It watches the desk readers with `get_status_change`, reads the
//! certificate of each inserted card, and survives pcscd restarts by re-establishing its
//! context with backoff. Everything it learns goes out as [`CardEvent`]s.
//!
//! The monitor only watches. A new card's certificate is read on a thread of its own, with a
//! deadline ([`INSPECT_TIMEOUT`]): a slow or hostile card at one desk never delays the
//! removals seen at the others. Each insertion has a generation; a reading that comes back
//! after its card left (or after its deadline) is dropped, so no "inserted" follows the
//! "removed" of the same card. A card pulled and another put in between two looks at the
//! reader (pcscd's event counter moved while the reader stayed "present") is reported as
//! a removal, which ends the session, then an insertion.
//!
//! A login runs on a thread of its own with its own context and connection to the card: a
//! PIN typed on a PIN-pad reader can take half a minute, during which removals at every
//! desk must still be seen within 500 ms. The login sequence runs inside a PC/SC
//! transaction, so two logins at one desk never interleave their APDUs. Its caller waits
//! at most the login timeout ([`LOGIN_TIMEOUT`], configurable): a card that stops answering
//! leaves its thread blocked until the card leaves, but the desk gets its answer and a
//! login that completes after its caller left closes what it opened.
//!
//! A successful login keeps that connection open for the session, on its thread: the
//! card's PIN-verified state lives as long as the card is not reset, and the session's
//! signatures (the VIHF with the card's signature key, the DMP's TLS handshake with its
//! authentication key) go through it, each in a transaction of its own
//! ([`CardWorker::sign`], [`CardWorker::sign_blocking`]). [`CardWorker::end`], a new login
//! at the same reader, or the card leaving closes it (and resets the card); whoever holds
//! a [`HeldSession`] learns it ([`HeldSession::ended`]).

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::{mpsc as tokio_mpsc, oneshot, watch};

use super::CardError;
use super::backend::{CardBackend, Inspection, inspect_apdu, login_apdu, sign_apdu};
use super::profile::{CardProfile, Pin, SignatureScheme};

/// How long one wait on the readers lasts before checking for shutdown. A card event ends
/// the wait at once (the removal bench measured the same 390 ms median at 50 and 200 ms),
/// so this bounds nothing but shutdown.
const POLL: Duration = Duration::from_millis(200);

/// How long a new card may take to give its certificate and PIN tries; past it the card is
/// reported unreadable (a later answer is dropped).
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a login may wait on the card by default (its reading, the PIN's check, the
/// challenge's signature; a PIN typed on the reader's keypad has its entry time on top).
/// Past it the physician is told the card does not answer (and to pull it, which frees the
/// reader its login thread still holds): a card that stops answering mid-login must not
/// hold the physician's request until it is pulled.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// What the worker observes.
#[derive(Debug)]
pub enum CardEvent {
    /// A card is in `reader`; its certificate, or why it could not be read.
    Inserted {
        /// The reader.
        reader: String,
        /// The authentication certificate (DER).
        certificate: Result<Vec<u8>, CardError>,
        /// PIN tries left, when the card says (0: blocked).
        pin_tries_left: Option<u8>,
    },
    /// The card left `reader`.
    Removed {
        /// The reader.
        reader: String,
    },
    /// pcscd is unreachable (stopped or restarting); every reader state is unknown.
    PcscUnavailable(String),
    /// pcscd answers again.
    PcscAvailable,
    /// The configured readers pcscd lists now (sent whenever the set of readers changes):
    /// a reader missing here is unplugged or dead.
    Readers {
        /// The configured readers plugged in.
        plugged: Vec<String>,
    },
    /// The card session held at `reader` ended on its own: its card failed a signature
    /// (reset by another program, a reader glitch) while still in the reader. Whoever
    /// logged in with it has nothing left to sign with.
    SessionLost {
        /// The reader.
        reader: String,
        /// The session's id ([`HeldSession::id`]).
        session: u64,
    },
}

/// Where the PIN comes from.
#[derive(Debug)]
pub enum PinSource {
    /// Typed at the workstation (zeroized when dropped).
    Typed(Pin),
    /// Typed on the reader's keypad; never seen by software.
    PinPad,
}

/// A login request for the card in a reader.
pub struct LoginRequest {
    /// The reader.
    pub reader: String,
    /// The PIN.
    pub pin: PinSource,
    /// The certificate the card must still carry (a swapped card fails).
    pub expected_certificate: Vec<u8>,
    /// The physician confirmed spending the card's last try (see [`CardBackend::login`]).
    pub last_try_confirmed: bool,
    /// Where the outcome goes: the held session's id ([`HeldSession::id`]), which binds
    /// what is later signed to this login.
    pub reply: oneshot::Sender<Result<u64, CardError>>,
}

/// Which of a card's two keys signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardKey {
    /// The authentication key: proof of possession, TLS client authentication.
    Authentication,
    /// The signature (non-repudiation) key: the VIHF.
    Signature,
}

/// Numbers the card sessions, across readers, for the life of the process.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A card session held open after a login: what it offers, and a way to learn that it
/// ended (the connection to the card closed).
#[derive(Clone)]
pub struct HeldSession {
    /// Unique for the life of the process: a new login at the same reader is another.
    pub id: u64,
    /// The authentication certificate (DER), checked at login.
    pub authentication_certificate: Vec<u8>,
    /// The signature certificate (DER), read at login.
    pub signature_certificate: Vec<u8>,
    /// How the authentication key signs.
    pub authentication_scheme: SignatureScheme,
    /// The holder's practice situations the card showed at login (PKCS#11 only).
    pub activities: Vec<super::cps_data::CardActivity>,
    /// The holder's specialty the card showed at login (PKCS#11 only).
    pub specialty: Option<String>,
    ended: watch::Receiver<()>,
}

impl HeldSession {
    fn new(
        authentication_certificate: Vec<u8>,
        signature_certificate: Vec<u8>,
        authentication_scheme: SignatureScheme,
    ) -> (Self, watch::Sender<()>) {
        let (alive, ended) = watch::channel(());
        let session = Self {
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            authentication_certificate,
            signature_certificate,
            authentication_scheme,
            activities: Vec::new(),
            specialty: None,
            ended,
        };
        (session, alive)
    }

    /// Completes once the session has ended (its sender, held by the session, dropped).
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        while ended.changed().await.is_ok() {}
    }
}

/// Where an answer goes: an async caller, or one blocked on a thread (the TLS
/// handshake's signer, called synchronously by rustls).
enum Reply<T> {
    Async(oneshot::Sender<T>),
    Blocking(mpsc::SyncSender<T>),
}

impl<T> Reply<T> {
    fn send(self, value: T) {
        match self {
            Self::Async(reply) => drop(reply.send(value)),
            Self::Blocking(reply) => drop(reply.send(value)),
        }
    }
}

/// A signature asked of a logged-in card.
struct SignRequest {
    reader: String,
    key: CardKey,
    /// The session the caller belongs to: another session at the reader refuses.
    session: Option<u64>,
    message: Vec<u8>,
    reply: Reply<Result<Vec<u8>, CardError>>,
}

/// What a held card session (or the virtual card's thread) is asked.
enum Held {
    Sign(SignRequest),
    Session(oneshot::Sender<HeldSession>),
    /// Nothing: whether the session still listens.
    Ping,
    End,
}

/// Signs `request` with the card of a session, when it is that session's.
fn sign_in_session(
    card: &mut dyn super::apdu::Transport,
    profile: &CardProfile,
    session: &HeldSession,
    request: &SignRequest,
) -> Result<Vec<u8>, CardError> {
    if request.session.is_some_and(|id| id != session.id) {
        return Err(CardError::NoSession);
    }
    sign_apdu(
        card,
        profile,
        request.key,
        &request.message,
        (
            &session.authentication_certificate,
            &session.signature_certificate,
        ),
    )
}

/// What the virtual card's thread is asked.
enum VirtualRequest {
    Login(LoginRequest),
    Held(Held, String),
}

/// The card sessions held open after a login, by reader, and per reader the lock a
/// session's thread holds until its connection is closed (a new login waits for it, so
/// the old connection's reset never lands in the middle of the new session).
#[derive(Clone, Default)]
struct Sessions {
    held: std::sync::Arc<std::sync::Mutex<HashMap<String, mpsc::Sender<Held>>>>,
    locks: std::sync::Arc<std::sync::Mutex<HashMap<String, std::sync::Arc<std::sync::Mutex<()>>>>>,
    /// Where a session ending on its own is told.
    events: Option<tokio_mpsc::UnboundedSender<CardEvent>>,
}

impl Sessions {
    fn lock_of(&self, reader: &str) -> std::sync::Arc<std::sync::Mutex<()>> {
        self.locks
            .lock()
            .map(|mut all| all.entry(reader.to_owned()).or_default().clone())
            .unwrap_or_default()
    }

    fn take(&self, reader: &str) -> Option<mpsc::Sender<Held>> {
        self.held
            .lock()
            .ok()
            .and_then(|mut held| held.remove(reader))
    }

    fn get(&self, reader: &str) -> Option<mpsc::Sender<Held>> {
        self.held
            .lock()
            .ok()
            .and_then(|held| held.get(reader).cloned())
    }
}

/// Handle for running logins on the desks' cards, and signatures in their sessions; the
/// duration is how long a login may wait on its card ([`LOGIN_TIMEOUT`] by default).
#[derive(Clone)]
pub struct CardWorker(Worker, Duration);

#[derive(Clone)]
enum Worker {
    /// Cards in real readers, through pcscd (APDUs or a PKCS#11 module).
    Readers(std::sync::Arc<dyn CardBackend>, Sessions),
    /// The demo's in-process virtual card, owned by its thread.
    Virtual(mpsc::Sender<VirtualRequest>),
}

impl CardWorker {
    /// Starts the worker for `readers`, reaching their cards through `backend`,
    /// reporting on `events`.
    pub fn start(
        readers: Vec<String>,
        backend: std::sync::Arc<dyn CardBackend>,
        events: tokio_mpsc::UnboundedSender<CardEvent>,
    ) -> std::io::Result<Self> {
        let (inspected, readings) = mpsc::channel();
        let sessions = Sessions {
            events: Some(events.clone()),
            ..Sessions::default()
        };
        let monitor = Monitor {
            readers,
            backend: backend.clone(),
            events,
            present: HashMap::new(),
            counts: HashMap::new(),
            generation: 0,
            pending: HashMap::new(),
            inspected,
            readings,
            pnp_aside: None,
            listed: None,
        };
        std::thread::Builder::new()
            .name("card-worker".into())
            .spawn(move || monitor.run())?;
        Ok(Self(Worker::Readers(backend, sessions), LOGIN_TIMEOUT))
    }

    /// A worker whose one reader holds an in-process virtual card (the demo's): the card is
    /// reported inserted at once and stays in; logins run against it as against a real one.
    pub fn start_virtual(
        reader: String,
        mut card: Box<dyn super::apdu::Transport + Send>,
        profile: CardProfile,
        events: tokio_mpsc::UnboundedSender<CardEvent>,
    ) -> std::io::Result<Self> {
        let (requests, inbox) = mpsc::channel::<VirtualRequest>();
        std::thread::Builder::new()
            .name("virtual-card".into())
            .spawn(move || {
                let _ = events.send(CardEvent::PcscAvailable);
                let _ = events.send(CardEvent::Readers {
                    plugged: vec![reader.clone()],
                });
                let (certificate, pin_tries_left) = inspect_apdu(card.as_mut(), &profile);
                let _ = events.send(CardEvent::Inserted {
                    reader: reader.clone(),
                    certificate,
                    pin_tries_left,
                });
                // The session open on the card, if any, and what keeps it alive.
                let mut session: Option<(HeldSession, watch::Sender<()>)> = None;
                for request in inbox {
                    match request {
                        VirtualRequest::Login(request) => {
                            session = None;
                            let outcome = if request.reader == reader {
                                login_apdu(
                                    card.as_mut(),
                                    &profile,
                                    &request.pin,
                                    &request.expected_certificate,
                                    request.last_try_confirmed,
                                )
                            } else {
                                Err(CardError::Transport(format!(
                                    "no card in reader '{}'",
                                    request.reader
                                )))
                            };
                            match outcome {
                                Ok(signature) => {
                                    let held = HeldSession::new(
                                        request.expected_certificate.clone(),
                                        signature,
                                        profile.signature,
                                    );
                                    // Kept only if the login's caller is still there (it
                                    // gives up at its deadline).
                                    if request.reply.send(Ok(held.0.id)).is_ok() {
                                        session = Some(held);
                                    }
                                }
                                Err(e) => {
                                    let _ = request.reply.send(Err(e));
                                }
                            }
                        }
                        VirtualRequest::Held(Held::Sign(request), _) => {
                            let outcome = match &session {
                                Some((held, _)) if request.reader == reader => {
                                    sign_in_session(card.as_mut(), &profile, held, &request)
                                }
                                _ => Err(CardError::NoSession),
                            };
                            request.reply.send(outcome);
                        }
                        VirtualRequest::Held(Held::Session(reply), at) => {
                            if let Some((held, _)) = session.as_ref().filter(|_| at == reader) {
                                let _ = reply.send(held.clone());
                            }
                        }
                        VirtualRequest::Held(Held::Ping, _) => {}
                        VirtualRequest::Held(Held::End, at) => {
                            if at == reader {
                                session = None;
                            }
                        }
                    }
                }
            })?;
        Ok(Self(Worker::Virtual(requests), LOGIN_TIMEOUT))
    }

    /// This worker, its logins waiting at most `timeout` on their card (beyond the PIN
    /// pad's own entry time).
    pub fn with_login_timeout(self, timeout: Duration) -> Self {
        Self(self.0, timeout)
    }

    /// Runs the login sequence on the card in `reader`; the held session's id, which the
    /// accesses made for this login name when they sign ([`Self::sign`]). A card that
    /// has not finished within the login timeout (plus the PIN pad's entry time) is
    /// [`CardError::Unresponsive`]; if it finishes later, the session it opened is closed
    /// at once (nobody is there to hold it).
    pub async fn login(
        &self,
        reader: String,
        pin: PinSource,
        expected_certificate: Vec<u8>,
        last_try_confirmed: bool,
    ) -> Result<u64, CardError> {
        let stopped = |_| CardError::Transport("the card worker stopped".into());
        let deadline = match pin {
            PinSource::Typed(_) => self.1,
            PinSource::PinPad => {
                self.1 + Duration::from_secs(super::pinpad::ENTRY_TIMEOUT_SECS.into())
            }
        };
        let (reply, answer) = oneshot::channel();
        let request = LoginRequest {
            reader,
            pin,
            expected_certificate,
            last_try_confirmed,
            reply,
        };
        match &self.0 {
            Worker::Readers(backend, sessions) => {
                let backend = backend.clone();
                // A session still held at this reader ends first: its thread closes its
                // connection, and the new login waits for that (`hold_session`).
                if let Some(previous) = sessions.take(&request.reader) {
                    let _ = previous.send(Held::End);
                }
                let sessions = sessions.clone();
                std::thread::Builder::new()
                    .name("card-session".into())
                    .spawn(move || hold_session(backend.as_ref(), &sessions, request))
                    .map_err(|e| {
                        CardError::Transport(format!("cannot start a card session: {e}"))
                    })?;
            }
            Worker::Virtual(requests) => requests
                .send(VirtualRequest::Login(request))
                .map_err(|_| CardError::Transport("the card worker stopped".into()))?,
        }
        // Dropping `answer` at the deadline is what tells the login's thread that nobody
        // waits any more (`hold_session`, the virtual card's loop).
        match tokio::time::timeout(deadline, answer).await {
            Ok(outcome) => outcome.map_err(stopped)?,
            Err(_) => Err(CardError::Unresponsive {
                seconds: deadline.as_secs(),
            }),
        }
    }

    /// Has the card logged in at `reader` sign `message` with `key` (RSA, SHA-256: PKCS#1
    /// v1.5 for the signature key, the profile's scheme for the authentication key);
    /// with `session`, only while that session is the one held there.
    pub async fn sign(
        &self,
        reader: &str,
        key: CardKey,
        session: Option<u64>,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, CardError> {
        let (reply, answer) = oneshot::channel();
        self.send_sign(reader, key, session, message, Reply::Async(reply))?;
        answer.await.map_err(|_| CardError::NoSession)?
    }

    /// [`Self::sign`] for a synchronous caller (rustls asks its signer synchronously,
    /// during the handshake): blocks the calling thread for the card's answer, at most
    /// `within`. Inside a multi-threaded runtime the wait is announced to it, so its other
    /// tasks move to another worker meanwhile.
    pub fn sign_blocking(
        &self,
        reader: &str,
        key: CardKey,
        session: Option<u64>,
        message: Vec<u8>,
        within: Duration,
    ) -> Result<Vec<u8>, CardError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send_sign(reader, key, session, message, Reply::Blocking(reply))?;
        let wait = || match answer.recv_timeout(within) {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(CardError::Transport(format!(
                "the card did not sign within {} ms",
                within.as_millis()
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CardError::NoSession),
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }

    /// The session held at `reader`: its id, certificates, and its end.
    pub async fn session(&self, reader: &str) -> Result<HeldSession, CardError> {
        let (reply, answer) = oneshot::channel();
        self.send(Held::Session(reply), reader)?;
        answer.await.map_err(|_| CardError::NoSession)
    }

    /// Asks the session held at `reader` for a signature, answered to `reply`.
    fn send_sign(
        &self,
        reader: &str,
        key: CardKey,
        session: Option<u64>,
        message: Vec<u8>,
        reply: Reply<Result<Vec<u8>, CardError>>,
    ) -> Result<(), CardError> {
        let request = SignRequest {
            reader: reader.to_owned(),
            key,
            session,
            message,
            reply,
        };
        self.send(Held::Sign(request), reader)
    }

    /// Hands `message` to the session held at `reader`.
    fn send(&self, message: Held, reader: &str) -> Result<(), CardError> {
        let sent = match &self.0 {
            Worker::Readers(_, sessions) => sessions
                .get(reader)
                .is_some_and(|session| session.send(message).is_ok()),
            Worker::Virtual(requests) => requests
                .send(VirtualRequest::Held(message, reader.to_owned()))
                .is_ok(),
        };
        if sent {
            Ok(())
        } else {
            Err(CardError::NoSession)
        }
    }

    /// Ends the card session held at `reader`: its connection closes, the card's
    /// PIN-verified state with it.
    pub fn end(&self, reader: &str) {
        match &self.0 {
            Worker::Readers(_, sessions) => {
                if let Some(session) = sessions.take(reader) {
                    let _ = session.send(Held::End);
                }
            }
            Worker::Virtual(requests) => {
                let _ = requests.send(VirtualRequest::Held(Held::End, reader.to_owned()));
            }
        }
    }
}

/// A login on a card in a real reader, then, when it succeeds, the session held on the
/// same connection (or PKCS#11 session) until it is ended, replaced, or the card fails
/// (removed).
fn hold_session(backend: &dyn CardBackend, sessions: &Sessions, request: LoginRequest) {
    let LoginRequest {
        reader,
        pin,
        expected_certificate,
        last_try_confirmed,
        reply,
    } = request;
    // Held until this function returns, after the card (declared later) is dropped: the
    // next login at this reader starts only then.
    let lock = sessions.lock_of(&reader);
    // Waited for in short steps, not blocked on: a previous session stuck on its card
    // (a signature that never returns) may hold the reader for long, and the PIN this
    // request carries must go (wiped on drop) once whoever asked has given up, not when
    // that card is pulled.
    let _turn = loop {
        match lock.try_lock() {
            Ok(turn) => break turn,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => break poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                if reply.is_closed() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    // Whoever asked may have given up while the previous session at this reader ended:
    // their PIN is not sent.
    if reply.is_closed() {
        return;
    }
    let login = backend.login(&reader, &pin, &expected_certificate, last_try_confirmed);
    // Wiped now (`Pin` zeroizes on drop), not when the session ends hours later.
    drop(pin);
    let mut card = match login {
        Ok(card) => card,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    // Dropped when this function returns: the holders of the session learn it ended.
    let (mut session, _alive) = HeldSession::new(
        expected_certificate.clone(),
        card.signature_certificate(),
        backend.authentication_scheme(),
    );
    session.activities = card.activities();
    session.specialty = card.specialty();
    let (held, inbox) = mpsc::channel();
    if let Ok(mut all) = sessions.held.lock() {
        all.insert(reader.clone(), held);
    }
    // A caller gone (past its deadline) leaves the loop at once: the session is forgotten
    // below and the card closed.
    let inbox = reply.send(Ok(session.id)).is_ok().then_some(inbox);
    let mut lost = false;
    for message in inbox.into_iter().flatten() {
        match message {
            Held::Sign(sign) => {
                let outcome = if sign.session.is_some_and(|id| id != session.id) {
                    Err(CardError::NoSession)
                } else {
                    card.sign(sign.key, &sign.message)
                };
                // A card that no longer holds the login's PIN state (reset by another
                // program, a token logged out) signs nothing more in this session either.
                lost = matches!(
                    outcome,
                    Err(CardError::Transport(_) | CardError::SecurityStatusNotSatisfied)
                );
                sign.reply.send(outcome);
                if lost {
                    break;
                }
            }
            Held::Session(asked) => {
                let _ = asked.send(session.clone());
            }
            Held::Ping => {}
            Held::End => break,
        }
    }
    // Forget this session if it is still the one registered (its card failed): its inbox
    // went with the loop, so only its own sender fails to send; a newer session's gets a
    // no-op.
    if let Ok(mut all) = sessions.held.lock()
        && all
            .get(&reader)
            .is_some_and(|s| s.send(Held::Ping).is_err())
    {
        all.remove(&reader);
    }
    // The desk's session learns it now, not at its next access.
    if lost && let Some(events) = &sessions.events {
        let _ = events.send(CardEvent::SessionLost {
            reader: reader.clone(),
            session: session.id,
        });
    }
}

struct Monitor {
    readers: Vec<String>,
    backend: std::sync::Arc<dyn CardBackend>,
    events: tokio_mpsc::UnboundedSender<CardEvent>,
    present: HashMap<String, bool>,
    /// pcscd's event counter per reader (insertions and removals), when it keeps one.
    counts: HashMap<String, u32>,
    /// Numbers the insertions.
    generation: u64,
    /// Readings under way: reader → (generation, started).
    pending: HashMap<String, (u64, std::time::Instant)>,
    inspected: mpsc::Sender<(String, u64, Inspection)>,
    readings: mpsc::Receiver<(String, u64, Inspection)>,
    /// pcscd's plug-and-play pseudo-reader, kept out of the wait while the readers fill it
    /// (`arrange`): the readers are then listed again at each poll instead.
    pnp_aside: Option<pcsc::ReaderState>,
    /// The readers pcscd listed at the last rebuild: while the pseudo-reader is aside, a
    /// listing like the last changes nothing.
    listed: Option<Vec<CString>>,
}

/// The most reader states one `get_status_change` takes: pcsc-lite refuses more
/// (`PCSCLITE_MAX_READERS_CONTEXTS`, which also bounds the readers pcscd holds).
const MAX_WAITED: usize = 16;

/// Puts the watched readers' states in `states` (those in `wanted`, keeping known ones),
/// then pcscd's plug-and-play pseudo-reader last when it fits within [`MAX_WAITED`], else
/// in `aside`: with 16 readers plugged, a wait on 17 states would fail at once, again and
/// again, and no desk would ever see its card.
fn arrange(
    states: &mut Vec<pcsc::ReaderState>,
    aside: &mut Option<pcsc::ReaderState>,
    wanted: &[CString],
) {
    let pnp = states
        .iter()
        .position(|s| s.name() == pcsc::PNP_NOTIFICATION())
        .map(|at| states.remove(at))
        .or_else(|| aside.take());
    states.retain(|s| wanted.iter().any(|w| w.as_c_str() == s.name()));
    for name in wanted.iter().take(MAX_WAITED) {
        if !states.iter().any(|s| s.name() == name.as_c_str()) {
            states.push(pcsc::ReaderState::new(name.clone(), pcsc::State::UNAWARE));
        }
    }
    if let Some(pnp) = pnp {
        if states.len() < MAX_WAITED {
            states.push(pnp);
        } else {
            *aside = Some(pnp);
        }
    }
}

impl Monitor {
    fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match pcsc::Context::establish(pcsc::Scope::User) {
                Ok(context) => {
                    backoff = Duration::from_millis(100);
                    let _ = self.events.send(CardEvent::PcscAvailable);
                    let reason = self.watch(&context);
                    if self.events.is_closed() {
                        return;
                    }
                    self.forget_cards();
                    let _ = self.events.send(CardEvent::PcscUnavailable(reason));
                }
                Err(e) => {
                    let _ = self.events.send(CardEvent::PcscUnavailable(e.to_string()));
                }
            }
            if self.events.is_closed() {
                return;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Watches until pcscd fails; returns why.
    fn watch(&mut self, context: &pcsc::Context) -> String {
        // The last state is pcscd's plug-and-play pseudo-reader: it changes when a reader
        // is plugged in or out, and the watched set is rebuilt then.
        let mut states = vec![pcsc::ReaderState::new(
            pcsc::PNP_NOTIFICATION(),
            pcsc::State::UNAWARE,
        )];
        // A new context: what the last one listed or set aside is not this one's.
        self.pnp_aside = None;
        self.listed = None;
        // A rebuild whose reader listing failed is tried again at each poll until one
        // succeeds: the plug event that asked for it has been taken already.
        let mut rebuild_due = !self.rebuild(context, &mut states);
        loop {
            if self.events.is_closed() {
                return "shutting down".into();
            }
            match context.get_status_change(POLL, &mut states) {
                Ok(()) => {
                    if self.report(&mut states) || rebuild_due || self.pnp_aside.is_some() {
                        rebuild_due = !self.rebuild(context, &mut states);
                    }
                }
                // Without the plug-and-play pseudo-reader in the wait, a reader plugged or
                // unplugged shows only in the listing.
                Err(pcsc::Error::Timeout) if rebuild_due || self.pnp_aside.is_some() => {
                    rebuild_due = !self.rebuild(context, &mut states);
                }
                Err(pcsc::Error::Timeout) => {}
                Err(e) => return e.to_string(),
            }
            self.collect();
        }
    }

    /// Starts reading the card just inserted in `reader`, on a thread of its own.
    fn inspect_later(&mut self, reader: String) {
        self.generation += 1;
        let generation = self.generation;
        self.pending
            .insert(reader.clone(), (generation, std::time::Instant::now()));
        let backend = self.backend.clone();
        let inspected = self.inspected.clone();
        let started = std::thread::Builder::new()
            .name("card-read".into())
            .spawn(move || {
                // Each backend reads in its own way that other programs reading the
                // same card at the same moment cannot interleave with (a PC/SC
                // transaction, the module's own locking).
                let found = backend.inspect(&reader);
                let _ = inspected.send((reader, generation, found));
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start a card reading thread");
        }
    }

    /// Reports the readings that came back for cards still in their readers, and the ones
    /// past their deadline as unreadable.
    fn collect(&mut self) {
        while let Ok((reader, generation, (certificate, pin_tries_left))) = self.readings.try_recv()
        {
            if self.pending.get(&reader).map(|p| p.0) != Some(generation) {
                continue;
            }
            self.pending.remove(&reader);
            let _ = self.events.send(CardEvent::Inserted {
                reader,
                certificate,
                pin_tries_left,
            });
        }
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (_, started))| started.elapsed() >= INSPECT_TIMEOUT)
            .map(|(reader, _)| reader.clone())
            .collect();
        for reader in late {
            self.pending.remove(&reader);
            tracing::warn!(reader, "card did not answer in time: reported unreadable");
            let _ = self.events.send(CardEvent::Inserted {
                reader,
                certificate: Err(CardError::Transport(format!(
                    "the card did not answer within {} s",
                    INSPECT_TIMEOUT.as_secs()
                ))),
                pin_tries_left: None,
            });
        }
    }

    /// The card of `reader` left: any reading of it is void.
    fn removed(&mut self, reader: String) {
        self.pending.remove(&reader);
        let _ = self.events.send(CardEvent::Removed { reader });
    }

    /// Watches the configured readers that exist now (a configured reader that is not
    /// plugged in must not stop the others from being watched), keeping known states;
    /// false when the readers could not be listed (nothing changed).
    fn rebuild(&mut self, context: &pcsc::Context, states: &mut Vec<pcsc::ReaderState>) -> bool {
        let plugged = match context.list_readers_owned() {
            Ok(plugged) => plugged,
            Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
            // A listing that failed says nothing of the readers: taken as "all unplugged",
            // it would end every desk's session. The states stay as they were; a lost
            // pcscd shows in the wait for changes.
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the card readers: states kept");
                return false;
            }
        };
        if self.pnp_aside.is_some() && self.listed.as_ref() == Some(&plugged) {
            return true;
        }
        let wanted: Vec<CString> = self
            .readers
            .iter()
            .filter_map(|r| CString::new(r.as_str()).ok())
            .filter(|r| plugged.contains(r))
            .collect();
        self.listed = Some(plugged.clone());
        let pnp_was_aside = self.pnp_aside.is_some();
        arrange(states, &mut self.pnp_aside, &wanted);
        if self.pnp_aside.is_some() && !pnp_was_aside {
            tracing::info!(
                readers = wanted.len(),
                "as many card readers as one wait can watch: plugged readers are listed again at each poll"
            );
        }
        let unplugged: Vec<String> = self
            .readers
            .iter()
            .filter(|reader| !plugged.iter().any(|p| p.to_str() == Ok(reader.as_str())))
            .cloned()
            .collect();
        let _ = self.events.send(CardEvent::Readers {
            plugged: self
                .readers
                .iter()
                .filter(|reader| !unplugged.contains(reader))
                .cloned()
                .collect(),
        });
        for reader in unplugged {
            tracing::warn!(reader, "configured card reader not plugged in");
            self.counts.remove(&reader);
            if self.present.insert(reader.clone(), false) == Some(true) {
                self.removed(reader);
            }
        }
        true
    }

    /// Turns state changes into events; true when the set of readers changed.
    fn report(&mut self, states: &mut [pcsc::ReaderState]) -> bool {
        let mut readers_changed = false;
        for state in states.iter_mut() {
            if !state.event_state().contains(pcsc::State::CHANGED) {
                continue;
            }
            if state.name() == pcsc::PNP_NOTIFICATION() {
                state.sync_current_state();
                readers_changed = true;
                continue;
            }
            let reader = state.name().to_string_lossy().into_owned();
            let present = state.event_state().contains(pcsc::State::PRESENT)
                && !state.event_state().contains(pcsc::State::UNKNOWN);
            let count = state.event_count();
            state.sync_current_state();
            let was = self
                .present
                .insert(reader.clone(), present)
                .unwrap_or(false);
            let counted = self.counts.insert(reader.clone(), count);
            // Present before and now, yet pcscd counted insertions or removals in between:
            // another card (or the same one again) was put in between two looks.
            let swapped = present && was && counted.is_some_and(|c| c != count);
            if swapped {
                tracing::info!(reader, "card swapped between two looks at the reader");
                self.removed(reader.clone());
                self.inspect_later(reader);
            } else if present && !was {
                self.inspect_later(reader);
            } else if !present && was {
                self.removed(reader);
            }
        }
        readers_changed
    }

    fn forget_cards(&mut self) {
        self.pending.clear();
        self.counts.clear();
        for (reader, present) in self.present.drain() {
            if present {
                let _ = self.events.send(CardEvent::Removed { reader });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::backend::HeldCard;

    fn names(states: &[pcsc::ReaderState]) -> Vec<String> {
        states
            .iter()
            .map(|s| s.name().to_string_lossy().into_owned())
            .collect()
    }

    fn readers(n: usize) -> Vec<CString> {
        (0..n)
            .map(|i| CString::new(format!("Reader {i:02}")).unwrap())
            .collect()
    }

    #[test]
    fn one_wait_never_holds_more_states_than_pcsc_lite_takes() {
        let pnp = pcsc::PNP_NOTIFICATION().to_string_lossy().into_owned();
        let mut states = vec![pcsc::ReaderState::new(
            pcsc::PNP_NOTIFICATION(),
            pcsc::State::UNAWARE,
        )];
        let mut aside = None;
        // Fifteen readers and the pseudo-reader: sixteen states, the pseudo-reader last.
        arrange(&mut states, &mut aside, &readers(15));
        assert_eq!(states.len(), 16);
        assert_eq!(names(&states).last(), Some(&pnp));
        assert!(aside.is_none());
        // Sixteen readers: the pseudo-reader is set aside, not a seventeenth state.
        arrange(&mut states, &mut aside, &readers(16));
        assert_eq!(states.len(), MAX_WAITED);
        assert!(!names(&states).contains(&pnp));
        assert!(aside.is_some());
        // More configured and plugged than one wait takes (pcscd holds no more than
        // sixteen, but the list comes from it): still sixteen.
        arrange(&mut states, &mut aside, &readers(20));
        assert_eq!(states.len(), MAX_WAITED);
        // A reader unplugged: the pseudo-reader comes back, last, the same state.
        arrange(&mut states, &mut aside, &readers(12));
        assert_eq!(states.len(), 13);
        assert_eq!(names(&states).last(), Some(&pnp));
        assert!(aside.is_none());
        assert_eq!(names(&states)[..12], names_of(&readers(12))[..]);
    }

    fn names_of(readers: &[CString]) -> Vec<String> {
        readers
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect()
    }

    /// Cards that log in, then fail every signature as a reset card does (the link
    /// fails), or as one that lost its PIN state does (`6982`, a token logged out).
    struct Resetting {
        logged_out: bool,
    }

    struct ResetCard {
        logged_out: bool,
    }

    impl HeldCard for ResetCard {
        fn signature_certificate(&self) -> Vec<u8> {
            Vec::new()
        }
        fn sign(&mut self, _: CardKey, _: &[u8]) -> Result<Vec<u8>, CardError> {
            Err(if self.logged_out {
                CardError::SecurityStatusNotSatisfied
            } else {
                CardError::Transport("the card was reset".into())
            })
        }
    }

    impl CardBackend for Resetting {
        fn inspect(&self, _: &str) -> Inspection {
            (Err(CardError::Transport("not asked".into())), None)
        }
        fn login(
            &self,
            _: &str,
            _: &PinSource,
            _: &[u8],
            _: bool,
        ) -> Result<Box<dyn HeldCard>, CardError> {
            Ok(Box::new(ResetCard {
                logged_out: self.logged_out,
            }))
        }
        fn authentication_scheme(&self) -> SignatureScheme {
            SignatureScheme::Pkcs1Sha256
        }
    }

    /// A held session whose card fails a signature ends, and says so on the worker's
    /// events (the desk's session ends with it), naming its reader and id.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_session_whose_card_fails_a_signature_is_said_lost() {
        for logged_out in [false, true] {
            said_lost(Resetting { logged_out }).await;
        }
    }

    async fn said_lost(backend: Resetting) {
        let (events, mut inbox) = tokio_mpsc::unbounded_channel();
        // No pcscd here: the monitor only reports it unavailable meanwhile.
        let worker =
            CardWorker::start(vec!["R0".into()], std::sync::Arc::new(backend), events).unwrap();
        let pin = PinSource::Typed(Pin::new("1234").unwrap());
        let id = worker
            .login("R0".into(), pin, vec![1], false)
            .await
            .unwrap();
        let signed = worker
            .sign("R0", CardKey::Signature, Some(id), b"vihf".to_vec())
            .await;
        assert!(
            matches!(
                signed,
                Err(CardError::Transport(_) | CardError::SecurityStatusNotSatisfied)
            ),
            "{signed:?}"
        );
        let lost = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match inbox.recv().await {
                    Some(CardEvent::SessionLost { reader, session }) => break (reader, session),
                    Some(_) => {}
                    None => panic!("the worker stopped"),
                }
            }
        })
        .await
        .expect("the lost session is told");
        assert_eq!(lost, ("R0".to_owned(), id));
        // Nothing more signs there.
        assert!(matches!(
            worker.session("R0").await,
            Err(CardError::NoSession)
        ));
    }
}
