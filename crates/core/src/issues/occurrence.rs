//! Saving one occurrence (reference §5.5–§5.7, design §5): in one transaction, the event (stored
//! or looked up), the occurrence row (deduped by id), and the group created or updated. Because
//! the group changes only when the occurrence row was actually inserted, replays change nothing.

use super::parse::Occurrence;
use super::{group, limits, project, Applied, IssueError, Limited};
use crate::config::IssueSettings;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bpchar, Integer, Jsonb};
use serde_json::Value;

/// Saves `occ`; runs inside the caller's transaction.
pub fn save(
    conn: &mut PgConnection,
    occ: &Occurrence,
    projects: &mut project::Cache,
    settings: &IssueSettings,
) -> Result<Applied, IssueError> {
    let Some(project) = projects.get(conn, occ.project_id)? else {
        return Ok(Applied::Dropped("unknown_project"));
    };
    if !occ.group_type.allows_ingest(&project.organization_options) {
        return Ok(Applied::Dropped("group_type_disabled"));
    }
    let event = match &occ.event {
        Some(body) => {
            // First stored copy wins.
            let stored = diesel::sql_query(
                "INSERT INTO events (project_id, event_id, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind::<BigInt, _>(project.id)
            .bind::<Bpchar, _>(&occ.event_id)
            .bind::<Jsonb, _>(body)
            .execute(conn)?;
            if stored == 1 {
                body.clone()
            } else {
                load_event(conn, project.id, &occ.event_id)?.unwrap_or_else(|| body.clone())
            }
        }
        None => load_event(conn, project.id, &occ.event_id)?.ok_or_else(|| {
            IssueError::EventNotFound(format!(
                "Failed to lookup event({}) for project_id({})",
                occ.event_id, project.id
            ))
        })?,
    };
    let inserted = diesel::sql_query(
        "INSERT INTO occurrences (id, project_id, event_id, type, data) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind::<Bpchar, _>(&occ.id)
    .bind::<BigInt, _>(project.id)
    .bind::<Bpchar, _>(&occ.event_id)
    .bind::<Integer, _>(occ.group_type.id)
    .bind::<Jsonb, _>(&occ.data)
    .execute(conn)?;
    let limited = |reason| {
        Applied::Limited(Limited {
            reason,
            organization_id: project.organization_id,
            project_id: project.id,
            event_id: occ.event_id.clone(),
            occurrence_id: occ.id.clone(),
            category: occ.group_type.category,
        })
    };
    if inserted == 0 {
        if limits::any_enabled(settings, occ) {
            if let Some(reason) = limits::dropped_reason(conn, &occ.id)? {
                return Ok(limited(reason));
            }
        }
        return Ok(Applied::Duplicate);
    }
    if let Some(reason) = limits::check_occurrence(conn, settings, occ)? {
        limits::mark_dropped(conn, &occ.id, reason)?;
        return Ok(limited(reason));
    }

    let hash = &occ.fingerprint[0];
    let mut existing = group::find_for_update(conn, project.id, hash)?;
    let mut created = None;
    if existing.is_none() {
        if let Some(reason) = limits::check_creation(conn, settings, occ)? {
            limits::mark_dropped(conn, &occ.id, reason)?;
            return Ok(limited(reason));
        }
        created = group::create(conn, occ, &event)?;
        if created.is_none() {
            // Another transaction created this hash's group first: update theirs.
            existing = group::find_for_update(conn, project.id, hash)?;
        }
    }
    let (group_id, applied) = match (created, existing) {
        (Some(id), _) => (id, Applied::Created { group_id: id }),
        (None, Some(g)) => {
            if !group::same_category(&g, occ) {
                tracing::error!(
                    group_id = g.id,
                    issue_type = g.group_type,
                    occurrence_type = occ.group_type.id,
                    "save_issue_from_occurrence.category_mismatch"
                );
                return Ok(Applied::Dropped("category_mismatch"));
            }
            let regressed = group::update(conn, &g, occ, &event)?;
            (
                g.id,
                Applied::Updated {
                    group_id: g.id,
                    regressed,
                },
            )
        }
        (None, None) => {
            return Err(IssueError::Conflict(
                "group vanished while linking its hash".into(),
            ))
        }
    };
    group::backfill(conn, project.id, &occ.event_id, &occ.id, group_id)?;
    Ok(applied)
}

fn load_event(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
) -> QueryResult<Option<Value>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Jsonb)]
        data: Value,
    }
    diesel::sql_query("SELECT data FROM events WHERE project_id = $1 AND event_id = $2::bpchar")
        .bind::<BigInt, _>(project_id)
        .bind::<Bpchar, _>(event_id)
        .get_result::<Row>(conn)
        .optional()
        .map(|r| r.map(|r| r.data))
}
