//! The case each desk holds: at most one, replaced by the next, ended by the regulation
//! software (`close`) or by time (`reap`). Memory only: nothing of a case reaches the disk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::hub::HubCase;

/// A case at a desk, with when it arrived and when it lapses.
#[derive(Clone, Debug)]
pub(crate) struct HeldCase {
    /// The case.
    pub case: HubCase,
    /// When the gateway received it (RFC 3339, UTC).
    pub received_at: String,
    /// The sessions (token hashes) it was shown to, each on the record.
    pub shown_to: Vec<String>,
    /// This board's number for the put that placed it: the regulation software may send
    /// a case again under the same id (corrected), and a showing or a page must tell the
    /// two apart.
    pub version: u64,
    ends: Instant,
}

impl HeldCase {
    /// Seconds until it lapses.
    pub(crate) fn seconds_left(&self) -> u64 {
        self.ends
            .saturating_duration_since(Instant::now())
            .as_secs()
    }
}

/// How a desk's case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    /// The desk.
    pub desk: String,
    /// The case's Hub id.
    pub case_id: String,
    /// `closed`, `replaced`, `moved` (the case was sent to another desk), `expired` or
    /// `gateway_stopped`.
    pub reason: &'static str,
}

impl Ended {
    /// `held`'s end at `desk` for `reason`.
    fn of(desk: &str, held: &HeldCase, reason: &'static str) -> Self {
        Self {
            desk: desk.to_owned(),
            case_id: held.case.case_id.clone(),
            reason,
        }
    }

    /// `held`'s end when another case takes its desk: one that lapsed before the reaper
    /// came by ended by time, not by the new one.
    fn replaced(desk: &str, held: &HeldCase) -> Self {
        let reason = if held.ends <= Instant::now() {
            "expired"
        } else {
            "replaced"
        };
        Self::of(desk, held, reason)
    }
}

/// What a close found at the desk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closing {
    /// The case was closed, its end on the record.
    Closed(Ended),
    /// The desk held no case (or it had lapsed: the reaper records that one).
    NoCase,
    /// The desk holds another case than the one named: a close retried after the next
    /// case arrived must not close it.
    OtherCase,
}

/// Why a sending of a case was not put at its desk (docs/case.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A later sending of the same case is held, at this desk or another: this one is a
    /// late retry or overtook nothing.
    Stale,
    /// The case was closed at this desk, and this sending does not say it was sent after
    /// the close: a late retry would bring a closed case back.
    Closed,
}

impl Refusal {
    /// The API's error code.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::Stale => "case_stale",
            Self::Closed => "case_closed",
        }
    }
}

/// What a put does, given to its record before it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Intake {
    /// The case goes to the desk; these cases end (the one the desk held, and the same
    /// case held at other desks: one desk handles a case).
    Put(Vec<Ended>),
    /// Nothing changes.
    Refused(Refusal),
}

/// A case closed at a desk, remembered for a case's lifetime.
#[derive(Debug)]
struct ClosedCase {
    desk: String,
    case_id: String,
    /// When it was closed (the gateway's clock).
    at: time::OffsetDateTime,
    forgotten: Instant,
}

/// Most closes remembered (one per put at most: the regulation software's own pace).
const MAX_CLOSED: usize = 4096;

/// Every desk's current case.
#[derive(Debug)]
pub(crate) struct CaseBoard {
    lifetime: Duration,
    cases: Mutex<HashMap<String, HeldCase>>,
    /// Cases closed lately, so that a late sending does not bring one back. Changed only
    /// in the intake's turn.
    closed: Mutex<Vec<ClosedCase>>,
    /// The last version given (`HeldCase::version`).
    versions: std::sync::atomic::AtomicU64,
    /// Held by the regulation software's requests from their record to their change:
    /// two sent at once change the board in the order they were recorded.
    intake: tokio::sync::Mutex<()>,
    /// Bumped at every change, for the desks' pages to hear of it.
    changes: tokio::sync::watch::Sender<u64>,
}

impl CaseBoard {
    /// A board whose cases lapse after `lifetime`.
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            cases: Mutex::new(HashMap::new()),
            closed: Mutex::new(Vec::new()),
            versions: std::sync::atomic::AtomicU64::new(0),
            intake: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Puts `case` at `desk` once `record` has recorded what the put does: the ends of
    /// the case it replaces and of the same case held at other desks, or its refusal. If
    /// `record` fails, the board is unchanged: no desk shows a case whose arrival, or
    /// whose predecessor's end, is not on the record.
    ///
    /// Refused: a sending older (by its `sentAt`) than one of the same case held, and a
    /// sending of a case closed at this desk that does not say it was sent after the close.
    /// A sending without `sentAt` cannot be ordered: it is taken as the latest.
    ///
    /// Every change that ends a case goes through the intake's turn, from its record to
    /// the change: two cases sent at once reach the desk in the order they are on the
    /// record, and the cases `record` is told of are the ones the put ends.
    pub(crate) async fn put_recorded<E, Fut>(
        &self,
        desk: &str,
        case: HubCase,
        record: impl FnOnce(Intake) -> Fut,
    ) -> Result<Result<(), Refusal>, E>
    where
        Fut: Future<Output = Result<(), E>>,
    {
        let _turn = self.intake.lock().await;
        let now = Instant::now();
        if let Some(refusal) = self.refusal(desk, &case, now) {
            record(Intake::Refused(refusal)).await?;
            return Ok(Err(refusal));
        }
        let ends = self.with_cases(|cases| {
            let mut ends: Vec<Ended> = cases
                .get(desk)
                .map(|h| Ended::replaced(desk, h))
                .into_iter()
                .collect();
            ends.extend(
                cases
                    .iter()
                    .filter(|(at, held)| {
                        at.as_str() != desk && held.case.case_id == case.case_id && held.ends > now
                    })
                    .map(|(at, held)| Ended::of(at, held, "moved")),
            );
            ends
        });
        let moved: Vec<String> = ends
            .iter()
            .filter(|e| e.reason == "moved")
            .map(|e| e.desk.clone())
            .collect();
        record(Intake::Put(ends)).await?;
        // Sent again after its close: the case is open again at this desk.
        self.closed_cases()
            .retain(|c| !(c.desk == desk && c.case_id == case.case_id));
        self.place(desk, case, &moved);
        Ok(Ok(()))
    }

    /// Why `case` may not go to `desk` now, if it may not.
    fn refusal(&self, desk: &str, case: &HubCase, now: Instant) -> Option<Refusal> {
        let closed_before = self.closed_cases().iter().any(|c| {
            c.desk == desk
                && c.case_id == case.case_id
                && c.forgotten > now
                && case.sent_at.is_none_or(|sent| sent <= c.at)
        });
        if closed_before {
            return Some(Refusal::Closed);
        }
        let newer_held = self.with_cases(|cases| {
            cases.values().any(|held| {
                held.ends > now
                    && held.case.case_id == case.case_id
                    && matches!(
                        (held.case.sent_at, case.sent_at),
                        (Some(held), Some(sent)) if sent < held
                    )
            })
        });
        newer_held.then_some(Refusal::Stale)
    }

    /// The closes remembered, those forgotten dropped (a poisoned lock still holds a
    /// consistent list: every change is one push or retain).
    fn closed_cases(&self) -> std::sync::MutexGuard<'_, Vec<ClosedCase>> {
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        closed.retain(|c| c.forgotten > now);
        closed
    }

    /// Closes the desk's case, if it is `expected`, once `record` has
    /// recorded its end; if `record` fails, the case stays at the desk.
    pub(crate) async fn close_recorded<E, Fut>(
        &self,
        desk: &str,
        expected: &str,
        record: impl FnOnce(Ended) -> Fut,
    ) -> Result<Closing, E>
    where
        Fut: Future<Output = Result<(), E>>,
    {
        let _turn = self.intake.lock().await;
        let closing = self.with_cases(|cases| match cases.get(desk) {
            None => Closing::NoCase,
            Some(held) if held.ends <= Instant::now() => Closing::NoCase,
            Some(held) if expected != held.case.case_id => Closing::OtherCase,
            Some(held) => Closing::Closed(Ended::of(desk, held, "closed")),
        });
        let Closing::Closed(ended) = &closing else {
            return Ok(closing);
        };
        record(ended.clone()).await?;
        // The turn was held since: the desk still holds that case (a lapse since does not
        // matter, its end is recorded as a close).
        self.update(|cases| (cases.remove(desk), true));
        let mut closed = self.closed_cases();
        if closed.len() >= MAX_CLOSED {
            closed.remove(0);
        }
        closed.push(ClosedCase {
            desk: desk.to_owned(),
            case_id: ended.case_id.clone(),
            at: time::OffsetDateTime::now_utc(),
            forgotten: Instant::now() + self.lifetime,
        });
        drop(closed);
        Ok(closing)
    }

    /// Removes the cases that lapsed once `record` has recorded their ends; if `record`
    /// fails, they stay (shown to no one) for the next round to record.
    pub(crate) async fn reap_recorded<E, Fut>(
        &self,
        record: impl FnOnce(Vec<Ended>) -> Fut,
    ) -> Result<usize, E>
    where
        Fut: Future<Output = Result<(), E>>,
    {
        let _turn = self.intake.lock().await;
        let now = Instant::now();
        let lapsed: Vec<Ended> = self.with_cases(|cases| {
            cases
                .iter()
                .filter(|(_, held)| held.ends <= now)
                .map(|(desk, held)| Ended::of(desk, held, "expired"))
                .collect()
        });
        if lapsed.is_empty() {
            return Ok(0);
        }
        record(lapsed.clone()).await?;
        self.update(|cases| {
            for ended in &lapsed {
                cases.remove(&ended.desk);
            }
            ((), true)
        });
        Ok(lapsed.len())
    }

    /// Ends every case still held (the service is stopping), giving their ends to
    /// `record`: they end whether or not it succeeds, as the board is not kept.
    pub(crate) async fn drain_recorded<E, Fut>(
        &self,
        record: impl FnOnce(Vec<Ended>) -> Fut,
    ) -> Result<usize, E>
    where
        Fut: Future<Output = Result<(), E>>,
    {
        let _turn = self.intake.lock().await;
        let ended = self.drain();
        let count = ended.len();
        if count > 0 {
            record(ended).await?;
        }
        Ok(count)
    }

    /// Reads the cases (a poisoned lock still holds a consistent map: every change is one
    /// insert or remove).
    fn with_cases<T>(&self, f: impl FnOnce(&HashMap<String, HeldCase>) -> T) -> T {
        f(&self.cases.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes to any desk's case, as they happen.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Runs `f` on the cases (a poisoned lock still holds a consistent map: every change
    /// is one insert or remove), then tells the pages when `f` says something changed.
    fn update<T>(&self, f: impl FnOnce(&mut HashMap<String, HeldCase>) -> (T, bool)) -> T {
        let (result, changed) = {
            let mut cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut cases)
        };
        if changed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        result
    }

    /// Puts `case` at `desk`; returns the case it replaced, if any. Only through
    /// `put_recorded`, but for tests.
    #[cfg(test)]
    fn put(&self, desk: &str, case: HubCase) -> Option<Ended> {
        self.place(desk, case, &[])
    }

    /// Puts `case` at `desk` and removes it from the desks in `moved`, in one change;
    /// returns the case it replaced at `desk`, if any.
    fn place(&self, desk: &str, case: HubCase, moved: &[String]) -> Option<Ended> {
        let held = HeldCase {
            case,
            received_at: crate::clock::now().0,
            shown_to: Vec::new(),
            version: self
                .versions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .wrapping_add(1),
            ends: Instant::now() + self.lifetime,
        };
        self.update(|cases| {
            for other in moved {
                cases.remove(other);
            }
            let replaced = cases
                .insert(desk.to_owned(), held)
                .map(|old| Ended::replaced(desk, &old));
            (replaced, true)
        })
    }

    /// The desk's case, unless it lapsed.
    pub(crate) fn get(&self, desk: &str) -> Option<HeldCase> {
        let cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
        cases
            .get(desk)
            .filter(|held| held.ends > Instant::now())
            .cloned()
    }

    /// Notes that the desk's case `version` (if it is still the desk's) was shown to
    /// `session`, once that is on the record. Not a change the pages need to hear of.
    pub(crate) fn mark_shown(&self, desk: &str, version: u64, session: &str) {
        let mut cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = cases.get_mut(desk)
            && held.version == version
            && !held.shown_to.iter().any(|s| s == session)
        {
            held.shown_to.push(session.to_owned());
        }
    }

    /// The id and version of the desk's case, unless it lapsed.
    pub(crate) fn case_id(&self, desk: &str) -> Option<(String, u64)> {
        let cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
        cases
            .get(desk)
            .filter(|held| held.ends > Instant::now())
            .map(|held| (held.case.case_id.clone(), held.version))
    }

    /// Every case still held (the service is stopping: each end is recorded).
    fn drain(&self) -> Vec<Ended> {
        self.update(|cases| {
            let ended: Vec<Ended> = cases
                .drain()
                .map(|(desk, held)| Ended {
                    desk,
                    case_id: held.case.case_id,
                    reason: "gateway_stopped",
                })
                .collect();
            let changed = !ended.is_empty();
            (ended, changed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str) -> HubCase {
        HubCase {
            case_id: id.into(),
            owner: "fr.health.samu770".into(),
            created: "2026-12-04T10:00:00+01:00".into(),
            exercise: false,
            sender: None,
            sent_at: None,
            motive: None,
            priority: None,
            patients: Vec::new(),
        }
    }

    /// A showing is noted for the case it was recorded for, once per session; the next
    /// case starts with none, and a showing for a case already replaced is not carried over.
    #[test]
    fn showings_belong_to_one_case_and_count_each_session_once() {
        let board = CaseBoard::new(Duration::from_secs(60));
        board.put("regul-1", case("fr.health.samu770.A"));
        let a = board.get("regul-1").unwrap().version;
        let changes = board.subscribe();
        board.mark_shown("regul-1", a, "s1");
        board.mark_shown("regul-1", a, "s1");
        board.mark_shown("regul-1", a, "s2");
        assert_eq!(board.get("regul-1").unwrap().shown_to, ["s1", "s2"]);
        assert!(
            !changes.has_changed().unwrap(),
            "not a change for the pages"
        );
        board.put("regul-1", case("fr.health.samu770.B"));
        board.mark_shown("regul-1", a, "s3");
        assert!(board.get("regul-1").unwrap().shown_to.is_empty());
        let b = board.get("regul-1").unwrap().version;
        board.mark_shown("regul-2", b, "s1");
        assert!(board.get("regul-2").is_none());
        // The same case sent again (corrected): a new version, shown to no one yet; a
        // showing of the earlier one is not carried over.
        board.mark_shown("regul-1", b, "s1");
        board.put("regul-1", case("fr.health.samu770.B"));
        let again = board.get("regul-1").unwrap();
        assert_ne!(again.version, b);
        assert!(again.shown_to.is_empty());
        board.mark_shown("regul-1", b, "s1");
        assert!(board.get("regul-1").unwrap().shown_to.is_empty());
        assert_eq!(
            board.case_id("regul-1"),
            Some(("fr.health.samu770.B".to_owned(), again.version))
        );
    }

    /// A recorder that notes what it is given and succeeds, or fails when `fail`.
    #[derive(Default)]
    struct Trail {
        ends: Mutex<Vec<Ended>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Trail {
        async fn record(&self, ends: impl IntoIterator<Item = Ended>) -> Result<(), &'static str> {
            if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("the trail cannot record");
            }
            self.ends.lock().unwrap().extend(ends);
            Ok(())
        }

        fn failing(&self, fail: bool) {
            self.fail.store(fail, std::sync::atomic::Ordering::Relaxed);
        }

        /// Records what a put does: its ends, or nothing for a refusal.
        async fn intake(&self, intake: Intake) -> Result<(), &'static str> {
            match intake {
                Intake::Put(ends) => self.record(ends).await,
                Intake::Refused(_) => self.record([]).await,
            }
        }

        fn take(&self) -> Vec<(String, &'static str)> {
            let ends = std::mem::take(&mut *self.ends.lock().unwrap());
            ends.into_iter().map(|e| (e.case_id, e.reason)).collect()
        }
    }

    fn ends(list: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
        list.iter().map(|(id, r)| ((*id).to_owned(), *r)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_desk_holds_one_case_until_closed_replaced_or_lapsed() {
        let board = CaseBoard::new(Duration::from_secs(60));
        let trail = Trail::default();
        let mut changes = board.subscribe();
        let (board, trail) = (&board, &trail);
        let put = |desk: &'static str, id: &'static str| async move {
            board
                .put_recorded(desk, case(id), |e| trail.intake(e))
                .await
                .map(|put| put.unwrap())
        };
        put("regul-1", "fr.health.samu770.A").await.unwrap();
        assert!(trail.take().is_empty(), "nothing replaced");
        assert!(changes.has_changed().unwrap(), "pages hear of a new case");
        assert_eq!(
            board.case_id("regul-1").map(|(id, _)| id).as_deref(),
            Some("fr.health.samu770.A")
        );
        put("regul-1", "fr.health.samu770.B").await.unwrap();
        assert_eq!(trail.take(), ends(&[("fr.health.samu770.A", "replaced")]));
        assert_eq!(
            board.get("regul-1").unwrap().case.case_id,
            "fr.health.samu770.B"
        );
        assert!(board.get("regul-2").is_none());
        changes.mark_unchanged();
        let close = |desk: &'static str, expected: &'static str| {
            board.close_recorded(desk, expected, |e| trail.record([e]))
        };
        // A close naming the case the desk no longer holds (retried after B arrived)
        // changes nothing.
        assert_eq!(
            close("regul-1", "fr.health.samu770.A").await,
            Ok(Closing::OtherCase)
        );
        assert!(!changes.has_changed().unwrap());
        assert!(board.get("regul-1").is_some());
        assert!(trail.take().is_empty());
        assert!(matches!(
            close("regul-1", "fr.health.samu770.B").await,
            Ok(Closing::Closed(_))
        ));
        assert_eq!(trail.take(), ends(&[("fr.health.samu770.B", "closed")]));
        assert!(
            changes.has_changed().unwrap(),
            "pages hear of a closed case"
        );
        changes.mark_unchanged();
        assert_eq!(
            close("regul-1", "fr.health.samu770.B").await,
            Ok(Closing::NoCase)
        );
        assert!(
            !changes.has_changed().unwrap(),
            "nothing closed, nothing to hear"
        );

        put("regul-2", "fr.health.samu770.C").await.unwrap();
        let reap = || board.reap_recorded(|e| trail.record(e));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(board.get("regul-2").is_some());
        assert_eq!(reap().await, Ok(0));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(board.get("regul-2").is_none(), "lapsed cases are not shown");
        assert_eq!(
            close("regul-2", "fr.health.samu770.C").await,
            Ok(Closing::NoCase),
            "the reaper records a lapse"
        );
        assert_eq!(reap().await, Ok(1));
        assert_eq!(trail.take(), ends(&[("fr.health.samu770.C", "expired")]));
        assert_eq!(reap().await, Ok(0));

        // A lapsed case the reaper has not yet come by, replaced: it expired.
        put("regul-3", "fr.health.samu770.D").await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        put("regul-3", "fr.health.samu770.E").await.unwrap();
        assert_eq!(trail.take(), ends(&[("fr.health.samu770.D", "expired")]));
        assert_eq!(board.drain_recorded(|e| trail.record(e)).await, Ok(1));
        assert_eq!(
            trail.take(),
            ends(&[("fr.health.samu770.E", "gateway_stopped")])
        );
    }

    /// When the trail cannot record, no case changes: the new case is not shown, the one
    /// it would replace stays, a close leaves the case, a lapsed case waits for the next
    /// round. Before, the change was made and only its record was missing.
    #[tokio::test(start_paused = true)]
    async fn nothing_changes_at_a_desk_unless_its_record_is_made() {
        let board = CaseBoard::new(Duration::from_secs(60));
        let trail = Trail::default();
        board
            .put_recorded("regul-1", case("fr.health.samu770.A"), |e| trail.intake(e))
            .await
            .unwrap()
            .unwrap();
        let changes = board.subscribe();
        trail.failing(true);
        let refused = board
            .put_recorded("regul-1", case("fr.health.samu770.B"), |e| trail.intake(e))
            .await;
        assert!(refused.is_err());
        assert_eq!(
            board.get("regul-1").unwrap().case.case_id,
            "fr.health.samu770.A",
            "the case whose end is not recorded stays"
        );
        let refused = board
            .close_recorded("regul-1", "fr.health.samu770.A", |e| trail.record([e]))
            .await;
        assert!(refused.is_err());
        assert!(board.get("regul-1").is_some(), "not closed");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(board.reap_recorded(|e| trail.record(e)).await.is_err());
        assert!(!changes.has_changed().unwrap(), "pages heard of nothing");
        trail.failing(false);
        assert_eq!(board.reap_recorded(|e| trail.record(e)).await, Ok(1));
        assert_eq!(trail.take(), ends(&[("fr.health.samu770.A", "expired")]));
        assert!(changes.has_changed().unwrap());
    }

    fn sent(id: &str, at: &str) -> HubCase {
        HubCase {
            sent_at: Some(
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .unwrap(),
            ),
            ..case(id)
        }
    }

    /// Sendings of one case are taken in the order they were sent, whatever the order
    /// they arrive in: an older one (a late retry, one that overtook) is refused and the
    /// desk keeps the newer. A sending that does not say when it was sent cannot be
    /// ordered and is taken. Before, whichever arrived last was shown as the latest.
    #[tokio::test(start_paused = true)]
    async fn an_older_sending_of_a_case_never_replaces_a_newer_one() {
        let board = CaseBoard::new(Duration::from_secs(600));
        let trail = Trail::default();
        let put =
            |desk: &'static str, case: HubCase| board.put_recorded(desk, case, |e| trail.intake(e));
        let a = "fr.health.samu770.A";
        assert_eq!(
            put("regul-1", sent(a, "2026-12-04T10:05:00+01:00")).await,
            Ok(Ok(()))
        );
        let newer = board.get("regul-1").unwrap().version;
        // Sent at 10:00 (09:00 UTC is 10:00 in +01:00: the offsets are compared as
        // instants).
        assert_eq!(
            put("regul-1", sent(a, "2026-12-04T09:00:00+00:00")).await,
            Ok(Err(Refusal::Stale))
        );
        assert_eq!(board.get("regul-1").unwrap().version, newer);
        // Nor at another desk while the newer is held.
        assert_eq!(
            put("regul-2", sent(a, "2026-12-04T10:01:00+01:00")).await,
            Ok(Err(Refusal::Stale))
        );
        assert!(board.get("regul-2").is_none());
        // A later one, and one without sentAt, are taken.
        assert_eq!(
            put("regul-1", sent(a, "2026-12-04T10:06:00+01:00")).await,
            Ok(Ok(()))
        );
        assert_eq!(put("regul-1", case(a)).await, Ok(Ok(())));
        assert!(trail.take().iter().all(|(_, reason)| *reason == "replaced"));
        // Another case is not compared.
        assert_eq!(
            put(
                "regul-1",
                sent("fr.health.samu770.B", "2020-01-01T00:00:00+01:00")
            )
            .await,
            Ok(Ok(()))
        );
    }

    /// A case closed at a desk does not come back with a late sending: refused unless it
    /// says it was sent after the close. A case sent to another desk leaves the first
    /// (one desk handles a case), on the record as moved.
    #[tokio::test(start_paused = true)]
    async fn a_closed_case_stays_closed_and_a_case_is_at_one_desk() {
        let board = CaseBoard::new(Duration::from_secs(600));
        let trail = Trail::default();
        let put =
            |desk: &'static str, case: HubCase| board.put_recorded(desk, case, |e| trail.intake(e));
        let a = "fr.health.samu770.A";
        assert_eq!(
            put("regul-1", sent(a, "2026-12-04T10:05:00+01:00")).await,
            Ok(Ok(()))
        );
        assert!(matches!(
            board
                .close_recorded("regul-1", a, |e| trail.record([e]))
                .await,
            Ok(Closing::Closed(_))
        ));
        assert_eq!(trail.take(), ends(&[(a, "closed")]));
        for late in [sent(a, "2026-12-04T10:05:00+01:00"), case(a)] {
            assert_eq!(put("regul-1", late).await, Ok(Err(Refusal::Closed)));
            assert!(board.get("regul-1").is_none(), "a closed case came back");
        }
        // Another desk may take it (the case moved).
        assert_eq!(put("regul-2", case(a)).await, Ok(Ok(())));
        // Sent after the close: open again at the first desk, and gone from the second.
        let after = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
        let reopened = HubCase {
            sent_at: Some(after),
            ..case(a)
        };
        assert_eq!(put("regul-1", reopened).await, Ok(Ok(())));
        assert_eq!(board.get("regul-1").unwrap().case.case_id, a);
        assert!(board.get("regul-2").is_none(), "one desk handles a case");
        assert_eq!(trail.take(), ends(&[(a, "moved")]));
        // The close is forgotten after a case's lifetime.
        assert!(matches!(
            board
                .close_recorded("regul-1", a, |e| trail.record([e]))
                .await,
            Ok(Closing::Closed(_))
        ));
        assert_eq!(put("regul-1", case(a)).await, Ok(Err(Refusal::Closed)));
        tokio::time::advance(Duration::from_secs(601)).await;
        assert_eq!(put("regul-1", case(a)).await, Ok(Ok(())));
    }
}
