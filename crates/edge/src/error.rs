//! The answers the front door refuses a request with: Sentry's status codes and its JSON body
//! `{"detail": "…", "causes": ["…"]}`, so SDKs log the same messages they would get from
//! Sentry.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeError {
    /// 400.
    BadRequest { detail: String, causes: Vec<String> },
    /// 401.
    Unauthorized { detail: String, causes: Vec<String> },
    /// 403: an unknown or disabled key, or a key of another project.
    Rejected { reason: &'static str },
    /// 413: over a size limit; `what` names the item type.
    TooLarge { what: String },
    /// 415: a `Content-Encoding` the front door cannot decode.
    UnsupportedEncoding(String),
    /// 429: over the key's rate limit.
    RateLimited { retry_after: u64, header: String },
    /// 503: the queue (Kafka or the database) did not take the envelope.
    Unavailable { detail: String, cause: String },
}

impl EdgeError {
    pub fn bad_request(detail: impl Into<String>) -> EdgeError {
        EdgeError::BadRequest {
            detail: detail.into(),
            causes: Vec::new(),
        }
    }

    pub fn invalid_envelope(cause: impl Into<String>) -> EdgeError {
        EdgeError::BadRequest {
            detail: "invalid event envelope".into(),
            causes: vec![cause.into()],
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            EdgeError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            EdgeError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            EdgeError::Rejected { .. } => StatusCode::FORBIDDEN,
            EdgeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EdgeError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EdgeError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            EdgeError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn body(&self) -> (String, Vec<String>) {
        match self {
            EdgeError::BadRequest { detail, causes }
            | EdgeError::Unauthorized { detail, causes } => (detail.clone(), causes.clone()),
            EdgeError::Rejected { reason } => (
                format!("event submission rejected with_reason: {reason}"),
                Vec::new(),
            ),
            EdgeError::TooLarge { what } => (
                format!(
                    "envelope exceeded size limits for type '{what}' \
                     (https://develop.sentry.dev/sdk/envelopes/#size-limits)"
                ),
                Vec::new(),
            ),
            EdgeError::UnsupportedEncoding(e) => (
                format!("unsupported content encoding {e:?}"),
                vec!["supported: gzip, deflate, br, zstd, identity".into()],
            ),
            EdgeError::RateLimited { .. } => (
                "Sentry dropped data due to a quota or internal rate limit being reached. This \
                 will not affect your application. See \
                 https://docs.sentry.io/product/accounts/quotas/ for more information."
                    .into(),
                Vec::new(),
            ),
            EdgeError::Unavailable { detail, cause } => (detail.clone(), vec![cause.clone()]),
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let (detail, causes) = self.body();
        let mut body = serde_json::json!({ "detail": detail });
        if !causes.is_empty() {
            body["causes"] = serde_json::json!(causes);
        }
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&detail) {
            headers.insert("x-sentry-error", v);
        }
        match &self {
            EdgeError::RateLimited {
                retry_after,
                header,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                if let Ok(v) = HeaderValue::from_str(header) {
                    headers.insert("x-sentry-rate-limits", v);
                }
            }
            EdgeError::UnsupportedEncoding(_) => {
                headers.insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static("gzip,deflate,br,zstd,identity"),
                );
            }
            EdgeError::Unavailable { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
