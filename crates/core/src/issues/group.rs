//! Issue groups: creation, the deterministic update rule, regression, activity and history.

use super::grouptype;
use super::parse::Occurrence;
use crate::messages::enums::{group_status, group_substatus, priority};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bpchar, Integer, Jsonb, Nullable, Text, Timestamptz};
use serde_json::{json, Value};

/// The columns of a group that processing reads.
#[derive(Debug, Clone, QueryableByName)]
pub struct GroupRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = Integer, column_name = "type")]
    pub group_type: i32,
    #[diesel(sql_type = Integer)]
    pub status: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    pub substatus: Option<i32>,
    #[diesel(sql_type = Integer)]
    pub priority: i32,
    #[diesel(sql_type = Timestamptz)]
    pub last_seen: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Bpchar>)]
    pub last_occurrence_id: Option<String>,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
}

pub(crate) const GROUP_COLUMNS: &str =
    "g.id, g.project_id, g.type, g.status, g.substatus, g.priority, g.last_seen, g.last_occurrence_id, g.data";

/// The group of `hash` in `project_id`, locked for update.
pub fn find_for_update(
    conn: &mut PgConnection,
    project_id: i64,
    hash: &str,
) -> QueryResult<Option<GroupRow>> {
    diesel::sql_query(format!(
        "SELECT {GROUP_COLUMNS} FROM group_hashes h JOIN groups g ON g.id = h.group_id \
         WHERE h.project_id = $1 AND h.hash = $2::bpchar FOR UPDATE OF g"
    ))
    .bind::<BigInt, _>(project_id)
    .bind::<Bpchar, _>(hash)
    .get_result(conn)
    .optional()
}

/// Name of a priority value in activity data.
pub fn priority_name(p: i32) -> &'static str {
    match p {
        priority::LOW => "low",
        priority::HIGH => "high",
        _ => "medium",
    }
}

/// Sentry's search message of the group: the event's message, then title, subtitle and culprit,
/// each appended when non-empty and not already contained.
pub(crate) fn search_message(event: &Value, occ: &Occurrence) -> String {
    let base = event
        .get("logentry")
        .and_then(|l| l.get("formatted"))
        .or_else(|| event.get("message"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut msg = base.to_owned();
    for part in [&occ.issue_title, &occ.subtitle, &occ.culprit] {
        if !part.is_empty() && !msg.contains(part.as_str()) {
            if !msg.is_empty() {
                msg.push(' ');
            }
            msg.push_str(part);
        }
    }
    msg
}

/// `groups.data`: event type, title, culprit, and metadata (title, value = subtitle, initial
/// priority; feedback fields for feedback issues), keeping the event's own metadata.
pub(crate) fn materialized_data(event: &Value, occ: &Occurrence) -> Value {
    let mut metadata = event
        .get("metadata")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if let Value::Object(m) = &mut metadata {
        m.insert("title".into(), json!(occ.issue_title));
        m.insert("value".into(), json!(occ.subtitle));
        m.insert("initial_priority".into(), json!(occ.priority));
        if occ.group_type.category == crate::messages::enums::group_category::FEEDBACK {
            for key in ["contact_email", "message", "name", "source"] {
                m.insert(
                    key.into(),
                    occ.evidence_data.get(key).cloned().unwrap_or(Value::Null),
                );
            }
        }
    }
    json!({
        "type": if occ.group_type.id == 1 { "error" } else { "generic" },
        "title": occ.issue_title,
        "culprit": occ.culprit,
        "location": event.get("location").cloned().unwrap_or(Value::Null),
        "last_received": occ.detection_time.0.to_rfc3339(),
        "metadata": metadata,
    })
}

/// Creates the group for `occ`. Returns its id, or `None` when a concurrent transaction created
/// the group of this hash first (the caller then updates that one).
pub fn create(
    conn: &mut PgConnection,
    occ: &Occurrence,
    event: &Value,
) -> QueryResult<Option<i64>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let seen = occ.detection_time.0;
    let id: Id = diesel::sql_query(
        "INSERT INTO groups (project_id, type, status, substatus, priority, level, title, culprit, message, \
         times_seen, first_seen, last_seen, active_at, last_occurrence_id, data) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10, $10, $11, $12) RETURNING id",
    )
    .bind::<BigInt, _>(occ.project_id as i64)
    .bind::<Integer, _>(occ.group_type.id)
    .bind::<Integer, _>(group_status::UNRESOLVED)
    .bind::<Integer, _>(group_substatus::NEW)
    .bind::<Integer, _>(occ.priority)
    .bind::<Integer, _>(occ.level_num)
    .bind::<Text, _>(&occ.issue_title)
    .bind::<Text, _>(&occ.culprit)
    .bind::<Text, _>(search_message(event, occ))
    .bind::<Timestamptz, _>(seen)
    .bind::<Bpchar, _>(&occ.id)
    .bind::<Jsonb, _>(materialized_data(event, occ))
    .get_result(conn)?;
    let linked = diesel::sql_query(
        "INSERT INTO group_hashes (project_id, hash, group_id) VALUES ($1, $2, $3) ON CONFLICT (project_id, hash) DO NOTHING",
    )
    .bind::<BigInt, _>(occ.project_id as i64)
    .bind::<Bpchar, _>(&occ.fingerprint[0])
    .bind::<BigInt, _>(id.id)
    .execute(conn)?;
    if linked == 1 {
        Ok(Some(id.id))
    } else {
        diesel::sql_query("DELETE FROM groups WHERE id = $1")
            .bind::<BigInt, _>(id.id)
            .execute(conn)?;
        Ok(None)
    }
}

/// Adds `occ` to an existing group: times seen, first/last seen, and (only when `occ` is the
/// newest by detection time, ties to the larger occurrence id) title, culprit, level, message and
/// data, so the result does not depend on arrival order. A RESOLVED group regresses (and becomes
/// active at `occ`'s time); a group still NEW stays active since its earliest occurrence. Returns
/// whether it regressed.
pub fn update(
    conn: &mut PgConnection,
    group: &GroupRow,
    occ: &Occurrence,
    event: &Value,
) -> QueryResult<bool> {
    let seen = occ.detection_time.0;
    let newest = (seen, occ.id.as_str())
        >= (
            group.last_seen,
            group.last_occurrence_id.as_deref().unwrap_or(""),
        );
    let regressed = group.status == group_status::RESOLVED;
    diesel::sql_query(
        "UPDATE groups SET times_seen = times_seen + 1, \
           first_seen = LEAST(first_seen, $2), last_seen = GREATEST(last_seen, $2), \
           title = CASE WHEN $3 THEN $4 ELSE title END, \
           culprit = CASE WHEN $3 THEN $5 ELSE culprit END, \
           level = CASE WHEN $3 THEN $6 ELSE level END, \
           message = CASE WHEN $3 THEN $7 ELSE message END, \
           data = CASE WHEN $3 THEN data || $8 ELSE data END, \
           last_occurrence_id = CASE WHEN $3 THEN $9 ELSE last_occurrence_id END, \
           status = CASE WHEN $10 THEN 0 ELSE status END, \
           substatus = CASE WHEN $10 THEN $11 ELSE substatus END, \
           active_at = CASE WHEN $10 THEN $2 WHEN substatus = $12 THEN LEAST(active_at, $2) \
                       ELSE active_at END, \
           resolved_at = CASE WHEN $10 THEN NULL ELSE resolved_at END \
         WHERE id = $1",
    )
    .bind::<BigInt, _>(group.id)
    .bind::<Timestamptz, _>(seen)
    .bind::<diesel::sql_types::Bool, _>(newest)
    .bind::<Text, _>(&occ.issue_title)
    .bind::<Text, _>(&occ.culprit)
    .bind::<Integer, _>(occ.level_num)
    .bind::<Text, _>(search_message(event, occ))
    .bind::<Jsonb, _>(merged_data(&group.data, event, occ))
    .bind::<Bpchar, _>(&occ.id)
    .bind::<diesel::sql_types::Bool, _>(regressed)
    .bind::<Integer, _>(group_substatus::REGRESSED)
    .bind::<Integer, _>(group_substatus::NEW)
    .execute(conn)?;
    if regressed {
        record(
            conn,
            group,
            "set_regression",
            json!({ "event_id": occ.event_id, "version": null }),
            "regressed",
        )?;
    }
    Ok(regressed)
}

/// The group's data with the newest occurrence's fields overlaid; metadata merged key by key.
pub(crate) fn merged_data(existing: &Value, event: &Value, occ: &Occurrence) -> Value {
    let mut incoming = materialized_data(event, occ);
    if let (Some(old), Some(Value::Object(new_meta))) = (
        existing.get("metadata").and_then(Value::as_object),
        incoming.get_mut("metadata"),
    ) {
        for (k, v) in old {
            // The priority a group started with stays what it was.
            if k == "initial_priority" || !new_meta.contains_key(k) {
                new_meta.insert(k.clone(), v.clone());
            }
        }
    }
    incoming
}

/// One activity row and, when `history` is non-empty, one history row.
pub fn record(
    conn: &mut PgConnection,
    group: &GroupRow,
    activity: &str,
    data: Value,
    history: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO activities (group_id, project_id, type, data) VALUES ($1, $2, $3, $4)",
    )
    .bind::<BigInt, _>(group.id)
    .bind::<BigInt, _>(group.project_id)
    .bind::<Text, _>(activity)
    .bind::<Jsonb, _>(data)
    .execute(conn)?;
    if !history.is_empty() {
        diesel::sql_query(
            "INSERT INTO group_history (group_id, project_id, status) VALUES ($1, $2, $3)",
        )
        .bind::<BigInt, _>(group.id)
        .bind::<BigInt, _>(group.project_id)
        .bind::<Text, _>(history)
        .execute(conn)?;
    }
    Ok(())
}

/// Whether an existing group may take occurrences of `occ`'s type (same category).
pub fn same_category(group: &GroupRow, occ: &Occurrence) -> bool {
    grouptype::get(group.group_type).map(|g| g.category) == Some(occ.group_type.category)
}

/// Sets `group_id` on the occurrence, and on its event, the event's attachments and user reports
/// where they have none yet (the first group an event gets stays).
///
/// Two statements, the event first: updating the event row locks it, so a writer that attaches
/// an attachment or report and then reads the event's group `FOR SHARE` either sees this group
/// or committed before the second statement's snapshot, which then includes its row.
pub fn backfill(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
    occurrence_id: &str,
    group_id: i64,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE events SET group_id = $3 \
         WHERE project_id = $1 AND event_id = $2::bpchar AND group_id IS NULL",
    )
    .bind::<BigInt, _>(project_id)
    .bind::<Bpchar, _>(event_id)
    .bind::<BigInt, _>(group_id)
    .execute(conn)?;
    diesel::sql_query(
        "WITH o AS (UPDATE occurrences SET group_id = $3 WHERE id = $4::bpchar), \
              a AS (UPDATE event_attachments SET group_id = $3 \
                    WHERE project_id = $1 AND event_id = $2::bpchar AND group_id IS NULL) \
         UPDATE user_reports SET group_id = $3 \
         WHERE project_id = $1 AND event_id = $2::bpchar AND group_id IS NULL",
    )
    .bind::<BigInt, _>(project_id)
    .bind::<Bpchar, _>(event_id)
    .bind::<BigInt, _>(group_id)
    .bind::<Bpchar, _>(occurrence_id)
    .execute(conn)?;
    Ok(())
}
