//! Break-glass, grant re-reads and patient search: the routes that release patient data.
//! Every answer carries `Cache-Control: no-store`; no INS or trait ever appears in a path
//! or query (bodies only), and grants are addressed by random ids.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Segment};
use super::routes::CallingDesk;
use super::session_routes::{audit_unavailable, no_session, token};
use crate::access::{AccessError, Actorship, BreakGlassRequest, Delivered, PatientSearchRequest};
use crate::card::trust::Professional;
use crate::patient::Candidate;
use crate::session::DeskConfig;
use crate::upstream::UpstreamError;

/// Candidates for the physician to choose from.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct PatientSearchAnswer {
    /// Patients the record service proposes (never picked automatically).
    pub candidates: Vec<Candidate>,
}

/// The logged-in professional at the calling desk: what every access route acts as.
pub(super) struct Acting {
    state: AppState,
    desk: DeskConfig,
    professional: Professional,
    session: String,
    card_session: u64,
}

impl FromRequestParts<AppState> for Acting {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Self::from_parts(parts, state, true).await
    }
}

/// As [`Acting`], for what the page asks on its own (it polls the desk's case): the
/// request does not count as the physician's activity, so an unattended desk's session
/// still reaches its idle timeout.
pub(super) struct Watching(pub Acting);

impl FromRequestParts<AppState> for Watching {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Acting::from_parts(parts, state, false).await.map(Self)
    }
}

impl Acting {
    async fn from_parts(
        parts: &mut Parts,
        state: &AppState,
        activity: bool,
    ) -> Result<Self, ApiError> {
        let caller = CallingDesk::from_request_parts(parts, state).await?;
        let cards = state.cards().ok_or_else(unavailable)?;
        let token = token(&parts.headers).ok_or_else(no_session)?;
        let session = if activity {
            cards.sessions.authenticate(&caller.desk.id, &token)
        } else {
            cards.sessions.authenticate_quietly(&caller.desk.id, &token)
        }
        .ok_or_else(no_session)?;
        let desk = cards
            .sessions
            .desk(&caller.desk.id)
            .ok_or_else(no_session)?;
        Ok(Self {
            state: state.clone(),
            desk,
            professional: session.professional,
            session: crate::session::token_hash(&token),
            card_session: session.card_session,
        })
    }
}

impl Acting {
    /// The calling desk's id.
    pub(super) fn desk_id(&self) -> &str {
        &self.desk.id
    }

    /// The professional at the desk, as records name them.
    pub(super) fn actor(&self) -> crate::audit::Actor {
        crate::session::actor(&self.professional, &self.desk)
    }

    /// SHA-256 of the session token this request acts for.
    pub(super) fn session_hash(&self) -> &str {
        &self.session
    }

    fn who(&self) -> Actorship<'_> {
        Actorship {
            desk: &self.desk,
            professional: &self.professional,
            session: self.session.clone(),
            card_session: self.card_session,
        }
    }

    fn access(&self) -> Result<&crate::access::BreakGlass, ApiError> {
        self.state.access().ok_or_else(unavailable)
    }

    /// Whether the session this request acts for is still the desk's: the card may have
    /// been pulled while the record service was answering.
    pub(super) fn still_open(&self) -> bool {
        self.state
            .cards()
            .and_then(|c| c.sessions.token_hash(&self.desk.id))
            .is_some_and(|current| current == self.session)
    }

    /// `delivered`, unless the session ended meanwhile: then its grant ends on the record
    /// and nothing is released.
    async fn release(
        &self,
        access: &crate::access::BreakGlass,
        delivered: Delivered,
    ) -> Result<Delivered, ApiError> {
        if self.still_open() {
            return Ok(delivered);
        }
        Err(ended_before_release(access, self, &delivered.grant.id).await)
    }
}

/// Starts a break-glass (or Centre 15) access: justification, limits, durable record,
/// then the summary and a grant.
#[utoipa::path(post, path = "/api/v1/break-glass", tag = "access", security(("workstationCertificate" = [], "sessionCookie" = [], "csrfHeader" = []), ("workstationCertificate" = [], "sessionBearer" = [])), request_body = BreakGlassRequest,
    responses((status = 201, description = "Summary released under a new grant", body = Delivered),
              (status = 400, description = "Invalid INS, call id or reason", body = ApiError),
              (status = 401, description = "No open session at this desk", body = ApiError),
              (status = 403, description = "Patient opposed this mode, or blocked this professional", body = ApiError),
              (status = 404, description = "No record for this patient", body = ApiError),
              (status = 410, description = "Record closed", body = ApiError),
              (status = 429, description = "Rate limit (Retry-After)", body = ApiError),
              (status = 503, description = "Record service unavailable and no usable copy, or access not recordable", body = ApiError),
              (status = 504, description = "Record service timed out and no usable copy", body = ApiError)))]
pub(super) async fn break_glass(
    acting: Acting,
    JsonBody(request): JsonBody<BreakGlassRequest>,
) -> Response {
    let result = match acting.access() {
        Ok(access) => {
            let still_open = || acting.still_open();
            match access.start(&acting.who(), request, &still_open).await {
                // Checked again once recorded: the card may have left in between.
                Ok(delivered) => acting.release(access, delivered).await,
                Err(e) => Err(refusal(e)),
            }
        }
        Err(e) => Err(e),
    };
    no_store(result.map(|d| released(StatusCode::CREATED, &d)))
}

/// Re-reads the summary of a grant (same desk and session), recorded like the first read.
#[utoipa::path(get, path = "/api/v1/grants/{grant_id}/summary", tag = "access", security(("workstationCertificate" = [], "sessionCookie" = []), ("workstationCertificate" = [], "sessionBearer" = [])),
    params(("grant_id" = String, Path, description = "The grant's random id")),
    responses((status = 200, description = "The summary", body = Delivered),
              (status = 401, description = "No open session at this desk", body = ApiError),
              (status = 404, description = "No such grant for this session (ended or never existed)", body = ApiError),
              (status = 429, description = "Rate limit (Retry-After)", body = ApiError),
              (status = 503, description = "Record service unavailable and no usable copy", body = ApiError)))]
pub(super) async fn reread(acting: Acting, Segment(grant_id): Segment<String>) -> Response {
    let result = match acting.access() {
        Ok(access) => match access
            .reread(&acting.who(), &grant_id, &|| acting.still_open())
            .await
        {
            Ok(delivered) => acting.release(access, delivered).await,
            Err(e) => Err(refusal(e)),
        },
        Err(e) => Err(e),
    };
    no_store(result.map(|d| released(StatusCode::OK, &d)))
}

/// What the browser's own PDF viewer needs of the PDF's answer, and nothing more: the
/// document itself as plugin data and the viewer wrapper's inline styles; no script, no
/// other origin, no framing. The application's pages keep their own, stricter policy.
const PDF_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; object-src 'self'; \
     style-src 'unsafe-inline'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The PDF of an unstructured document released under a grant, opened in the browser's
/// own viewer; recorded as a read of the record before it leaves.
#[utoipa::path(get, path = "/api/v1/grants/{grant_id}/document", tag = "access", security(("workstationCertificate" = [], "sessionCookie" = []), ("workstationCertificate" = [], "sessionBearer" = [])),
    params(("grant_id" = String, Path, description = "The grant's random id")),
    responses((status = 200, description = "The document's PDF", content_type = "application/pdf", body = Vec<u8>),
              (status = 401, description = "No open session at this desk", body = ApiError),
              (status = 404, description = "No such grant for this session, or its document has no PDF", body = ApiError),
              (status = 429, description = "Rate limit (Retry-After)", body = ApiError),
              (status = 503, description = "Record service unavailable and no usable copy", body = ApiError)))]
pub(super) async fn document(acting: Acting, Segment(grant_id): Segment<String>) -> Response {
    let result = match acting.access() {
        Ok(access) => match access
            .document(&acting.who(), &grant_id, &|| acting.still_open())
            .await
        {
            Ok(_) if !acting.still_open() => {
                Err(ended_before_release(access, &acting, &grant_id).await)
            }
            Ok(pdf) => Ok(pdf),
            Err(e) => Err(refusal(e)),
        },
        Err(e) => Err(e),
    };
    no_store(result.map(pdf_response))
}

/// A document the grant's summary listed, read from the record service now (the
/// national record holds several per patient): its sections, or its text, like a summary;
/// recorded as a read naming the document before it leaves.
#[utoipa::path(get, path = "/api/v1/grants/{grant_id}/documents/{unique_id}", tag = "access", security(("workstationCertificate" = [], "sessionCookie" = []), ("workstationCertificate" = [], "sessionBearer" = [])),
    params(("grant_id" = String, Path, description = "The grant's random id"),
           ("unique_id" = String, Path, description = "The document's unique id, as the summary listed it")),
    responses((status = 200, description = "The document, read as a summary", body = Delivered),
              (status = 400, description = "Not a document unique id", body = ApiError),
              (status = 401, description = "No open session at this desk", body = ApiError),
              (status = 404, description = "No such grant for this session, or the document is not listed for this patient", body = ApiError),
              (status = 429, description = "Rate limit (Retry-After)", body = ApiError),
              (status = 503, description = "Record service unavailable", body = ApiError)))]
pub(super) async fn listed_document(
    acting: Acting,
    Segment((grant_id, unique_id)): Segment<(String, String)>,
) -> Response {
    let result = match acting.access() {
        Ok(access) => match access
            .listed_document(&acting.who(), &grant_id, &unique_id, &|| {
                acting.still_open()
            })
            .await
        {
            Ok(delivered) => acting.release(access, delivered).await,
            Err(e) => Err(refusal(e)),
        },
        Err(e) => Err(e),
    };
    no_store(result.map(|d| released(StatusCode::OK, &d)))
}

/// The PDF of a listed document, in the browser's own viewer; recorded as a read before
/// it leaves.
#[utoipa::path(get, path = "/api/v1/grants/{grant_id}/documents/{unique_id}/pdf", tag = "access", security(("workstationCertificate" = [], "sessionCookie" = []), ("workstationCertificate" = [], "sessionBearer" = [])),
    params(("grant_id" = String, Path, description = "The grant's random id"),
           ("unique_id" = String, Path, description = "The document's unique id, as the summary listed it")),
    responses((status = 200, description = "The document's PDF", content_type = "application/pdf", body = Vec<u8>),
              (status = 400, description = "Not a document unique id", body = ApiError),
              (status = 401, description = "No open session at this desk", body = ApiError),
              (status = 404, description = "No such grant, the document is not listed, or it has no PDF", body = ApiError),
              (status = 429, description = "Rate limit (Retry-After)", body = ApiError),
              (status = 503, description = "Record service unavailable", body = ApiError)))]
pub(super) async fn listed_document_pdf(
    acting: Acting,
    Segment((grant_id, unique_id)): Segment<(String, String)>,
) -> Response {
    let result = match acting.access() {
        Ok(access) => match access
            .listed_document_pdf(&acting.who(), &grant_id, &unique_id, &|| {
                acting.still_open()
            })
            .await
        {
            Ok(_) if !acting.still_open() => {
                Err(ended_before_release(access, &acting, &grant_id).await)
            }
            Ok(pdf) => Ok(pdf),
            Err(e) => Err(refusal(e)),
        },
        Err(e) => Err(e),
    };
    no_store(result.map(pdf_response))
}

/// The grant of a session that ended while its data was being read ends too; nothing
/// is released.
async fn ended_before_release(
    access: &crate::access::BreakGlass,
    acting: &Acting,
    grant_id: &str,
) -> ApiError {
    let ended = access
        .end_for(&acting.who(), grant_id, "session_ended_before_release")
        .await;
    if let Err(e) = ended {
        tracing::info!(error = %e, "grant already ended with the session");
    }
    no_session()
}

/// A PDF for the browser's own viewer, under its own policy.
fn pdf_response(pdf: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/pdf"),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"document.pdf\"",
            ),
            (header::CONTENT_SECURITY_POLICY, PDF_CONTENT_SECURITY_POLICY),
        ],
        pdf,
    )
        .into_response()
}

/// Ends a grant now (recorded as "break-glass stopped").
#[utoipa::path(delete, path = "/api/v1/grants/{grant_id}", tag = "access", security(("workstationCertificate" = [], "sessionCookie" = [], "csrfHeader" = []), ("workstationCertificate" = [], "sessionBearer" = [])),
    params(("grant_id" = String, Path, description = "The grant's random id")),
    responses((status = 204, description = "Grant ended"),
              (status = 404, description = "No such grant for this session", body = ApiError)))]
pub(super) async fn close(acting: Acting, Segment(grant_id): Segment<String>) -> Response {
    let result = match acting.access() {
        Ok(access) => access
            .close(&acting.who(), &grant_id)
            .await
            .map_err(refusal),
        Err(e) => Err(e),
    };
    no_store(result.map(|()| StatusCode::NO_CONTENT.into_response()))
}

/// Searches the record service by INS or identity traits (in the body, never the URL).
#[utoipa::path(post, path = "/api/v1/patients/search", tag = "access", security(("workstationCertificate" = [], "sessionCookie" = [], "csrfHeader" = []), ("workstationCertificate" = [], "sessionBearer" = [])), operation_id = "search_patients", request_body = PatientSearchRequest,
    responses((status = 200, description = "Candidates to choose from", body = PatientSearchAnswer),
              (status = 400, description = "Invalid INS or traits", body = ApiError),
              (status = 401, description = "No open session at this desk", body = ApiError),
              (status = 422, description = "The record service answered a search by traits only in part (`too_many_candidates`): narrow it", body = ApiError),
              (status = 429, description = "Search rate limit (Retry-After)", body = ApiError),
              (status = 503, description = "Record service unavailable", body = ApiError)))]
pub(super) async fn search(
    acting: Acting,
    JsonBody(request): JsonBody<PatientSearchRequest>,
) -> Response {
    let still_open = || acting.still_open();
    let result = match acting.access() {
        Ok(access) => access
            .search(&acting.who(), request, &still_open)
            .await
            .map_err(refusal),
        Err(e) => Err(e),
    };
    // Candidates identify patients: none leave once the card is gone (checked when the
    // answer came, on the record, and again now).
    let result = result.and_then(|c| match c {
        Some(c) if acting.still_open() => Ok(c),
        _ => Err(no_session()),
    });
    no_store(result.map(|candidates| Json(PatientSearchAnswer { candidates }).into_response()))
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "access_unavailable",
        "patient access needs [upstream] and [cards] configured",
        "Accès aux dossiers non configuré sur cette passerelle. Contactez l'informatique du centre.",
    )
}

/// A released summary's answer: its JSON written by `Delivered::to_json`, which splices in
/// a copy this run sealed without reading it again.
fn released(status: StatusCode, delivered: &Delivered) -> Response {
    match delivered.to_json() {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        // For centre IT: serde's message names a type or field, never a value.
        Err(e) => {
            tracing::error!(error = %e, "cannot write a released summary's answer");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the answer could not be written",
                "La réponse n'a pas pu être écrite ; réessayez.",
            )
            .into_response()
        }
    }
}

fn no_store(result: Result<Response, ApiError>) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn refusal(e: AccessError) -> ApiError {
    match e {
        AccessError::Invalid {
            field,
            reason,
            message_fr,
        } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("{field}: {reason}"),
            message_fr,
        ),
        AccessError::Patient(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_patient",
            e.to_string(),
            e.message_fr(),
        ),
        AccessError::Limited(limited) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            limited.to_string(),
            limited.message_fr(),
        )
        .with_retry_after(limited.retry_after.as_secs()),
        AccessError::Upstream(e) => upstream_refusal(&e),
        AccessError::Audit(_) => audit_unavailable(),
        AccessError::Unavailable(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "random_unavailable",
            e.to_string(),
            "La passerelle est indisponible (générateur aléatoire). Prévenez l'informatique du centre.",
        ),
        AccessError::NoDocument => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_document",
            "the document of this grant has no PDF to open",
            "Ce document n'a pas de fichier PDF à ouvrir.",
        ),
        AccessError::SessionEnded => no_session(),
        AccessError::NoGrant => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_grant",
            "no such grant for this desk and session (it ended, or never existed)",
            "Cet accès est terminé. Pour consulter à nouveau, refaites une demande justifiée.",
        ),
    }
}

fn upstream_refusal(e: &UpstreamError) -> ApiError {
    let answer = e.answer();
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    ApiError::new(status, answer.code, e.to_string(), answer.message_fr)
}
