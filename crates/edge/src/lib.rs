//! The front door for Sentry SDKs: `POST /api/{project_id}/envelope/` and
//! `POST /api/{project_id}/store/`, authenticated by the project's client keys (DSNs). It turns
//! what SDKs send into the messages Sentry's Relay writes to the ingest topics, so the stages
//! behind it cannot tell the difference, and answers as Sentry does: `{"id": …}` once the
//! messages are durable, and Sentry's status codes and error bodies otherwise.
//!
//! Served by `sluice edge` on its own (it scales by replicas; its only state is caches and
//! rate-limit windows in memory) and by `sluice run` with the rest of the pipeline.

pub mod auth;
pub mod body;
pub mod crash;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod limits;
mod metrics;
pub mod normalize;
pub mod rate_limit;
mod request;
pub mod sink;
pub mod translate;

use axum::extract::State as AxState;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sluice_core::storage::Db;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use limits::SizeLimits;
pub use sink::{KafkaSink, QueueSink, Sink};
pub use translate::Topics;

/// What every request shares.
pub struct State {
    pub db: Db,
    pub keys: keys::KeyCache,
    pub sink: Arc<dyn Sink>,
    pub topics: Topics,
    pub outcomes_topic: String,
    pub outcomes_billing_topic: Option<String>,
    pub limits: SizeLimits,
    pub rate_limits: rate_limit::RateLimits,
    pub budget: body::Budget,
}

impl State {
    /// `memory_budget` bytes of request bodies are held at once (at least one largest envelope).
    pub fn new(
        db: Db,
        sink: Arc<dyn Sink>,
        topics: Topics,
        outcomes_topic: String,
        outcomes_billing_topic: Option<String>,
        limits: SizeLimits,
        memory_budget: usize,
    ) -> State {
        let budget = body::Budget::new(memory_budget.max(limits.max_envelope_size));
        State {
            keys: keys::KeyCache::new(db.clone(), Duration::from_secs(10)),
            db,
            sink,
            topics,
            outcomes_topic,
            outcomes_billing_topic,
            limits,
            rate_limits: rate_limit::RateLimits::default(),
            budget,
        }
    }
}

/// Headers browsers may send to the SDK endpoints, and the ones they may read back (Sentry's).
const ALLOWED_HEADERS: &[&str] = &[
    "x-sentry-auth",
    "x-requested-with",
    "x-forwarded-for",
    "origin",
    "referer",
    "accept",
    "content-type",
    "authentication",
    "authorization",
    "content-encoding",
    "transfer-encoding",
];
const EXPOSED_HEADERS: &[&str] = &["x-sentry-error", "x-sentry-rate-limits", "retry-after"];

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::POST])
        .allow_headers(
            ALLOWED_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .expose_headers(
            EXPOSED_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .max_age(Duration::from_secs(3600))
}

/// The SDK routes (CORS included), without health and metrics, to merge into a larger router.
pub fn sdk_routes(state: Arc<State>) -> Router {
    Router::new()
        .route("/api/{project_id}/envelope/", post(request::envelope))
        .route("/api/{project_id}/envelope", post(request::envelope))
        .route("/api/{project_id}/store/", post(request::store))
        .route("/api/{project_id}/store", post(request::store))
        .layer(
            ServiceBuilder::new()
                .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
                    HeaderName::from_static("cross-origin-resource-policy"),
                    HeaderValue::from_static("cross-origin"),
                ))
                .layer(cors()),
        )
        .with_state(state)
}

/// `sluice edge`'s whole router: the SDK routes, `/metrics`, `/health/live`, `/health/ready`.
pub fn router(state: Arc<State>) -> Router {
    let health = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .with_state(state.clone());
    sdk_routes(state).merge(health)
}

async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        sluice_core::metrics::render(),
    )
        .into_response()
}

async fn ready(AxState(state): AxState<Arc<State>>) -> Response {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")).into_response(),
    }
}
