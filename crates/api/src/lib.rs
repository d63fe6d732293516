//! `sluice api`: Sentry's web API (`/api/0/`) over what sluice stores, read from PostgreSQL,
//! and the webhook deliverer. Issue updates are applied by the issue platform's status-change
//! step, so activity, history and notifications are written as for any other status change.
//!
//! Routes follow Sentry's paths with their trailing slash; the same path without it is served
//! too. `GET /api/0/openapi.json` is the API's OpenAPI document.

pub mod auth;
pub mod cursor;
pub mod error;
pub mod event;
mod feedback;
mod issues;
mod metrics;
mod organizations;
pub mod search;
pub mod serialize;
mod update;
pub mod webhooks;

use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{middleware, Router};
use sluice_core::health::Health;
use sluice_core::objects::Objects;
use sluice_core::storage::Db;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;

/// The OpenAPI document of the API (checked in next to this crate).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What the handlers share.
pub struct State {
    pub db: Db,
    /// Attachment bodies (downloads).
    pub objects: Option<Objects>,
    /// The public URL of the API (permalinks, `Link` headers), without a trailing slash.
    pub base_url: String,
    /// Other parts of the process whose health `/health/live` and `/health/ready` include (the
    /// stages of `sluice run`), by name.
    pub components: Vec<(String, Arc<Health>)>,
}

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_concurrent: usize,
}

/// Adds `path` and `path` without its trailing slash.
fn both(
    router: Router<Arc<State>>,
    path: &str,
    method: MethodRouter<Arc<State>>,
) -> Router<Arc<State>> {
    let bare = path.trim_end_matches('/');
    let router = router.route(path, method.clone());
    if bare.is_empty() || bare == path {
        router
    } else {
        router.route(bare, method)
    }
}

/// Every route of the API with its middleware: metrics, the concurrency limit (503 beyond),
/// the request timeout (503), then authentication for `/api/0/` routes.
pub fn router(state: Arc<State>, limits: Limits) -> Router {
    let mut api: Router<Arc<State>> = Router::new();
    for (path, method) in [
        ("/api/0/", get(organizations::index)),
        ("/api/0/users/me/regions/", get(organizations::regions)),
        ("/api/0/organizations/", get(organizations::list)),
        ("/api/0/organizations/{org}/", get(organizations::detail)),
        (
            "/api/0/organizations/{org}/projects/",
            get(organizations::projects),
        ),
        ("/api/0/projects/", get(organizations::all_projects)),
        (
            "/api/0/projects/{org}/{project}/",
            get(organizations::project),
        ),
        (
            "/api/0/organizations/{org}/issues/",
            get(issues::org_list).put(update::org_bulk),
        ),
        (
            "/api/0/projects/{org}/{project}/issues/",
            get(issues::project_list).put(update::project_bulk),
        ),
        (
            "/api/0/organizations/{org}/issues/{id}/",
            get(issues::org_detail).put(update::org_one),
        ),
        ("/api/0/issues/{id}/", get(issues::detail).put(update::one)),
        (
            "/api/0/organizations/{org}/issues/{id}/events/",
            get(issues::org_events),
        ),
        (
            "/api/0/organizations/{org}/issues/{id}/events/{which}/",
            get(issues::org_event),
        ),
        ("/api/0/issues/{id}/events/", get(issues::events)),
        ("/api/0/issues/{id}/events/{which}/", get(issues::event)),
        (
            "/api/0/projects/{org}/{project}/events/",
            get(issues::project_events),
        ),
        (
            "/api/0/projects/{org}/{project}/events/{event_id}/",
            get(issues::project_event),
        ),
        (
            "/api/0/projects/{org}/{project}/user-feedback/",
            get(feedback::list),
        ),
        (
            "/api/0/projects/{org}/{project}/events/{event_id}/attachments/",
            get(feedback::attachments),
        ),
        (
            "/api/0/projects/{org}/{project}/events/{event_id}/attachments/{attachment_id}/",
            get(feedback::attachment),
        ),
    ] {
        api = both(api, path, method);
    }
    let api = api.layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ));
    let open = Router::new()
        .route("/api/0/openapi.json", get(openapi))
        .route("/metrics", get(metrics_text))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready));
    api.merge(open)
        .fallback(|| async { error::ApiError::NotFound })
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(metrics::track))
                .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
                .load_shed()
                .concurrency_limit(limits.max_concurrent.max(1))
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    limits.request_timeout,
                )),
        )
        .with_state(state)
}

async fn overloaded(_: axum::BoxError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        axum::Json(serde_json::json!({"detail": "Too many requests at once; retry later."})),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        sluice_core::metrics::render(),
    )
        .into_response()
}

/// 200 with `ok` when every component passes `check`, else 503 naming those that fail.
fn components_answer(state: &State, check: fn(&Health) -> bool, ok: &str, not: &str) -> Response {
    let failing: Vec<&str> = state
        .components
        .iter()
        .filter(|(_, h)| !check(h))
        .map(|(name, _)| name.as_str())
        .collect();
    if failing.is_empty() {
        (StatusCode::OK, ok.to_owned()).into_response()
    } else {
        let body = format!("{not}: {}", failing.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// Live unless a component is stuck or stalled (the orchestrator then restarts the process).
async fn live(AxState(state): AxState<Arc<State>>) -> Response {
    components_answer(&state, Health::is_live, "ok", "not live")
}

/// Ready when the database answers and every component is ready (its dependencies reachable,
/// the schema current).
async fn ready(AxState(state): AxState<Arc<State>>) -> Response {
    if let Err(e) = state.db.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")).into_response();
    }
    components_answer(&state, Health::is_ready, "ready", "not ready")
}
