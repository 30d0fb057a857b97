use std::time::Duration;

use super::*;
use crate::audit::{AuditStore, Settings, Signer};

fn desk() -> DeskConfig {
    DeskConfig {
        id: "regul-1".into(),
        name: "Régulation 1".into(),
        reader: "Desk0 00 00".into(),
        workstation_cn: "poste-1".into(),
        workstation_sha256: None,
        pin_entry: Default::default(),
        pkcs11_token: None,
    }
}

fn professional() -> Professional {
    Professional {
        id_nat: "810002813839".into(),
        id_nat_key_ok: false,
        given_name: Some("Jeanne".into()),
        surname: Some("URGENTISTE".into()),
        title: None,
        certificate_sha256: "ab".repeat(32),
    }
}

fn audit(dir: &std::path::Path) -> Arc<AuditLog> {
    let store = Arc::new(AuditStore::open(&dir.join("audit.redb")).unwrap());
    let settings = Settings {
        node: "test".into(),
        batch_max_records: 16,
        batch_max_wait: Duration::ZERO,
        checkpoint_every_records: 100,
        checkpoint_every: Duration::from_secs(3600),
    };
    Arc::new(AuditLog::start(store, Signer::generate(&dir.join("k")).unwrap(), settings).unwrap())
}

const EXPIRY: Expiry = Expiry {
    idle: Duration::from_secs(30 * 60),
    max: Duration::from_secs(14 * 3600),
};

/// A trusted card put in desk regul-1's reader, as an insertion would; its insertion.
fn insert(sessions: &Sessions) -> u64 {
    sessions
        .update("regul-1", |s| {
            s.card = CardState::Present {
                holder: professional(),
                pin_blocked: false,
                pin_tries_left: Some(3),
            };
            s.certificate = Some(vec![1, 2, 3]);
            s.insertion += 1;
        })
        .unwrap();
    sessions.begin_login("regul-1").unwrap().0.insertion
}

async fn receipt(audit: &AuditLog) -> Receipt {
    audit
        .append(Event::new(EventKind::UserLogin, Outcome::Success))
        .await
        .unwrap()
}

async fn opened(sessions: &Sessions, audit: &AuditLog) -> Session {
    let insertion = insert(sessions);
    sessions
        .open(
            "regul-1",
            LoggedIn {
                insertion,
                card_session: 1,
            },
            professional(),
            false,
            receipt(audit).await,
            token(),
        )
        .unwrap()
}

#[tokio::test]
async fn a_session_opens_only_for_the_insertion_its_pin_was_checked_on() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    // The PIN is checked on this insertion; the card leaves before the session opens.
    let checked = insert(&sessions);
    sessions.removed("Desk0 00 00").await.unwrap();
    assert!(
        sessions
            .open(
                "regul-1",
                LoggedIn {
                    insertion: checked,
                    card_session: 1,
                },
                professional(),
                false,
                receipt(&audit).await,
                token()
            )
            .is_none(),
        "no session for a card no longer there"
    );
    // Pulled and put back (or swapped) between two polls: another insertion.
    let again = insert(&sessions);
    assert_ne!(again, checked);
    assert!(
        sessions
            .open(
                "regul-1",
                LoggedIn {
                    insertion: checked,
                    card_session: 1,
                },
                professional(),
                false,
                receipt(&audit).await,
                token()
            )
            .is_none(),
        "no session for an earlier insertion"
    );
    assert!(sessions.view("regul-1").unwrap().1.is_none());
    assert!(
        sessions
            .open(
                "regul-1",
                LoggedIn {
                    insertion: again,
                    card_session: 1,
                },
                professional(),
                false,
                receipt(&audit).await,
                token()
            )
            .is_some()
    );
}

#[tokio::test]
async fn a_second_login_never_replaces_a_live_session() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let first = opened(&sessions, &audit).await;
    assert_eq!(
        sessions.begin_login("regul-1").map(|_| ()).unwrap_err(),
        LoginRefusal::SessionOpen
    );
    let insertion = sessions.with_slot("regul-1", |s| s.insertion).unwrap();
    assert!(
        sessions
            .open(
                "regul-1",
                LoggedIn {
                    insertion,
                    card_session: 1,
                },
                professional(),
                false,
                receipt(&audit).await,
                token()
            )
            .is_none()
    );
    assert!(sessions.authenticate("regul-1", &first.token).is_some());
}

#[tokio::test(start_paused = true)]
async fn idle_session_ends_and_activity_keeps_it_alive() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let session = opened(&sessions, &audit).await;

    tokio::time::advance(Duration::from_secs(29 * 60)).await;
    assert_eq!(sessions.expire(EXPIRY, None).await.unwrap(), 0);
    assert!(
        sessions.authenticate("regul-1", &session.token).is_some(),
        "activity"
    );
    tokio::time::advance(Duration::from_secs(29 * 60)).await;
    assert_eq!(
        sessions.expire(EXPIRY, None).await.unwrap(),
        0,
        "activity restarted the idle clock"
    );
    tokio::time::advance(Duration::from_secs(2 * 60)).await;
    assert_eq!(sessions.expire(EXPIRY, None).await.unwrap(), 1);
    assert!(sessions.authenticate("regul-1", &session.token).is_none());
    assert!(sessions.view("regul-1").unwrap().1.is_none());
}

/// What the page asks on its own (it polls the desk's case) does not count as activity:
/// an unattended desk's session reaches its idle timeout all the same.
#[tokio::test(start_paused = true)]
async fn the_pages_own_polling_does_not_keep_a_session_alive() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let session = opened(&sessions, &audit).await;
    for _ in 0..(31 * 2) {
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(sessions.expire(EXPIRY, None).await.unwrap() <= 1);
        if sessions
            .authenticate_quietly("regul-1", &session.token)
            .is_none()
        {
            break;
        }
    }
    assert!(
        sessions.view("regul-1").unwrap().1.is_none(),
        "30 minutes of polling every 30 s ended the session all the same"
    );
}

/// A request arriving after the idle time, before the reaper's next tick, is refused
/// (and does not bring the session back); so is one after the maximum duration.
#[tokio::test(start_paused = true)]
async fn a_session_past_its_limits_is_refused_before_the_reaper_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    sessions.enforce(EXPIRY, None);
    let session = opened(&sessions, &audit).await;
    tokio::time::advance(EXPIRY.idle - Duration::from_secs(1)).await;
    assert!(sessions.authenticate("regul-1", &session.token).is_some());
    assert!(sessions.token_hash("regul-1").is_some());
    tokio::time::advance(EXPIRY.idle + Duration::from_secs(1)).await;
    assert!(sessions.authenticate("regul-1", &session.token).is_none());
    assert!(
        sessions
            .authenticate_quietly("regul-1", &session.token)
            .is_none()
    );
    // What an access checks before its data leaves, and what grants are ended by.
    assert!(sessions.token_hash("regul-1").is_none());
    assert_eq!(
        sessions.expire(EXPIRY, None).await.unwrap(),
        1,
        "ended as idle"
    );

    let session = opened(&sessions, &audit).await;
    let steps = EXPIRY.max.as_secs() / 60;
    for _ in 0..steps {
        tokio::time::advance(Duration::from_secs(60)).await;
        let _ = sessions.authenticate("regul-1", &session.token);
    }
    assert!(
        sessions.authenticate("regul-1", &session.token).is_none(),
        "past its maximum duration, however active"
    );
}

#[tokio::test(start_paused = true)]
async fn even_an_active_session_ends_at_its_maximum_duration() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let session = opened(&sessions, &audit).await;
    for _ in 0..(14 * 6 - 1) {
        tokio::time::advance(Duration::from_secs(10 * 60)).await;
        assert!(sessions.authenticate("regul-1", &session.token).is_some());
        assert_eq!(sessions.expire(EXPIRY, None).await.unwrap(), 0);
    }
    tokio::time::advance(Duration::from_secs(10 * 60)).await;
    assert_eq!(sessions.expire(EXPIRY, None).await.unwrap(), 1);
    let reader = crate::audit::AuditReader::open(&dir.path().join("audit.redb")).unwrap();
    let txn = crate::audit::store::ReadStore::snapshot(&reader).unwrap();
    let logout = crate::audit::export::Filter {
        kind: Some(EventKind::UserLogout),
        ..Default::default()
    };
    let records = crate::audit::export::select(&txn, &logout, None)
        .unwrap()
        .records;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].record.event.detail.as_deref(),
        Some("max_duration")
    );
}

#[tokio::test]
async fn a_token_only_opens_its_own_desk() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let mut other = desk();
    other.id = "regul-2".into();
    other.reader = "Desk1 00 00".into();
    let sessions = Sessions::new(&[desk(), other], audit.clone());
    let session = opened(&sessions, &audit).await;
    assert!(sessions.authenticate("regul-1", &session.token).is_some());
    assert!(sessions.authenticate("regul-2", &session.token).is_none());
    assert!(sessions.authenticate("regul-1", "").is_none());
}

#[test]
fn card_state_names_are_the_serialized_tags() {
    let refused = CardState::Refused {
        code: "expired".into(),
        message_fr: "Carte expirée.".into(),
    };
    let present = CardState::Present {
        holder: professional(),
        pin_blocked: false,
        pin_tries_left: Some(3),
    };
    for state in [
        CardState::ReaderUnavailable,
        CardState::NoCard,
        present,
        refused,
    ] {
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["state"], state.name());
    }
}

#[tokio::test]
async fn each_session_at_a_desk_has_its_own_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    assert_eq!(sessions.session_epoch("regul-1"), None);
    opened(&sessions, &audit).await;
    assert_eq!(sessions.session_epoch("regul-1"), Some(1));
    // A quick swap: the session ends with the card, another opens with the next card.
    sessions.removed("Desk0 00 00").await.unwrap();
    assert_eq!(sessions.session_epoch("regul-1"), None);
    opened(&sessions, &audit).await;
    assert_eq!(sessions.session_epoch("regul-1"), Some(2));
}

fn token() -> String {
    crate::random::hex_id::<32>().unwrap()
}

/// One login at a time per desk: a second one started while the first is under way is
/// refused before its PIN could reach the card, and the desk is free again once the
/// first ends, however it ends.
#[tokio::test]
async fn a_desk_runs_one_login_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let insertion = insert(&sessions);
    let (target, turn) = sessions.begin_login("regul-1").unwrap();
    assert_eq!(target.insertion, insertion);
    assert_eq!(
        sessions.begin_login("regul-1").map(|_| ()).unwrap_err(),
        LoginRefusal::LoginInProgress
    );
    drop(turn);
    let (_, again) = sessions.begin_login("regul-1").unwrap();
    drop(again);
}

/// The tries a card reported after a wrong PIN are written on that card only: another
/// card put in meanwhile keeps its own state.
#[tokio::test]
async fn wrong_pin_tries_are_written_on_the_card_that_reported_them() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let first = insert(&sessions);
    let second = insert(&sessions);
    sessions.mark_blocked("regul-1", first);
    let tries = |s: &Sessions| match s.view("regul-1").unwrap().0 {
        CardState::Present {
            pin_blocked,
            pin_tries_left,
            ..
        } => (pin_blocked, pin_tries_left),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        tries(&sessions),
        (false, Some(3)),
        "the swapped-in card is not blocked"
    );
    sessions.record_tries("regul-1", second, 1);
    assert_eq!(tries(&sessions), (false, Some(1)));
    sessions.mark_blocked("regul-1", second);
    assert_eq!(tries(&sessions), (true, Some(0)));
}

/// The bearer token never shows in `Debug` (a log line or a panic quoting a session).
#[tokio::test]
async fn a_sessions_debug_leaves_its_token_out() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let session = opened(&sessions, &audit).await;
    let shown = format!("{session:?}");
    assert!(!session.token.is_empty());
    assert!(!shown.contains(&session.token), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

/// A card leaving one desk ends its session at once, even while another desk's card
/// insertion waits for its record on a stalled disk: each reader's events have their own
/// queue.
#[tokio::test(flavor = "multi_thread")]
async fn a_card_leaving_one_desk_never_waits_for_another_desks_record() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let other = DeskConfig {
        id: "regul-2".into(),
        name: "Régulation 2".into(),
        reader: "Desk1 00 00".into(),
        workstation_cn: "poste-2".into(),
        ..desk()
    };
    let sessions = Sessions::new(&[desk(), other], audit.clone());
    let session = opened(&sessions, &audit).await;
    let root = crate::dev_pki::Authority::new("test root").unwrap();
    let anchor = dir.path().join("root.pem");
    crate::dev_pki::write_file(&anchor, root.cert_pem(), 0o644).unwrap();
    let crl = dir.path().join("root.crl");
    crate::dev_pki::write_file(&crl, &root.crl(&[], 0, 7).unwrap(), 0o644).unwrap();
    let trust = Arc::new(
        CardTrust::load(crate::card::trust::TrustConfig::new(
            vec![anchor],
            vec![crl],
        ))
        .unwrap(),
    );
    let (events, inbox) = mpsc::unbounded_channel();
    let runner = tokio::spawn(run(sessions.clone(), trust, inbox));
    /// Releases the held syncs however the test ends (a failed assertion included:
    /// the audit log's drop waits for its writer).
    struct Held(std::path::PathBuf);
    impl Drop for Held {
        fn drop(&mut self) {
            crate::audit::hold_syncs_for_tests(&self.0, false);
        }
    }
    crate::audit::hold_syncs_for_tests(&dir.path().join("audit.redb"), true);
    let held = Held(dir.path().join("audit.redb"));
    // Desk 2's card: its record waits on the disk.
    events
        .send(CardEvent::Inserted {
            reader: "Desk1 00 00".into(),
            certificate: Err(crate::card::CardError::Transport("unreadable".into())),
            pin_tries_left: None,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Desk 1's card leaves: its session ends now.
    events
        .send(CardEvent::Removed {
            reader: "Desk0 00 00".into(),
        })
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while sessions.authenticate("regul-1", &session.token).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session outlived its card while another desk's record waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(held);
    drop(events);
    runner.await.unwrap();
    // Both recorded once the disk answered.
    assert!(matches!(
        sessions.view("regul-2").unwrap().0,
        CardState::Refused { .. }
    ));
}

/// The reaper ends the session it judged due, never the one that replaced it while the
/// ends before it were being recorded.
#[tokio::test]
async fn an_expiry_ends_only_the_session_it_judged() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let first = opened(&sessions, &audit).await;
    let judged = sessions.session_epoch("regul-1").unwrap();
    assert!(sessions.end("regul-1", "logout").await.unwrap());
    let second = opened(&sessions, &audit).await;
    assert!(
        !sessions
            .end_matching("regul-1", Some(judged), "idle_timeout")
            .await
            .unwrap()
    );
    assert!(sessions.authenticate("regul-1", &second.token).is_some());
    assert!(sessions.authenticate("regul-1", &first.token).is_none());
    let now = sessions.session_epoch("regul-1");
    assert!(
        sessions
            .end_matching("regul-1", now, "idle_timeout")
            .await
            .unwrap()
    );
    assert!(sessions.authenticate("regul-1", &second.token).is_none());
}

/// A card revoked after its login: the reread CRLs end its session (recorded), a card not
/// revoked keeps its session.
#[tokio::test]
async fn a_card_revoked_since_its_login_ends_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let session = opened(&sessions, &audit).await;
    // The session opened with the card read at insertion ([1, 2, 3]).
    sessions
        .update("regul-1", |s| {
            if let Some(open) = s.session.as_mut() {
                open.professional.certificate_sha256 =
                    crate::encoding::hex(&crate::encoding::sha256(&[1, 2, 3]));
            }
        })
        .unwrap();
    // Another card's revocation, or a list that only grew stale: nothing ends.
    assert_eq!(sessions.end_revoked(|c| c == [9, 9, 9]).await.unwrap(), 0);
    // Another card in the reader (after a pcscd outage), revoked: not this session's.
    sessions
        .update("regul-1", |s| s.certificate = Some(vec![9, 9, 9]))
        .unwrap();
    assert_eq!(sessions.end_revoked(|c| c == [9, 9, 9]).await.unwrap(), 0);
    sessions
        .update("regul-1", |s| s.certificate = Some(vec![1, 2, 3]))
        .unwrap();
    assert!(sessions.authenticate("regul-1", &session.token).is_some());
    // This card's (its certificate, as read at insertion, is [1, 2, 3]).
    assert_eq!(sessions.end_revoked(|c| c == [1, 2, 3]).await.unwrap(), 1);
    assert!(sessions.authenticate("regul-1", &session.token).is_none());
    assert!(sessions.view("regul-1").unwrap().1.is_none());
}

/// A card session that ends on its own (its card failed a signature) ends the desk's
/// session it belongs to, recorded, and no other.
#[tokio::test]
async fn a_card_session_lost_ends_its_desk_session_only() {
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let session = opened(&sessions, &audit).await;
    let reader = desk().reader;
    // Another card session's end (an earlier login's), or another reader's: nothing.
    sessions.card_session_lost(&reader, 2).await.unwrap();
    sessions.card_session_lost("elsewhere", 1).await.unwrap();
    assert!(sessions.authenticate("regul-1", &session.token).is_some());
    // Its own.
    sessions.card_session_lost(&reader, 1).await.unwrap();
    assert!(sessions.authenticate("regul-1", &session.token).is_none());
    let reader = crate::audit::AuditReader::open(&dir.path().join("audit.redb")).unwrap();
    let txn = crate::audit::store::ReadStore::snapshot(&reader).unwrap();
    let logout = crate::audit::export::Filter {
        kind: Some(EventKind::UserLogout),
        ..Default::default()
    };
    let ends: Vec<Option<String>> = crate::audit::export::select(&txn, &logout, None)
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.record.event.detail)
        .collect();
    assert_eq!(ends, [Some("card_session_lost".to_owned())]);
}

/// A card refused because its revocation could not be vouched for is judged again after a
/// CRL reread, and is present (recorded) if it passes, without being inserted again; a
/// card refused for another reason, or one still failing, stays refused.
#[tokio::test]
async fn a_card_refused_for_a_stale_crl_is_accepted_after_a_reread() {
    use crate::card::trust::{TrustError, Verified};
    let dir = tempfile::tempdir().unwrap();
    let audit = audit(dir.path());
    let sessions = Sessions::new(&[desk()], audit.clone());
    let refuse = |code: &str| {
        let code = code.to_owned();
        sessions
            .update("regul-1", move |s| {
                s.card = CardState::Refused {
                    code,
                    message_fr: "…".into(),
                };
                s.certificate = Some(vec![1, 2, 3]);
                s.insertion += 1;
                s.refused_tries = Some(1);
            })
            .unwrap();
    };
    let passes = |_: &[u8]| {
        Ok(Verified {
            professional: professional(),
            crl_stale: false,
        })
    };
    let still_stale = |_: &[u8]| {
        Err(TrustError::StaleCrl {
            age_hours: 50,
            limit_hours: 48,
        })
    };
    let present = || {
        matches!(
            sessions.with_slot("regul-1", |s| s.card.clone()),
            Some(CardState::Present { .. })
        )
    };
    refuse("revoked");
    assert_eq!(sessions.recheck_refused(passes).await.unwrap(), 0);
    assert!(!present());
    refuse("stale_crl");
    assert_eq!(sessions.recheck_refused(still_stale).await.unwrap(), 0);
    assert!(!present());
    assert_eq!(sessions.recheck_refused(passes).await.unwrap(), 1);
    assert!(present());
    // With the tries it reported when inserted: the last try still needs confirming.
    let (target, _turn) = sessions.begin_login("regul-1").unwrap();
    assert_eq!(target.pin_tries_left, Some(1));
}
