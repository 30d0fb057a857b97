//! Faults the dev upstream can inject into its FHIR answers (`PUT /_dev/fault`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Bytes, Frame};
use serde::{Deserialize, Serialize};

/// One fault, applied to every FHIR answer until replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Wait this long, then answer normally.
    Latency {
        /// Milliseconds.
        ms: u64,
    },
    /// Answer this HTTP status (with an OperationOutcome).
    Status {
        /// e.g. 500, 502, 503.
        status: u16,
    },
    /// Never answer (the client's deadline must end the wait).
    Timeout,
    /// Announce a full body, send half, drop the connection.
    Truncated,
    /// A 200 in `text/html`.
    WrongContentType,
    /// A body of this many bytes, sent without a length.
    Oversize {
        /// Bytes.
        bytes: u64,
    },
    /// A 200 whose body is not JSON.
    Garbage,
}

/// The faulty answer to send instead of the real one, if the current fault replaces it.
pub(super) async fn apply(current: &Mutex<Fault>) -> Option<Response> {
    let fault = current.lock().map(|f| *f).unwrap_or_default();
    let fhir = |status: StatusCode, body: Body| {
        (
            status,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            body,
        )
            .into_response()
    };
    match fault {
        Fault::None => None,
        Fault::Latency { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            None
        }
        Fault::Status { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let outcome =
                crate::upstream::outcome::operation_outcome("transient", None, "injected");
            Some(fhir(status, Body::from(outcome.to_string())))
        }
        Fault::Timeout => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
        Fault::Truncated => {
            let half = Bytes::from(vec![b' '; 4096]);
            let mut response = fhir(
                StatusCode::OK,
                Body::new(Chunks {
                    chunks: vec![half],
                    then_fail: Some(Box::pin(tokio::time::sleep(Duration::from_millis(50)))),
                }),
            );
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, header::HeaderValue::from(8192u32));
            Some(response)
        }
        Fault::WrongContentType => Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>maintenance</body></html>",
            )
                .into_response(),
        ),
        Fault::Oversize { bytes } => {
            let chunk = 1024 * 1024;
            let count = bytes.div_ceil(chunk);
            let chunks = (0..count)
                .map(|_| Bytes::from(vec![b' '; chunk as usize]))
                .collect();
            Some(fhir(
                StatusCode::OK,
                Body::new(Chunks {
                    chunks,
                    then_fail: None,
                }),
            ))
        }
        Fault::Garbage => Some(fhir(StatusCode::OK, Body::from("{\"resourceType\": \"Bun"))),
    }
}

/// A body sent in chunks, optionally failing a moment after the last one (so that the
/// headers and the data are on the wire first, as when a server dies mid-answer).
struct Chunks {
    chunks: Vec<Bytes>,
    then_fail: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !self.chunks.is_empty() {
            let chunk = self.chunks.remove(0);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match self.then_fail.as_mut() {
            None => Poll::Ready(None),
            Some(pause) => match pause.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    self.then_fail = None;
                    Poll::Ready(Some(Err(std::io::Error::other("injected truncation"))))
                }
            },
        }
    }
}
