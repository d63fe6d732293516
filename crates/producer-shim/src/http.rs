//! `producer-shim serve`: `POST /api/0/occurrences` and `POST /api/0/status-changes`, each taking
//! one JSON object, a JSON array or NDJSON.
//! 202: every item acknowledged by the broker; 201: delivered, some processed directly;
//! 400: invalid input, with per-item errors (nothing is delivered); 401: missing or wrong bearer
//! token; 413: body above `--max-body-bytes`; 503: some item could be delivered by neither path.

use crate::submit::{self, Kind, Status, Submitter};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Shared state of the handlers.
pub struct Api {
    pub submitter: Submitter,
    pub auth_token: Option<String>,
}

sluice_core::counter_vec!(
    fn requests = "sluice_shim_requests_total",
    "HTTP requests, by endpoint and status code.",
    ["endpoint", "status"]
);

/// Binds `listen` and serves until `shutdown`; in-flight requests finish first.
pub async fn serve(
    listen: SocketAddr,
    api: Api,
    max_body: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --listen {listen}: {e}"))?;
    tracing::info!(%listen, "HTTP API listening");
    let app = Router::new()
        .route("/api/0/occurrences", post(occurrences))
        .route("/api/0/status-changes", post(status_changes))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Arc::new(api));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

async fn occurrences(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    handle(&api, &headers, &body, Kind::Occurrences, "occurrences").await
}

async fn status_changes(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    handle(&api, &headers, &body, Kind::StatusChanges, "status-changes").await
}

fn authorized(api: &Api, headers: &HeaderMap) -> bool {
    let Some(token) = &api.auth_token else {
        return true;
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison is unnecessary for equal-length-checked random tokens at this scale,
    // but avoid early exit on the first differing byte anyway.
    given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

async fn handle(
    api: &Api,
    headers: &HeaderMap,
    body: &[u8],
    kind: Kind,
    endpoint: &str,
) -> (StatusCode, Json<Value>) {
    let (status, value) = respond(api, headers, body, kind).await;
    requests()
        .with_label_values(&[endpoint, status.as_str()])
        .inc();
    (status, Json(value))
}

async fn respond(api: &Api, headers: &HeaderMap, body: &[u8], kind: Kind) -> (StatusCode, Value) {
    if !authorized(api, headers) {
        return (
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or invalid bearer token"}),
        );
    }
    let items = match submit::split_items(body) {
        Ok(items) if !items.is_empty() => items,
        Ok(_) => return (StatusCode::BAD_REQUEST, json!({"error": "no items"})),
        Err(e) => return (StatusCode::BAD_REQUEST, json!({"error": e})),
    };
    let mut records = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match submit::validate(kind, item) {
            Ok(r) => records.push(r),
            Err(e) => errors.push(json!({"index": index, "error": e})),
        }
    }
    if !errors.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid items; nothing was delivered", "items": errors}),
        );
    }
    let statuses = api.submitter.submit(records).await;
    let count = |f: fn(&Status) -> bool| statuses.iter().filter(|s| f(s)).count();
    let (sent, processed) = (
        count(|s| *s == Status::Sent),
        count(|s| *s == Status::Processed),
    );
    let failed: Vec<Value> = statuses
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Status::Failed(e) => Some(json!({"index": i, "error": e})),
            _ => None,
        })
        .collect();
    let code = if !failed.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if processed > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    (
        code,
        json!({"sent": sent, "processed": processed, "failed": failed}),
    )
}
