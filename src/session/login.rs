//! A login attempt at a desk: rate limit, card sequence (through the card worker), trust
//! re-check, audit record, session. Every attempt is recorded, whatever its outcome.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;

use super::roster::Roster;
use super::{LoginRefusal, Session, Sessions, actor};
use crate::audit::{AuditError, AuditLog, Event, EventKind, Outcome};
use crate::card::CardError;
use crate::card::trust::{CardTrust, TrustError};
use crate::card::worker::{CardWorker, PinSource};
use crate::session::{CardsConfig, DeskConfig};

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    /// Too many attempts at this desk.
    #[error("too many PIN attempts at this desk; retry in {0:?}")]
    RateLimited(Duration),
    /// No usable card.
    #[error("login impossible: {0:?}")]
    Refused(LoginRefusal),
    /// The card refused (wrong PIN, blocked, signature mismatch, transport).
    #[error(transparent)]
    Card(#[from] CardError),
    /// The professional is not on duty now.
    #[error("the professional is not on duty")]
    NotOnDuty,
    /// The card has one PIN try left and the login did not confirm spending it.
    #[error("the card has one PIN try left and spending it was not confirmed")]
    LastTryUnconfirmed,
    /// The card holder's profession may not open a session here.
    #[error("the card holder's profession is not allowed to log in")]
    ProfessionNotAllowed,
    /// The certificate is no longer trusted.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The system random generator failed: no session token can be made.
    #[error(transparent)]
    Unavailable(#[from] crate::random::RandomUnavailable),
    /// The attempt could not be recorded: no session without a record.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Card login for the whole gateway.
pub(crate) struct CardLogin {
    /// Every desk's card and session.
    pub sessions: Sessions,
    worker: CardWorker,
    trust: Arc<CardTrust>,
    audit: Arc<AuditLog>,
    limiter: DefaultKeyedRateLimiter<String>,
    roster: Option<Arc<Roster>>,
    allowed_professions: Vec<String>,
    expiry: super::Expiry,
    /// When each desk last had each refusal made before the card recorded, per card
    /// holder: repeated ones within [`REFUSALS_COALESCED`] are recorded once (a script
    /// retrying must not flood the trail). Bounded by [`MAX_REFUSALS_TRACKED`].
    refusals_recorded: std::sync::Mutex<RefusalsRecorded>,
}

/// How long a desk's repeated refusal of one kind (before the card) is recorded once.
const REFUSALS_COALESCED: Duration = Duration::from_secs(60);

/// The way `config` reaches the desks' cards.
fn backend(
    config: &CardsConfig,
    desks: &[DeskConfig],
) -> std::io::Result<Arc<dyn crate::card::backend::CardBackend>> {
    use crate::card::backend::{ApduBackend, BackendKind, Pkcs11Backend, Pkcs11Settings};
    Ok(match (config.backend, &config.pkcs11_module) {
        (BackendKind::Pkcs11, Some(module)) => Arc::new(
            Pkcs11Backend::load(Pkcs11Settings {
                module: module.clone(),
                labels: config.pkcs11_labels.clone(),
                scheme: config.profile.signature,
                tokens: desks
                    .iter()
                    .filter_map(|d| Some((d.reader.clone(), d.pkcs11_token.clone()?)))
                    .collect(),
            })
            .map_err(std::io::Error::other)?,
        ),
        _ => Arc::new(ApduBackend::new(config.profile.clone())),
    })
}

/// When each (desk, card holder, reason) refusal was last recorded.
type RefusalsRecorded =
    std::collections::HashMap<(String, String, &'static str), std::time::Instant>;

/// Refusal keys kept before those past their window are swept.
const MAX_REFUSALS_TRACKED: usize = 1024;

impl CardLogin {
    /// Starts the card worker on the desks' readers (or, for the demo, on an in-process
    /// virtual card in the first desk's reader) and the tasks applying its events.
    pub(crate) fn start(
        config: &CardsConfig,
        trust: CardTrust,
        desks: &[DeskConfig],
        audit: Arc<AuditLog>,
        virtual_card: Option<Box<dyn crate::card::apdu::Transport + Send>>,
        roster: Option<Roster>,
    ) -> std::io::Result<Self> {
        let roster = roster.map(Arc::new);
        let trust = Arc::new(trust);
        let sessions = Sessions::new(desks, audit.clone());
        let (events, inbox) = mpsc::unbounded_channel();
        let profile = config.profile.clone();
        let worker = match (virtual_card, desks.first()) {
            (Some(card), Some(desk)) => {
                CardWorker::start_virtual(desk.reader.clone(), card, profile, events)?
            }
            _ => CardWorker::start(
                desks.iter().map(|d| d.reader.clone()).collect(),
                backend(config, desks)?,
                events,
            )?,
        };
        let worker = worker.with_login_timeout(Duration::from_secs(config.login_timeout_secs));
        sessions.release_cards_with(worker.clone());
        tokio::spawn(super::run(sessions.clone(), trust.clone(), inbox));
        tokio::spawn(reload_crls(trust.clone(), sessions.clone()));
        tokio::spawn(super::reap(
            sessions.clone(),
            config.expiry(),
            roster.clone(),
        ));
        let per_minute =
            NonZeroU32::new(config.pin_attempts_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::keyed(Quota::per_minute(per_minute));
        Ok(Self {
            sessions,
            worker,
            trust,
            audit,
            limiter,
            roster,
            allowed_professions: config.allowed_professions.clone(),
            expiry: config.expiry(),
            refusals_recorded: std::sync::Mutex::default(),
        })
    }

    /// Records a login refused before any PIN reached the card (`reason`, by `who`),
    /// once per desk, card holder and reason within [`REFUSALS_COALESCED`] (another
    /// physician refused at the same desk is named too); `refusal` is returned either
    /// way, unless the record could not be made.
    async fn refused_before_the_card(
        &self,
        who: crate::audit::Actor,
        reason: &'static str,
        refusal: LoginError,
    ) -> Result<Session, LoginError> {
        let key = (
            who.desk.clone().unwrap_or_default(),
            who.id_nat.clone().unwrap_or_default(),
            reason,
        );
        let now = std::time::Instant::now();
        let due = match self.refusals_recorded.lock() {
            Ok(mut recorded) => match recorded.get(&key) {
                Some(at) if now.duration_since(*at) < REFUSALS_COALESCED => false,
                _ => {
                    // Bounded: a stream of cards must not grow it for ever; entries
                    // past their window are swept once it is full, and while it stays
                    // full a refusal is recorded each time (never left out).
                    if recorded.len() >= MAX_REFUSALS_TRACKED {
                        recorded.retain(|_, at| now.duration_since(*at) < REFUSALS_COALESCED);
                    }
                    if recorded.len() < MAX_REFUSALS_TRACKED {
                        recorded.insert(key, now);
                    }
                    true
                }
            },
            Err(_) => true,
        };
        if due {
            let event = Event {
                actor: Some(who),
                detail: Some(format!(
                    "before_card repeats_within_{}s_recorded_once",
                    REFUSALS_COALESCED.as_secs()
                )),
                ..Event::new(
                    EventKind::UserLogin,
                    Outcome::Refused {
                        reason: reason.into(),
                    },
                )
            };
            let _recorded = self.audit.append(event).await?;
        }
        Err(refusal)
    }

    /// The card worker: its card sessions sign for the logged-in professionals.
    pub(crate) fn worker(&self) -> crate::card::worker::CardWorker {
        self.worker.clone()
    }

    /// The card trust (its CRLs reloaded on schedule): what the cards' signature
    /// certificates are checked against before they sign.
    pub(crate) fn trust(&self) -> Arc<CardTrust> {
        self.trust.clone()
    }

    /// Seconds until `session` ends on its own (idle or maximum duration), as of now.
    pub(crate) fn seconds_left(&self, session: &Session) -> u64 {
        session.seconds_left(self.expiry)
    }

    /// The roster as shared with the real-time alerts (the same one the API replaces).
    pub(crate) fn shared_roster(&self) -> Option<Arc<Roster>> {
        self.roster.clone()
    }

    /// Tries to log in the holder of the card at `desk` with the PIN from `pin`; the card's
    /// last try is spent only when `last_try_confirmed`.
    pub(crate) async fn login(
        &self,
        desk: &str,
        pin: PinSource,
        last_try_confirmed: bool,
    ) -> Result<Session, LoginError> {
        let desk = self
            .sessions
            .desk(desk)
            .ok_or(LoginError::Refused(LoginRefusal::NoCard))?;
        let desk = &desk;
        // Held until this function returns: no other login at this desk meanwhile, so the
        // tries left read here are still the card's when its PIN is sent.
        let (target, _turn) = match self.sessions.begin_login(&desk.id) {
            Ok(begun) => begun,
            Err(refusal) => {
                let at_desk = crate::audit::Actor {
                    desk: Some(desk.id.clone()),
                    workstation: Some(desk.workstation_cn.clone()),
                    ..crate::audit::Actor::default()
                };
                return self
                    .refused_before_the_card(at_desk, refusal.code(), LoginError::Refused(refusal))
                    .await;
            }
        };
        // A page or a script retrying must never block a physician's card by mistake: the
        // last try needs the page's explicit confirmation (a client sending it itself can;
        // README, "Security"). Refused before the rate limit, which counts only attempts
        // that may reach the card.
        if target.pin_tries_left == Some(1) && !last_try_confirmed {
            return self
                .refused_before_the_card(
                    actor(&target.holder, desk),
                    "last_try_unconfirmed",
                    LoginError::LastTryUnconfirmed,
                )
                .await;
        }
        if let Err(not_until) = self.limiter.check_key(&desk.id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return self
                .refused_before_the_card(
                    actor(&target.holder, desk),
                    "rate_limited",
                    LoginError::RateLimited(wait),
                )
                .await;
        }
        let (reader, certificate, holder) = (
            target.reader.clone(),
            target.certificate.clone(),
            target.holder.clone(),
        );
        let who = actor(&holder, desk);
        let failed = |e: &CardError| Event {
            actor: Some(who.clone()),
            ..Event::new(
                EventKind::UserLogin,
                Outcome::Failed {
                    reason: card_reason(e).into(),
                },
            )
        };
        let refused = |reason: &str, detail: Option<String>| Event {
            actor: Some(who.clone()),
            detail,
            ..Event::new(
                EventKind::UserLogin,
                Outcome::Refused {
                    reason: reason.into(),
                },
            )
        };
        // Checked before the PIN reaches the card: a refusal costs the physician no try.
        if let Some(roster) = &self.roster
            && !roster.on_duty(&holder.id_nat, crate::clock::now().1)
        {
            let _recorded = self.audit.append(refused("not_on_duty", None)).await?;
            return Err(LoginError::NotOnDuty);
        }
        if !holder.profession_allowed(&self.allowed_professions) {
            let profession = holder.title.as_deref().unwrap_or("absent");
            let detail = format!("profession={profession}");
            let _recorded = self
                .audit
                .append(refused("profession_not_allowed", Some(detail)))
                .await?;
            return Err(LoginError::ProfessionNotAllowed);
        }
        let card_session = match self
            .worker
            .login(reader.clone(), pin, certificate.clone(), last_try_confirmed)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                let event = match &e {
                    CardError::WrongPin { tries_left } => {
                        self.sessions
                            .record_tries(&desk.id, target.insertion, *tries_left);
                        refused("wrong_pin", Some(format!("tries_left={tries_left}")))
                    }
                    CardError::WrongPinTriesUnknown => {
                        // One try fewer than the desk knew, if it knew (at least one: the
                        // card says when it is blocked).
                        if let Some(tries) = target.pin_tries_left {
                            self.sessions.record_tries(
                                &desk.id,
                                target.insertion,
                                tries.saturating_sub(1).max(1),
                            );
                        }
                        refused("wrong_pin", None)
                    }
                    CardError::LastTryUnconfirmed => {
                        // The card's own count, read before the PIN: the page now asks.
                        self.sessions.record_tries(&desk.id, target.insertion, 1);
                        refused("last_try_unconfirmed", None)
                    }
                    CardError::PinBlocked => {
                        self.sessions.mark_blocked(&desk.id, target.insertion);
                        refused("pin_blocked", None)
                    }
                    CardError::SignatureMismatch => refused("signature_mismatch", None),
                    unanswered @ CardError::Unresponsive { .. } => {
                        // The PIN may still reach the card after the deadline, and a wrong
                        // one spends a try the desk would not know of: the next login
                        // counts one try fewer (at least one, so the last try still asks
                        // for its confirmation rather than being taken for blocked).
                        if let Some(tries) = target.pin_tries_left {
                            self.sessions.record_tries(
                                &desk.id,
                                target.insertion,
                                tries.saturating_sub(1).max(1),
                            );
                        }
                        failed(unanswered)
                    }
                    other => failed(other),
                };
                let _recorded = self.audit.append(event).await?;
                return Err(match e {
                    CardError::LastTryUnconfirmed => LoginError::LastTryUnconfirmed,
                    other => other.into(),
                });
            }
        };
        // From here the card is PIN-verified and held: any way out but an opened session
        // ends that card session.
        let mut held = HeldCard {
            worker: &self.worker,
            reader: &reader,
            kept: false,
        };
        let verified = match self.trust.verify(&certificate, SystemTime::now()) {
            Ok(verified) => verified,
            Err(e) => {
                let _recorded = self
                    .audit
                    .append(refused("certificate_not_trusted", Some(e.to_string())))
                    .await?;
                return Err(e.into());
            }
        };
        let detail = verified.crl_stale.then(|| "crl_stale".to_owned());
        let success = Event {
            actor: Some(who),
            detail,
            ..Event::new(EventKind::UserLogin, Outcome::Success)
        };
        // Drawn before the login is recorded: a session that cannot have a token never
        // appears on the record as opened.
        let token = crate::random::hex_id::<32>()?;
        let recorded = self.audit.append(success).await?;
        let professional = verified.professional.clone();
        match self.sessions.open(
            &desk.id,
            super::LoggedIn {
                insertion: target.insertion,
                card_session,
            },
            verified.professional,
            verified.crl_stale,
            recorded,
            token,
        ) {
            Some(session) => {
                held.kept = true;
                Ok(session)
            }
            None => {
                // The login is on the record; so is that it opened nothing.
                let event = Event {
                    actor: Some(actor(&professional, desk)),
                    ..Event::new(EventKind::UserLogout, Outcome::Success)
                        .with_detail("card_removed_during_login")
                };
                let _recorded = self.audit.append(event).await?;
                Err(LoginError::Refused(LoginRefusal::CardRemoved))
            }
        }
    }
}

/// The card session a login opened, ended when dropped unless a session keeps it: a
/// refusal after the PIN (an untrusted certificate, a record that could not be written,
/// the card gone) must not leave the card PIN-verified and held.
struct HeldCard<'a> {
    worker: &'a CardWorker,
    reader: &'a str,
    kept: bool,
}

impl Drop for HeldCard<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.worker.end(self.reader);
        }
    }
}

fn card_reason(e: &CardError) -> &'static str {
    match e {
        CardError::Transport(_) => "reader_error",
        CardError::CardChanged => "card_changed",
        CardError::Certificate(_) => "certificate_unusable",
        CardError::WrongParameters(_) | CardError::Status(_) => "card_refused_command",
        CardError::Malformed(_) => "malformed_answer",
        CardError::PinPadUnavailable(_) => "pin_pad_unavailable",
        CardError::Module(_) => "card_module_failed",
        CardError::PinPadTimeout => "pin_entry_timeout",
        CardError::PinPadCancelled => "pin_entry_cancelled",
        CardError::Unresponsive { .. } => "card_unresponsive",
        _ => "card_error",
    }
}

/// Rereads the card CRLs on schedule; a card revoked since its login ends its session (a
/// session lasts up to `session_max_hours`: the login's check alone would leave a revoked
/// card working that long).
async fn reload_crls(trust: Arc<CardTrust>, sessions: Sessions) {
    let mut interval = tokio::time::interval(trust.refresh_interval());
    interval.tick().await;
    loop {
        interval.tick().await;
        // Files read and parsed twice (the IGC-Santé's lists run to megabytes): off the
        // async workers, which serve the desks meanwhile.
        let reloading = trust.clone();
        match tokio::task::spawn_blocking(move || reloading.reload_crls()).await {
            Ok(Ok(())) => {
                let revoked = |certificate: &[u8]| {
                    matches!(
                        trust.verify(certificate, SystemTime::now()),
                        Err(crate::card::trust::TrustError::Revoked)
                    )
                };
                if let Err(e) = sessions.end_revoked(revoked).await {
                    tracing::error!(error = %e, "cannot record the end of a revoked card's session");
                }
                let verify = |certificate: &[u8]| trust.verify(certificate, SystemTime::now());
                if let Err(e) = sessions.recheck_refused(verify).await {
                    tracing::error!(error = %e, "cannot record a card accepted after a CRL reread");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "CRL reload failed; the previous CRLs stay in force");
            }
            Err(_) => {
                tracing::error!("CRL reload did not finish; the previous CRLs stay in force");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::profile::{CardProfile, Pin};

    /// A login that fails after the PIN leaves no card session behind; one that opens a
    /// session keeps it.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_login_refused_after_the_pin_ends_its_card_session() {
        let profile = CardProfile::default();
        let (card, auth) = crate::dev_card::emulator::test_card(profile.clone());
        let (events, _inbox) = mpsc::unbounded_channel();
        let worker =
            CardWorker::start_virtual("R0".into(), Box::new(card), profile, events).unwrap();
        let login = || {
            worker.login(
                "R0".into(),
                PinSource::Typed(Pin::new("1234").unwrap()),
                auth.clone(),
                false,
            )
        };
        for kept in [false, true] {
            let held_id = login().await.unwrap();
            drop(HeldCard {
                worker: &worker,
                reader: "R0",
                kept,
            });
            // The worker handles requests in order: the end, if sent, came first.
            let session = worker.session("R0").await;
            assert_eq!(
                session.map(|s| s.id).ok(),
                kept.then_some(held_id),
                "kept: {kept}"
            );
        }
    }
}
