//! `groups`, `group_hashes`, `activities` and `group_history`. Groups are read locked
//! (`FOR UPDATE`, in id order) and written back whole: the rules that compute their new state
//! live in `issues::group`, in memory, and are the same for one occurrence or a run of them.

use super::prepared::prepared;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Bpchar, Integer, Jsonb, Nullable, Text, Timestamptz};
use serde_json::Value;
use std::collections::HashMap;

/// (project id, `fingerprint[0]` hash).
pub type HashKey = (i64, String);

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

const GROUP_COLUMNS: &str =
    "g.id, g.project_id, g.type, g.status, g.substatus, g.priority, g.last_seen, g.last_occurrence_id, g.data";

/// A group read for an update, with the counters the update rule needs.
#[derive(Debug, Clone, QueryableByName)]
pub struct Locked {
    #[diesel(embed)]
    pub group: GroupRow,
    #[diesel(sql_type = Bpchar)]
    pub hash: String,
    #[diesel(sql_type = Timestamptz)]
    pub first_seen: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub times_seen: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub active_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Integer)]
    pub level: i32,
}

/// The existing groups of `hashes`, locked for update in id order (so concurrent runs lock
/// groups in the same order).
pub fn lock(conn: &mut PgConnection, hashes: &[HashKey]) -> QueryResult<HashMap<HashKey, Locked>> {
    if hashes.is_empty() {
        return Ok(HashMap::new());
    }
    let (pids, hs) = super::split_keys(hashes);
    let rows: Vec<Locked> = crate::prepared_format!(
        "SELECT {GROUP_COLUMNS}, h.hash, g.first_seen, g.times_seen, g.active_at, g.level \
         FROM group_hashes h JOIN groups g ON g.id = h.group_id \
         JOIN unnest($1::bigint[], $2::bpchar[]) AS k(p, h) ON h.project_id = k.p AND h.hash = k.h \
         ORDER BY g.id FOR UPDATE OF g"
    )
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(hs)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.group.project_id, r.hash.clone()), r))
        .collect())
}

/// The group `id`, locked for update.
pub fn lock_by_id(conn: &mut PgConnection, id: i64) -> QueryResult<Option<GroupRow>> {
    crate::prepared_format!("SELECT {GROUP_COLUMNS} FROM groups g WHERE g.id = $1 FOR UPDATE OF g")
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .optional()
}

/// `n` new group ids.
pub fn next_ids(conn: &mut PgConnection, n: usize) -> QueryResult<Vec<i64>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let rows: Vec<Id> = prepared(
        "SELECT nextval(pg_get_serial_sequence('groups', 'id')) AS id FROM generate_series(1, $1)",
    )
    .bind::<BigInt, _>(n as i64)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// A group's full state, as written.
#[derive(Debug, Clone)]
pub struct Write<'a> {
    pub id: i64,
    pub project_id: i64,
    pub hash: &'a str,
    pub group_type: i32,
    pub status: i32,
    pub substatus: Option<i32>,
    pub priority: i32,
    pub level: i32,
    pub title: &'a str,
    pub culprit: &'a str,
    pub message: &'a str,
    pub times_seen: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub active_at: Option<DateTime<Utc>>,
    pub last_occurrence_id: Option<&'a str>,
    pub data: &'a Value,
    /// Whether title, culprit, level and message change (an existing group).
    pub newest: bool,
    /// Whether the group regressed (its `resolved_at` is cleared).
    pub regressed: bool,
}

/// Column arrays of a set of group states.
#[derive(Default)]
struct Columns<'a> {
    id: Vec<i64>,
    project_id: Vec<i64>,
    group_type: Vec<i32>,
    status: Vec<i32>,
    substatus: Vec<Option<i32>>,
    priority: Vec<i32>,
    level: Vec<i32>,
    title: Vec<&'a str>,
    culprit: Vec<&'a str>,
    message: Vec<&'a str>,
    times_seen: Vec<i64>,
    first_seen: Vec<DateTime<Utc>>,
    last_seen: Vec<DateTime<Utc>>,
    active_at: Vec<Option<DateTime<Utc>>>,
    last_occurrence_id: Vec<Option<&'a str>>,
    data: Vec<&'a Value>,
    newest: Vec<bool>,
    regressed: Vec<bool>,
}

impl<'a> Columns<'a> {
    fn of(groups: &[Write<'a>]) -> Columns<'a> {
        let mut c = Columns::default();
        for g in groups {
            c.id.push(g.id);
            c.project_id.push(g.project_id);
            c.group_type.push(g.group_type);
            c.status.push(g.status);
            c.substatus.push(g.substatus);
            c.priority.push(g.priority);
            c.level.push(g.level);
            c.title.push(g.title);
            c.culprit.push(g.culprit);
            c.message.push(g.message);
            c.times_seen.push(g.times_seen);
            c.first_seen.push(g.first_seen);
            c.last_seen.push(g.last_seen);
            c.active_at.push(g.active_at);
            c.last_occurrence_id.push(g.last_occurrence_id);
            c.data.push(g.data);
            c.newest.push(g.newest);
            c.regressed.push(g.regressed);
        }
        c
    }
}

/// Inserts new groups (ids from [`next_ids`]) and links each to its hash. Returns how many
/// links were made: fewer than `groups.len()` means another transaction linked one of the
/// hashes first (the caller rolls back).
pub fn insert(conn: &mut PgConnection, groups: &[Write<'_>]) -> QueryResult<usize> {
    if groups.is_empty() {
        return Ok(0);
    }
    let c = Columns::of(groups);
    prepared(
        "INSERT INTO groups (id, project_id, type, status, substatus, priority, level, title, culprit, \
           message, times_seen, first_seen, last_seen, active_at, last_occurrence_id, data) \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::int[], $5::int[], $6::int[], \
           $7::int[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::timestamptz[], \
           $13::timestamptz[], $14::timestamptz[], $15::bpchar[], $16::jsonb[])",
    )
    .bind::<Array<BigInt>, _>(&c.id)
    .bind::<Array<BigInt>, _>(&c.project_id)
    .bind::<Array<Integer>, _>(c.group_type)
    .bind::<Array<Integer>, _>(c.status)
    .bind::<Array<Nullable<Integer>>, _>(c.substatus)
    .bind::<Array<Integer>, _>(c.priority)
    .bind::<Array<Integer>, _>(c.level)
    .bind::<Array<Text>, _>(c.title)
    .bind::<Array<Text>, _>(c.culprit)
    .bind::<Array<Text>, _>(c.message)
    .bind::<Array<BigInt>, _>(c.times_seen)
    .bind::<Array<Timestamptz>, _>(c.first_seen)
    .bind::<Array<Timestamptz>, _>(c.last_seen)
    .bind::<Array<Nullable<Timestamptz>>, _>(c.active_at)
    .bind::<Array<Nullable<Bpchar>>, _>(c.last_occurrence_id)
    .bind::<Array<Jsonb>, _>(c.data)
    .execute(conn)?;
    let hashes: Vec<&str> = groups.iter().map(|g| g.hash).collect();
    prepared(
        "INSERT INTO group_hashes (project_id, hash, group_id) \
         SELECT * FROM unnest($1::bigint[], $2::bpchar[], $3::bigint[]) \
         ON CONFLICT (project_id, hash) DO NOTHING",
    )
    .bind::<Array<BigInt>, _>(c.project_id)
    .bind::<Array<Bpchar>, _>(hashes)
    .bind::<Array<BigInt>, _>(c.id)
    .execute(conn)
}

/// Writes the new state of existing groups (one statement).
pub fn update(conn: &mut PgConnection, groups: &[Write<'_>]) -> QueryResult<()> {
    if groups.is_empty() {
        return Ok(());
    }
    let c = Columns::of(groups);
    prepared(
        "UPDATE groups g SET times_seen = u.times_seen, first_seen = u.first_seen, \
           last_seen = u.last_seen, \
           title = CASE WHEN u.newest THEN u.title ELSE g.title END, \
           culprit = CASE WHEN u.newest THEN u.culprit ELSE g.culprit END, \
           level = CASE WHEN u.newest THEN u.level ELSE g.level END, \
           message = CASE WHEN u.newest THEN u.message ELSE g.message END, \
           data = u.data, last_occurrence_id = u.last_occurrence_id, \
           status = u.status, substatus = u.substatus, active_at = u.active_at, \
           resolved_at = CASE WHEN u.regressed THEN NULL ELSE g.resolved_at END \
         FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::bool[], \
           $6::text[], $7::text[], $8::int[], $9::text[], $10::jsonb[], $11::bpchar[], $12::int[], \
           $13::int[], $14::timestamptz[], $15::bool[]) \
           AS u(id, times_seen, first_seen, last_seen, newest, title, culprit, level, message, data, \
                last_occurrence_id, status, substatus, active_at, regressed) \
         WHERE g.id = u.id",
    )
    .bind::<Array<BigInt>, _>(c.id)
    .bind::<Array<BigInt>, _>(c.times_seen)
    .bind::<Array<Timestamptz>, _>(c.first_seen)
    .bind::<Array<Timestamptz>, _>(c.last_seen)
    .bind::<Array<Bool>, _>(c.newest)
    .bind::<Array<Text>, _>(c.title)
    .bind::<Array<Text>, _>(c.culprit)
    .bind::<Array<Integer>, _>(c.level)
    .bind::<Array<Text>, _>(c.message)
    .bind::<Array<Jsonb>, _>(c.data)
    .bind::<Array<Nullable<Bpchar>>, _>(c.last_occurrence_id)
    .bind::<Array<Integer>, _>(c.status)
    .bind::<Array<Nullable<Integer>>, _>(c.substatus)
    .bind::<Array<Nullable<Timestamptz>>, _>(c.active_at)
    .bind::<Array<Bool>, _>(c.regressed)
    .execute(conn)?;
    Ok(())
}

/// Sets a group's status (a status change): `resolved_at` follows RESOLVED, and a group that
/// becomes unresolved again is active from now. `priority` is kept when `None`.
pub fn set_status(
    conn: &mut PgConnection,
    group_id: i64,
    status: i32,
    substatus: Option<i32>,
    priority: Option<i32>,
) -> QueryResult<()> {
    prepared(
        "UPDATE groups SET status = $2, substatus = $3, priority = COALESCE($4, priority), \
           resolved_at = CASE WHEN $2 = 1 THEN now() ELSE NULL END, \
           active_at = CASE WHEN $2 = 0 AND status <> 0 THEN now() ELSE active_at END \
         WHERE id = $1",
    )
    .bind::<BigInt, _>(group_id)
    .bind::<Integer, _>(status)
    .bind::<Nullable<Integer>, _>(substatus)
    .bind::<Nullable<Integer>, _>(priority)
    .execute(conn)?;
    Ok(())
}

/// One activity row and, when `history` is non-empty, one history row.
pub fn record(
    conn: &mut PgConnection,
    group_id: i64,
    project_id: i64,
    activity: &str,
    data: Value,
    history: &str,
) -> QueryResult<()> {
    prepared("INSERT INTO activities (group_id, project_id, type, data) VALUES ($1, $2, $3, $4)")
        .bind::<BigInt, _>(group_id)
        .bind::<BigInt, _>(project_id)
        .bind::<Text, _>(activity)
        .bind::<Jsonb, _>(data)
        .execute(conn)?;
    if !history.is_empty() {
        prepared("INSERT INTO group_history (group_id, project_id, status) VALUES ($1, $2, $3)")
            .bind::<BigInt, _>(group_id)
            .bind::<BigInt, _>(project_id)
            .bind::<Text, _>(history)
            .execute(conn)?;
    }
    Ok(())
}
