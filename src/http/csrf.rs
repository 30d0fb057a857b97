//! CSRF protection for the pages: a browser's state-changing request must carry the
//! `x-csrf-token` header, an HMAC (per-process key) of the caller's identity that only a
//! page of this origin can read (`GET /api/v1/csrf-token`; no CORS headers are ever sent).
//!
//! A browser is recognised by what every current browser sends on a POST, PUT or DELETE,
//! same-origin or not: `Origin` or `Sec-Fetch-Site`. Such a request without the token, or
//! marked `Sec-Fetch-Site: cross-site`, is refused. Other clients (the regulation software,
//! curl) send neither and keep working with their client certificate; the session cookie
//! is `SameSite=Strict` on top.
//!
//! Reads of the API are refused too when the browser says another site asked
//! (`Sec-Fetch-Site: cross-site` or `same-site`): a client certificate is presented to
//! whatever page makes the browser ask, and some reads are recorded (a compliance officer
//! reading an access's trail, the pending list or the report is `audit_log_used`), so an
//! `<img>` on any page the officer opens would write forged evidence into the trail and
//! start whole-trail reads. The pages and assets themselves stay reachable (a link from
//! the intranet opens the page).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::hmac;

use super::AppState;
use super::error::ApiError;
use super::identity::Peer;
use crate::encoding::{decode_hex, hex};

/// Request header carrying the token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// The per-process token key.
pub(crate) struct Csrf {
    /// `None` when the system random generator failed: then no token verifies (browsers
    /// cannot change anything; other clients are unaffected).
    key: Option<hmac::Key>,
}

impl Csrf {
    /// A fresh random key.
    pub(crate) fn new() -> Self {
        let mut bytes = [0u8; 32];
        let key = match crate::random::fill(&mut bytes) {
            Ok(()) => Some(hmac::Key::new(hmac::HMAC_SHA256, &bytes)),
            Err(_) => {
                tracing::error!("system random generator failed: browser pages cannot act");
                None
            }
        };
        Self { key }
    }

    /// The token of `peer`.
    pub(crate) fn token(&self, peer: Option<&Peer>) -> String {
        self.key.as_ref().map_or_else(String::new, |key| {
            hex(hmac::sign(key, binding(peer).as_bytes()).as_ref())
        })
    }

    /// Whether `token` is `peer`'s (constant time).
    pub(crate) fn verify(&self, peer: Option<&Peer>, token: &str) -> bool {
        let (Some(key), Some(tag)) = (&self.key, decode_hex(token)) else {
            return false;
        };
        hmac::verify(key, binding(peer).as_bytes(), &tag).is_ok()
    }
}

impl Default for Csrf {
    fn default() -> Self {
        Self::new()
    }
}

/// What a token is bound to: the desk and workstation, or the certificate.
fn binding(peer: Option<&Peer>) -> String {
    match peer {
        Some(Peer::Desk(desk, ws)) => format!("desk\0{}\0{}", desk.id, ws.sha256),
        Some(Peer::Unmapped(ws)) => {
            format!("cert\0{}\0{}", ws.cn.as_deref().unwrap_or(""), ws.sha256)
        }
        Some(Peer::Anonymous) | None => "anonymous".into(),
    }
}

/// Whether the request comes from a browser (see the module documentation).
fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site")
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the browser says a page of another origin made this request.
fn from_another_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| matches!(v.as_bytes(), b"cross-site" | b"same-site"))
}

/// Middleware: refuses a browser's state-changing request without the caller's token.
pub(crate) async fn protect(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if request.uri().path().starts_with("/api/") && from_another_site(headers) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_refused",
            "the API answers no request another site's page made",
            "Action refusée : rechargez la page de la passerelle elle-même et recommencez.",
        )
        .into_response();
    }
    if changes_state(request.method()) && from_browser(headers) {
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
        let token = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let peer = request.extensions().get::<Peer>();
        if cross_site || !state.csrf().verify(peer, token) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_refused",
                "a browser's state-changing request needs this page's x-csrf-token header",
                "Action refusée : rechargez la page et recommencez.",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// The caller's token, for the pages.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct TokenAnswer {
    /// Send it as the `x-csrf-token` header of every POST, PUT and DELETE.
    pub token: String,
}

/// The CSRF token of the calling certificate (or desk).
#[utoipa::path(get, path = "/api/v1/csrf-token", tag = "web",
    responses((status = 200, description = "The token", body = TokenAnswer)))]
pub(crate) async fn token(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> axum::Json<TokenAnswer> {
    let peer = request.extensions().get::<Peer>();
    axum::Json(TokenAnswer {
        token: state.csrf().token(peer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::identity::Workstation;

    fn unmapped(cn: &str, sha: &str) -> Peer {
        Peer::Unmapped(Workstation {
            cn: Some(cn.into()),
            sha256: sha.into(),
            demo_loopback: false,
            role: None,
        })
    }

    #[test]
    fn a_token_verifies_for_its_own_caller_only() {
        let csrf = Csrf::new();
        let a = unmapped("poste-a", "aa");
        let b = unmapped("poste-b", "bb");
        let token = csrf.token(Some(&a));
        assert_eq!(token.len(), 64);
        assert!(csrf.verify(Some(&a), &token));
        assert!(!csrf.verify(Some(&b), &token));
        assert!(!csrf.verify(None, &token));
        assert!(!csrf.verify(Some(&a), ""));
        assert!(!csrf.verify(Some(&a), "zz"));
        assert!(!csrf.verify(Some(&a), &token[..63]));
        // Another process (restart) has another key.
        assert!(!Csrf::new().verify(Some(&a), &token));
    }
}
