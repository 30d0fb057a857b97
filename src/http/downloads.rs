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
/// only what a misbehaving client could pile up.
pub(crate) const TICKETS_MAX: usize = 32;

/// Tickets waiting for their fetch, each holding what it will serve.
pub(crate) struct Tickets<T> {
    waiting: Mutex<HashMap<String, Ticket<T>>>,
}

struct Ticket<T> {
    /// SHA-256 of the certificate that asked: only it may fetch.
    holder: String,
    expires: Instant,
    what: T,
}

/// Why no ticket was given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TicketError {
    /// [`TICKETS_MAX`] tickets are waiting.
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

    /// Whether a ticket can be given now: asked before the work the ticket stands for is
    /// done (an export is recorded on the trail before its ticket is given).
    pub(crate) fn has_room(&self, now: Instant) -> bool {
        let mut waiting = self.waiting();
        waiting.retain(|_, ticket| ticket.expires > now);
        waiting.len() < TICKETS_MAX
    }

    /// A ticket for `what`, for the certificate `holder` only.
    pub(crate) fn give(&self, now: Instant, holder: &str, what: T) -> Result<String, TicketError> {
        let token = crate::random::hex_id::<16>().map_err(|_| TicketError::NoRandom)?;
        let mut waiting = self.waiting();
        waiting.retain(|_, ticket| ticket.expires > now);
        if waiting.len() >= TICKETS_MAX {
            return Err(TicketError::Full);
        }
        waiting.insert(
            token.clone(),
            Ticket {
                holder: holder.to_owned(),
                expires: now + TICKET_LIFETIME,
                what,
            },
        );
        Ok(token)
    }

    /// What ticket `token` holds, once, for its holder before it expires. Another
    /// certificate's fetch leaves it where it is (and learns nothing: `None` either way).
    pub(crate) fn take(&self, now: Instant, token: &str, holder: &str) -> Option<T> {
        let mut waiting = self.waiting();
        let ticket = waiting.get(token)?;
        if ticket.holder != holder {
            return None;
        }
        let ticket = waiting.remove(token)?;
        (ticket.expires > now).then_some(ticket.what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_serves_once_its_holder_within_its_lifetime() {
        let tickets = Tickets::default();
        let now = Instant::now();
        let token = tickets.give(now, "officer-a", 7).unwrap();
        assert_eq!(token.len(), 32, "128 random bits");
        assert_eq!(
            tickets.take(now, &token, "officer-b"),
            None,
            "not another's"
        );
        assert_eq!(
            tickets.take(now, "0".repeat(32).as_str(), "officer-a"),
            None
        );
        assert_eq!(tickets.take(now, &token, "officer-a"), Some(7));
        assert_eq!(tickets.take(now, &token, "officer-a"), None, "once");

        let late = tickets.give(now, "officer-a", 8).unwrap();
        assert_eq!(
            tickets.take(now + TICKET_LIFETIME, &late, "officer-a"),
            None,
            "expired"
        );
    }

    #[test]
    fn waiting_tickets_are_bounded_and_expired_ones_make_room() {
        let tickets = Tickets::default();
        let now = Instant::now();
        for n in 0..TICKETS_MAX {
            tickets.give(now, "officer-a", n).unwrap();
        }
        assert!(!tickets.has_room(now));
        assert_eq!(tickets.give(now, "officer-a", 99), Err(TicketError::Full));
        let later = now + TICKET_LIFETIME;
        assert!(tickets.has_room(later));
        assert!(tickets.give(later, "officer-a", 99).is_ok());
    }
}
