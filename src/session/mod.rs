//! Physician sessions: who is logged in at which desk, bound to the desk (its workstation
//! certificate) and to the card (its certificate fingerprint).
//!
//! The card worker's events drive the desks' card state; a session opens after a successful
//! login and ends when the card leaves the reader, on logout, or when the gateway stops
//! (sessions live in memory only). Every insertion, removal, login attempt and session end
//! is recorded through `audit` before the caller hears of it.

pub(crate) mod settings;
pub(crate) use settings::{CardsConfig, DeskConfig, PinEntry};
mod login;
pub(crate) mod roster;
#[cfg(test)]
mod tests;

pub(crate) use login::{CardLogin, LoginError};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::audit::{Actor, AuditError, AuditLog, Event, EventKind, Outcome, Receipt};
use crate::card::trust::{CardTrust, Professional};
use crate::card::worker::CardEvent;
use crate::encoding::hex;

/// The card in a desk's reader, as the desk screen shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum CardState {
    /// pcscd is unreachable: the reader's state is unknown.
    ReaderUnavailable,
    /// No card.
    NoCard,
    /// A card whose certificate is trusted; it belongs to `holder`.
    Present {
        /// Whose card it is.
        #[schema(value_type = Object)]
        holder: Professional,
        /// The PIN is blocked (no further VERIFY is sent to this card).
        pin_blocked: bool,
        /// PIN tries left, when the card says.
        pin_tries_left: Option<u8>,
    },
    /// A card that cannot be used, and why.
    Refused {
        /// Machine code (`expired`, `revoked`, `unknown_issuer`, `unreadable`, …).
        code: String,
        /// French message for the screen.
        message_fr: String,
    },
}

/// An open session (its `Debug` leaves the bearer token out).
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Session {
    /// Random bearer token, valid only from this desk's workstation.
    #[serde(skip)]
    pub token: String,
    /// Who is logged in.
    #[schema(value_type = Object)]
    pub professional: Professional,
    /// Since when (RFC 3339).
    pub started: String,
    /// Logged in while the newest CRL was stale (accept-and-flag policy).
    pub crl_stale: bool,
    /// The card session the login opened (`card::worker::HeldSession::id`): the only
    /// one that signs this session's accesses in `DIRECTE` mode.
    #[serde(skip)]
    pub card_session: u64,
    #[serde(skip)]
    opened: tokio::time::Instant,
    #[serde(skip)]
    last_used: tokio::time::Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured whole, so that a field added later is a decision here.
        let Self {
            token: _,
            professional,
            started,
            crl_stale,
            card_session,
            opened,
            last_used,
        } = self;
        f.debug_struct("Session")
            .field("token", &"<redacted>")
            .field("professional", professional)
            .field("started", started)
            .field("crl_stale", crl_stale)
            .field("card_session", card_session)
            .field("opened", opened)
            .field("last_used", last_used)
            .finish()
    }
}

impl CardState {
    /// The state's name as serialized (`no_card`, `present`, …).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::ReaderUnavailable => "reader_unavailable",
            Self::NoCard => "no_card",
            Self::Present { .. } => "present",
            Self::Refused { .. } => "refused",
        }
    }
}

impl Session {
    /// Seconds until this session ends on its own under `expiry` (the sooner of the idle
    /// timeout, counted from its last use, and the maximum duration), as of now.
    pub(crate) fn seconds_left(&self, expiry: Expiry) -> u64 {
        let now = tokio::time::Instant::now();
        let idle = expiry
            .idle
            .saturating_sub(now.duration_since(self.last_used));
        let max = expiry.max.saturating_sub(now.duration_since(self.opened));
        idle.min(max).as_secs()
    }
}

/// When sessions end on their own.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    /// After this long without a request carrying the session's token.
    pub idle: std::time::Duration,
    /// After this long in all (the longest shift).
    pub max: std::time::Duration,
}

struct DeskSlot {
    desk: DeskConfig,
    card: CardState,
    certificate: Option<Vec<u8>>,
    session: Option<Session>,
    /// Bumped at every insertion, removal or loss of the reader: a login opens a session
    /// only for the very insertion it checked the PIN on.
    insertion: u64,
    /// Sessions opened at this desk so far: the current one's number tells a page that
    /// the session it showed data for is still the one open, even across a quick swap.
    sessions_opened: u64,
    /// Whether pcscd listed the desk's reader at its last look (monitoring).
    reader_plugged: bool,
    /// A login is under way here ([`LoginTurn`]).
    login_in_progress: bool,
    /// The PIN tries a refused card reported at insertion, for when a CRL reread accepts
    /// it (`recheck_refused`): the last-try safeguard must still know them.
    refused_tries: Option<u8>,
}

/// A login under way at a desk: while it lives, no other login starts there. Two PINs
/// sent at once (a double click, two tabs, a script) could otherwise spend the card's
/// last try without its confirmation, and a login queued behind another could open a
/// session after that one ended. Released when the login ends, however it ends.
pub(crate) struct LoginTurn {
    sessions: Sessions,
    desk: String,
}

impl Drop for LoginTurn {
    fn drop(&mut self) {
        self.sessions
            .with_slot(&self.desk, |s| s.login_in_progress = false);
    }
}

/// The card a login is attempted on.
#[derive(Debug, Clone)]
pub(crate) struct LoginTarget {
    /// The desk's reader.
    pub reader: String,
    /// The card's authentication certificate (DER), as read at insertion.
    pub certificate: Vec<u8>,
    /// Whose card it is.
    pub holder: Professional,
    /// Which insertion of a card this is (see `DeskSlot::insertion`).
    pub insertion: u64,
    /// PIN tries left, as the card last said.
    pub pin_tries_left: Option<u8>,
}

/// The card a login succeeded on: which insertion its PIN was checked on
/// (`DeskSlot::insertion`), and the card session it holds (`Session::card_session`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoggedIn {
    pub insertion: u64,
    pub card_session: u64,
}

/// Every desk's card and session.
#[derive(Clone)]
pub(crate) struct Sessions {
    slots: Arc<Mutex<HashMap<String, DeskSlot>>>,
    audit: Arc<AuditLog>,
    pcsc_up: Arc<std::sync::atomic::AtomicBool>,
    /// Bumped on every change of a card state or session, for the pages that follow a
    /// desk (`GET /api/v1/desk/events`).
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// The worker holding each logged-in card's session: ending a session closes it
    /// (the card's PIN-verified state goes with it).
    card_sessions: Arc<std::sync::OnceLock<crate::card::worker::CardWorker>>,
    /// When sessions end on their own, once the reaper runs: a session past them is
    /// refused at once, not only at the reaper's next tick (up to 10 s later).
    limits: Arc<std::sync::OnceLock<Limits>>,
}

/// The expiry and the roster the reaper enforces.
struct Limits {
    expiry: Expiry,
    roster: Option<Arc<roster::Roster>>,
}

impl Sessions {
    /// One slot per configured desk; card states unknown until the worker reports.
    pub(crate) fn new(desks: &[DeskConfig], audit: Arc<AuditLog>) -> Self {
        let slots = desks
            .iter()
            .map(|d| {
                (
                    d.id.clone(),
                    DeskSlot {
                        desk: d.clone(),
                        card: CardState::ReaderUnavailable,
                        certificate: None,
                        session: None,
                        insertion: 0,
                        sessions_opened: 0,
                        refused_tries: None,
                        reader_plugged: false,
                        login_in_progress: false,
                    },
                )
            })
            .collect();
        Self {
            slots: Arc::new(Mutex::new(slots)),
            audit,
            pcsc_up: Arc::default(),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            card_sessions: Arc::default(),
            limits: Arc::default(),
        }
    }

    /// Changes to any desk's card or session, as they happen.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// `with_slot` for a change that followers must hear of.
    fn update<T>(&self, desk: &str, f: impl FnOnce(&mut DeskSlot) -> T) -> Option<T> {
        let result = self.with_slot(desk, f);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        result
    }

    /// Each desk with whether its reader is there: pcscd answers and listed it at its last
    /// look (monitoring).
    pub(crate) fn readers_present(&self) -> Vec<(String, bool)> {
        let up = self.readers_available();
        self.slots.lock().map_or_else(
            |_| Vec::new(),
            |slots| {
                slots
                    .iter()
                    .map(|(id, slot)| (id.clone(), up && slot.reader_plugged))
                    .collect()
            },
        )
    }

    /// Whether pcscd answers (readiness).
    pub(crate) fn readers_available(&self) -> bool {
        self.pcsc_up.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn with_slot<T>(&self, desk: &str, f: impl FnOnce(&mut DeskSlot) -> T) -> Option<T> {
        self.slots.lock().ok()?.get_mut(desk).map(f)
    }

    /// The configuration of `desk`.
    pub(crate) fn desk(&self, desk: &str) -> Option<DeskConfig> {
        self.with_slot(desk, |s| s.desk.clone())
    }

    /// The card state and session of `desk`.
    pub(crate) fn view(&self, desk: &str) -> Option<(CardState, Option<Session>)> {
        self.with_slot(desk, |s| (s.card.clone(), s.session.clone()))
    }

    /// The number of the session open at `desk` (1 for the first since start), if one is.
    pub(crate) fn session_epoch(&self, desk: &str) -> Option<u64> {
        self.with_slot(desk, |s| s.session.as_ref().map(|_| s.sessions_opened))
            .flatten()
    }

    /// The card at `desk`, if one can log in, and the desk's turn to log in (refused while
    /// another login is under way there): none while a session is open there (a second
    /// login never replaces a live session: the first physician logs out or pulls the card).
    pub(crate) fn begin_login(&self, desk: &str) -> Result<(LoginTarget, LoginTurn), LoginRefusal> {
        let target = self
            .with_slot(desk, |s| {
                if s.login_in_progress {
                    return Err(LoginRefusal::LoginInProgress);
                }
                let target = login_target(s)?;
                s.login_in_progress = true;
                Ok(target)
            })
            .unwrap_or(Err(LoginRefusal::NoCard))?;
        let turn = LoginTurn {
            sessions: self.clone(),
            desk: desk.to_owned(),
        };
        Ok((target, turn))
    }

    /// Marks the card of `insertion` at `desk` blocked, so no further VERIFY is sent to
    /// it.
    pub(crate) fn mark_blocked(&self, desk: &str, insertion: u64) {
        self.record_tries(desk, insertion, 0);
    }

    /// Records the tries left the card of `insertion` reported after a wrong PIN (0
    /// blocks it); nothing if another card is in the reader by now.
    pub(crate) fn record_tries(&self, desk: &str, insertion: u64, tries: u8) {
        self.update(desk, |s| {
            if s.insertion != insertion {
                return;
            }
            if let CardState::Present {
                pin_blocked,
                pin_tries_left,
                ..
            } = &mut s.card
            {
                *pin_tries_left = Some(tries);
                *pin_blocked = tries == 0;
            }
        });
    }

    /// Opens a session after a successful, recorded login (the receipt proves the record),
    /// atomically with the card state: only if the card of `card.insertion` is still in
    /// the reader and no session was opened meanwhile.
    pub(crate) fn open(
        &self,
        desk: &str,
        card: LoggedIn,
        professional: Professional,
        crl_stale: bool,
        _recorded: Receipt,
        token: String,
    ) -> Option<Session> {
        let LoggedIn {
            insertion,
            card_session,
        } = card;
        let session = Session {
            token,
            professional,
            started: crate::clock::now().0,
            crl_stale,
            card_session,
            opened: tokio::time::Instant::now(),
            last_used: tokio::time::Instant::now(),
        };
        self.update(desk, |s| {
            let same_card = s.insertion == insertion && matches!(s.card, CardState::Present { .. });
            (same_card && s.session.is_none()).then(|| {
                s.session = Some(session.clone());
                s.sessions_opened += 1;
                // The right PIN resets the card's try counter: the page must not keep
                // warning of a last try at the next login with this card.
                if let CardState::Present { pin_tries_left, .. } = &mut s.card {
                    *pin_tries_left = None;
                }
            })
        })??;
        Some(session)
    }

    /// The idNat of every professional holding an open session.
    pub(crate) fn open_professionals(&self) -> Vec<String> {
        match self.slots.lock() {
            Ok(slots) => slots
                .values()
                .filter_map(|slot| slot.session.as_ref())
                .map(|session| session.professional.id_nat.clone())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// SHA-256 (hex) of the token of `desk`'s session, if one is open and not past its
    /// idle time, maximum or shift: what grants bind to. An access checks it before its
    /// data leaves, and the grant reaper ends grants by it: a session the session reaper
    /// has not yet come by (up to 10 s) releases nothing more.
    pub(crate) fn token_hash(&self, desk: &str) -> Option<String> {
        let now = tokio::time::Instant::now();
        self.with_slot(desk, |s| {
            s.session
                .as_ref()
                .filter(|session| {
                    !self.limits.get().is_some_and(|l| {
                        expiry_reason(session, l.expiry, l.roster.as_deref(), now).is_some()
                    })
                })
                .map(|session| token_hash(&session.token))
        })
        .flatten()
    }

    /// The session of `desk` if `token` is its token (a token from another desk is refused);
    /// counts as activity for the idle timeout.
    pub(crate) fn authenticate(&self, desk: &str, token: &str) -> Option<Session> {
        self.lookup(desk, token, true)
    }

    /// As [`Sessions::authenticate`], without counting as activity: for what the page asks
    /// on its own (the desk's case, polled), which must not keep an unattended session
    /// from reaching its idle timeout.
    pub(crate) fn authenticate_quietly(&self, desk: &str, token: &str) -> Option<Session> {
        self.lookup(desk, token, false)
    }

    fn lookup(&self, desk: &str, token: &str, activity: bool) -> Option<Session> {
        let now = tokio::time::Instant::now();
        self.with_slot(desk, |s| {
            let session = s
                .session
                .as_mut()
                .filter(|session| constant_time_eq(session.token.as_bytes(), token.as_bytes()))?;
            // Past its idle time, its maximum or its shift, a session is refused now; the
            // reaper ends and records it at its next tick. A late request must not
            // bring an idle session back.
            if self.limits.get().is_some_and(|l| {
                expiry_reason(session, l.expiry, l.roster.as_deref(), now).is_some()
            }) {
                return None;
            }
            if activity {
                session.last_used = tokio::time::Instant::now();
            }
            Some(session.clone())
        })
        .flatten()
    }

    /// Ends (and records) every session idle or open for too long, or whose shift (plus
    /// grace) is over; returns how many.
    pub(crate) async fn expire(
        &self,
        expiry: Expiry,
        roster: Option<&roster::Roster>,
    ) -> Result<usize, AuditError> {
        let now = tokio::time::Instant::now();
        // Each due session by its number at its desk: the ends are recorded one after the
        // other, and a desk whose session ended meanwhile may hold a new one, not due.
        let due: Vec<(String, u64, &'static str)> = match self.slots.lock() {
            Ok(slots) => slots
                .iter()
                .filter_map(|(desk, slot)| {
                    let session = slot.session.as_ref()?;
                    expiry_reason(session, expiry, roster, now)
                        .map(|reason| (desk.clone(), slot.sessions_opened, reason))
                })
                .collect(),
            Err(_) => return Ok(0),
        };
        // Every due session is ended: one end that cannot be recorded does not keep the
        // others open (the first failure is returned once all were tried).
        let (mut ended, mut failed) = (0, None);
        for (desk, epoch, reason) in due {
            match self.end_matching(&desk, Some(epoch), reason).await {
                Ok(true) => {
                    tracing::info!(desk = %desk, reason, "session expired");
                    ended += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(ended), Err)
    }

    /// Ends (and records) every session whose card certificate `revoked` says is revoked
    /// now (the card CRLs were reread); returns how many. A list grown stale ends nothing:
    /// a physician mid-call is not logged out because a list was not republished in time.
    pub(crate) async fn end_revoked(
        &self,
        revoked: impl Fn(&[u8]) -> bool,
    ) -> Result<usize, AuditError> {
        // Copied out first: a chain check is not done under the desks' lock. Only the
        // certificate the session opened with is judged: after a pcscd outage the reader
        // may hold another card (its own revocation is not this session's).
        let open: Vec<(String, u64, Vec<u8>)> = match self.slots.lock() {
            Ok(slots) => slots
                .iter()
                .filter_map(|(desk, slot)| {
                    let session = slot.session.as_ref()?;
                    let certificate = slot.certificate.clone()?;
                    (crate::encoding::hex(&crate::encoding::sha256(&certificate))
                        == session.professional.certificate_sha256)
                        .then(|| (desk.clone(), slot.sessions_opened, certificate))
                })
                .collect(),
            Err(_) => return Ok(0),
        };
        // As for `expire`: every revoked card's session ends, whatever one record does.
        let (mut ended, mut failed) = (0, None);
        for (desk, epoch, _) in open.into_iter().filter(|(_, _, c)| revoked(c)) {
            match self
                .end_matching(&desk, Some(epoch), "certificate_revoked")
                .await
            {
                Ok(true) => {
                    tracing::warn!(desk = %desk, "session ended: its card certificate is revoked");
                    ended += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(ended), Err)
    }

    /// Judges again, with `verify` (the CRLs were reread), the cards refused because their
    /// revocation could not be vouched for (a stale or missing CRL): one that passes now
    /// is present (its acceptance recorded), with the PIN tries it reported at insertion,
    /// without being pulled and inserted again; returns how many.
    pub(crate) async fn recheck_refused(
        &self,
        verify: impl Fn(&[u8]) -> Result<crate::card::trust::Verified, crate::card::trust::TrustError>,
    ) -> Result<usize, AuditError> {
        let refused: Vec<(DeskConfig, u64, Vec<u8>, Option<u8>)> = match self.slots.lock() {
            Ok(slots) => slots
                .values()
                .filter(|s| {
                    matches!(&s.card, CardState::Refused { code, .. }
                        if code == "stale_crl" || code == "revocation_unknown")
                })
                .filter_map(|s| {
                    let certificate = s.certificate.clone()?;
                    Some((s.desk.clone(), s.insertion, certificate, s.refused_tries))
                })
                .collect(),
            Err(_) => return Ok(0),
        };
        let mut accepted = 0;
        for (desk, insertion, certificate, pin_tries_left) in refused {
            let Ok(verified) = verify(&certificate) else {
                continue;
            };
            let same_card = self.with_slot(&desk.id, |s| s.insertion == insertion);
            if same_card != Some(true) {
                continue;
            }
            let event = Event {
                actor: Some(actor(&verified.professional, &desk)),
                detail: Some("accepted after a CRL reread".into()),
                ..Event::new(EventKind::CardInserted, Outcome::Success)
            };
            let _recorded = self.audit.append(event).await?;
            // The same card still: another insertion since is judged on its own.
            let now_present = self.update(&desk.id, |s| {
                (s.insertion == insertion).then(|| {
                    // The tries the card reported at insertion: the last-try safeguard
                    // (and a blocked card) must hold as if it had been accepted then.
                    s.card = CardState::Present {
                        holder: verified.professional.clone(),
                        pin_blocked: pin_tries_left == Some(0),
                        pin_tries_left,
                    };
                })
            });
            if now_present.flatten().is_some() {
                tracing::info!(desk = %desk.id, "card accepted after a CRL reread");
                accepted += 1;
            }
        }
        Ok(accepted)
    }

    /// Ends (and records) the session at `reader`'s desk whose card session `session` ended
    /// on its own (its card failed a signature): the page says so now, rather than at the
    /// next access. A later session at that desk, on another card session, stays.
    async fn card_session_lost(&self, reader: &str, session: u64) -> Result<(), AuditError> {
        let Some(desk) = self.desk_of(reader) else {
            return Ok(());
        };
        let epoch = self
            .with_slot(&desk.id, |s| {
                s.session
                    .as_ref()
                    .filter(|open| open.card_session == session)
                    .map(|_| s.sessions_opened)
            })
            .flatten();
        if let Some(epoch) = epoch
            && self
                .end_matching(&desk.id, Some(epoch), "card_session_lost")
                .await?
        {
            tracing::warn!(desk = %desk.id, "session ended: its card stopped answering");
        }
        Ok(())
    }

    /// From now on, a session past `expiry` or its shift in `roster` is refused at once
    /// (set once, by the reaper; later calls change nothing).
    pub(crate) fn enforce(&self, expiry: Expiry, roster: Option<Arc<roster::Roster>>) {
        let _ = self.limits.set(Limits { expiry, roster });
    }

    /// Ends every open session (the gateway is stopping), recording each logout; one
    /// that cannot be recorded is logged, and the next start records it
    /// (`audit::recover`).
    pub(crate) async fn end_all(&self, reason: &str) {
        let desks: Vec<String> = match self.slots.lock() {
            Ok(slots) => slots
                .iter()
                .filter(|(_, slot)| slot.session.is_some())
                .map(|(desk, _)| desk.clone())
                .collect(),
            Err(_) => return,
        };
        for desk in desks {
            if let Err(e) = self.end_matching(&desk, None, reason).await {
                tracing::error!(desk = %desk, error = %e, "cannot record the end of a session");
            }
        }
    }

    /// Ends the session of `desk` (logout), recording why.
    pub(crate) async fn end(&self, desk: &str, reason: &str) -> Result<bool, AuditError> {
        self.end_matching(desk, None, reason).await
    }

    /// Ends the session of `desk` if it is the desk's `epoch`-th (any, for `None`),
    /// recording why; false when there was none to end.
    async fn end_matching(
        &self,
        desk: &str,
        epoch: Option<u64>,
        reason: &str,
    ) -> Result<bool, AuditError> {
        let ended = self
            .update(desk, |s| {
                if epoch.is_some_and(|epoch| epoch != s.sessions_opened) {
                    return None;
                }
                s.session.take().map(|session| (session, s.desk.clone()))
            })
            .flatten();
        let Some((session, desk_config)) = ended else {
            return Ok(false);
        };
        self.release_card(&desk_config.reader);
        let event = Event {
            actor: Some(actor(&session.professional, &desk_config)),
            ..Event::new(EventKind::UserLogout, Outcome::Success).with_detail(reason)
        };
        let _recorded = self.audit.append(event).await?;
        Ok(true)
    }

    /// Ends through `worker` the card sessions of the sessions that end.
    pub(crate) fn release_cards_with(&self, worker: crate::card::worker::CardWorker) {
        let _ = self.card_sessions.set(worker);
    }

    fn release_card(&self, reader: &str) {
        if let Some(worker) = self.card_sessions.get() {
            worker.end(reader);
        }
    }

    /// Applies one card worker event about `at` (the reader whose queue it came by),
    /// recording it.
    async fn apply(&self, at: &str, event: CardEvent, trust: &CardTrust) {
        let outcome = match event {
            CardEvent::Inserted {
                reader,
                certificate,
                pin_tries_left,
            } => {
                self.inserted(&reader, certificate, pin_tries_left, trust)
                    .await
            }
            CardEvent::Removed { reader } => self.removed(&reader).await,
            CardEvent::SessionLost { reader, session } => {
                self.card_session_lost(&reader, session).await
            }
            // Logged once by `run`; here, this reader's part.
            CardEvent::PcscUnavailable(_) => {
                self.set_at(at, CardState::ReaderUnavailable);
                Ok(())
            }
            CardEvent::PcscAvailable => {
                self.set_at(at, CardState::NoCard);
                Ok(())
            }
            CardEvent::Readers { plugged } => {
                if let Ok(mut slots) = self.slots.lock() {
                    for slot in slots.values_mut().filter(|s| s.desk.reader == at) {
                        slot.reader_plugged = plugged.contains(&slot.desk.reader);
                    }
                }
                Ok(())
            }
        };
        if let Err(e) = outcome {
            tracing::error!(error = %e, "cannot record a card event");
        }
    }

    /// Every desk reading at `reader` is in `state` now.
    fn set_at(&self, reader: &str, state: CardState) {
        if let Ok(mut slots) = self.slots.lock() {
            for slot in slots.values_mut().filter(|s| s.desk.reader == reader) {
                slot.card = state.clone();
                slot.certificate = None;
                slot.insertion += 1;
            }
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn desk_of(&self, reader: &str) -> Option<DeskConfig> {
        self.slots
            .lock()
            .ok()?
            .values()
            .find(|s| s.desk.reader == reader)
            .map(|s| s.desk.clone())
    }

    async fn inserted(
        &self,
        reader: &str,
        certificate: Result<Vec<u8>, crate::card::CardError>,
        pin_tries_left: Option<u8>,
        trust: &CardTrust,
    ) -> Result<(), AuditError> {
        let Some(desk) = self.desk_of(reader) else {
            return Ok(());
        };
        // A card refused only because revocation cannot be vouched for now keeps its
        // certificate: the next CRL reread judges it again (`recheck_refused`).
        // A refused card is named on the record by its certificate's SHA-256 (a revoked
        // card presented is a security event: whose card it was must be findable).
        let verdict = certificate
            .map_err(|e| ("unreadable".to_owned(), e.message_fr(), None, None))
            .and_then(|der| match trust.verify(&der, SystemTime::now()) {
                Ok(verified) => Ok((der, verified)),
                Err(e) => {
                    let digest = crate::encoding::hex(&crate::encoding::sha256(&der));
                    let kept = rejudged_later(&e).then_some(der);
                    Err((
                        trust_code(&e).to_owned(),
                        e.message_fr().to_owned(),
                        kept,
                        Some(digest),
                    ))
                }
            });
        let (state, cert, event) = match verdict {
            Ok((der, verified)) => (
                CardState::Present {
                    holder: verified.professional.clone(),
                    // A card blocked elsewhere is known blocked here before any VERIFY.
                    pin_blocked: pin_tries_left == Some(0),
                    pin_tries_left,
                },
                Some(der),
                Event {
                    actor: Some(actor(&verified.professional, &desk)),
                    ..Event::new(EventKind::CardInserted, Outcome::Success)
                },
            ),
            Err((code, message_fr, kept, digest)) => (
                CardState::Refused {
                    code: code.clone(),
                    message_fr,
                },
                kept,
                Event {
                    actor: Some(Actor {
                        desk: Some(desk.id.clone()),
                        workstation: Some(desk.workstation_cn.clone()),
                        ..Actor::default()
                    }),
                    detail: digest.map(|d| format!("certificate_sha256={d}")),
                    ..Event::new(EventKind::CardInserted, Outcome::Refused { reason: code })
                },
            ),
        };
        let _recorded = self.audit.append(event).await?;
        self.update(&desk.id, |s| {
            s.card = state;
            s.certificate = cert;
            s.insertion += 1;
            s.refused_tries = pin_tries_left;
        });
        Ok(())
    }

    async fn removed(&self, reader: &str) -> Result<(), AuditError> {
        let Some(desk) = self.desk_of(reader) else {
            return Ok(());
        };
        // The session ends first: from this instant the desk can no longer act for anyone.
        let ended = self.update(&desk.id, |s| {
            s.card = CardState::NoCard;
            s.certificate = None;
            s.insertion += 1;
            s.session.take()
        });
        let holder = ended.flatten().map(|session| session.professional);
        self.release_card(reader);
        let removed = Event {
            actor: Some(Actor {
                desk: Some(desk.id.clone()),
                workstation: Some(desk.workstation_cn.clone()),
                ..Actor::default()
            }),
            ..Event::new(EventKind::CardRemoved, Outcome::Success)
        };
        // One commit: the removal and the session's end are on record together, or
        // neither (a failed first append no longer leaves the logout unattempted).
        let mut events = vec![removed];
        if let Some(professional) = holder {
            tracing::info!(desk = %desk.id, "session ended: card removed");
            events.push(Event {
                actor: Some(actor(&professional, &desk)),
                ..Event::new(EventKind::UserLogout, Outcome::Success).with_detail("card_removed")
            });
        }
        let _recorded = self.audit.append_all(events).await?;
        Ok(())
    }
}

/// Why a login cannot even be attempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoginRefusal {
    /// No card in the desk's reader.
    NoCard,
    /// pcscd is unreachable.
    ReaderUnavailable,
    /// The card's certificate is not trusted (code).
    CardRefused(String),
    /// The card's PIN is blocked.
    PinBlocked,
    /// A session is already open at the desk.
    SessionOpen,
    /// The card left the reader (or was swapped) while its login was under way.
    CardRemoved,
    /// Another login is under way at the desk.
    LoginInProgress,
}

impl LoginRefusal {
    /// The reason code its record carries.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::NoCard => "no_card",
            Self::ReaderUnavailable => "reader_unavailable",
            Self::CardRefused(_) => "card_not_trusted",
            Self::PinBlocked => "pin_already_blocked",
            Self::SessionOpen => "session_open",
            Self::CardRemoved => "card_removed",
            Self::LoginInProgress => "login_in_progress",
        }
    }
}

/// The card at `s`'s desk, if one can log in (see [`Sessions::begin_login`]).
fn login_target(s: &DeskSlot) -> Result<LoginTarget, LoginRefusal> {
    match (&s.card, &s.certificate) {
        _ if s.session.is_some() => Err(LoginRefusal::SessionOpen),
        (
            CardState::Present {
                pin_blocked: true, ..
            },
            _,
        ) => Err(LoginRefusal::PinBlocked),
        (
            CardState::Present {
                holder,
                pin_tries_left,
                ..
            },
            Some(cert),
        ) => Ok(LoginTarget {
            reader: s.desk.reader.clone(),
            certificate: cert.clone(),
            holder: holder.clone(),
            insertion: s.insertion,
            pin_tries_left: *pin_tries_left,
        }),
        (CardState::Refused { code, .. }, _) => Err(LoginRefusal::CardRefused(code.clone())),
        (CardState::ReaderUnavailable, _) => Err(LoginRefusal::ReaderUnavailable),
        _ => Err(LoginRefusal::NoCard),
    }
}

/// The audit actor for a professional at a desk.
pub(crate) fn actor(professional: &Professional, desk: &DeskConfig) -> Actor {
    let name = match (&professional.given_name, &professional.surname) {
        (Some(g), Some(s)) => Some(format!("{g} {s}")),
        (None, Some(s)) => Some(s.clone()),
        _ => None,
    };
    Actor {
        id_nat: Some(professional.id_nat.clone()),
        name,
        profession: professional.title.clone(),
        specialty: None,
        desk: Some(desk.id.clone()),
        workstation_sha256: None,
        workstation: Some(desk.workstation_cn.clone()),
    }
}

/// Whether a card refused for `e` may be accepted without being inserted again: its CRLs
/// were stale or missing, which a reread can mend.
fn rejudged_later(e: &crate::card::trust::TrustError) -> bool {
    use crate::card::trust::TrustError::{RevocationUnknown, StaleCrl};
    matches!(e, StaleCrl { .. } | RevocationUnknown)
}

fn trust_code(e: &crate::card::trust::TrustError) -> &'static str {
    use crate::card::trust::TrustError::*;
    match e {
        Expired => "expired",
        NotYetValid => "not_yet_valid",
        Revoked => "revoked",
        UnknownIssuer => "unknown_issuer",
        StaleCrl { .. } => "stale_crl",
        RevocationUnknown => "revocation_unknown",
        Usage(_) => "wrong_usage",
        KeyTooShort { .. } => "key_too_short",
        Unreadable(_) => "unreadable",
        Config { .. } | Other(_) => "rejected",
    }
}

/// SHA-256 (hex) of a session token.
pub(crate) fn token_hash(token: &str) -> String {
    hex(&crate::encoding::sha256(token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    !a.is_empty()
        && a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why `session` is over at `now`, if it is: its maximum duration, its professional's
/// shift (with the roster), or its idle time.
fn expiry_reason(
    session: &Session,
    expiry: Expiry,
    roster: Option<&roster::Roster>,
    now: tokio::time::Instant,
) -> Option<&'static str> {
    if now.duration_since(session.opened) >= expiry.max {
        Some("max_duration")
    } else if roster
        .is_some_and(|r| !r.on_duty(&session.professional.id_nat, crate::clock::now().1))
    {
        Some("shift_end")
    } else if now.duration_since(session.last_used) >= expiry.idle {
        Some("idle_timeout")
    } else {
        None
    }
}

/// Ends expired sessions, checking a few times per idle period.
pub(crate) async fn reap(sessions: Sessions, expiry: Expiry, roster: Option<Arc<roster::Roster>>) {
    sessions.enforce(expiry, roster.clone());
    let period = (expiry.idle / 10).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(10),
    );
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Err(e) = sessions.expire(expiry, roster.as_deref()).await {
            tracing::error!(error = %e, "cannot record a session expiry");
        }
    }
}

/// Drives the sessions from the card worker's events until the worker stops. Each
/// reader's events are applied in order, by a task of its own: a card's insertion waits
/// for its record before it counts, and that wait (a slow disk) must not hold back
/// another desk's card leaving, which ends its session at once. Events about every reader
/// (pcscd down or back, readers plugged) go to each reader's queue, in order with its
/// own.
pub(crate) async fn run(
    sessions: Sessions,
    trust: Arc<CardTrust>,
    mut events: mpsc::UnboundedReceiver<CardEvent>,
) {
    let mut readers: Vec<String> = match sessions.slots.lock() {
        Ok(slots) => slots.values().map(|s| s.desk.reader.clone()).collect(),
        Err(_) => Vec::new(),
    };
    readers.sort();
    readers.dedup();
    let mut queues = std::collections::HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for reader in readers {
        let (queue, mut inbox) = mpsc::unbounded_channel::<CardEvent>();
        let (sessions, trust, at) = (sessions.clone(), trust.clone(), reader.clone());
        tasks.spawn(async move {
            while let Some(event) = inbox.recv().await {
                sessions.apply(&at, event, &trust).await;
            }
        });
        queues.insert(reader, queue);
    }
    while let Some(event) = events.recv().await {
        match event {
            CardEvent::Inserted { ref reader, .. }
            | CardEvent::Removed { ref reader }
            | CardEvent::SessionLost { ref reader, .. } => {
                // A reader no desk uses: nothing to do.
                if let Some(queue) = queues.get(reader) {
                    let _ = queue.send(event);
                }
            }
            CardEvent::PcscUnavailable(why) => {
                tracing::warn!(reason = why, "pcscd unavailable: reader states unknown");
                sessions
                    .pcsc_up
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                for queue in queues.values() {
                    let _ = queue.send(CardEvent::PcscUnavailable(String::new()));
                }
            }
            CardEvent::PcscAvailable => {
                tracing::info!("pcscd available");
                sessions
                    .pcsc_up
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                for queue in queues.values() {
                    let _ = queue.send(CardEvent::PcscAvailable);
                }
            }
            CardEvent::Readers { plugged } => {
                for (reader, queue) in &queues {
                    let _ = queue.send(CardEvent::Readers {
                        plugged: plugged.iter().filter(|p| *p == reader).cloned().collect(),
                    });
                }
            }
        }
    }
    // The worker stopped: each reader's queue is applied to its end.
    drop(queues);
    while tasks.join_next().await.is_some() {}
}
