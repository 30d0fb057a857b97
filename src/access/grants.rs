//! Access grants: a random id (so no INS ever appears in a URL), bound to the desk and the
//! session that started the access, ending at a fixed time.

use std::time::Duration;

use serde::Serialize;

use super::Actorship;
use crate::access_mode::AccessMode;
use crate::audit::{Actor, CallContext};
use crate::patient::Ins;

/// An open grant.
#[derive(Clone)]
pub(crate) struct Grant {
    /// Random id, 128 bits, hex.
    pub id: String,
    /// The desk that started the access.
    pub desk: String,
    /// SHA-256 of the session token that started it.
    pub session: String,
    /// Who.
    pub actor: Actor,
    /// The patient.
    pub ins: Ins,
    /// The access mode.
    pub mode: AccessMode,
    /// Call id and justification.
    pub call: CallContext,
    ends: tokio::time::Instant,
    ends_at: String,
}

/// Neither the patient (INS, record-service id) nor the justification prints.
impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("desk", &self.desk)
            .field("mode", &self.mode)
            .field("call", &self.call)
            .field("ends_at", &self.ends_at)
            .finish_non_exhaustive()
    }
}

/// A grant as the desk sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct GrantView {
    /// The id to re-read with (`GET /api/v1/grants/{id}/summary`).
    pub id: String,
    /// When it ends (RFC 3339), unless the session ends first.
    pub expires_at: String,
    /// Seconds left.
    pub seconds_left: u64,
    /// The access mode (the screen shows a break-glass banner throughout).
    pub access_mode: AccessMode,
    /// The call it serves.
    pub call_id: String,
}

impl Grant {
    pub(super) fn new(
        id: String,
        who: &Actorship<'_>,
        ins: Ins,
        mode: AccessMode,
        call: CallContext,
        lifetime: Duration,
    ) -> Self {
        let ends_at = time::OffsetDateTime::now_utc() + lifetime;
        Self {
            id,
            desk: who.desk.id.clone(),
            session: who.session.clone(),
            actor: who.actor(),
            ins,
            mode,
            call,
            ends: tokio::time::Instant::now() + lifetime,
            ends_at: ends_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    }

    /// When it ends (the earlier, the older: grants last alike).
    pub(crate) fn ends(&self) -> tokio::time::Instant {
        self.ends
    }

    /// Past its end time.
    pub(crate) fn expired(&self) -> bool {
        tokio::time::Instant::now() >= self.ends
    }

    /// What the desk sees.
    pub(crate) fn view(&self) -> GrantView {
        GrantView {
            id: self.id.clone(),
            expires_at: self.ends_at.clone(),
            seconds_left: self
                .ends
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs(),
            access_mode: self.mode,
            call_id: self.call.call_id.clone(),
        }
    }
}
