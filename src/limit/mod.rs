//! Rate limits on patient data access (governor): per professional, per desk, for the whole
//! gateway, and on patient searches. Each is a rate, not a count per clock hour: "N per
//! hour" allows N at once (a multi-victim call) and one more every 3600/N s as they free
//! up, so at most 2N−1 in any one hour (the README's configuration table says so). A
//! refusal says which limit and when to retry. Keyed
//! state is pruned on schedule, so memory does not grow with the number of professionals
//! who ever logged in.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
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
    professional: DefaultKeyedRateLimiter<String>,
    desk: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
    search: DefaultKeyedRateLimiter<String>,
}

fn per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    /// Limiters for `config`.
    pub(crate) fn new(config: &LimitsConfig) -> Self {
        let global = NonZeroU32::new(config.global_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            professional: RateLimiter::keyed(per_hour(config.per_professional_per_hour)),
            desk: RateLimiter::keyed(per_hour(config.per_desk_per_hour)),
            global: RateLimiter::direct(Quota::per_minute(global)),
            search: RateLimiter::keyed(per_hour(config.searches_per_professional_per_hour)),
        }
    }

    /// One patient access by `professional` (idNat) at `desk`. Checked narrowest first, so
    /// a refused professional does not consume the desk's or the gateway's allowance.
    pub(crate) fn access(&self, professional: &str, desk: &str) -> Result<(), Limited> {
        keyed(&self.professional, professional, Scope::Professional)?;
        keyed(&self.desk, desk, Scope::Desk)?;
        self.global.check().map_err(|not_until| Limited {
            scope: Scope::Global,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }

    /// One patient search by `professional`.
    pub(crate) fn search(&self, professional: &str) -> Result<(), Limited> {
        keyed(&self.search, professional, Scope::Search)
    }

    /// Forgets keys whose limits are back to full; returns how many keys remain.
    pub(crate) fn prune(&self) -> usize {
        for limiter in [&self.professional, &self.desk, &self.search] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.professional.len() + self.desk.len() + self.search.len()
    }
}

fn keyed(
    limiter: &DefaultKeyedRateLimiter<String>,
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
        assert!(limits.professional.len() >= 500);
        std::thread::sleep(Duration::from_millis(20));
        // At one access per millisecond, 20 ms later every key is back to full.
        assert_eq!(limits.prune(), 0);
    }
}
