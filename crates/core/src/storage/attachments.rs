//! `event_attachments`: one row per (project, event, attachment id), inserted once.

use super::events::EXPIRY;
use super::linking::{self, Linked};
use super::prepared::prepared;
use super::EventKey;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use std::collections::HashSet;

/// An `event_attachments` row.
#[derive(Clone)]
pub struct Row {
    pub project_id: i64,
    pub event_id: String,
    pub attachment_id: String,
    pub group_id: Option<i64>,
    pub kind: String,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    /// 40 lowercase hex characters.
    pub sha1: String,
    /// The object's key; `None` for an empty body.
    pub blob_path: Option<String>,
    /// Days to keep it when the message said (Relay's `retention_days`); else the project's.
    pub retention_days: Option<i32>,
}

/// Inserts each row once (one statement), with its own group, else its event's group when the
/// event has one. Rows left without a group then take their event's group through
/// [`linking::fill_groups`], including rows that were already there: an earlier attempt may have
/// stored them and failed before linking them.
pub fn insert(conn: &mut PgConnection, rows: &[Row]) -> QueryResult<()> {
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
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Row) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let projects: Vec<i64> = rows.iter().map(|r| r.project_id).collect();
    let groups: Vec<Option<i64>> = rows.iter().map(|r| r.group_id).collect();
    let sizes: Vec<i64> = rows.iter().map(|r| r.size).collect();
    let paths: Vec<Option<&str>> = rows.iter().map(|r| r.blob_path.as_deref()).collect();
    let days: Vec<Option<i32>> = rows.iter().map(|r| r.retention_days).collect();
    let inserted: Vec<Inserted> = crate::prepared_format!(
        "WITH input AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
                         $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[], $11::int[]) \
                         AS t(p, e, a, g, k, n, ct, sz, sh, bp, r)) \
         INSERT INTO event_attachments \
           (project_id, event_id, attachment_id, group_id, type, name, content_type, size, sha1, blob_path, expires_at) \
         SELECT i.p, i.e::bpchar, i.a, \
                COALESCE(i.g, (SELECT group_id FROM events ev WHERE ev.project_id = i.p AND ev.event_id = i.e::bpchar)), \
                i.k, i.n, i.ct, i.sz, i.sh, i.bp, {EXPIRY} \
         FROM input i LEFT JOIN project_retention pr ON pr.project_id = i.p \
         ON CONFLICT (project_id, event_id, attachment_id) DO NOTHING \
         RETURNING project_id, event_id::text AS event_id, attachment_id, group_id"
    )
    .bind::<Array<BigInt>, _>(projects)
    .bind::<Array<Text>, _>(col(|r| &r.event_id))
    .bind::<Array<Text>, _>(col(|r| &r.attachment_id))
    .bind::<Array<Nullable<BigInt>>, _>(groups)
    .bind::<Array<Text>, _>(col(|r| &r.kind))
    .bind::<Array<Text>, _>(col(|r| &r.name))
    .bind::<Array<Text>, _>(col(|r| &r.content_type))
    .bind::<Array<BigInt>, _>(sizes)
    .bind::<Array<Text>, _>(col(|r| &r.sha1))
    .bind::<Array<Nullable<Text>>, _>(paths)
    .bind::<Array<Nullable<Integer>>, _>(days)
    .load(conn)?;
    let grouped: HashSet<(i64, String, String)> = inserted
        .into_iter()
        .filter(|r| r.group_id.is_some())
        .map(|r| (r.project_id, r.event_id, r.attachment_id))
        .collect();
    let keys: Vec<EventKey> = rows
        .iter()
        .filter(|r| !grouped.contains(&(r.project_id, r.event_id.clone(), r.attachment_id.clone())))
        .map(|r| (r.project_id, r.event_id.clone()))
        .collect();
    linking::fill_groups(conn, Linked::Attachments, &keys)
}

/// Whether the attachment's row exists.
pub fn exists(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
    attachment_id: &str,
) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let r: N = prepared(
        "SELECT count(*) AS n FROM event_attachments \
         WHERE project_id = $1 AND event_id = $2::bpchar AND attachment_id = $3",
    )
    .bind::<BigInt, _>(project_id)
    .bind::<Text, _>(event_id)
    .bind::<Text, _>(attachment_id)
    .get_result(conn)?;
    Ok(r.n > 0)
}

/// Attachment types that are crash reports (Sentry's `CRASH_REPORT_TYPES`).
pub const CRASH_REPORT_TYPES: [&str; 2] = ["event.minidump", "event.applecrashreport"];

/// How many crash reports the group of event `event_id` holds besides the event's own, counting
/// at most `limit`: the group is `group_id` when known, else the one that owns grouping hash
/// `hash` (md5 hex) in the project; 0 when there is no such group yet. Reports of events not
/// grouped yet are not counted, so a burst on a new issue can exceed the limit.
pub fn crash_reports_of_group(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
    group_id: Option<i64>,
    hash: &str,
    limit: i64,
) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let n: N = prepared(
        "SELECT count(*) AS n FROM (SELECT 1 FROM event_attachments a \
           WHERE a.project_id = $1 AND a.type = ANY($4) AND a.event_id <> $6::bpchar \
             AND a.group_id = COALESCE($2, (SELECT h.group_id FROM group_hashes h \
                                            WHERE h.project_id = $1 AND h.hash = $3::bpchar)) \
           LIMIT $5) AS c",
    )
    .bind::<BigInt, _>(project_id)
    .bind::<Nullable<BigInt>, _>(group_id)
    .bind::<Text, _>(hash)
    .bind::<Array<Text>, _>(CRASH_REPORT_TYPES.to_vec())
    .bind::<BigInt, _>(limit)
    .bind::<Text, _>(event_id)
    .get_result(conn)?;
    Ok(n.n)
}
