//! The pages the gateway serves itself: the physician's screen (`/`) and the compliance
//! view (`/conformite`). HTML, script and style are embedded in the binary (no CDN, no
//! external font or script) and served under a strict Content-Security-Policy: scripts and
//! styles from this origin only, nothing inline, no framing (set for every answer by
//! `middleware::observe`).
//!
//! The physician's page follows its desk over server-sent events
//! (`GET /api/v1/desk/events`): when the session ends (card pulled, logout, expiry) the
//! page removes every patient datum it shows. No patient datum is ever in a URL: accesses
//! are addressed by grant id, searches and filters travel in request bodies.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

use super::AppState;
use super::routes::CallingDesk;

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const COMMON_JS: &str = include_str!("web/common.js");
const APP_CSS: &str = include_str!("web/app.css");
const ICON_SVG: &str = include_str!("web/icon.svg");
const COMPLIANCE_HTML: &str = include_str!("web/compliance.html");
const COMPLIANCE_JS: &str = include_str!("web/compliance.js");

/// The Content-Security-Policy of every answer.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The physician's page.
#[utoipa::path(get, path = "/", tag = "web",
    responses((status = 200, description = "The physician's page (French)", content_type = "text/html")))]
pub(super) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The compliance view (for the compliance officers' certificates: the page's API calls
/// are refused to anyone else).
#[utoipa::path(get, path = "/conformite", tag = "web",
    responses((status = 200, description = "The compliance view (French)", content_type = "text/html")))]
pub(super) async fn compliance() -> Response {
    asset("text/html; charset=utf-8", COMPLIANCE_HTML)
}

/// The compliance view's script.
#[utoipa::path(get, path = "/assets/compliance.js", tag = "web",
    responses((status = 200, description = "Script", content_type = "text/javascript")))]
pub(super) async fn compliance_js() -> Response {
    asset("text/javascript; charset=utf-8", COMPLIANCE_JS)
}

/// The physician's page's script.
#[utoipa::path(get, path = "/assets/app.js", tag = "web",
    responses((status = 200, description = "Script", content_type = "text/javascript")))]
pub(super) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// What both pages' scripts share.
#[utoipa::path(get, path = "/assets/common.js", tag = "web",
    responses((status = 200, description = "Script", content_type = "text/javascript")))]
pub(super) async fn common_js() -> Response {
    asset("text/javascript; charset=utf-8", COMMON_JS)
}

/// The pages' style sheet.
#[utoipa::path(get, path = "/assets/app.css", tag = "web",
    responses((status = 200, description = "Style sheet", content_type = "text/css")))]
pub(super) async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// The pages' icon.
#[utoipa::path(get, path = "/assets/icon.svg", tag = "web",
    responses((status = 200, description = "Icon", content_type = "image/svg+xml")))]
pub(super) async fn icon() -> Response {
    asset("image/svg+xml", ICON_SVG)
}

/// What a desk's page needs to know at once.
#[derive(serde::Serialize)]
struct DeskSignal {
    /// Whether a session is open at the desk.
    session: bool,
    /// Which session (its number at this desk): changes coalesced between two events, a
    /// session ended and another opened, still show as a different number.
    epoch: Option<u64>,
    /// The card state (`no_card`, `present`, …).
    card: Option<&'static str>,
    /// The Hub id of the case the regulation software sent the desk, if any (an id, not
    /// who the patients are: the page asks for the case with its session).
    case: Option<String>,
    /// Which sending of that case (`CaseView::version`): a case sent again under the same
    /// id, corrected, is a change the page must pick up.
    case_version: Option<u64>,
}

/// The desk's changes as server-sent events (`event: desk`, data `{"session": bool,
/// "epoch": n, "card": state}`), the current state first; `event: beat` after 10 s without
/// a change ([`BEAT`]).
/// A page clears patient data when `session` is false or `epoch` is not the one it showed
/// data under.
#[utoipa::path(get, path = "/api/v1/desk/events", tag = "desk",
    responses((status = 200, description = "Server-sent events", content_type = "text/event-stream"),
              (status = 403, description = "No client certificate, or one not mapped to a desk")))]
pub(super) async fn desk_events(
    State(state): State<AppState>,
    caller: CallingDesk,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = state.cards().map(|c| c.sessions.subscribe());
    let cases = state.cases().subscribe();
    let desk = caller.desk.id.clone();
    let stream = futures_util::stream::unfold(
        (state, desk, changes, cases, true),
        |(state, desk, mut changes, mut cases, first)| async move {
            if !first {
                let changed = async {
                    match changes.as_mut() {
                        Some(rx) => rx.changed().await.ok(),
                        // No card login: nothing ever changes.
                        None => std::future::pending().await,
                    }
                };
                // Shutdown ends the stream (the page then hides patient data).
                tokio::select! {
                    changed = changed => changed?,
                    case = cases.changed() => case.ok()?,
                    () = state.draining() => return None,
                    () = tokio::time::sleep(BEAT) => {
                        let beat = Event::default().event("beat").data("1");
                        return Some((Ok(beat), (state, desk, changes, cases, false)));
                    }
                }
            }
            let signal = signal(&state, &desk);
            let event = Event::default()
                .event("desk")
                .json_data(signal)
                .unwrap_or_else(|_| Event::default().event("desk"));
            Some((Ok(event), (state, desk, changes, cases, false)))
        },
    );
    Sse::new(stream)
}

/// How often a quiet desk stream says it is alive: an event the page sees (a comment
/// would keep proxies from closing the stream, but scripts never see one). The page
/// takes a stream silent for 2.5 beats for a lost one (a gateway frozen or a link whose
/// state a firewall dropped, with no reset to say so) and hides patient data.
const BEAT: Duration = Duration::from_secs(10);

fn signal(state: &AppState, desk: &str) -> DeskSignal {
    let view = state.cards().and_then(|c| c.sessions.view(desk));
    let (case, case_version) = state.cases().case_id(desk).unzip();
    DeskSignal {
        session: view.as_ref().is_some_and(|(_, s)| s.is_some()),
        epoch: state.cards().and_then(|c| c.sessions.session_epoch(desk)),
        card: view.map(|(card, _)| card.name()),
        case,
        case_version,
    }
}
