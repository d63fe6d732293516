//! Issue updates (`PUT` on an issue, and the bulk form on a project's or an organization's
//! issues): status `resolved` (also `resolvedInNextRelease`, `resolvedInRelease`), `ignored`
//! (`muted`) and `unresolved`, applied through the issue platform as status changes. Each
//! change names its group by the fingerprint of the group's latest occurrence and is produced to
//! the occurrences topic, or processed directly when Kafka is not configured or refuses it; a
//! group whose occurrences have all expired is changed directly by id. Either way the same code
//! writes the group, its activity and its history.
//!
//! Substatus, as Sentry picks it when the request names none: ignored with an ignore condition
//! (`ignoreDuration`, `ignoreCount`, `ignoreUntil`, `ignoreUserCount`, `ignoreWindow`,
//! `ignoreUserWindow`) is `archived_until_condition_met`, with `ignoreUntilEscalating` it is
//! `archived_until_escalating`, else `archived_forever`; unresolved is `ongoing`.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::issues::{detail_of, group_of, pairs};
use crate::organizations::{org_of, project_of};
use crate::State;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use diesel::Connection;
use serde_json::{json, Map, Value};
use sluice_core::issues::status_change::{apply_to_group, substatus_name};
use sluice_core::issues::IssueError;
use sluice_core::messages::enums::{group_status as st, group_substatus as sub};
use sluice_core::storage::read::{self, IssueFilter, Position, Sort};
use sluice_core::storage::tokens::Principal;
use sluice_core::storage::DbError;
use std::sync::Arc;

/// Most issues one bulk update changes (Sentry's limit).
const BULK_LIMIT: i64 = 1000;

/// A requested status.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    status: i32,
    substatus: Option<i32>,
    /// The request named the substatus (the bulk answer echoes it then, as Sentry does).
    substatus_requested: bool,
    /// What the answer echoes as `statusDetails`.
    details: Value,
    /// The status name the answer echoes.
    name: &'static str,
}

const IGNORE_CONDITIONS: &[&str] = &[
    "ignoreDuration",
    "ignoreCount",
    "ignoreUntil",
    "ignoreUserCount",
    "ignoreWindow",
    "ignoreUserWindow",
];

fn substatus_of(name: &str) -> Option<i32> {
    Some(match name {
        "archived_until_escalating" => sub::UNTIL_ESCALATING,
        "archived_until_condition_met" => sub::UNTIL_CONDITION_MET,
        "archived_forever" => sub::FOREVER,
        "escalating" => sub::ESCALATING,
        "ongoing" => sub::ONGOING,
        "regressed" => sub::REGRESSED,
        "new" => sub::NEW,
        _ => return None,
    })
}

/// Parses an update body; the error is the 400 answer's detail.
fn parse(body: &[u8]) -> Result<Change, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("Invalid JSON body: {e}"))?;
    let Value::Object(m) = v else {
        return Err("The body must be a JSON object.".into());
    };
    let details = match m.get("statusDetails") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(d)) => d.clone(),
        Some(_) => return Err("statusDetails must be an object.".into()),
    };
    let requested_sub = match m.get("substatus") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(substatus_of(s).ok_or_else(|| format!("Invalid substatus: {s}"))?)
        }
        Some(_) => return Err("substatus must be a string.".into()),
    };
    let status =
        match m.get("status") {
            Some(Value::String(s)) => s.as_str(),
            None => return Err(
                "Only status updates are supported: send status (resolved, ignored or unresolved)."
                    .into(),
            ),
            Some(_) => return Err("status must be a string.".into()),
        };
    let has = |k: &str| {
        details.get(k).is_some_and(|v| !v.is_null()) || m.get(k).is_some_and(|v| !v.is_null())
    };
    Ok(match status {
        "resolved" | "resolvedInNextRelease" | "resolvedInRelease" => Change {
            status: st::RESOLVED,
            substatus: None,
            substatus_requested: requested_sub.is_some(),
            details: match status {
                "resolvedInNextRelease" => json!({"inNextRelease": true}),
                "resolvedInRelease" => {
                    json!({"inRelease": details.get("inRelease").cloned().unwrap_or(Value::Null)})
                }
                _ => json!({}),
            },
            name: "resolved",
        },
        "ignored" | "muted" => {
            let substatus = requested_sub.unwrap_or(if IGNORE_CONDITIONS.iter().any(|k| has(k)) {
                sub::UNTIL_CONDITION_MET
            } else if has("ignoreUntilEscalating")
                && details.get("ignoreUntilEscalating") != Some(&Value::Bool(false))
            {
                sub::UNTIL_ESCALATING
            } else {
                sub::FOREVER
            });
            let mut echoed = Map::new();
            for k in IGNORE_CONDITIONS {
                if let Some(v) = details.get(*k).or_else(|| m.get(*k)) {
                    echoed.insert((*k).to_owned(), v.clone());
                }
            }
            if substatus == sub::UNTIL_ESCALATING {
                echoed.insert("ignoreUntilEscalating".into(), Value::Bool(true));
            }
            Change {
                status: st::IGNORED,
                substatus: Some(substatus),
                substatus_requested: requested_sub.is_some(),
                details: Value::Object(echoed),
                name: "ignored",
            }
        }
        "unresolved" => Change {
            status: st::UNRESOLVED,
            substatus: Some(requested_sub.unwrap_or(sub::ONGOING)),
            substatus_requested: requested_sub.is_some(),
            details: json!({}),
            name: "unresolved",
        },
        other => return Err(format!("Invalid status: {other}")),
    })
}

/// Applies `change` to `groups` in one transaction, each as a status change with a new id.
async fn apply(state: &State, groups: &[read::Group], change: &Change) -> ApiResult<()> {
    let ids: Vec<(i64, String)> = groups
        .iter()
        .map(|g| (g.id, uuid::Uuid::new_v4().simple().to_string()))
        .collect();
    let (status, substatus) = (change.status, change.substatus);
    state
        .db
        .run(move |c| {
            c.transaction::<_, IssueError, _>(|c| {
                for (group_id, id) in &ids {
                    apply_to_group(c, *group_id, id, status, substatus)?;
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| match e {
            IssueError::Db(d) => ApiError::from(d),
            other => ApiError::Internal(other.to_string()),
        })
}

/// The bulk answer: the changed fields.
fn bulk_answer(change: &Change) -> Value {
    let mut v = json!({
        "status": change.name,
        "statusDetails": change.details,
        "inbox": null,
    });
    if change.substatus_requested {
        v["substatus"] = json!(change.substatus.map(substatus_name));
    }
    v
}

/// The issues a bulk update names: `id=` parameters, else those matching `query`.
async fn targets(
    state: &State,
    who: &Principal,
    q: &[(String, String)],
    project_ids: Option<Vec<i64>>,
) -> ApiResult<Vec<read::Group>> {
    let ids: Vec<i64> = q
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| {
            v.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("Invalid id: {v}")))
        })
        .collect::<ApiResult<_>>()?;
    let mut filter = IssueFilter {
        organization_id: who.organization_id,
        project_ids,
        statuses: None,
        types: None,
        text: Vec::new(),
        ids: None,
        sort: Sort::Date,
    };
    if ids.is_empty() {
        let query = q
            .iter()
            .find(|(k, _)| k == "query")
            .map_or("is:unresolved", |(_, v)| v.as_str());
        let s = crate::search::parse(query).map_err(ApiError::BadRequest)?;
        filter.statuses = s.statuses;
        filter.types = s.types;
        filter.text = s.text;
        if let Some(status) = q.iter().find(|(k, _)| k == "status") {
            let parsed =
                crate::search::parse(&format!("is:{}", status.1)).map_err(ApiError::BadRequest)?;
            filter.statuses = parsed.statuses;
        }
    } else {
        filter.ids = Some(ids);
    }
    Ok(state
        .db
        .run(move |c| Ok::<_, DbError>(read::issues(c, &filter, Position::default(), BULK_LIMIT)?))
        .await?)
}

async fn bulk(
    state: &State,
    who: &Principal,
    raw: Option<String>,
    body: &[u8],
    project_ids: Option<Vec<i64>>,
) -> ApiResult<Response> {
    let change = parse(body).map_err(ApiError::BadRequest)?;
    let q = pairs(&raw);
    let groups = targets(state, who, &q, project_ids).await?;
    if groups.is_empty() {
        return Ok((
            StatusCode::NO_CONTENT,
            Json(json!({"detail": "No groups found"})),
        )
            .into_response());
    }
    apply(state, &groups, &change).await?;
    Ok(Json(bulk_answer(&change)).into_response())
}

pub async fn project_bulk(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, project)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let (_, p) = project_of(&state, &who, &org, &project).await?;
    bulk(&state, &who, raw, &body, Some(vec![p.id])).await
}

pub async fn org_bulk(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    org_of(&state, &who, &org).await?;
    let projects: Vec<i64> = pairs(&raw)
        .iter()
        .filter(|(k, v)| k == "project" && v != "-1")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    bulk(
        &state,
        &who,
        raw,
        &body,
        (!projects.is_empty()).then_some(projects),
    )
    .await
}

/// `PUT` on one issue: the updated issue.
pub async fn one(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let change = parse(&body).map_err(ApiError::BadRequest)?;
    let mut g = group_of(&state, &who, &id).await?;
    apply(&state, std::slice::from_ref(&g), &change).await?;
    g.status = change.status;
    g.substatus = change.substatus;
    let mut v = detail_of(&state, &who, g).await?;
    v["statusDetails"] = change.details;
    Ok(Json(v))
}

pub async fn org_one(
    AxState(state): AxState<Arc<State>>,
    who: Auth,
    Path((org, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    org_of(&state, &who, &org).await?;
    one(AxState(state), who, Path(id), body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(body: Value) -> Result<Change, String> {
        parse(body.to_string().as_bytes())
    }

    #[test]
    fn substatus_follows_sentry() {
        assert_eq!(
            p(json!({"status": "resolved"})).map(|c| c.substatus),
            Ok(None)
        );
        assert_eq!(
            p(json!({"status": "ignored"})).map(|c| c.substatus),
            Ok(Some(sub::FOREVER))
        );
        assert_eq!(
            p(json!({"status": "muted", "snoozeDuration": null})).map(|c| c.status),
            Ok(st::IGNORED)
        );
        assert_eq!(
            p(json!({"status": "ignored", "statusDetails": {"ignoreCount": 10}}))
                .map(|c| c.substatus),
            Ok(Some(sub::UNTIL_CONDITION_MET))
        );
        assert_eq!(
            p(json!({"status": "ignored", "substatus": "archived_until_escalating"}))
                .map(|c| c.substatus),
            Ok(Some(sub::UNTIL_ESCALATING))
        );
        assert_eq!(
            p(json!({"status": "unresolved"})).map(|c| c.substatus),
            Ok(Some(sub::ONGOING))
        );
        assert!(p(json!({"status": "bogus"})).is_err());
        assert!(p(json!({"hasSeen": true})).is_err());
        assert!(parse(b"[").is_err());
    }
}
