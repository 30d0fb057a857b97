//! Handlers. Each is annotated with `#[utoipa::path]` and registered through
//! `utoipa_axum::routes!`, which is what puts it into `/api/v1/openapi.json`.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::identity::{Desk, Peer, Workstation};

/// The desk a request acts for; extracting it refuses anonymous and unmapped callers.
pub(super) struct CallingDesk {
    /// The desk.
    pub desk: std::sync::Arc<Desk>,
    /// The workstation certificate that was presented.
    pub workstation: Workstation,
}

impl<S: Send + Sync> FromRequestParts<S> for CallingDesk {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<Peer>() {
            Some(Peer::Desk(desk, workstation)) => Ok(Self {
                desk: desk.clone(),
                workstation: workstation.clone(),
            }),
            Some(Peer::Unmapped(workstation)) => {
                tracing::warn!(cn = ?workstation.cn, sha256 = %workstation.sha256, "workstation certificate not mapped to a desk");
                Err(ApiError::workstation_not_mapped(workstation.cn.as_deref()))
            }
            Some(Peer::Anonymous) | None => Err(ApiError::certificate_required()),
        }
    }
}

/// Marks requests that came over the management listener (loopback only, see
/// `server::serve_management`): centre IT's and the watchdog's way in.
#[derive(Debug, Clone, Copy)]
pub(super) struct ManagementListener;

/// A caller allowed to see how the service is doing (readiness details, metrics): the
/// management listener, or any certificate from the workstation CA. Anonymous peers on
/// the LAN are refused: metrics count oppositions and refusals.
pub(super) struct Operator;

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        if parts.extensions.get::<ManagementListener>().is_some() {
            return Ok(Self);
        }
        match parts.extensions.get::<Peer>() {
            Some(Peer::Desk(..) | Peer::Unmapped(_)) => Ok(Self),
            Some(Peer::Anonymous) | None => Err(ApiError::certificate_required()),
        }
    }
}

/// Liveness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Alive {
    /// Always `alive`.
    pub status: &'static str,
}

/// Liveness: the process answers HTTP. Needs no client certificate.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process is alive", body = Alive)))]
pub(super) async fn healthz() -> Json<Alive> {
    Json(Alive { status: "alive" })
}

/// Readiness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Readiness {
    /// `ready`, `degraded` (serving; audit shipping lags, or a stale workstation CRL is
    /// accepted), `not_ready` or `shutting_down`.
    pub status: &'static str,
    /// Each check and its result (`ok`, `failed`, or `degraded` for audit shipping and a
    /// stale workstation CRL accepted; a stale one refused is `failed`).
    pub checks: Vec<Check>,
    /// Each audit repository: what it has not confirmed yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<RepositoryState>,
}

/// One audit repository's delivery state.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RepositoryState {
    /// The receiver's name.
    pub name: String,
    /// `syslog_tls` or `relp`.
    pub transport: &'static str,
    /// Records not confirmed delivered yet.
    pub unconfirmed_records: u64,
    /// Bytes sent and not confirmed yet.
    pub unconfirmed_bytes: u64,
    /// Age of the oldest unconfirmed record, seconds.
    pub oldest_unconfirmed_seconds: u64,
}

/// One readiness check.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Check {
    /// What was checked.
    pub name: &'static str,
    /// `ok` or `failed`.
    pub status: &'static str,
}

/// Readiness: configuration loaded, both stores answering, pcscd reachable (when card login
/// is configured), no workstation CRL past its next update under `refuse` (every desk would
/// be refused); 503 while shutting down. `degraded` (still 200) when an audit receiver's
/// oldest unshipped record is older than `audit.ship_alert_seconds`, or a stale workstation
/// CRL is accepted (`accept_and_flag`).
/// On the public listener it needs a workstation certificate; on the management listener,
/// nothing.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready to serve", body = Readiness),
              (status = 403, description = "No workstation certificate", body = ApiError),
              (status = 503, description = "Not ready, or shutting down", body = Readiness)))]
pub(super) async fn readyz(
    State(state): State<AppState>,
    _operator: Operator,
) -> (StatusCode, Json<Readiness>) {
    let verdict = |ok: bool| if ok { "ok" } else { "failed" };
    let audit = audit_health(&state)
        .inspect_err(|e| tracing::error!(error = %e, "readiness: audit trail check failed"));
    let cache = state
        .stores()
        .cache
        .check()
        .inspect_err(|e| tracing::error!(error = %e, "readiness: cache store check failed"));
    let readers = state
        .cards()
        .map(|cards| cards.sessions.readers_available());
    let mut checks = vec![
        Check {
            name: "config",
            status: "ok",
        },
        Check {
            name: "audit_store",
            status: verdict(audit.is_ok()),
        },
        Check {
            name: "cache_store",
            status: verdict(cache.is_ok()),
        },
    ];
    if let Some(up) = readers {
        checks.push(Check {
            name: "card_readers",
            status: verdict(up),
        });
    }
    // A stale workstation CRL under `refuse` fails every desk's handshake while the
    // process itself is fine: readiness is where monitoring sees it.
    let stale_crls = state.stale_workstation_crls();
    if let Some(policy) = stale_crls {
        tracing::error!(
            ?policy,
            "readiness: a workstation CRL is past its next update: publish a fresh one"
        );
    }
    let crls_refuse = stale_crls == Some(crate::card::trust::StaleCrlPolicy::Refuse);
    if state.checks_workstation_crls() {
        checks.push(Check {
            name: "workstation_crls",
            status: match stale_crls {
                None => "ok",
                Some(crate::card::trust::StaleCrlPolicy::Refuse) => "failed",
                Some(crate::card::trust::StaleCrlPolicy::AcceptAndFlag) => "degraded",
            },
        });
    }
    // A shipping backlog does not stop the service (records wait on disk) but must be seen.
    let lagging = state.lagging_receivers();
    if !lagging.is_empty() {
        tracing::warn!(receivers = ?lagging, "readiness: audit shipping lags");
    }
    if state.ships_audit() {
        checks.push(Check {
            name: "audit_shipping",
            status: if lagging.is_empty() { "ok" } else { "degraded" },
        });
    }
    let status = if state.is_draining() {
        "shutting_down"
    } else if audit.is_ok() && cache.is_ok() && readers != Some(false) && !crls_refuse {
        if lagging.is_empty() && stale_crls.is_none() {
            "ready"
        } else {
            "degraded"
        }
    } else {
        "not_ready"
    };
    let code = if status == "ready" || status == "degraded" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let repositories = state
        .repositories()
        .iter()
        .map(|r| {
            let backlog = r.backlog();
            RepositoryState {
                name: r.name().to_owned(),
                transport: match r.transport() {
                    crate::audit::ship::Transport::SyslogTls => "syslog_tls",
                    crate::audit::ship::Transport::Relp => "relp",
                },
                unconfirmed_records: backlog.records,
                unconfirmed_bytes: backlog.unconfirmed_bytes,
                oldest_unconfirmed_seconds: backlog.oldest_secs,
            }
        })
        .collect();
    (
        code,
        Json(Readiness {
            status,
            checks,
            repositories,
        }),
    )
}

/// The audit store answers a read and its writer has not failed.
fn audit_health(state: &AppState) -> Result<(), crate::audit::AuditError> {
    state.stores().audit.check()?;
    if state.audit().is_healthy() {
        Ok(())
    } else {
        Err(crate::audit::AuditError::Storage(
            "the audit writer failed on a storage error; restart the service".into(),
        ))
    }
}

/// Prometheus scrape endpoint. Carries no patient data, but counts refusals and
/// oppositions: on the public listener it needs a workstation certificate; scrape it on
/// the management listener.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text exposition", content_type = "application/openmetrics-text"),
              (status = 403, description = "No workstation certificate", body = ApiError)))]
pub(super) async fn metrics(State(state): State<AppState>, _operator: Operator) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    )
        .into_response()
}

/// The calling desk and its state.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct DeskView {
    /// The desk this workstation acts for.
    pub desk: Desk,
    /// The workstation certificate presented.
    pub workstation: Workstation,
    /// The centre.
    pub centre: CentreView,
    /// What the desk is doing.
    pub state: DeskState,
    /// The card in the desk's reader (absent when card login is not configured).
    pub card: Option<crate::session::CardState>,
    /// The open session, if any.
    pub session: Option<crate::session::Session>,
    /// Which session it is (its number at this desk, as the desk's events say it): a
    /// page showing patient data under another one clears it, whichever news came first.
    pub session_epoch: Option<u64>,
    /// Seconds until that session ends on its own (idle timeout or maximum duration; a
    /// shift end in the roster can come sooner).
    pub session_seconds_left: Option<u64>,
    /// What the break-glass form offers (absent when break-glass is not configured).
    pub break_glass: Option<crate::access::AccessForm>,
}

/// The centre as shown to desks.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CentreView {
    /// Structure identifier.
    pub structure_id: String,
    /// Display name.
    pub name: String,
}

/// Desk states.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum DeskState {
    /// No physician session is open at this desk.
    NoSession,
    /// A physician is logged in.
    SessionOpen,
}

/// The calling desk's identity and state.
#[utoipa::path(get, path = "/api/v1/desk", tag = "desk",
    responses((status = 200, description = "The calling desk", body = DeskView),
              (status = 403, description = "No client certificate, or one not mapped to a desk", body = ApiError)))]
pub(super) async fn desk(State(state): State<AppState>, caller: CallingDesk) -> Json<DeskView> {
    let centre = state.centre();
    let (card, session) = state
        .cards()
        .and_then(|cards| cards.sessions.view(&caller.desk.id))
        .map_or((None, None), |(card, session)| (Some(card), session));
    Json(DeskView {
        desk: caller.desk.as_ref().clone(),
        workstation: caller.workstation,
        centre: CentreView {
            structure_id: centre.structure_id.clone(),
            name: centre.name.clone(),
        },
        state: if session.is_some() {
            DeskState::SessionOpen
        } else {
            DeskState::NoSession
        },
        session_seconds_left: session
            .as_ref()
            .zip(state.cards())
            .map(|(s, cards)| cards.seconds_left(s)),
        card,
        session,
        session_epoch: state
            .cards()
            .and_then(|cards| cards.sessions.session_epoch(&caller.desk.id)),
        break_glass: state.access().map(|a| a.form()),
    })
}

/// This document: the OpenAPI 3.1 description of the API, generated from the handlers.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub(super) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi_document().as_str(),
    )
        .into_response()
}

/// Any path the API does not have.
pub(super) async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// A known path asked with a method it does not take: the API's own refusal (code,
/// English, French), not the framework's empty 405.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take this method",
        "Demande non prise en charge par la passerelle.",
    )
}
