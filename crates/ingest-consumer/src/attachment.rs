//! Attachments (reference §2.6–§2.7): standalone attachment messages, and the attachments an
//! event lists. The body comes from the stored chunks, inline `data`, or is empty; a non-empty
//! body is stored raw in object storage under a key built from ids only; the row is inserted once
//! per (project, event, attachment id); ACCEPTED / INVALID `missing_chunks` / RATE_LIMITED
//! outcomes are emitted once per attachment.

use crate::stage::{emit, unavailable, Deps, Step};
use crate::{chunk, metrics, shed};
use bytes::Bytes;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use serde_json::Value;
use sha1::{Digest, Sha1};
use sluice_core::issues::project::Project;
use sluice_core::kafka::consumer::Outcome;
use sluice_core::messages::enums::{data_category, Outcome as O};
use sluice_core::messages::{AttachmentMessage, ChunkedAttachment, OutcomeMessage, Timestamp};
use sluice_core::storage::DbError;

/// Attachment types a standalone attachment message may carry.
pub const STANDALONE_TYPES: [&str; 2] = ["event.attachment", "event.view_hierarchy"];

/// Where an attachment belongs.
pub struct Owner<'a> {
    pub project: &'a Project,
    /// 32 lowercase hex characters.
    pub event_id: &'a str,
    /// The event's group when known; otherwise looked up when the row is written.
    pub group_id: Option<i64>,
    /// Ingest time of the event (outcome timestamp); now when absent.
    pub start_time: Option<Timestamp>,
    /// The DSN key id, for outcomes.
    pub key_id: Option<u64>,
}

/// What became of one attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Stored,
    MissingChunks,
    RateLimited,
}

/// Whether the organization accepts attachments (org option `event_attachments`, default on).
pub fn enabled(project: &Project) -> bool {
    project
        .organization_options
        .get("event_attachments")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

/// A standalone `attachment` message.
pub async fn process_individual(
    deps: &Deps,
    msg: &AttachmentMessage,
    project: &Project,
) -> Step<()> {
    let pid = project.id as u64;
    if !enabled(project) {
        tracing::info!(
            organization_id = project.organization_id,
            "Organization has no event attachments"
        );
        metrics::count("attachment", "attachments_disabled");
        return Ok(());
    }
    if shed::before_parse(&deps.settings, project, &msg.event_id, true) {
        metrics::count("attachment", "load_shed");
        return Ok(());
    }
    let att = &msg.attachment;
    if STANDALONE_TYPES.contains(&att.attachment_type.as_str()) {
        let owner = Owner {
            project,
            event_id: &msg.event_id,
            group_id: None,
            start_time: None,
            key_id: None,
        };
        save(deps, &owner, att).await?;
    } else {
        tracing::error!(
            attachment_type = %sluice_core::messages::dlq::truncate_utf8(&att.attachment_type, 64),
            "invalid individual attachment type"
        );
        metrics::count("attachment", "invalid_type");
    }
    chunk::delete(&deps.db, pid, &msg.event_id, &att.id)
        .await
        .map_err(|e| Outcome::from_db(&e))
}

/// Saves one attachment of `owner` (reference §2.7). Idempotent: the object is rewritten with
/// the same bytes, the row is inserted once, the outcome emitted once.
pub async fn save(deps: &Deps, owner: &Owner<'_>, att: &ChunkedAttachment) -> Step<Saved> {
    let pid = owner.project.id as u64;
    let outcome_key = outcome_key(pid, owner.event_id, &att.id);
    let Some(parts) = body(deps, pid, owner.event_id, att).await? else {
        tracing::error!(event_id = owner.event_id, attachment_id = %att.id, "Missing chunks");
        metrics::count("attachment", "missing_chunks");
        let mut o = outcome(owner, O::Invalid, 1);
        o.reason = Some("missing_chunks".into());
        emit(deps, &outcome_key, &o).await?;
        return Ok(Saved::MissingChunks);
    };
    let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
    if deps.limiter.enabled() && !exists(deps, pid, owner.event_id, &att.id).await? {
        if let Some(which) = deps.limiter.check(pid) {
            metrics::count("attachment", which.label());
            let mut o = outcome(owner, O::RateLimited, size.max(1));
            o.reason = Some("rate_limited".into());
            emit(deps, &outcome_key, &o).await?;
            return Ok(Saved::RateLimited);
        }
    }
    let sha1 = sha1_hex(&parts);
    let content_type = content_type(att);
    let blob_path = if size > 0 {
        let key = deps
            .objects
            .attachment_key(pid, owner.event_id, &att.id)
            .map_err(|e| {
                Outcome::Reject(sluice_core::messages::Rejection::new(
                    sluice_core::messages::DlqReason::InvalidField,
                    e.to_string(),
                ))
            })?;
        deps.objects
            .put_parts(&key, parts, Some(&content_type))
            .await
            .map_err(unavailable)?;
        Some(key)
    } else {
        None
    };
    let row = Row {
        project_id: owner.project.id,
        event_id: owner.event_id.to_owned(),
        attachment_id: att.id.clone(),
        group_id: owner.group_id,
        kind: att.attachment_type.clone(),
        name: att.name.clone(),
        content_type,
        size: size as i64,
        sha1,
        blob_path,
    };
    deps.db
        .run(move |c| insert(c, std::slice::from_ref(&row)))
        .await
        .map_err(|e| Outcome::from_db(&e))?;
    emit(
        deps,
        &outcome_key,
        &outcome(owner, O::Accepted, size.max(1)),
    )
    .await?;
    metrics::count("attachment", "stored");
    Ok(Saved::Stored)
}

/// The body as parts (chunks in order, or the inline data), or `None` when chunks are missing.
async fn body(
    deps: &Deps,
    project_id: u64,
    event_id: &str,
    att: &ChunkedAttachment,
) -> Step<Option<Vec<Bytes>>> {
    if let Some(data) = &att.data {
        return Ok(Some(vec![Bytes::from(data.clone())]));
    }
    match att.chunks {
        Some(n) if n > 0 => {
            let (e, a) = (event_id.to_owned(), att.id.clone());
            deps.db
                .run(move |c| chunk::load(c, project_id, &e, &a, n).map_err(DbError::Query))
                .await
                .map_err(|e| Outcome::from_db(&e))
        }
        _ => {
            if att.stored_id.is_some() {
                tracing::warn!(attachment_id = %att.id, "attachment stored elsewhere (stored_id) is kept as empty");
            }
            Ok(Some(Vec::new()))
        }
    }
}

/// The given content type up to the first `;`, else one guessed from the file name, else
/// `application/octet-stream`.
pub fn content_type(att: &ChunkedAttachment) -> String {
    att.content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            mime_guess::from_path(&att.name)
                .first_raw()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// The natural key of an attachment's outcome (one per attachment, whatever the outcome).
pub fn outcome_key(project_id: u64, event_id: &str, attachment_id: &str) -> String {
    format!("attachment:{project_id}:{event_id}:{attachment_id}")
}

/// The outcome of one attachment of `owner`.
pub fn outcome(owner: &Owner<'_>, o: O, quantity: u64) -> OutcomeMessage {
    let mut m = OutcomeMessage::new(
        owner.project.organization_id as u64,
        owner.project.id as u64,
        o,
        data_category::ATTACHMENT,
    );
    m.quantity = quantity;
    m.event_id = Some(owner.event_id.to_owned());
    m.key_id = owner.key_id;
    if let Some(t) = owner.start_time {
        m.timestamp = t;
    }
    m
}

async fn exists(deps: &Deps, project_id: u64, event_id: &str, attachment_id: &str) -> Step<bool> {
    let (e, a) = (event_id.to_owned(), attachment_id.to_owned());
    deps.db
        .run(move |c| {
            #[derive(QueryableByName)]
            struct N {
                #[diesel(sql_type = BigInt)]
                n: i64,
            }
            let r: N = diesel::sql_query(
                "SELECT count(*) AS n FROM event_attachments \
                 WHERE project_id = $1 AND event_id = $2::bpchar AND attachment_id = $3",
            )
            .bind::<BigInt, _>(project_id as i64)
            .bind::<Text, _>(e)
            .bind::<Text, _>(a)
            .get_result(c)?;
            Ok::<_, DbError>(r.n > 0)
        })
        .await
        .map_err(|e| Outcome::from_db(&e))
}

/// The hex sha1 of a body given as parts.
pub fn sha1_hex(parts: &[Bytes]) -> String {
    let mut sha = Sha1::new();
    for p in parts {
        sha.update(p);
    }
    hex::encode(sha.finalize())
}

/// An `event_attachments` row.
pub struct Row {
    pub project_id: i64,
    pub event_id: String,
    pub attachment_id: String,
    pub group_id: Option<i64>,
    pub kind: String,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub sha1: String,
    pub blob_path: Option<String>,
}

/// Inserts each row once (one statement), with its own group, else its event's group when the
/// event has one. Rows left without a group then re-read their event's group under a share lock,
/// after the insert is committed (see `issues::group::backfill`): the event may have been stored
/// and grouped while the insert ran, and that back-fill could not see these rows yet. That
/// includes rows that were already there: an earlier attempt may have stored them and then
/// failed before linking them.
pub fn insert(c: &mut PgConnection, rows: &[Row]) -> Result<(), DbError> {
    #[derive(QueryableByName)]
    struct Inserted {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Text)]
        event_id: String,
        #[diesel(sql_type = Text)]
        attachment_id: String,
        #[diesel(sql_type = Nullable<BigInt>)]
        group_id: Option<i64>,
    }
    let col = |f: fn(&Row) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let projects: Vec<i64> = rows.iter().map(|r| r.project_id).collect();
    let groups: Vec<Option<i64>> = rows.iter().map(|r| r.group_id).collect();
    let sizes: Vec<i64> = rows.iter().map(|r| r.size).collect();
    let paths: Vec<Option<String>> = rows.iter().map(|r| r.blob_path.clone()).collect();
    let inserted: Vec<Inserted> = diesel::sql_query(
        "WITH input AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
                         $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[]) \
                         AS t(p, e, a, g, k, n, ct, sz, sh, bp)) \
         INSERT INTO event_attachments \
           (project_id, event_id, attachment_id, group_id, type, name, content_type, size, sha1, blob_path) \
         SELECT p, e::bpchar, a, \
                COALESCE(g, (SELECT group_id FROM events ev WHERE ev.project_id = p AND ev.event_id = e::bpchar)), \
                k, n, ct, sz, sh, bp FROM input \
         ON CONFLICT (project_id, event_id, attachment_id) DO NOTHING \
         RETURNING project_id, event_id::text AS event_id, attachment_id, group_id",
    )
    .bind::<Array<BigInt>, _>(projects)
    .bind::<Array<Text>, _>(col(|r| r.event_id.clone()))
    .bind::<Array<Text>, _>(col(|r| r.attachment_id.clone()))
    .bind::<Array<Nullable<BigInt>>, _>(groups)
    .bind::<Array<Text>, _>(col(|r| r.kind.clone()))
    .bind::<Array<Text>, _>(col(|r| r.name.clone()))
    .bind::<Array<Text>, _>(col(|r| r.content_type.clone()))
    .bind::<Array<BigInt>, _>(sizes)
    .bind::<Array<Text>, _>(col(|r| r.sha1.clone()))
    .bind::<Array<Nullable<Text>>, _>(paths)
    .load(c)?;
    let grouped: std::collections::HashSet<(i64, String, String)> = inserted
        .into_iter()
        .filter(|r| r.group_id.is_some())
        .map(|r| (r.project_id, r.event_id, r.attachment_id))
        .collect();
    let mut keys: Vec<(i64, String)> = rows
        .iter()
        .filter(|r| !grouped.contains(&(r.project_id, r.event_id.clone(), r.attachment_id.clone())))
        .map(|r| (r.project_id, r.event_id.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let (pids, eids) = keys.into_iter().unzip();
    fill_groups(c, Linked::Attachments, pids, eids)
}

/// Rows that belong to an event and take its group.
#[derive(Debug, Clone, Copy)]
pub enum Linked {
    Attachments,
    Reports,
}

/// Sets `group_id` on the linked rows of one event from the event, read under a share lock.
pub fn fill_group(
    c: &mut PgConnection,
    linked: Linked,
    project_id: i64,
    event_id: &str,
) -> Result<(), DbError> {
    fill_groups(c, linked, vec![project_id], vec![event_id.to_owned()])
}

/// [`fill_group`] for many events: one transaction that first takes a share lock on every event
/// in key order (as the grouping back-fill locks them before it touches attachments and reports,
/// so the two cannot wait on each other), then sets the groups in one statement.
pub fn fill_groups(
    c: &mut PgConnection,
    linked: Linked,
    project_ids: Vec<i64>,
    event_ids: Vec<String>,
) -> Result<(), DbError> {
    if project_ids.is_empty() {
        return Ok(());
    }
    #[derive(QueryableByName)]
    struct Event {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Text)]
        event_id: String,
        #[diesel(sql_type = Nullable<BigInt>)]
        group_id: Option<i64>,
    }
    let table = match linked {
        Linked::Attachments => "event_attachments",
        Linked::Reports => "user_reports",
    };
    c.transaction(|c| {
        let events: Vec<Event> = diesel::sql_query(
            "SELECT ev.project_id, ev.event_id::text AS event_id, ev.group_id FROM events ev \
             JOIN unnest($1::bigint[], $2::text[]) AS k(p, e) ON ev.project_id = k.p AND ev.event_id = k.e::bpchar \
             ORDER BY ev.project_id, ev.event_id FOR SHARE OF ev",
        )
        .bind::<Array<BigInt>, _>(project_ids)
        .bind::<Array<Text>, _>(event_ids)
        .load(c)?;
        let (mut pids, mut eids, mut gids) = (Vec::new(), Vec::new(), Vec::new());
        for e in events {
            if let Some(g) = e.group_id {
                pids.push(e.project_id);
                eids.push(e.event_id);
                gids.push(g);
            }
        }
        if pids.is_empty() {
            return Ok(());
        }
        diesel::sql_query(format!(
            "UPDATE {table} t SET group_id = u.g \
             FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS u(p, e, g) \
             WHERE t.project_id = u.p AND t.event_id = u.e::bpchar AND t.group_id IS NULL"
        ))
        .bind::<Array<BigInt>, _>(pids)
        .bind::<Array<Text>, _>(eids)
        .bind::<Array<BigInt>, _>(gids)
        .execute(c)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(name: &str, ct: Option<&str>) -> ChunkedAttachment {
        ChunkedAttachment {
            id: "a".into(),
            name: name.into(),
            content_type: ct.map(str::to_owned),
            attachment_type: "event.attachment".into(),
            chunks: None,
            data: None,
            stored_id: None,
            size: None,
            rate_limited: false,
        }
    }

    #[test]
    fn content_type_rules() {
        assert_eq!(
            content_type(&att("x.bin", Some("text/plain; charset=utf-8"))),
            "text/plain"
        );
        assert_eq!(content_type(&att("lol.txt", None)), "text/plain");
        assert_eq!(content_type(&att("shot.png", Some("  "))), "image/png");
        assert_eq!(
            content_type(&att("noext", None)),
            "application/octet-stream"
        );
    }
}
