//! `producer-shim serve`: `POST /api/0/occurrences` and `POST /api/0/status-changes`, each taking
//! one JSON object, a JSON array or NDJSON.
//! 202: every item acknowledged by the broker; 201: delivered, some processed directly;
//! 400: invalid input, with per-item errors (nothing is delivered); 401: missing or wrong bearer
//! token; 413: body above `--max-body-bytes`; 503: some item could be delivered by neither path.

use crate::submit::{self, Kind, Status, Submitter};
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{BoxError, Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

/// Shared state of the handlers.
pub struct Api {
    pub submitter: Submitter,
    pub auth_token: Option<String>,
}

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (413 above).
    pub max_body: usize,
    /// Time to receive a request's headers; also how long an idle connection is kept.
    pub header_timeout: Duration,
    /// Time to receive a request's body (408 after).
    pub body_timeout: Duration,
    /// Time to answer a request (503 after; the items may still be delivered).
    pub request_timeout: Duration,
    /// Requests handled at once; beyond, 503 with `Retry-After`.
    pub max_concurrent: usize,
}

sluice_core::counter_vec!(
    fn requests = "sluice_shim_requests_total",
    "HTTP requests, by endpoint and status code.",
    ["endpoint", "status"]
);

/// The routes with their limits, in the order a request meets them: the concurrency limit
/// (503 beyond), the request timeout, authentication (before any of the body is read), the body
/// timeout and size limit, then the handler.
pub fn router(api: Api, limits: &Limits) -> Router {
    let api = Arc::new(api);
    Router::new()
        .route("/api/0/occurrences", post(occurrences))
        .route("/api/0/status-changes", post(status_changes))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                .concurrency_limit(limits.max_concurrent.max(1))
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    limits.request_timeout,
                ))
                .layer(middleware::from_fn_with_state(api.clone(), authenticate))
                .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                    limits.body_timeout,
                ))
                .layer(DefaultBodyLimit::max(limits.max_body)),
        )
        .with_state(api)
}

/// Binds `listen` and serves until `shutdown`; in-flight requests get up to 30 s to finish.
pub async fn serve(
    listen: SocketAddr,
    api: Api,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = router(api, &limits);
    serve_router(listen, app, limits.header_timeout, shutdown).await
}

/// Binds `listen` and serves `app` over HTTP/1.1 until `shutdown`: headers must arrive within
/// `header_timeout` (also how long an idle connection is kept); in-flight requests get up to
/// 30 s to finish.
pub async fn serve_router(
    listen: SocketAddr,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --listen {listen}: {e}"))?;
    tracing::info!(%listen, "HTTP API listening");
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!("connections still open after 30 s; stopping anyway");
        }
    }
    Ok(())
}

/// An error answer: a stable reason and an id that the server's log repeats with the detail.
fn error_body(status: StatusCode, reason: &str, message: &str) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    tracing::info!(%status, reason, id, message, "request refused");
    (
        status,
        Json(json!({"error": message, "reason": reason, "id": id})),
    )
        .into_response()
}

/// Answers for requests the limits refused: 503 with `Retry-After` beyond the concurrency limit.
async fn overloaded(e: BoxError) -> Response {
    if !e.is::<tower::load_shed::error::Overloaded>() {
        return error_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be handled",
        );
    }
    requests().with_label_values(&["any", "503"]).inc();
    let mut r = error_body(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests at once; retry later",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Refuses a request without the bearer token before its body is read.
async fn authenticate(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    if authorized(&api, request.headers()) {
        return next.run(request).await;
    }
    let endpoint = endpoint_of(request.uri().path());
    requests().with_label_values(&[endpoint, "401"]).inc();
    error_body(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid bearer token",
    )
}

fn endpoint_of(path: &str) -> &'static str {
    match path {
        "/api/0/occurrences" => "occurrences",
        "/api/0/status-changes" => "status-changes",
        _ => "other",
    }
}

async fn occurrences(State(api): State<Arc<Api>>, body: Result<Bytes, BytesRejection>) -> Response {
    match body {
        Ok(body) => handle(&api, &body, Kind::Occurrences, "occurrences")
            .await
            .into_response(),
        Err(r) => refused_body("occurrences", r),
    }
}

async fn status_changes(
    State(api): State<Arc<Api>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => handle(&api, &body, Kind::StatusChanges, "status-changes")
            .await
            .into_response(),
        Err(r) => refused_body("status-changes", r),
    }
}

/// A body that could not be read: 408 when it did not arrive in time, 413 above the size
/// limit, else 400.
fn refused_body(endpoint: &str, r: BytesRejection) -> Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&r);
    let mut timed_out = false;
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            timed_out = true;
            break;
        }
        source = e.source();
    }
    let (status, reason, message) = if timed_out {
        (
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time",
        )
    } else if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is above the size limit",
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            "the request body could not be read",
        )
    };
    requests()
        .with_label_values(&[endpoint, status.as_str()])
        .inc();
    error_body(status, reason, message)
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

async fn handle(api: &Api, body: &[u8], kind: Kind, endpoint: &str) -> (StatusCode, Json<Value>) {
    let (status, value) = respond(api, body, kind).await;
    requests()
        .with_label_values(&[endpoint, status.as_str()])
        .inc();
    (status, Json(value))
}

async fn respond(api: &Api, body: &[u8], kind: Kind) -> (StatusCode, Value) {
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
    // What failed is logged under an id; the answer names the reason, never the internals
    // (database hosts, users).
    let failed: Vec<Value> = statuses
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Status::Failed(detail) => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                tracing::warn!(index = i, id, detail, "item could not be delivered");
                Some(json!({"index": i, "error": "unavailable", "id": id}))
            }
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
