//! Routes that exist only in builds with the `test-hooks` feature (never in a package):
//! the lifecycle tests need a request that stays in flight while SIGTERM arrives, and the
//! log hygiene test a handler that panics on patient text.

use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use serde::Deserialize;

use super::AppState;

#[derive(Deserialize)]
struct Delay {
    ms: u64,
}

async fn slow(Query(delay): Query<Delay>) -> String {
    tracing::debug!(ms = delay.ms, "test hook: slow request started");
    tokio::time::sleep(Duration::from_millis(delay.ms.min(30_000))).await;
    format!("slept {} ms", delay.ms)
}

/// Panics with the text it is given, as a bug on a document's text would.
async fn panic(Query(text): Query<Text>) -> String {
    let quoted = text.text;
    panic!("test hook: {quoted}")
}

#[derive(Deserialize)]
struct Text {
    text: String,
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/test-hooks/slow", get(slow))
        .route("/test-hooks/panic", get(panic))
}
