//! Per-request observation: a request id (returned as `x-request-id`), a tracing span that
//! carries it, one access log line, and the metrics. Only the matched route template is
//! logged, never the raw path or query, so nothing a client puts in a URL reaches a log.
//! Answers without their own `Cache-Control` get `no-store`: whatever carries an INS or a
//! summary must not be kept by a browser or a proxy, and a route that forgot is covered.
//! Every answer carries the pages' Content-Security-Policy (no inline script or style, no
//! framing), `nosniff`, `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use ring::rand::{SecureRandom, SystemRandom};
use tracing::Instrument;

use super::AppState;
use super::identity::Peer;
use super::metrics::RequestLabels;
use crate::config::hex;

/// Response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps every request (installed with `axum::middleware::from_fn_with_state`).
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = new_request_id();
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
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(super::web::CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// 128 random bits as hex; an all-zero id only if the kernel RNG fails, which is logged
/// nowhere else and must not stop the request.
fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = SystemRandom::new().fill(&mut bytes);
    hex(&bytes)
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
