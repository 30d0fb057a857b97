//! Cases from the regulation software (SAMU Hub RS-EDA): the integration certificate puts a
//! case at a desk or closes it; the desk's logged-in physician reads it. Every case
//! received, refused or ended is on the record with its Hub id, never its patients.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::access_routes::Watching;
use super::error::ApiError;
use super::extract::{Params, Segment};
use super::identity::Peer;
use crate::audit::{Actor, Event, EventKind, Outcome};
use crate::case::board::{CaseBoard, Closing, Ended, HeldCase, Intake, Refusal};
use crate::case::hub::{self, Sex};

/// The regulation software, by its integration certificate (`integration.cn`),
/// with the board it may write to. Checked from the request head: the body is read after.
pub(super) struct CaseSender {
    board: Arc<CaseBoard>,
    cn: String,
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "case_forbidden",
        "only the regulation software's integration certificate may send or close cases",
        "Seul le logiciel de régulation peut transmettre une affaire.",
    )
}

fn no_integration() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "case_intake_unavailable",
        "case intake is not configured: it needs [integration] (the regulation software's certificate) and [cards]",
        "Réception des affaires non configurée.",
    )
}

impl FromRequestParts<AppState> for CaseSender {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<Peer>();
        match peer {
            Some(Peer::Anonymous) | None => return Err(ApiError::certificate_required()),
            // A desk's workstation is never the integration (configtest sees to it).
            Some(Peer::Desk(..)) => return Err(forbidden()),
            Some(Peer::Unmapped(_)) => {}
        }
        // An unconfigured intake says so before who may use it, so that a vendor trying
        // their certificate on it is not sent looking for a certificate problem.
        // (configtest allows [integration] only with [cards].)
        if !state.integration_configured() || state.cards().is_none() {
            return Err(no_integration());
        }
        let cn = super::session_routes::integration_cn(peer).ok_or_else(forbidden)?;
        Ok(Self {
            board: state.cases().clone(),
            cn,
        })
    }
}

impl CaseSender {
    fn actor(&self, desk: &str) -> Actor {
        Actor {
            workstation: Some(self.cn.clone()),
            desk: Some(desk.to_owned()),
            ..Actor::default()
        }
    }
}

/// What the regulation software hears back.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct CaseReceipt {
    /// The Hub case id.
    pub case_id: String,
    /// The desk that now holds it.
    pub desk: String,
    /// How many patients it lists.
    pub patients: usize,
    /// Seconds until it lapses, unless closed or replaced first.
    pub expires_in_seconds: u64,
}

fn unknown_desk() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "desk_unknown",
        "no desk of this gateway has that id",
        "Poste inconnu.",
    )
}

/// The desk's id as configured, if `desk` names one.
fn configured_desk(state: &AppState, desk: &str) -> Result<String, ApiError> {
    state
        .cards()
        .and_then(|c| c.sessions.desk(desk))
        .map(|d| d.id)
        .ok_or_else(unknown_desk)
}

async fn record(state: &AppState, event: Event) -> Result<(), ApiError> {
    record_all(state, vec![event]).await
}

/// Records `events` in one commit: all or none.
async fn record_all(state: &AppState, events: Vec<Event>) -> Result<(), ApiError> {
    state
        .audit()
        .append_all(events)
        .await
        .map(drop)
        .map_err(|_| super::session_routes::audit_unavailable())
}

fn ended_event(sender_actor: Option<Actor>, ended: &Ended) -> Event {
    Event {
        actor: sender_actor,
        ..Event::new(EventKind::CaseClosed, Outcome::Success).with_detail(format!(
            "case {}; desk {}; ended: {}",
            ended.case_id, ended.desk, ended.reason
        ))
    }
}

/// Puts a case (RS-EDA `createCaseHealth`, bare or in its EDXL-DE envelope) at a desk,
/// replacing the one it held. Only the regulation software's integration certificate.
#[utoipa::path(post, path = "/api/v1/desks/{desk}/case", tag = "cases",
    params(("desk" = String, Path, description = "The desk's configured id")),
    request_body(content = String, content_type = "application/json", description = "An RS-EDA createCaseHealth message, bare or in its EDXL-DE envelope"),
    responses((status = 201, description = "The desk holds the case", body = CaseReceipt),
              (status = 400, description = "Not an RS-EDA create-case message (the field is named, not its value)", body = ApiError),
              (status = 403, description = "Not the integration certificate", body = ApiError),
              (status = 404, description = "No such desk", body = ApiError),
              (status = 409, description = "A later sending of the case is held (`case_stale`), or the case was closed at this desk and this sending is not from after the close (`case_closed`): nothing changed", body = ApiError),
              (status = 413, description = "Message too large", body = ApiError),
              (status = 415, description = "Not sent as application/json", body = ApiError),
              (status = 503, description = "Case intake not configured, or the audit trail cannot record", body = ApiError)))]
pub(super) async fn post_case(
    State(state): State<AppState>,
    sender: CaseSender,
    Segment(desk): Segment<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<CaseReceipt>), ApiError> {
    let desk = configured_desk(&state, &desk)?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_required",
            "the message must be sent as application/json",
            "Message refusé : format inattendu.",
        ));
    }
    let case = match hub::parse(&body) {
        Ok(case) => case,
        Err(e) => {
            let status = if matches!(e, crate::case::CaseError::TooLarge { .. }) {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            // On the record without a word of the message: it may name patients.
            record(
                &state,
                Event {
                    actor: Some(sender.actor(&desk)),
                    ..Event::new(
                        EventKind::CaseReceived,
                        Outcome::Refused {
                            reason: "case_invalid".into(),
                        },
                    )
                    .with_detail(format!("desk {desk}"))
                },
            )
            .await?;
            return Err(ApiError::new(
                status,
                "case_invalid",
                e.to_string(),
                "Affaire refusée : message invalide.",
            ));
        }
    };
    let (case_id, patients) = (case.case_id.clone(), case.patients.len());
    let received = Event {
        actor: Some(sender.actor(&desk)),
        ..Event::new(EventKind::CaseReceived, Outcome::Success).with_detail(format!(
            "case {case_id}; desk {desk}; patients {patients}{}",
            if case.exercise { "; exercise" } else { "" }
        ))
    };
    let refused_event = |refusal: Refusal| Event {
        actor: Some(sender.actor(&desk)),
        ..Event::new(
            EventKind::CaseReceived,
            Outcome::Refused {
                reason: refusal.code().into(),
            },
        )
        .with_detail(format!("case {case_id}; desk {desk}"))
    };
    // On the record, with the ends of the cases it replaces (or its refusal), in one commit
    // before any desk shows it: if that fails, the board is unchanged.
    let put = sender
        .board
        .put_recorded(&desk, case, |intake| {
            let events = match intake {
                Intake::Put(ends) => {
                    let mut events = vec![received];
                    events.extend(
                        ends.iter()
                            .map(|r| ended_event(Some(sender.actor(&desk)), r)),
                    );
                    events
                }
                Intake::Refused(refusal) => vec![refused_event(refusal)],
            };
            record_all(&state, events)
        })
        .await?;
    match put {
        Ok(()) => {}
        Err(Refusal::Stale) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "case_stale",
                "a later sending of this case (by its sentAt) is held: nothing changed",
                "Affaire refusée : une version plus récente est déjà au poste.",
            ));
        }
        Err(Refusal::Closed) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "case_closed",
                "this case was closed at this desk and this sending does not say it was sent after the close (sentAt): nothing changed",
                "Affaire refusée : elle a été fermée à ce poste.",
            ));
        }
    }
    let expires_in_seconds = sender.board.get(&desk).map_or(0, |h| h.seconds_left());
    Ok((
        StatusCode::CREATED,
        Json(CaseReceipt {
            case_id,
            desk,
            patients,
            expires_in_seconds,
        }),
    ))
}

/// Which case a close is for.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct CloseQuery {
    /// The Hub id of the case to close (required); when the desk holds another case,
    /// nothing is closed (409): a close retried after the next case arrived must not close
    /// that one.
    case_id: Option<String>,
}

/// Closes the desk's case. Only the regulation software's integration certificate.
#[utoipa::path(delete, path = "/api/v1/desks/{desk}/case", tag = "cases",
    params(("desk" = String, Path, description = "The desk's configured id"), CloseQuery),
    responses((status = 204, description = "Closed"),
              (status = 400, description = "The case is not named (`case_id_required`)", body = ApiError),
              (status = 403, description = "Not the integration certificate", body = ApiError),
              (status = 404, description = "No such desk, or it holds no case", body = ApiError),
              (status = 409, description = "The desk holds another case than the one named (`case_mismatch`): nothing closed", body = ApiError),
              (status = 503, description = "Case intake not configured, or the audit trail cannot record", body = ApiError)))]
pub(super) async fn delete_case(
    State(state): State<AppState>,
    sender: CaseSender,
    Segment(desk): Segment<String>,
    Params(query): Params<CloseQuery>,
) -> Result<StatusCode, ApiError> {
    let desk = configured_desk(&state, &desk)?;
    // A close that does not name its case, retried after the next case arrived, would
    // close that one.
    let Some(case_id) = query.case_id else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "case_id_required",
            "name the case to close: ?case_id=…",
            "Fermeture refusée : l'affaire n'est pas nommée.",
        ));
    };
    // The case stays at the desk unless its end is on the record.
    let closing = sender
        .board
        .close_recorded(&desk, &case_id, |ended| {
            record(&state, ended_event(Some(sender.actor(&desk)), &ended))
        })
        .await?;
    match closing {
        Closing::Closed(_) => Ok(StatusCode::NO_CONTENT),
        Closing::NoCase => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_case",
            "the desk holds no case",
            "Aucune affaire en cours à ce poste.",
        )),
        // The id it holds is the caller's own data: not echoed, the caller knows it.
        Closing::OtherCase => Err(ApiError::new(
            StatusCode::CONFLICT,
            "case_mismatch",
            "the desk holds another case than the one named: nothing closed",
            "Cette affaire n'est plus celle du poste : rien n'a été fermé.",
        )),
    }
}

/// A case as the physician's page shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct CaseView {
    /// The Hub case id.
    pub case_id: String,
    /// Which sending of it (the regulation software may send a case again, corrected,
    /// under the same id): the desk's events carry it as `case_version`.
    pub version: u64,
    /// The SAMU that owns it.
    pub owner: String,
    /// When the regulation software created it.
    pub created: String,
    /// When the gateway received it.
    pub received_at: String,
    /// A drill, not a real call.
    pub exercise: bool,
    /// The health motive's code.
    pub motive_code: Option<String>,
    /// The health motive's label (French).
    pub motive_label: Option<String>,
    /// `P0` to `P3`, or `NR`.
    pub priority: Option<String>,
    /// Seconds until it lapses.
    pub seconds_left: u64,
    /// The patients, in the message's order.
    pub patients: Vec<CasePatientView>,
}

/// One patient of the case.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct CasePatientView {
    /// The Hub's patient id.
    pub patient_id: String,
    /// Birth name.
    pub birth_name: Option<String>,
    /// Name as said.
    pub last_name: Option<String>,
    /// First name as said.
    pub first_name: Option<String>,
    /// Birth date as sent: `YYYY-MM-DD`, the Hub's pattern, whose day, or month and day,
    /// may be `00` (unknown) and which may name no day at all (docs/case.md, "Birth
    /// dates"): to be shown as written, never searched on unless it is a day.
    pub birth_date: Option<String>,
    /// `M`, `F`, `O` or `UN`.
    pub sex: Option<Sex>,
    /// A NIR the regulation software passed on: a hint to check, not an identity.
    pub nir_unverified: Option<String>,
    /// Free-text history.
    pub history: Option<String>,
    /// Free-text treatments.
    pub treatment: Option<String>,
    /// The case's notes about this patient.
    pub notes: Vec<String>,
}

impl From<HeldCase> for CaseView {
    fn from(held: HeldCase) -> Self {
        let seconds_left = held.seconds_left();
        let version = held.version;
        let case = held.case;
        let (motive_code, motive_label) = match case.motive {
            Some((code, label)) => (Some(code), Some(label)),
            None => (None, None),
        };
        Self {
            case_id: case.case_id,
            version,
            owner: case.owner,
            created: case.created,
            received_at: held.received_at,
            exercise: case.exercise,
            motive_code,
            motive_label,
            priority: case.priority,
            seconds_left,
            patients: case
                .patients
                .into_iter()
                .map(|p| CasePatientView {
                    patient_id: p.patient_id,
                    birth_name: p.birth_name,
                    last_name: p.last_name,
                    first_name: p.first_name,
                    birth_date: p.birth_date,
                    sex: p.sex,
                    nir_unverified: p.nir,
                    history: p.history,
                    treatment: p.treatment,
                    notes: p.notes,
                })
                .collect(),
        }
    }
}

/// The case the regulation software sent to the calling desk, for its logged-in
/// physician. No case is not an error (the page asks whenever it shows the form): 204.
/// The first time a session is shown a case, that is recorded (`case_shown`) before the
/// case leaves: the caller's description of a patient reached this professional.
#[utoipa::path(get, path = "/api/v1/case", tag = "cases", security(("workstationCertificate" = [], "sessionCookie" = []), ("workstationCertificate" = [], "sessionBearer" = [])),
    responses((status = 200, description = "The desk's case", body = CaseView),
              (status = 204, description = "The desk holds no case"),
              (status = 401, description = "No open session at this desk", body = ApiError),
              (status = 503, description = "The audit trail cannot record the showing", body = ApiError)))]
pub(super) async fn get_case(
    State(state): State<AppState>,
    Watching(acting): Watching,
) -> Response {
    let desk = acting.desk_id();
    let Some(held) = state.cases().get(desk) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let session = acting.session_hash();
    if !held.shown_to.iter().any(|s| s == session) {
        let case_id = &held.case.case_id;
        let shown = Event {
            actor: Some(acting.actor()),
            ..Event::new(EventKind::CaseShown, Outcome::Success).with_detail(format!(
                "case {case_id}; desk {desk}; patients {}",
                held.case.patients.len()
            ))
        };
        if let Err(refusal) = record(&state, shown).await {
            return refusal.into_response();
        }
        // While the record was written, the card may have left or the regulation
        // software closed or replaced the case (maybe by the same case, corrected): then
        // nothing of it leaves.
        let same_case = state
            .cases()
            .get(desk)
            .is_some_and(|now| now.version == held.version);
        if !acting.still_open() {
            return super::session_routes::no_session().into_response();
        }
        if !same_case {
            return StatusCode::NO_CONTENT.into_response();
        }
        state.cases().mark_shown(desk, held.version, session);
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(CaseView::from(held)),
    )
        .into_response()
}

/// Records the end of every case that lapsed (the service's reaper calls it, and logs
/// its failures); those whose end cannot be recorded wait for the next round.
pub(crate) async fn reap(state: &AppState) -> Result<usize, crate::audit::AuditError> {
    state
        .cases()
        .reap_recorded(|ended| record_ends(state, ended))
        .await
}

/// Records the end of every case still held (the service is stopping).
pub(crate) async fn end_all(state: &AppState) {
    let ended = state
        .cases()
        .drain_recorded(|ended| record_ends(state, ended))
        .await;
    if let Err(e) = ended {
        tracing::error!(error = %e, "cannot record the end of the cases held at stop");
    }
}

async fn record_ends(state: &AppState, ended: Vec<Ended>) -> Result<(), crate::audit::AuditError> {
    let events = ended.iter().map(|e| ended_event(None, e)).collect();
    state.audit().append_all(events).await.map(drop)
}
