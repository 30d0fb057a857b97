//! The extractors of request bodies, path segments and query strings, with one refusal
//! type: `ApiError`, French for the page, and never the value that was sent. Axum's own
//! rejections quote what they could not parse (an INS typed as a number came back in the
//! error); these name only what was wrong.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON request body (`Content-Type: application/json`).
pub(super) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(body_refusal(&rejection)),
        }
    }
}

fn body_refusal(rejection: &JsonRejection) -> ApiError {
    let (status, error, message) = match rejection {
        JsonRejection::MissingJsonContentType(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_required",
            "the body must be sent as application/json",
        ),
        JsonRejection::JsonSyntaxError(_) => (
            StatusCode::BAD_REQUEST,
            "body_not_json",
            "the body is not valid JSON",
        ),
        JsonRejection::JsonDataError(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "body_invalid",
            "the body's fields are missing, unknown or of the wrong type for this route",
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            "the request body could not be read",
        ),
    };
    ApiError::new(
        status,
        error,
        message,
        "Requête invalide : la page n'a pas envoyé ce que le serveur attend. Rechargez la page.",
    )
}

/// Path segments.
pub(super) struct Segment<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segment<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(segment_refusal(&rejection)),
        }
    }
}

fn segment_refusal(_rejection: &PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "path_invalid",
        "a path segment is not of the expected form",
        "Adresse invalide.",
    )
}

/// Query string parameters.
pub(super) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_refusal(&rejection)),
        }
    }
}

fn query_refusal(_rejection: &QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "query_invalid",
        "a query parameter is missing or not of the expected form",
        "Paramètres invalides.",
    )
}
