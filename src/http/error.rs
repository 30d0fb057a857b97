//! Refusals as the API returns them: a stable machine code, an English message for logs and
//! integrators, and a French message for the physician's screen.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A refused or failed API call. Messages never carry patient data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// Seconds before a retry can succeed (sent as `Retry-After`).
    #[serde(skip)]
    retry_after: Option<u64>,
    /// Stable machine-readable code, e.g. `workstation_not_mapped`.
    pub error: &'static str,
    /// English explanation (logs, integrators).
    pub message: String,
    /// French explanation for the physician's screen.
    pub message_fr: String,
}

impl ApiError {
    /// An error with the given status, code and messages.
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        message: impl Into<String>,
        message_fr: impl Into<String>,
    ) -> Self {
        Self {
            status,
            retry_after: None,
            error,
            message: message.into(),
            message_fr: message_fr.into(),
        }
    }

    /// 403: the connection carried no client certificate.
    pub(crate) fn certificate_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "client_certificate_required",
            "this endpoint requires a workstation client certificate",
            "Ce poste n'a pas présenté de certificat : accès refusé. Contactez l'informatique du centre.",
        )
    }

    /// 403: a valid workstation certificate that no desk accepts.
    pub(crate) fn workstation_not_mapped(cn: Option<&str>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "workstation_not_mapped",
            format!(
                "workstation certificate (CN {}) is not mapped to any desk of this centre",
                cn.unwrap_or("<none>")
            ),
            "Ce poste n'est rattaché à aucun pupitre de régulation : accès refusé. Contactez l'informatique du centre.",
        )
    }

    /// 404 for any path the API does not have.
    pub(crate) fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint",
            "Adresse inconnue.",
        )
    }
}

impl ApiError {
    /// The same refusal, telling the client when to retry.
    pub(crate) fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after;
        let mut response = (self.status, Json(self)).into_response();
        if let Some(seconds) = retry_after
            && let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}
