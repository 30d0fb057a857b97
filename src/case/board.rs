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
    /// `closed`, `replaced` or `expired`.
    pub reason: &'static str,
}

/// Every desk's current case.
#[derive(Debug)]
pub(crate) struct CaseBoard {
    lifetime: Duration,
    cases: Mutex<HashMap<String, HeldCase>>,
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
            versions: std::sync::atomic::AtomicU64::new(0),
            intake: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The regulation software's turn to change the board: a request records what it
    /// does, then does it, before the next one begins.
    pub(crate) async fn intake(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.intake.lock().await
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

    /// Puts `case` at `desk`; returns the case it replaced, if any.
    pub(crate) fn put(&self, desk: &str, case: HubCase) -> Option<Ended> {
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
            // One that lapsed before the reaper came by ended by time, not by this one.
            let replaced = cases.insert(desk.to_owned(), held).map(|old| Ended {
                desk: desk.to_owned(),
                reason: if old.ends <= Instant::now() {
                    "expired"
                } else {
                    "replaced"
                },
                case_id: old.case.case_id,
            });
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

    /// Ends the desk's case, if it is `expected` (when named): `Ok(None)` when the desk
    /// held none (or it had lapsed: the reaper records that one), `Err` with the id it
    /// holds when that is another case (a close retried after the next case arrived
    /// must not close it).
    pub(crate) fn close(
        &self,
        desk: &str,
        expected: Option<&str>,
    ) -> Result<Option<Ended>, String> {
        self.update(|cases| {
            match cases.get(desk) {
                Some(held) if held.ends <= Instant::now() => return (Ok(None), false),
                Some(held) if expected.is_some_and(|id| id != held.case.case_id) => {
                    return (Err(held.case.case_id.clone()), false);
                }
                _ => {}
            }
            let closed = cases.remove(desk).map(|held| Ended {
                desk: desk.to_owned(),
                case_id: held.case.case_id,
                reason: "closed",
            });
            let changed = closed.is_some();
            (Ok(closed), changed)
        })
    }

    /// Removes and returns the cases that lapsed.
    pub(crate) fn reap(&self) -> Vec<Ended> {
        let now = Instant::now();
        self.update(|cases| {
            let lapsed: Vec<String> = cases
                .iter()
                .filter(|(_, held)| held.ends <= now)
                .map(|(desk, _)| desk.clone())
                .collect();
            let ended: Vec<Ended> = lapsed
                .into_iter()
                .filter_map(|desk| {
                    cases.remove(&desk).map(|held| Ended {
                        desk,
                        case_id: held.case.case_id,
                        reason: "expired",
                    })
                })
                .collect();
            let changed = !ended.is_empty();
            (ended, changed)
        })
    }

    /// Every case still held (the service is stopping: each end is recorded).
    pub(crate) fn drain(&self) -> Vec<Ended> {
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

    #[tokio::test(start_paused = true)]
    async fn a_desk_holds_one_case_until_closed_replaced_or_lapsed() {
        let board = CaseBoard::new(Duration::from_secs(60));
        let mut changes = board.subscribe();
        assert_eq!(board.put("regul-1", case("fr.health.samu770.A")), None);
        assert!(changes.has_changed().unwrap(), "pages hear of a new case");
        assert_eq!(
            board.case_id("regul-1").map(|(id, _)| id).as_deref(),
            Some("fr.health.samu770.A")
        );
        let replaced = board.put("regul-1", case("fr.health.samu770.B")).unwrap();
        assert_eq!(
            (replaced.case_id.as_str(), replaced.reason),
            ("fr.health.samu770.A", "replaced")
        );
        assert_eq!(
            board.get("regul-1").unwrap().case.case_id,
            "fr.health.samu770.B"
        );
        assert!(board.get("regul-2").is_none());
        changes.mark_unchanged();
        // A close naming the case the desk no longer holds (retried after B arrived)
        // changes nothing.
        assert_eq!(
            board.close("regul-1", Some("fr.health.samu770.A")),
            Err("fr.health.samu770.B".to_owned())
        );
        assert!(!changes.has_changed().unwrap());
        assert!(board.get("regul-1").is_some());
        let closed = board
            .close("regul-1", Some("fr.health.samu770.B"))
            .unwrap()
            .unwrap();
        assert_eq!(closed.reason, "closed");
        assert!(
            changes.has_changed().unwrap(),
            "pages hear of a closed case"
        );
        changes.mark_unchanged();
        assert_eq!(board.close("regul-1", None), Ok(None));
        assert!(
            !changes.has_changed().unwrap(),
            "nothing closed, nothing to hear"
        );

        board.put("regul-2", case("fr.health.samu770.C"));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(board.get("regul-2").is_some());
        assert!(board.reap().is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(board.get("regul-2").is_none(), "lapsed cases are not shown");
        assert!(
            board.close("regul-2", None) == Ok(None),
            "the reaper records a lapse"
        );
        let reaped = board.reap();
        assert_eq!(reaped.len(), 1);
        assert_eq!(reaped[0].reason, "expired");
        assert!(board.reap().is_empty());
    }
}
