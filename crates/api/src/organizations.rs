//! `GET /api/0/` (who is asking), organizations and projects. A token sees its own
//! organization only.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::serialize;
use crate::State;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sluice_core::storage::read;
use sluice_core::storage::tokens::Principal;
use sluice_core::storage::DbError;
use std::sync::Arc;

/// What a token may do, in Sentry's scope names.
pub const SCOPES: &[&str] = &["org:read", "project:read", "event:read", "event:write"];

/// The token's organization when `slug` names it (by slug or id), else 404.
pub async fn org_of(state: &State, who: &Principal, slug: &str) -> ApiResult<read::Organization> {
    if slug != who.organization_slug && slug != who.organization_id.to_string() {
        return Err(ApiError::NotFound);
    }
    let id = who.organization_id;
    state
        .db
        .run(move |c| Ok::<_, DbError>(read::organization(c, id)?))
        .await?
        .ok_or(ApiError::NotFound)
}

/// The project `slug` of the token's organization `org`, else 404.
pub async fn project_of(
    state: &State,
    who: &Principal,
    org: &str,
    slug: &str,
) -> ApiResult<(read::Organization, read::Project)> {
    let o = org_of(state, who, org).await?;
    let (id, slug) = (o.id, slug.to_owned());
    let p = state
        .db
        .run(move |c| Ok::<_, DbError>(read::project(c, id, &slug)?))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((o, p))
}

/// A one-page list: the `Link` header says there is nothing before or after. A malformed
/// `cursor` is refused as in paged lists; a cursor past the first page finds nothing.
pub fn single_page(
    base: &str,
    path: &str,
    raw: &Option<String>,
    mut items: Vec<Value>,
) -> ApiResult<Response> {
    let at = crate::issues::cursor_of(&crate::issues::pairs(raw))?;
    if at.offset > 0 || at.is_prev {
        items.clear();
    }
    let link = crate::cursor::link(&format!("{base}{path}"), &[], None);
    Ok(([(header::LINK, link)], Json(Value::Array(items))).into_response())
}

pub async fn index(who: Auth) -> Json<Value> {
    Json(json!({
        "version": "0",
        "auth": {"scopes": SCOPES, "organization": who.organization_slug},
        "user": null,
    }))
}

/// Sentry's region list: a single-region installation answers with none, so clients use the
/// URL they were given.
pub async fn regions(_who: Auth) -> Json<Value> {
    Json(json!({"regions": []}))
}

pub async fn list(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let o = org_of(&state, &who, &who.organization_slug).await?;
    single_page(
        &state.base_url,
        "/api/0/organizations/",
        &raw,
        vec![serialize::organization(&o, &state.base_url)],
    )
}

/// The organization's projects as Sentry lists them, each with the organization when `with_org`.
async fn project_list(
    state: &State,
    o: &read::Organization,
    with_org: bool,
) -> ApiResult<Vec<Value>> {
    let id = o.id;
    let rows = state
        .db
        .run(move |c| Ok::<_, DbError>(read::projects(c, id)?))
        .await?;
    Ok(rows
        .iter()
        .map(|p| serialize::project(p, with_org.then_some(o), &state.base_url))
        .collect())
}

pub async fn detail(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path(org): Path<String>,
) -> ApiResult<Json<Value>> {
    let o = org_of(&state, &who, &org).await?;
    let mut v = serialize::organization(&o, &state.base_url);
    v["projects"] = Value::Array(project_list(&state, &o, false).await?);
    Ok(Json(v))
}

pub async fn projects(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let o = org_of(&state, &who, &org).await?;
    let items = project_list(&state, &o, false).await?;
    single_page(
        &state.base_url,
        &format!("/api/0/organizations/{}/projects/", o.slug),
        &raw,
        items,
    )
}

pub async fn all_projects(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let o = org_of(&state, &who, &who.organization_slug).await?;
    let items = project_list(&state, &o, true).await?;
    single_page(&state.base_url, "/api/0/projects/", &raw, items)
}

pub async fn project(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, slug)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (o, p) = project_of(&state, &who, &org, &slug).await?;
    Ok(Json(serialize::project(&p, Some(&o), &state.base_url)))
}
