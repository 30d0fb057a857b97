//! One-use download tickets: what lets the compliance page hand an export to the browser's
//! own download, which writes it to disk as it comes. Fetched by the page's script, the
//! whole file sat in the tab's memory before it could be saved (a year's trail is hundreds
//! of megabytes); a link the browser follows cannot carry the JSON body and the CSRF
//! header a recorded read needs, so the page asks for the export first (a POST, recorded
//! like any export) and gets a ticket for it: an unguessable link, good for one fetch by
//! the same certificate within a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a ticket waits for its fetch: the page follows it at once.
pub(crate) const TICKET_LIFETIME: Duration = Duration::from_secs(60);

/// Most tickets waiting at once: an officer's page holds one at a time, so this bounds
/// only what misbehaving clients could pile up.
pub(crate) const TICKETS_MAX: usize = 32;

/// Most tickets one certificate may have waiting: one officer's script cannot take every
/// place and keep the others' pages from exporting.
pub(crate) const TICKETS_PER_HOLDER: usize = 4;

/// Tickets waiting for their fetch, each holding what it will serve.
pub(crate) struct Tickets<T> {
    waiting: Mutex<HashMap<String, Ticket<T>>>,
}

struct Ticket<T> {
    /// SHA-256 of the certificate that asked: only it may fetch.
    holder: String,
    expires: Instant,
    /// `None` while reserved: the work it stands for is under way.
    what: Option<T>,
}

/// Why no ticket was given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TicketError {
    /// [`TICKETS_MAX`] tickets are waiting, or [`TICKETS_PER_HOLDER`] of this holder's.
    Full,
    /// The system's random generator failed.
    NoRandom,
}

impl<T> Default for Tickets<T> {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Tickets<T> {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ticket<T>>> {
        // A panic while it was held leaves at worst a ticket too many: still usable.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a ticket for the certificate `holder`, before the work it will stand for
    /// is done (an export is recorded on the trail first: a record for an export no one
    /// could fetch would be evidence of nothing). [`Tickets::fill`] gives it its content;
    /// [`Tickets::release`] gives the place back if the work fails. A reserved ticket
    /// expires like any other.
    pub(crate) fn reserve(&self, now: Instant, holder: &str) -> Result<String, TicketError> {
        let token = crate::random::hex_id::<16>().map_err(|_| TicketError::NoRandom)?;
        let mut waiting = self.waiting();
        waiting.retain(|_, ticket| ticket.expires > now);
        let held = waiting.values().filter(|t| t.holder == holder).count();
        if waiting.len() >= TICKETS_MAX || held >= TICKETS_PER_HOLDER {
            return Err(TicketError::Full);
        }
        waiting.insert(
            token.clone(),
            Ticket {
                holder: holder.to_owned(),
                expires: now + TICKET_LIFETIME,
                what: None,
            },
        );
        Ok(token)
    }

    /// Gives reserved ticket `token` what it serves (nothing if it expired meanwhile).
    pub(crate) fn fill(&self, token: &str, what: T) {
        if let Some(ticket) = self.waiting().get_mut(token) {
            ticket.what = Some(what);
        }
    }

    /// Gives reserved ticket `token`'s place back.
    pub(crate) fn release(&self, token: &str) {
        self.waiting().remove(token);
    }

    /// What ticket `token` holds, once, for its holder before it expires. Another
    /// certificate's fetch leaves it where it is (and learns nothing: `None` either way).
    pub(crate) fn take(&self, now: Instant, token: &str, holder: &str) -> Option<T> {
        let mut waiting = self.waiting();
        let ticket = waiting.get(token)?;
        if ticket.holder != holder || ticket.what.is_none() {
            return None;
        }
        let ticket = waiting.remove(token)?;
        if ticket.expires > now {
            ticket.what
        } else {
            None
        }
    }

    /// Whether `token` waits, filled, for `holder` (a `HEAD` asks without taking it).
    pub(crate) fn holds(&self, now: Instant, token: &str, holder: &str) -> bool {
        self.waiting()
            .get(token)
            .is_some_and(|t| t.holder == holder && t.what.is_some() && t.expires > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn give(tickets: &Tickets<u32>, now: Instant, holder: &str, what: u32) -> String {
        let token = tickets.reserve(now, holder).unwrap();
        tickets.fill(&token, what);
        token
    }

    #[test]
    fn a_ticket_serves_once_its_holder_within_its_lifetime() {
        let tickets = Tickets::default();
        let now = Instant::now();
        let token = give(&tickets, now, "officer-a", 7);
        assert_eq!(token.len(), 32, "128 random bits");
        assert_eq!(
            tickets.take(now, &token, "officer-b"),
            None,
            "not another's"
        );
        assert!(!tickets.holds(now, &token, "officer-b"));
        assert_eq!(
            tickets.take(now, "0".repeat(32).as_str(), "officer-a"),
            None
        );
        assert!(
            tickets.holds(now, &token, "officer-a"),
            "a look takes nothing"
        );
        assert_eq!(tickets.take(now, &token, "officer-a"), Some(7));
        assert_eq!(tickets.take(now, &token, "officer-a"), None, "once");

        let late = give(&tickets, now, "officer-a", 8);
        assert!(!tickets.holds(now + TICKET_LIFETIME, &late, "officer-a"));
        assert_eq!(
            tickets.take(now + TICKET_LIFETIME, &late, "officer-a"),
            None,
            "expired"
        );
    }

    #[test]
    fn a_reserved_ticket_serves_nothing_until_filled_and_released_makes_room() {
        let tickets: Tickets<u32> = Tickets::default();
        let now = Instant::now();
        let token = tickets.reserve(now, "officer-a").unwrap();
        assert_eq!(tickets.take(now, &token, "officer-a"), None);
        tickets.fill(&token, 3);
        assert_eq!(tickets.take(now, &token, "officer-a"), Some(3));
        for _ in 0..TICKETS_PER_HOLDER {
            tickets.reserve(now, "officer-a").unwrap();
        }
        let refused = tickets.reserve(now, "officer-a");
        assert_eq!(refused, Err(TicketError::Full), "one holder's share");
        let other = tickets.reserve(now, "officer-b").unwrap();
        tickets.release(&other);
        assert_eq!(tickets.waiting().len(), TICKETS_PER_HOLDER);
    }

    #[test]
    fn waiting_tickets_are_bounded_and_expired_ones_make_room() {
        let tickets: Tickets<u32> = Tickets::default();
        let now = Instant::now();
        for n in 0..TICKETS_MAX {
            tickets.reserve(now, &format!("officer-{n}")).unwrap();
        }
        assert_eq!(tickets.reserve(now, "officer-z"), Err(TicketError::Full));
        let later = now + TICKET_LIFETIME;
        assert!(tickets.reserve(later, "officer-z").is_ok());
    }
}
