//! Issue lists (of a project, of an organization), issue detail, an issue's events and a
//! project's events.

use crate::auth::Auth;
use crate::cursor::{self, Cursor};
use crate::error::{ApiError, ApiResult};
use crate::organizations::{org_of, project_of};
use crate::{event, search, serialize, State};
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};
use sluice_core::storage::read::{self, EventsOf, IssueFilter, Sort, Which};
use sluice_core::storage::tokens::Principal;
use sluice_core::storage::DbError;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest page.
const MAX_LIMIT: i64 = 100;

/// The query string as pairs (keys may repeat).
pub fn pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

pub fn first<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn limit(q: &[(String, String)], default: i64) -> ApiResult<i64> {
    match first(q, "limit").or_else(|| first(q, "per_page")) {
        None => Ok(default),
        // Sentry refuses a page larger than its maximum rather than shortening it.
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > MAX_LIMIT => Err(ApiError::BadRequest(format!(
                "Invalid per_page value. Cannot exceed {MAX_LIMIT}."
            ))),
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ApiError::BadRequest(format!("Invalid limit: {v}"))),
        },
    }
}

pub fn cursor_of(q: &[(String, String)]) -> ApiResult<Cursor> {
    match first(q, "cursor").filter(|c| !c.is_empty()) {
        None => Ok(Cursor::default()),
        Some(c) => {
            Cursor::parse(c).ok_or_else(|| ApiError::BadRequest("Invalid cursor parameter.".into()))
        }
    }
}

/// The stats period: buckets of `(count, seconds)`.
fn stats_period(q: &[(String, String)]) -> ApiResult<Option<(&'static str, i64, i64)>> {
    match first(q, "statsPeriod").unwrap_or("24h") {
        "" => Ok(None),
        "24h" => Ok(Some(("24h", 24, 3600))),
        "14d" => Ok(Some(("14d", 14, 86400))),
        other => Err(ApiError::BadRequest(format!(
            "Invalid stats_period. Valid choices are '', '24h', and '14d', got {other:?}"
        ))),
    }
}

/// An issue search from the query string, for the token's organization.
fn filter(
    who: &Principal,
    q: &[(String, String)],
    project_ids: Option<Vec<i64>>,
) -> ApiResult<IssueFilter> {
    let text = first(q, "query").unwrap_or("is:unresolved");
    let s = search::parse(text).map_err(ApiError::BadRequest)?;
    let sort = match first(q, "sort").unwrap_or("date") {
        "date" | "" => Sort::Date,
        "new" => Sort::New,
        "freq" => Sort::Freq,
        other => {
            return Err(ApiError::BadRequest(format!(
                "Invalid sort: {other} (date, new and freq are supported)"
            )))
        }
    };
    Ok(IssueFilter {
        organization_id: who.organization_id,
        project_ids,
        statuses: s.statuses,
        types: s.types,
        text: s.text,
        ids: None,
        sort,
    })
}

/// A page of issues with its `Link` header.
async fn page(
    state: &State,
    org: &str,
    path: String,
    q: Vec<(String, String)>,
    f: IssueFilter,
) -> ApiResult<Response> {
    let n = limit(&q, 25)?;
    let at = cursor_of(&q)?.position();
    let stats = stats_period(&q)?;
    let rows = state
        .db
        .run(move |c| Ok::<_, DbError>(read::issues(c, &f, at, n + 1)?))
        .await?;
    let more = rows.len() as i64 > n;
    let rows: Vec<read::Group> = rows.into_iter().take(n as usize).collect();
    let scores: Vec<i64> = rows.iter().map(|g| g.score).collect();
    let mut items: Vec<Value> = rows
        .iter()
        .map(|g| serialize::group(g, org, &state.base_url))
        .collect();
    if let Some((name, buckets, secs)) = stats {
        add_stats(state, &rows, &mut items, name, buckets, secs).await?;
    }
    let next = more.then(|| cursor::next_scored(at, &scores));
    let link = cursor::link(&format!("{}{path}", state.base_url), &q, next);
    Ok(([(header::LINK, link)], Json(Value::Array(items))).into_response())
}

/// `stats: {period: [[bucket start, count], …]}` from the stored events.
async fn add_stats(
    state: &State,
    rows: &[read::Group],
    items: &mut [Value],
    name: &str,
    buckets: i64,
    secs: i64,
) -> ApiResult<()> {
    let now = Utc::now().timestamp();
    let end = now - now % secs;
    let start = end - (buckets - 1) * secs;
    let ids: Vec<i64> = rows.iter().map(|g| g.id).collect();
    let since = chrono::DateTime::from_timestamp(start, 0).unwrap_or_else(Utc::now);
    let counts = state
        .db
        .run(move |c| Ok::<_, DbError>(read::event_counts(c, &ids, since, secs)?))
        .await?;
    let mut by: HashMap<(i64, i64), i64> = HashMap::new();
    for (g, b, n) in counts {
        by.insert((g, b), n);
    }
    for (g, item) in rows.iter().zip(items.iter_mut()) {
        let series: Vec<Value> = (0..buckets)
            .map(|i| {
                let t = start + i * secs;
                json!([t, by.get(&(g.id, t)).copied().unwrap_or(0)])
            })
            .collect();
        item["stats"] = json!({ name: series });
    }
    Ok(())
}

pub async fn project_list(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, project)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (o, p) = project_of(&state, &who, &org, &project).await?;
    let q = pairs(&raw);
    let f = filter(&who, &q, Some(vec![p.id]))?;
    page(
        &state,
        &o.slug,
        format!("/api/0/projects/{}/{}/issues/", o.slug, p.slug),
        q,
        f,
    )
    .await
}

pub async fn org_list(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let o = org_of(&state, &who, &org).await?;
    let q = pairs(&raw);
    let projects: Vec<i64> = q
        .iter()
        .filter(|(k, v)| k == "project" && v != "-1")
        .map(|(_, v)| {
            v.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("Invalid project parameter: {v}")))
        })
        .collect::<ApiResult<_>>()?;
    let f = filter(&who, &q, (!projects.is_empty()).then_some(projects))?;
    page(
        &state,
        &o.slug,
        format!("/api/0/organizations/{}/issues/", o.slug),
        q,
        f,
    )
    .await
}

/// The group `id` of the token's organization, else 404.
pub async fn group_of(state: &State, who: &Principal, id: &str) -> ApiResult<read::Group> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    let org = who.organization_id;
    state
        .db
        .run(move |c| Ok::<_, DbError>(read::group(c, org, id)?))
        .await?
        .ok_or(ApiError::NotFound)
}

/// Sentry's issue detail: the list fields plus activity, releases, counts and stats.
pub async fn detail_of(state: &State, who: &Principal, g: read::Group) -> ApiResult<Value> {
    let id = g.id;
    let (activities, reports) = state
        .db
        .run(move |c| Ok::<_, DbError>((read::activities(c, id)?, read::user_report_count(c, id)?)))
        .await?;
    let mut v = serialize::group(&g, &who.organization_slug, &state.base_url);
    v["activity"] = activities
        .iter()
        .map(|a| {
            json!({
                "id": a.id.to_string(),
                "type": a.kind,
                "data": a.data,
                "dateCreated": serialize::time(a.datetime),
                "user": null,
            })
        })
        .collect();
    v["firstRelease"] = g
        .first_release
        .as_ref()
        .map_or(Value::Null, |r| json!({"version": r, "shortVersion": r}));
    v["lastRelease"] = Value::Null;
    v["userReportCount"] = json!(reports);
    v["tags"] = json!([]);
    v["seenBy"] = json!([]);
    v["participants"] = json!([]);
    v["pluginActions"] = json!([]);
    v["pluginIssues"] = json!([]);
    v["pluginContexts"] = json!([]);
    v["stats"] = json!({"24h": [], "30d": []});
    Ok(v)
}

pub async fn detail(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let g = group_of(&state, &who, &id).await?;
    Ok(Json(detail_of(&state, &who, g).await?))
}

pub async fn org_detail(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    org_of(&state, &who, &org).await?;
    let g = group_of(&state, &who, &id).await?;
    Ok(Json(detail_of(&state, &who, g).await?))
}

/// An event's detail, with the ids of the events before and after it in its issue.
fn detail_with_neighbours(c: &mut diesel::PgConnection, e: read::Event) -> Result<Value, DbError> {
    let (prev, next) = match e.group_id {
        Some(g) => read::neighbours(c, g, e.date_added, &e.event_id)?,
        None => (None, None),
    };
    Ok(event::detail(&e, prev, next))
}

/// A page of events (offset cursors: `0:offset:0`).
async fn event_page(
    state: &State,
    path: String,
    q: Vec<(String, String)>,
    of: EventsOf,
) -> ApiResult<Response> {
    let n = limit(&q, 100)?;
    let offset = cursor_of(&q)?.offset;
    let rows = state
        .db
        .run(move |c| Ok::<_, DbError>(read::events(c, of, offset, n + 1)?))
        .await?;
    let more = rows.len() as i64 > n;
    let items: Vec<Value> = rows.iter().take(n as usize).map(event::list_item).collect();
    let next = more.then(|| cursor::at_offset(offset + n));
    let link = cursor::link(&format!("{}{path}", state.base_url), &q, next);
    Ok(([(header::LINK, link)], Json(Value::Array(items))).into_response())
}

pub async fn events(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let g = group_of(&state, &who, &id).await?;
    let gid = g.id;
    event_page(
        &state,
        format!("/api/0/issues/{gid}/events/"),
        pairs(&raw),
        EventsOf::Group(gid),
    )
    .await
}

pub async fn org_events(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, id)): Path<(String, String)>,
    raw: RawQuery,
) -> ApiResult<Response> {
    org_of(&state, &who, &org).await?;
    events(AxState(state), who, Path(id), raw).await
}

/// One event of an issue: `latest`, `oldest`, `recommended` (the latest) or an event id.
pub async fn event(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((id, which)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let g = group_of(&state, &who, &id).await?;
    let gid = g.id;
    let pid = g.project_id;
    let e = state
        .db
        .run(move |c| {
            let e = match which.as_str() {
                "latest" | "recommended" => read::group_event(c, gid, Which::Latest)?,
                "oldest" => read::group_event(c, gid, Which::Oldest)?,
                id => match sluice_core::ids::uuid_hex(id) {
                    Ok(id) => read::event(c, pid, &id)?.filter(|e| e.group_id == Some(gid)),
                    Err(_) => None,
                },
            };
            e.map(|e| detail_with_neighbours(c, e)).transpose()
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(e))
}

pub async fn org_event(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, id, which)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    org_of(&state, &who, &org).await?;
    event(AxState(state), who, Path((id, which))).await
}

pub async fn project_events(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, project)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (o, p) = project_of(&state, &who, &org, &project).await?;
    let pid = p.id;
    event_page(
        &state,
        format!("/api/0/projects/{}/{}/events/", o.slug, p.slug),
        pairs(&raw),
        EventsOf::Project(pid),
    )
    .await
}

pub async fn project_event(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, project, event_id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let (_, p) = project_of(&state, &who, &org, &project).await?;
    let id = sluice_core::ids::uuid_hex(&event_id).map_err(|_| ApiError::NotFound)?;
    let pid = p.id;
    let e = state
        .db
        .run(move |c| {
            read::event(c, pid, &id)?
                .map(|e| detail_with_neighbours(c, e))
                .transpose()
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(e))
}
