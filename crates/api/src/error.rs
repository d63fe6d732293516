//! Error answers in Sentry's shape: `{"detail": "…"}` with Sentry's status codes and texts.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sluice_core::storage::DbError;

/// Why a request was not answered with its resource.
#[derive(Debug)]
pub enum ApiError {
    /// No credentials (401).
    Unauthenticated,
    /// Credentials that match no live token (401).
    InvalidToken,
    /// Not there, or not this token's organization's (404, as Sentry answers both).
    NotFound,
    /// A request the API cannot take, with the reason (400).
    BadRequest(String),
    /// The database cannot be reached (503).
    Unavailable(String),
    /// Anything else (500).
    Internal(String),
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if matches!(e, DbError::Unavailable(_)) {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::from(DbError::Query(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "Authentication credentials were not provided.".to_owned(),
            ),
            ApiError::InvalidToken => (StatusCode::UNAUTHORIZED, "Invalid token".to_owned()),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "The requested resource does not exist".to_owned(),
            ),
            ApiError::BadRequest(d) => (StatusCode::BAD_REQUEST, d),
            ApiError::Unavailable(d) => {
                tracing::warn!(error = %d, "database unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is unavailable; try again later.".to_owned(),
                )
            }
            ApiError::Internal(d) => {
                tracing::error!(error = %d, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Error".to_owned(),
                )
            }
        };
        (status, Json(json!({ "detail": detail }))).into_response()
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;
