//! `/api/v1/session`: a physician logs in at a desk with the PIN of the card in its reader,
//! and logs out. The session token is returned as an `HttpOnly; Secure; SameSite=Strict`
//! cookie (and in the body for non-browser callers); it is only valid from the desk that
//! opened it.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Params};
use super::identity::Peer;
use super::routes::CallingDesk;
use crate::card::CardError;
use crate::card::profile::Pin;
use crate::card::worker::PinSource;
use crate::session::PinEntry;
use crate::session::{LoginError, Session};

/// Name of the session cookie.
pub(super) const SESSION_COOKIE: &str = "samu_session";

/// A login: the PIN typed at the desk, or nothing at a PIN-pad desk (the reader collects
/// the PIN on its keypad; the request then waits up to 30 s for the physician to type it).
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct LoginBody {
    /// The card's PIN (4 to 8 digits), at keyboard desks only. Never logged; this copy is
    /// wiped from memory after use (the request's raw bytes, read before parsing, are
    /// freed, not wiped).
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub pin: Option<zeroize::Zeroizing<String>>,
    /// The physician confirmed spending the card's last PIN try (the page asks when the
    /// card says one try is left); without it no PIN is sent to such a card.
    #[serde(default)]
    pub last_try_confirmed: bool,
}

/// Opens a session for the holder of the card in this desk's reader.
#[utoipa::path(post, path = "/api/v1/session", tag = "session", security(("workstationCertificate" = [], "csrfHeader" = []), ("workstationCertificate" = [])), request_body = LoginBody,
    responses((status = 201, description = "Session opened", body = Session),
              (status = 401, description = "Wrong PIN (tries left in the message)", body = ApiError),
              (status = 403, description = "Card not trusted, or workstation not a desk", body = ApiError),
              (status = 409, description = "No usable card in the desk's reader", body = ApiError),
              (status = 423, description = "Card blocked", body = ApiError),
              (status = 429, description = "Too many attempts at this desk", body = ApiError),
              (status = 400, description = "PIN missing, malformed, or sent from a PIN-pad desk", body = ApiError),
              (status = 408, description = "PIN not typed on the reader in time, or cancelled", body = ApiError),
              (status = 503, description = "Card login unavailable, or the desk's reader has no PIN pad", body = ApiError)))]
pub(super) async fn open_session(
    State(state): State<AppState>,
    caller: CallingDesk,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> Response {
    let Some(cards) = state.cards() else {
        return unavailable().into_response();
    };
    let confirmed = body.last_try_confirmed;
    let pin = match pin_source(caller.desk.pin_entry, body) {
        Ok(pin) => pin,
        Err(refusal) => return refusal.into_response(),
    };
    match cards.login(&caller.desk.id, pin, confirmed).await {
        Ok(session) => {
            let cookie = format!(
                "{SESSION_COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/",
                session.token
            );
            // A browser has the cookie, which its page's script cannot read; the token in
            // the body is for other clients (the same rule as the CSRF check's).
            let browser =
                headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site");
            let answer = SessionAnswer {
                token: (!browser).then(|| session.token.clone()),
                session: session.clone(),
            };
            let mut response = (StatusCode::CREATED, Json(answer)).into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(e) => login_error(e).into_response(),
    }
}

/// Where this desk's PIN comes from; the body's PIN is dropped (zeroized) either way.
fn pin_source(entry: PinEntry, body: LoginBody) -> Result<PinSource, ApiError> {
    match (entry, body.pin) {
        (PinEntry::Keyboard, Some(typed)) => Pin::new(&typed).map(PinSource::Typed).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "pin_format",
                "a PIN is 4 to 8 digits",
                "Le code est composé de 4 à 8 chiffres.",
            )
        }),
        (PinEntry::Keyboard, None) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "pin_missing",
            "this desk types the PIN at the workstation: send it in `pin`",
            "Saisissez votre code.",
        )),
        (PinEntry::Pinpad, None) => Ok(PinSource::PinPad),
        (PinEntry::Pinpad, Some(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "pin_on_reader",
            "this desk has a PIN-pad reader: the PIN is typed on the reader, never sent",
            "Ce poste a un lecteur à clavier : saisissez votre code sur le lecteur, pas à l'écran.",
        )),
    }
}

/// The session as answered to its desk: the token once, at login, and not to a browser
/// (its `HttpOnly` cookie carries it out of the page's script's reach).
#[derive(serde::Serialize, utoipa::ToSchema)]
struct SessionAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(flatten)]
    session: Session,
}

/// The session this desk's token opens.
#[utoipa::path(get, path = "/api/v1/session", tag = "session", security(("workstationCertificate" = [], "sessionCookie" = []), ("workstationCertificate" = [], "sessionBearer" = [])),
    responses((status = 200, description = "The open session", body = Session),
              (status = 401, description = "No session, or a token not from this desk", body = ApiError)))]
pub(super) async fn current_session(
    State(state): State<AppState>,
    caller: CallingDesk,
    headers: HeaderMap,
) -> Result<Json<Session>, ApiError> {
    let cards = state.cards().ok_or_else(unavailable)?;
    let token = token(&headers).ok_or_else(no_session)?;
    cards
        .sessions
        .authenticate(&caller.desk.id, &token)
        .map(Json)
        .ok_or_else(no_session)
}

/// Logs out.
#[utoipa::path(delete, path = "/api/v1/session", tag = "session", security(("workstationCertificate" = [], "sessionCookie" = [], "csrfHeader" = []), ("workstationCertificate" = [], "sessionBearer" = [])),
    responses((status = 204, description = "Session closed"),
              (status = 401, description = "No session, or a token not from this desk", body = ApiError)))]
pub(super) async fn close_session(
    State(state): State<AppState>,
    caller: CallingDesk,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cards = state.cards().ok_or_else(unavailable)?;
    let token = token(&headers).ok_or_else(no_session)?;
    cards
        .sessions
        .authenticate(&caller.desk.id, &token)
        .ok_or_else(no_session)?;
    // The session ends before its record is written (ending it is the safe side): when
    // the record fails, the session is over all the same, and saying "refused" would
    // send the physician back to a session that no longer exists. The failure is logged;
    // the trail's writer, unhealthy, has the service restarted.
    if let Err(e) = cards.sessions.end(&caller.desk.id, "logout").await {
        tracing::error!(error = %e, desk = %caller.desk.id, "a logout could not be recorded; the session is ended all the same");
    }
    // The browser forgets the cookie too (its session is over either way).
    let expired =
        format!("{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0");
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// How many shifts the roster now holds.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct RosterAnswer {
    /// Shifts accepted.
    pub shifts: usize,
}

/// The regulation software, by its integration certificate (`integration.cn`), with
/// the roster it may replace. Checked from the request head: a body is read only after.
pub(super) struct Integration {
    roster: std::sync::Arc<crate::session::roster::Roster>,
    cn: String,
}

impl FromRequestParts<AppState> for Integration {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<Peer>();
        let forbidden = || {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "roster_forbidden",
                "only the regulation software's integration certificate may replace the roster",
                "Seul le logiciel de régulation peut modifier le tableau de garde.",
            )
        };
        match peer {
            Some(Peer::Anonymous) | None => return Err(ApiError::certificate_required()),
            // A desk's workstation is never the integration (configtest sees to it).
            Some(Peer::Desk(..)) => return Err(forbidden()),
            Some(Peer::Unmapped(_)) => {}
        }
        // An unconfigured roster says so before who may replace it.
        let roster = state
            .cards()
            .and_then(|c| c.shared_roster())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "roster_unavailable",
                    "no roster is configured",
                    "Tableau de garde non configuré.",
                )
            })?;
        let cn = integration_cn(peer).ok_or_else(forbidden)?;
        Ok(Self { roster, cn })
    }
}

/// The CN of `peer` when it is the regulation software: the handshake gave it the
/// integration role only for `integration.cn` (and its pin when configured).
pub(super) fn integration_cn(peer: Option<&Peer>) -> Option<String> {
    match peer {
        Some(Peer::Unmapped(w)) if w.role == Some(super::Role::Integration) => w.cn.clone(),
        _ => None,
    }
}

/// How a roster replacement is to be taken.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct RosterQuery {
    /// Replace even when the new roster is empty or ends open desk sessions (a physician
    /// taken off duty on purpose); without it, such a roster is refused (409).
    force: Option<bool>,
}

/// Replaces the on-duty roster. Only the regulation software's integration certificate
/// (`integration.cn`) may call it. A roster that is empty, or that leaves a professional
/// with an open desk session without a shift now, is refused unless `force=true`: a
/// partial export (next week only, a time zone slip) would log every desk out mid-call.
#[utoipa::path(put, path = "/api/v1/roster", tag = "roster", request_body = crate::session::roster::RosterDocument,
    params(RosterQuery),
    responses((status = 200, description = "Roster replaced", body = RosterAnswer),
              (status = 400, description = "A shift is malformed; nothing changed", body = ApiError),
              (status = 403, description = "Not the integration certificate", body = ApiError),
              (status = 409, description = "Empty (`roster_empty`), or it would end open sessions (`roster_ends_sessions`); nothing changed (send `force=true` to replace all the same)", body = ApiError),
              (status = 503, description = "No roster configured", body = ApiError)))]
pub(super) async fn put_roster(
    State(state): State<AppState>,
    integration: Integration,
    Params(query): Params<RosterQuery>,
    JsonBody(document): JsonBody<crate::session::roster::RosterDocument>,
) -> Result<Json<RosterAnswer>, ApiError> {
    let Integration {
        roster,
        cn: integration_cn,
    } = integration;
    let checked = roster.check(&document).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "roster_invalid",
            e.to_string(),
            "Tableau de garde refusé : un créneau est invalide.",
        )
    })?;
    // One replacement at a time, recorded in the order they take effect.
    let turn = roster.turn().await;
    if query.force != Some(true) {
        let now_ms = crate::clock::now().1;
        let ending = state.cards().map_or(0, |cards| {
            cards
                .sessions
                .open_professionals()
                .iter()
                .filter(|id_nat| !roster.on_duty_under(&checked, id_nat, now_ms))
                .count()
        });
        let refusal = if checked.len() == 0 {
            Some((
                "roster_empty",
                "the roster holds no shift: nobody could log in".to_owned(),
                "Tableau de garde refusé : il ne contient aucun créneau. Renvoyer avec force=true pour l'appliquer.".to_owned(),
            ))
        } else if ending > 0 {
            Some((
                "roster_ends_sessions",
                format!(
                    "the roster leaves {ending} open session(s) without a shift now: they would end"
                ),
                format!(
                    "Tableau de garde refusé : il mettrait fin à {ending} session(s) ouverte(s). Renvoyer avec force=true pour l'appliquer."
                ),
            ))
        } else {
            None
        };
        if let Some((code, message, message_fr)) = refusal {
            let refused = crate::audit::Event::new(
                crate::audit::EventKind::ConfigurationLoaded,
                crate::audit::Outcome::Refused {
                    reason: code.into(),
                },
            )
            .with_detail(format!(
                "roster not replaced: {} shift(s) by {integration_cn}",
                checked.len()
            ));
            if let Err(e) = state.audit().append(refused).await {
                tracing::error!(error = %e, "cannot record a refused roster");
            }
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                code,
                message,
                message_fr,
            ));
        }
    }
    // On the record before it is in force: who may log in changes here, and which roster
    // it is (its digest).
    let event = crate::audit::Event::new(
        crate::audit::EventKind::ConfigurationLoaded,
        crate::audit::Outcome::Success,
    )
    .with_detail(format!(
        "roster replaced: {} shift(s) by {integration_cn}{} sha256:{}",
        checked.len(),
        if query.force == Some(true) {
            " (forced)"
        } else {
            ""
        },
        checked.sha256()
    ));
    let _recorded = state
        .audit()
        .append(event)
        .await
        .map_err(|_| audit_unavailable())?;
    // Files and fsyncs: off the async workers (the turn, kept to the end, holds the next
    // replacement back meanwhile).
    let saving = roster.clone();
    let (saved, _turn) =
        tokio::task::spawn_blocking(move || (saving.replace(&turn, checked), turn))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "roster_not_saved",
                    "the roster could not be saved; the previous one stays in force",
                    "Tableau de garde non enregistré : l'ancien reste en vigueur.",
                )
            })?;
    let shifts = match saved {
        Ok(shifts) => shifts,
        Err(e) => {
            tracing::error!(error = %e, "the roster could not be saved; the previous one stays in force");
            let failed = crate::audit::Event::new(
                crate::audit::EventKind::ConfigurationLoaded,
                crate::audit::Outcome::Failed {
                    reason: "roster_not_saved".into(),
                },
            );
            let _recorded = state.audit().append(failed).await;
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "roster_not_saved",
                "the roster could not be saved; the previous one stays in force",
                "Tableau de garde non enregistré : l'ancien reste en vigueur.",
            ));
        }
    };
    Ok(Json(RosterAnswer { shifts }))
}

/// The token from the session cookie or an `Authorization: Bearer` header.
pub(super) fn token(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                pair.trim()
                    .strip_prefix(&format!("{SESSION_COOKIE}="))
                    .map(str::to_owned)
            })
    })
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "card_login_unavailable",
        "card login is not configured on this gateway",
        "Connexion par carte indisponible sur cette passerelle.",
    )
}

pub(super) fn no_session() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "no_session",
        "no open session for this desk and token",
        "Aucune session ouverte : insérez votre carte et saisissez votre code.",
    )
}

pub(super) fn audit_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        "the access could not be recorded",
        "L'accès n'a pas pu être tracé : opération refusée. Réessayez.",
    )
}

fn login_error(e: LoginError) -> ApiError {
    use crate::session::LoginRefusal;
    match e {
        LoginError::RateLimited(wait) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!(
                "too many PIN attempts at this desk; retry in {} s",
                wait.as_secs() + 1
            ),
            format!(
                "Trop de tentatives sur ce poste. Réessayez dans {} secondes.",
                wait.as_secs() + 1
            ),
        )
        .with_retry_after(wait.as_secs() + 1),
        LoginError::Refused(LoginRefusal::NoCard) => ApiError::new(
            StatusCode::CONFLICT,
            "no_card",
            "no card in the desk's reader",
            "Insérez votre carte CPS dans le lecteur du poste.",
        ),
        LoginError::LastTryUnconfirmed => ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "last_try_unconfirmed",
            "the card has one PIN try left: the login must confirm spending it",
            "Dernier essai avant blocage de la carte : confirmez pour l'utiliser.",
        ),
        LoginError::Refused(LoginRefusal::SessionOpen) => ApiError::new(
            StatusCode::CONFLICT,
            "session_open",
            "a session is already open at this desk",
            "Une session est déjà ouverte sur ce poste : retirez d'abord la carte.",
        ),
        LoginError::Refused(LoginRefusal::LoginInProgress) => ApiError::new(
            StatusCode::CONFLICT,
            "login_in_progress",
            "another login is under way at this desk",
            "Une connexion est déjà en cours sur ce poste : attendez sa fin.",
        ),
        LoginError::Refused(LoginRefusal::CardRemoved) => ApiError::new(
            StatusCode::CONFLICT,
            "card_removed",
            "the card left the reader during the login",
            "La carte a été retirée pendant la connexion : réinsérez-la.",
        ),
        LoginError::Refused(LoginRefusal::ReaderUnavailable) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "reader_unavailable",
            "the card reader service is unavailable",
            "Lecteur de carte indisponible. Contactez l'informatique du centre.",
        ),
        LoginError::Refused(LoginRefusal::CardRefused(code)) => ApiError::new(
            StatusCode::FORBIDDEN,
            "card_not_trusted",
            format!("the card's certificate is not accepted ({code})"),
            "Carte non reconnue : son certificat n'est pas valide.",
        ),
        LoginError::Refused(LoginRefusal::PinBlocked) | LoginError::Card(CardError::PinBlocked) => {
            ApiError::new(
                StatusCode::LOCKED,
                "pin_blocked",
                "the card's PIN is blocked",
                CardError::PinBlocked.message_fr(),
            )
        }
        LoginError::Card(e @ (CardError::WrongPin { .. } | CardError::WrongPinTriesUnknown)) => {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong_pin",
                e.to_string(),
                e.message_fr(),
            )
        }
        // Not a fault of the card: the physician starts again with the one in the reader.
        LoginError::Card(e @ CardError::CardChanged) => ApiError::new(
            StatusCode::CONFLICT,
            "card_changed",
            e.to_string(),
            e.message_fr(),
        ),
        LoginError::Card(e @ CardError::SignatureMismatch) => ApiError::new(
            StatusCode::FORBIDDEN,
            "signature_mismatch",
            e.to_string(),
            e.message_fr(),
        ),
        LoginError::Card(e @ CardError::Module(_)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "card_module_failed",
            e.to_string(),
            e.message_fr(),
        ),
        LoginError::Card(e @ CardError::PinPadUnavailable(_)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "pin_pad_unavailable",
            e.to_string(),
            e.message_fr(),
        ),
        LoginError::Card(e @ (CardError::PinPadTimeout | CardError::PinPadCancelled)) => {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "pin_entry_not_completed",
                e.to_string(),
                e.message_fr(),
            )
        }
        LoginError::Card(e @ CardError::Unresponsive { .. }) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "card_unresponsive",
            e.to_string(),
            e.message_fr(),
        ),
        LoginError::Card(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "card_error",
            e.to_string(),
            e.message_fr(),
        ),
        LoginError::Trust(e) => ApiError::new(
            StatusCode::FORBIDDEN,
            "card_not_trusted",
            e.to_string(),
            e.message_fr(),
        ),
        LoginError::NotOnDuty => ApiError::new(
            StatusCode::FORBIDDEN,
            "not_on_duty",
            "the card holder is not on the duty roster now",
            "Vous n'êtes pas inscrit de garde à cette heure : connexion refusée. Contactez le médecin responsable de la régulation.",
        ),
        LoginError::ProfessionNotAllowed => ApiError::new(
            StatusCode::FORBIDDEN,
            "profession_not_allowed",
            "the card holder's profession may not log in at this gateway",
            "Votre profession (lue sur la carte) n'est pas autorisée à la régulation : connexion refusée.",
        ),
        LoginError::Audit(_) => audit_unavailable(),
        LoginError::Unavailable(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "random_unavailable",
            e.to_string(),
            "La passerelle est indisponible (générateur aléatoire). Prévenez l'informatique du centre.",
        ),
    }
}
