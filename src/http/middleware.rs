//! Per-request observation: a request id (returned as `x-request-id`), a tracing span that
//! carries it, one access log line, and the metrics. Only the matched route template is
//! logged, never the raw path or query, so nothing a client puts in a URL reaches a log.
//! Answers without their own `Cache-Control` get `no-store`: whatever carries an INS or a
//! summary must not be kept by a browser or a proxy, and a route that forgot is covered.
//! Every answer carries the pages' Content-Security-Policy (no inline script or style, no
//! framing), `nosniff`, `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`.
//!
//! [`bounded_body`] reads request bodies whole, small and in time, and only for callers
//! holding a workstation-CA certificate: an anonymous peer's body is never read (every
//! route taking a body refuses anonymous callers from the request head).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::AppState;
use super::identity::Peer;
use super::metrics::RequestLabels;

/// Largest request body, but for the roster.
pub(super) const MAX_BODY: usize = 16 * 1024;
/// Largest roster (`PUT /api/v1/roster`): a centre's shifts for weeks.
pub(super) const MAX_ROSTER_BODY: usize = 256 * 1024;
/// Largest case (`POST /api/v1/desks/{desk}/case`): a many-victim case with notes.
pub(super) const MAX_CASE_BODY: usize = crate::case::hub::MAX_MESSAGE_BYTES;
/// A request body must have arrived whole within this.
pub(super) const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// The one API path that answers `HEAD` for itself: the one-use download link, whose
/// handler tells a look from a fetch (`compliance_routes::download`).
const HEAD_ANSWERED_BY: &str = "/api/v1/compliance/downloads/";

/// Refuses `HEAD` on the API (405), but where the handler tells it apart. Axum answers a
/// `HEAD` with the `GET` handler and drops the body: on a patient read (a grant's summary
/// again, a document, its PDF) or a case's first showing, the handler would record a
/// release nobody saw, and spend a step of the limits; on a compliance read, record a
/// read that showed nothing.
pub(super) async fn refuse_head(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if request.method() == Method::HEAD
        && path.starts_with("/api/")
        && !path.starts_with(HEAD_ANSWERED_BY)
    {
        return super::routes::method_not_allowed().await.into_response();
    }
    next.run(request).await
}

/// Buffers a certificate holder's request body under [`MAX_BODY`] (or, for the
/// integration's roster and cases, [`MAX_ROSTER_BODY`], [`MAX_CASE_BODY`]) and
/// [`BODY_DEADLINE`], refusing it with 413 or 408 otherwise;
/// passes an anonymous caller's request on unread (its route refuses it from the head).
pub(super) async fn bounded_body(request: Request, next: Next) -> Response {
    use http_body_util::BodyExt;
    let peer = request.extensions().get::<Peer>();
    let anonymous = matches!(peer, Some(Peer::Anonymous) | None);
    // Only the regulation software sends rosters and cases: anyone else's body on those
    // routes is refused from the head anyway, and is not buffered at their size first.
    let integration = matches!(
        peer,
        Some(Peer::Unmapped(w)) if w.role == Some(super::identity::Role::Integration)
    );
    if anonymous || hyper::body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let limit = if integration && path == "/api/v1/roster" {
        MAX_ROSTER_BODY
    } else if integration && path.starts_with("/api/v1/desks/") && path.ends_with("/case") {
        MAX_CASE_BODY
    } else {
        MAX_BODY
    };
    let read = http_body_util::Limited::new(body, limit).collect();
    let bytes = match tokio::time::timeout(BODY_DEADLINE, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return super::ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body over {limit} bytes"),
                "Requête trop volumineuse.",
            )
            .into_response();
        }
        Ok(Err(_)) => {
            return super::ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "body_unreadable",
                "the request body could not be read",
                "Requête illisible.",
            )
            .into_response();
        }
        Err(_) => {
            return super::ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_DEADLINE.as_secs()
                ),
                "Requête trop lente : recommencez.",
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Response header carrying the request id.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// Requests running at most, their clients there or not (the connection limits bound the
/// ones whose clients wait; this bounds the ones left running after a hang-up).
const MAX_REQUESTS_RUNNING: usize = 2048;

/// The requests running ([`run_to_completion`]), for the stop to wait for.
#[derive(Default)]
pub(crate) struct InFlight(Arc<InFlightCount>);

#[derive(Default)]
struct InFlightCount {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One running request; counted until dropped.
pub(crate) struct Running(Arc<InFlightCount>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Counts one more request, unless [`MAX_REQUESTS_RUNNING`] already run.
    fn enter(&self) -> Option<Running> {
        let admitted = self
            .0
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_REQUESTS_RUNNING).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| Running(self.0.clone()))
    }

    /// Waits until no request runs, at most `within`; whether none does.
    pub(crate) async fn settled(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = self.0.idle.notified();
            if self.0.running.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.0.running.load(Ordering::Acquire) == 0;
            }
        }
    }
}

/// Runs the rest of the request on its own task, so that a client hanging up (an HTTP/2
/// stream reset, a connection closed mid-request) cannot cancel it halfway: a PIN the
/// card was sent, a record service that was asked, are always followed by their audit
/// record and their bookkeeping (tries left, the card session's end). The answer is
/// dropped if nobody is left to read it. A handler that panics gets a 500, not a torn
/// connection.
pub(super) async fn run_to_completion(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    // Answers made here never went through `observe` (refused before it, or its future
    // died with the handler): counted and given the same headers, so that a 5xx rate
    // alert sees them and a browser gets no sniffable, cacheable page.
    let started = Instant::now();
    let method = method_label(request.method());
    let answered_here = |mut response: Response| {
        state.metrics().observe_request(
            RequestLabels {
                route: "(before routing)".to_owned(),
                method,
                status: response.status().as_u16(),
            },
            started.elapsed(),
        );
        secure(response.headers_mut());
        response
    };
    // Counted, so that a stop waits for the ones whose clients left (the drain no longer
    // sees them) before it closes the audit log; and bounded, since a reset stream no
    // longer holds one of its connection's stream slots.
    let Some(running) = state.requests().enter() else {
        return answered_here(
            super::ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests are running",
                "La passerelle est surchargée : réessayez dans un instant.",
            )
            .with_retry_after(1)
            .into_response(),
        );
    };
    let run = async move {
        let response = next.run(request).await;
        drop(running);
        response
    };
    match tokio::spawn(run).await {
        Ok(response) => response,
        Err(e) => {
            let how = if e.is_panic() {
                "panicked"
            } else {
                "was cancelled"
            };
            tracing::error!("a request handler {how}");
            answered_here(
                super::error::ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the request failed inside the gateway",
                    "La demande a échoué dans la passerelle ; réessayez. Si cela se reproduit, prévenez l'informatique du centre.",
                )
                .into_response(),
            )
        }
    }
}

/// Wraps every request (installed with `axum::middleware::from_fn_with_state`).
pub(super) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let Ok(request_id) = crate::random::hex_id::<16>() else {
        return super::error::ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "random_unavailable",
            "the system random generator failed",
            "La passerelle est indisponible (générateur aléatoire). Prévenez l'informatique du centre.",
        )
        .into_response();
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = method_label(request.method());
    let desk = match request.extensions().get::<Peer>() {
        Some(Peer::Desk(desk, _)) => desk.id.clone(),
        Some(Peer::Unmapped(_)) => "unmapped".to_owned(),
        _ => "-".to_owned(),
    };
    let span = tracing::info_span!("request", request_id = %request_id, method, route = %route, desk = %desk);
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_us = elapsed.as_micros() as u64,
            "request served"
        );
    });
    state.metrics().observe_request(
        RequestLabels {
            route,
            method,
            status,
        },
        elapsed,
    );
    secure(response.headers_mut());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The headers every answer carries: not stored, not framed, not sniffed, no referrer,
/// the pages' content security policy.
fn secure(headers: &mut axum::http::HeaderMap) {
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    // Only the grant's PDF sets its own (narrower in what it allows to run: nothing).
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            super::web::CONTENT_SECURITY_POLICY,
        ));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// Bounded label values: arbitrary methods must not create new metric series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod in_flight_tests {
    use super::*;

    /// The stop waits for running requests, up to its bound, and admission is capped.
    #[tokio::test]
    async fn a_stop_waits_for_the_requests_still_running() {
        let requests = InFlight::default();
        assert!(requests.settled(Duration::ZERO).await);
        let running = requests.enter().unwrap();
        assert!(!requests.settled(Duration::from_millis(50)).await);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(running);
        });
        assert!(requests.settled(Duration::from_secs(5)).await);
        let all: Vec<Running> = (0..MAX_REQUESTS_RUNNING)
            .map(|_| requests.enter().unwrap())
            .collect();
        assert!(requests.enter().is_none(), "capped");
        drop(all);
        assert!(requests.enter().is_some());
    }
}
