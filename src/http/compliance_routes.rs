//! Compliance review over the API, for the compliance officers' certificates only (desks
//! and the regulation software are refused, and officers cannot reach patient data: the
//! access routes require a desk). Answers carry audit metadata only.

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::identity::Peer;
use super::session_routes::audit_unavailable;
use crate::audit::review::{self, PendingAccess};
use crate::audit::{Actor, Decision, Event, EventKind, Outcome, Review};

/// A caller holding a compliance officer's certificate.
pub struct Officer {
    cn: String,
}

impl FromRequestParts<AppState> for Officer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<Peer>() {
            Some(Peer::Unmapped(w)) if w.cn.as_deref().is_some_and(|cn| state.is_officer(cn)) => {
                Ok(Self {
                    cn: w.cn.clone().unwrap_or_default(),
                })
            }
            Some(Peer::Anonymous) | None => Err(ApiError::certificate_required()),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "compliance_only",
                "this endpoint is for compliance officers' certificates",
                "Réservé aux référents conformité.",
            )),
        }
    }
}

/// Break-glass accesses to review.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PendingAnswer {
    /// Oldest first.
    pub accesses: Vec<PendingAccess>,
}

/// Lists the break-glass accesses still to review, oldest first.
#[utoipa::path(get, path = "/api/v1/compliance/pending", tag = "compliance",
    responses((status = 200, description = "Accesses to review", body = PendingAnswer),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError)))]
pub async fn pending(
    State(state): State<AppState>,
    _officer: Officer,
) -> Result<Json<PendingAnswer>, ApiError> {
    let accesses = review::pending(state.stores().audit.as_ref()).map_err(|e| {
        tracing::error!(error = %e, "cannot read the trail for review");
        audit_unavailable()
    })?;
    Ok(Json(PendingAnswer { accesses }))
}

/// A decision on one access.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// The access's `break_glass_started` sequence number.
    pub seq: u64,
    /// `justified`, `to_investigate` or `unjustified`.
    pub decision: Decision,
    /// Why (up to 2000 characters).
    #[serde(default)]
    pub comment: String,
}

/// The record of a decision.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReviewAnswer {
    /// Sequence number of the `access_reviewed` record.
    pub recorded: u64,
}

/// Records a decision on an access (itself an audit record).
#[utoipa::path(post, path = "/api/v1/compliance/reviews", tag = "compliance", request_body = ReviewRequest,
    responses((status = 201, description = "Decision recorded", body = ReviewAnswer),
              (status = 400, description = "Comment too long", body = ApiError),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError),
              (status = 404, description = "No break-glass access with this sequence number", body = ApiError)))]
pub async fn review(
    State(state): State<AppState>,
    officer: Officer,
    Json(request): Json<ReviewRequest>,
) -> Result<(StatusCode, Json<ReviewAnswer>), ApiError> {
    if request.comment.chars().count() > 2000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "comment_too_long",
            "a comment has at most 2000 characters",
            "Commentaire trop long (2000 caractères au plus).",
        ));
    }
    let reviewable = review::is_reviewable(state.stores().audit.as_ref(), request.seq)
        .map_err(|_| audit_unavailable())?;
    if !reviewable {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_access",
            "no successful break-glass start has this sequence number",
            "Aucun accès en bris de glace ne porte ce numéro.",
        ));
    }
    let event = Event {
        actor: Some(Actor {
            name: Some(officer.cn),
            ..Actor::default()
        }),
        review: Some(Review {
            of: request.seq,
            decision: request.decision,
            comment: request.comment,
        }),
        ..Event::new(EventKind::AccessReviewed, Outcome::Success)
    };
    let receipt = state
        .audit()
        .append(event)
        .await
        .map_err(|_| audit_unavailable())?;
    Ok((
        StatusCode::CREATED,
        Json(ReviewAnswer {
            recorded: receipt.seq(),
        }),
    ))
}

/// The report's period.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ReportQuery {
    /// RFC 3339 time, or hours back (`24h`, the default).
    #[serde(default)]
    pub since: Option<String>,
}

/// Anomaly flags, each with its supporting records.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReportAnswer {
    /// The flags.
    pub flags: Vec<crate::audit::report::Flag>,
}

/// The anomaly report (same as `samu-gateway audit report`).
#[utoipa::path(get, path = "/api/v1/compliance/report", tag = "compliance", params(ReportQuery),
    responses((status = 200, description = "Anomalies with their records", body = ReportAnswer),
              (status = 400, description = "Unreadable `since`", body = ApiError),
              (status = 403, description = "Not a compliance officer's certificate", body = ApiError)))]
pub async fn report(
    State(state): State<AppState>,
    _officer: Officer,
    Query(query): Query<ReportQuery>,
) -> Result<Json<ReportAnswer>, ApiError> {
    let since = query.since.unwrap_or_else(|| "24h".into());
    let since_ms = crate::audit::report::parse_since(&since).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_since",
            "since is an RFC 3339 time or a number of hours (24h)",
            "Période invalide.",
        )
    })?;
    let shifts = state
        .cards()
        .and_then(|c| c.roster())
        .map(|(roster, _)| roster as &dyn crate::audit::report::Shifts);
    let flags = crate::audit::report::report(
        state.stores().audit.as_ref(),
        since_ms,
        state.thresholds(),
        shifts,
    )
    .map_err(|e| {
        tracing::error!(error = %e, "anomaly report failed");
        audit_unavailable()
    })?;
    Ok(Json(ReportAnswer { flags }))
}
