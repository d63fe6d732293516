//! A project's user feedback (`user-feedback/`) and an event's attachments with download.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::issues::{cursor_of, first, pairs};
use crate::organizations::project_of;
use crate::{cursor, serialize, State};
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sluice_core::storage::read;
use sluice_core::storage::DbError;
use std::collections::HashMap;
use std::sync::Arc;

/// `GET …/user-feedback/`: newest first; `status=unresolved` (the default) keeps reports whose
/// issue is unresolved or not known yet, `status=` every report.
pub async fn list(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, project)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (o, p) = project_of(&state, &who, &org, &project).await?;
    let q = pairs(&raw);
    let get = |k: &str| first(&q, k);
    let unresolved_only = match get("status").unwrap_or("unresolved") {
        "unresolved" => true,
        "" => false,
        _ => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(json!({"status": "Invalid status choice"})),
            )
                .into_response())
        }
    };
    let n: i64 = match get("per_page").or_else(|| get("limit")) {
        None => 100,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(
                    "Invalid per_page value. Cannot exceed 100.".into(),
                ))
            }
        },
    };
    let offset = cursor_of(&q)?.offset;
    let (pid, org_id) = (p.id, o.id);
    let (reports, groups) = state
        .db
        .run(move |c| {
            let reports = read::user_reports(c, pid, unresolved_only, offset, n + 1)?;
            let mut ids: Vec<i64> = reports.iter().filter_map(|r| r.group_id).collect();
            ids.sort_unstable();
            ids.dedup();
            let groups: HashMap<i64, read::Group> = read::groups(c, org_id, &ids)?
                .into_iter()
                .map(|g| (g.id, g))
                .collect();
            Ok::<_, DbError>((reports, groups))
        })
        .await?;
    let more = reports.len() as i64 > n;
    let items: Vec<Value> = reports
        .iter()
        .take(n as usize)
        .map(|r| {
            let issue = r
                .group_id
                .and_then(|g| groups.get(&g))
                .map(|g| serialize::group(g, &o.slug, &state.base_url));
            serialize::user_report(r, issue)
        })
        .collect();
    let next = more.then(|| cursor::at_offset(offset + n));
    let link = cursor::link(
        &format!(
            "{}/api/0/projects/{}/{}/user-feedback/",
            state.base_url, o.slug, p.slug
        ),
        &q,
        next,
    );
    Ok(([(header::LINK, link)], Json(Value::Array(items))).into_response())
}

fn event_id(id: &str) -> ApiResult<String> {
    sluice_core::ids::uuid_hex(id).map_err(|_| ApiError::NotFound)
}

pub async fn attachments(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, project, event)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (o, p) = project_of(&state, &who, &org, &project).await?;
    let (pid, eid) = (p.id, event_id(&event)?);
    let mut rows = state
        .db
        .run(move |c| Ok::<_, DbError>(read::attachments(c, pid, &eid)?))
        .await?;
    rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    crate::organizations::single_page(
        &state.base_url,
        &format!(
            "/api/0/projects/{}/{}/events/{event}/attachments/",
            o.slug, p.slug
        ),
        &raw,
        rows.iter().map(serialize::attachment).collect(),
    )
}

/// One attachment: its description, or its body with `?download`.
pub async fn attachment(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, project, event, id)): Path<(String, String, String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (_, p) = project_of(&state, &who, &org, &project).await?;
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    let (pid, eid) = (p.id, event_id(&event)?);
    let a = state
        .db
        .run(move |c| Ok::<_, DbError>(read::attachment(c, pid, &eid, id)?))
        .await?
        .ok_or(ApiError::NotFound)?;
    let download = pairs(&raw).iter().any(|(k, _)| k == "download");
    if !download {
        return Ok(Json(serialize::attachment(&a)).into_response());
    }
    let (Some(objects), Some(key)) = (&state.objects, a.blob_path.as_deref()) else {
        return Err(ApiError::NotFound);
    };
    if key.starts_with("objectstore:") {
        // Stored by Relay's object store, which sluice does not read.
        return Err(ApiError::NotFound);
    }
    let body = objects
        .get(key)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or(ApiError::NotFound)?;
    let name = a
        .name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(&a.name)
        .replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, a.content_type.clone()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}
