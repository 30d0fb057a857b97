//! Rate limits on patient data access (governor): per professional, per desk, for the whole
//! gateway, and on patient searches. Each is a rate, not a count per clock hour: "N per
//! hour" allows N at once (a multi-victim call) and one more every 3600/N s as they free
//! up, so at most 2N−1 in any one hour (the README's configuration table says so). An
//! access passes all three access limits or spends none: each step is taken back when a
//! later one refuses (governor's state store, kept where it can be read and put back). A
//! refusal says which limit and when to retry. Keyed
//! state is pruned on schedule, so memory does not grow with the number of professionals
//! who ever logged in.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{KeyedStateStore, ShrinkableKeyedStateStore};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Patient accesses (break-glass and re-reads) per professional per hour.
    #[serde(default = "defaults::per_professional_per_hour")]
    pub per_professional_per_hour: u32,
    /// Patient accesses per desk per hour.
    #[serde(default = "defaults::per_desk_per_hour")]
    pub per_desk_per_hour: u32,
    /// Patient accesses per minute for the whole gateway.
    #[serde(default = "defaults::global_per_minute")]
    pub global_per_minute: u32,
    /// Patient searches per professional per hour.
    #[serde(default = "defaults::searches_per_professional_per_hour")]
    pub searches_per_professional_per_hour: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_professional_per_hour: defaults::per_professional_per_hour(),
            per_desk_per_hour: defaults::per_desk_per_hour(),
            global_per_minute: defaults::global_per_minute(),
            searches_per_professional_per_hour: defaults::searches_per_professional_per_hour(),
        }
    }
}

mod defaults {
    pub(super) fn per_professional_per_hour() -> u32 {
        60
    }
    pub(super) fn per_desk_per_hour() -> u32 {
        120
    }
    pub(super) fn global_per_minute() -> u32 {
        600
    }
    pub(super) fn searches_per_professional_per_hour() -> u32 {
        120
    }
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Scope {
    /// The professional's.
    Professional,
    /// The desk's.
    Desk,
    /// The gateway's.
    Global,
    /// The professional's searches.
    Search,
}

impl Scope {
    /// As recorded in the audit trail.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Professional => "professional",
            Self::Desk => "desk",
            Self::Global => "global",
            Self::Search => "search",
        }
    }
}

/// A refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit ({}) reached; retry in {retry_after:?}", scope.as_str())]
pub(crate) struct Limited {
    /// Which limit.
    pub scope: Scope,
    /// When a retry can succeed.
    pub retry_after: Duration,
}

impl Limited {
    /// The message for the physician's screen, in French.
    pub(crate) fn message_fr(&self) -> String {
        let seconds = self.retry_after.as_secs().max(1);
        let who = match self.scope {
            Scope::Professional => "pour vous",
            Scope::Desk => "pour ce poste",
            Scope::Global => "pour le centre",
            Scope::Search => "pour vos recherches de patient",
        };
        format!("Trop d'accès {who} en peu de temps. Réessayez dans {seconds} s.")
    }
}

/// The gateway's limiters.
pub(crate) struct Limits {
    professional: Undoable,
    desk: Undoable,
    /// Keyed too (one key, [`GATEWAY`]), so that its step can be taken back like the others.
    global: Undoable,
    search: DefaultKeyedRateLimiter<String>,
    /// Taken for a whole access check: between a step and its undoing no other access may
    /// move these limiters.
    access_turn: Mutex<()>,
}

/// The global limiter's one key.
const GATEWAY: &str = "";

/// A keyed limiter whose last step for a key can be taken back.
struct Undoable {
    limiter: RateLimiter<
        String,
        UndoableStore,
        DefaultClock,
        NoOpMiddleware<<DefaultClock as Clock>::Instant>,
    >,
    /// The limiter's own state (shared): read before a step, put back to undo it.
    state: UndoableStore,
}

impl Undoable {
    fn new(quota: Quota) -> Self {
        let state = UndoableStore::default();
        Self {
            limiter: RateLimiter::new(quota, state.clone(), DefaultClock::default()),
            state,
        }
    }

    /// One step for `key`; on success, what undoes it.
    fn step(&self, key: &str, scope: Scope) -> Result<Step<'_>, Limited> {
        let before = self.state.get(key);
        keyed_check(&self.limiter, key, scope)?;
        Ok(Step {
            state: &self.state,
            key: key.to_owned(),
            before,
        })
    }

    fn prune(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }
}

/// A step taken, and what the key's state was before it.
struct Step<'a> {
    state: &'a UndoableStore,
    key: String,
    before: Option<Nanos>,
}

impl Step<'_> {
    fn undo(self) {
        self.state.put_back(&self.key, self.before);
    }
}

/// Theoretical arrival times by key, as governor's own `HashMap` store keeps them, plus a
/// way to read one and put it back.
#[derive(Clone, Default)]
struct UndoableStore(Arc<Mutex<HashMap<String, Nanos>>>);

impl UndoableStore {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Nanos>> {
        // A panic while holding it cannot leave a half-written entry (one insert or remove).
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &str) -> Option<Nanos> {
        self.map().get(key).copied()
    }

    fn put_back(&self, key: &str, before: Option<Nanos>) {
        let mut map = self.map();
        match before {
            Some(state) => {
                map.insert(key.to_owned(), state);
            }
            None => {
                map.remove(key);
            }
        }
    }
}

impl StateStore for UndoableStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.map();
        let (outcome, state) = f(map.get(key).copied())?;
        map.insert(key.clone(), state);
        Ok(outcome)
    }
}

impl ShrinkableKeyedStateStore<String> for UndoableStore {
    fn retain_recent(&self, drop_below: Nanos) {
        // As governor's stores: a state at or below `drop_below` is a full bucket.
        self.map().retain(|_, state| *state > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.map().shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map().len()
    }

    fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

fn per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    /// Limiters for `config`.
    pub(crate) fn new(config: &LimitsConfig) -> Self {
        let global = NonZeroU32::new(config.global_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            professional: Undoable::new(per_hour(config.per_professional_per_hour)),
            desk: Undoable::new(per_hour(config.per_desk_per_hour)),
            global: Undoable::new(Quota::per_minute(global)),
            search: RateLimiter::keyed(per_hour(config.searches_per_professional_per_hour)),
            access_turn: Mutex::new(()),
        }
    }

    /// One patient access by `professional` (idNat) at `desk`: all three limits allow it,
    /// or none is spent. A professional refused by the desk's or the gateway's limit (a
    /// mass-casualty call: every desk asking at once) keeps their own allowance for when
    /// those free up.
    pub(crate) fn access(&self, professional: &str, desk: &str) -> Result<(), Limited> {
        let _turn = self
            .access_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let by_professional = self.professional.step(professional, Scope::Professional)?;
        let by_desk = match self.desk.step(desk, Scope::Desk) {
            Ok(step) => step,
            Err(refused) => {
                by_professional.undo();
                return Err(refused);
            }
        };
        if let Err(refused) = self.global.step(GATEWAY, Scope::Global) {
            by_desk.undo();
            by_professional.undo();
            return Err(refused);
        }
        Ok(())
    }

    /// One patient search by `professional`.
    pub(crate) fn search(&self, professional: &str) -> Result<(), Limited> {
        keyed_check(&self.search, professional, Scope::Search)
    }

    /// Forgets keys whose limits are back to full; returns how many keys remain (the
    /// gateway-wide one included while it is not full).
    pub(crate) fn prune(&self) -> usize {
        let _turn = self
            .access_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.search.retain_recent();
        self.search.shrink_to_fit();
        self.professional.prune() + self.desk.prune() + self.global.prune() + self.search.len()
    }
}

fn keyed_check<S: KeyedStateStore<String>>(
    limiter: &RateLimiter<
        String,
        S,
        DefaultClock,
        NoOpMiddleware<<DefaultClock as Clock>::Instant>,
    >,
    key: &str,
    scope: Scope,
) -> Result<(), Limited> {
    limiter
        .check_key(&key.to_owned())
        .map_err(|not_until| Limited {
            scope,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
}

/// Prunes `limits` every minute, forever.
pub(crate) async fn prune_periodically(limits: std::sync::Arc<Limits>) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let kept = limits.prune();
        tracing::debug!(kept, "rate limiter keys pruned");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tight() -> LimitsConfig {
        LimitsConfig {
            per_professional_per_hour: 2,
            per_desk_per_hour: 3,
            global_per_minute: 4,
            searches_per_professional_per_hour: 1,
        }
    }

    #[test]
    fn each_scope_refuses_with_a_retry_delay_and_a_french_message() {
        let limits = Limits::new(&tight());
        assert!(limits.access("p1", "d1").is_ok());
        assert!(limits.access("p1", "d1").is_ok());
        let refused = limits.access("p1", "d1").unwrap_err();
        assert_eq!(refused.scope, Scope::Professional);
        assert!(refused.retry_after > Duration::from_secs(60));
        assert!(refused.message_fr().contains("Réessayez dans"));
        // Another professional at the same desk: the desk's third access, then its limit.
        assert!(limits.access("p2", "d1").is_ok());
        assert_eq!(limits.access("p3", "d1").unwrap_err().scope, Scope::Desk);
        // Elsewhere: the gateway's 4 per minute are spent (p1 twice, p2 once, p4 once).
        assert!(limits.access("p4", "d2").is_ok());
        assert_eq!(limits.access("p5", "d3").unwrap_err().scope, Scope::Global);
        assert!(limits.search("p1").is_ok());
        assert_eq!(limits.search("p1").unwrap_err().scope, Scope::Search);
    }

    #[test]
    fn a_refused_access_spends_no_allowance() {
        let limits = Limits::new(&tight());
        // The desk's three, the gateway's four per minute nearly spent.
        for p in ["p1", "p2", "p3"] {
            limits.access(p, "d1").unwrap();
        }
        let before = limits.professional.state.get("p1");
        // Refused by the desk: p1's own step is taken back, p4's never kept.
        assert_eq!(limits.access("p4", "d1").unwrap_err().scope, Scope::Desk);
        assert_eq!(limits.professional.state.get("p4"), None);
        assert_eq!(limits.access("p1", "d1").unwrap_err().scope, Scope::Desk);
        assert_eq!(limits.professional.state.get("p1"), before);
        // The gateway's fourth, then its refusal: neither p5 nor desk d3 spent anything.
        limits.access("p4", "d2").unwrap();
        let desk_before = limits.desk.state.get("d2");
        assert_eq!(limits.access("p5", "d3").unwrap_err().scope, Scope::Global);
        assert_eq!(limits.professional.state.get("p5"), None);
        assert_eq!(limits.desk.state.get("d3"), None);
        assert_eq!(limits.access("p4", "d2").unwrap_err().scope, Scope::Global);
        assert_eq!(limits.desk.state.get("d2"), desk_before);
        // p2 still has its second access: only the gateway's limit stands in its way.
        assert_eq!(limits.access("p2", "d2").unwrap_err().scope, Scope::Global);
    }

    #[test]
    fn keys_of_idle_professionals_are_pruned() {
        let limits = Limits::new(&LimitsConfig {
            per_professional_per_hour: 3600 * 1000,
            per_desk_per_hour: 3600 * 1000,
            global_per_minute: 60_000,
            searches_per_professional_per_hour: 3600 * 1000,
        });
        for i in 0..500 {
            limits.access(&format!("p{i}"), &format!("d{i}")).unwrap();
            limits.search(&format!("p{i}")).unwrap();
        }
        assert!(limits.professional.limiter.len() >= 500);
        std::thread::sleep(Duration::from_millis(20));
        // At one access per millisecond, 20 ms later every key is back to full; the
        // gateway's one key (500 accesses at 1 ms each) is not yet, and stays.
        limits.prune();
        assert_eq!(limits.professional.limiter.len(), 0);
        assert_eq!(limits.desk.limiter.len(), 0);
        assert_eq!(limits.search.len(), 0);
    }
}
