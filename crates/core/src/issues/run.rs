//! Saving a run of consecutive occurrences with set-based statements: the same effects as calling
//! [`occurrence::save`](super::occurrence::save) for each of them in order, in about ten round
//! trips for the whole run instead of six or more per occurrence.
//!
//! The run's groups are locked and read once, every occurrence is applied to them in memory in
//! arrival order (creation, times seen, first/last seen, the newest-wins rule for title, culprit,
//! level, message and data, regression), and the final states are written back in one statement
//! each. Anything unusual (an event to look up that is not stored, another transaction creating
//! one of the run's groups) returns an error: the caller rolls the transaction back and saves the
//! messages one by one, which handles every case.
//!
//! Runs never include status changes (they end a run) nor occurrences subject to an enabled limit.

use super::group::{self, GroupRow};
use super::parse::Occurrence;
use super::{project, Applied, IssueError};
use crate::messages::enums::{group_status, group_substatus};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Bpchar, Integer, Jsonb, Nullable, Text, Timestamptz};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

type Key = (i64, String);

/// A group as the run leaves it.
struct State {
    row: GroupRow,
    /// md5 of `fingerprint[0]`.
    hash: String,
    /// Created by this run (written with INSERT, not UPDATE).
    new: bool,
    times_seen: i64,
    first_seen: DateTime<Utc>,
    active_at: Option<DateTime<Utc>>,
    level: i32,
    title: String,
    culprit: String,
    message: String,
    /// Whether title, culprit, level and message changed (existing groups).
    newest_applied: bool,
    /// The occurrence (index, event id) that regressed the group, if one did.
    regressed_by: Option<(usize, String)>,
}

/// Saves `occs` in order; one [`Applied`] per occurrence.
pub fn save(
    conn: &mut PgConnection,
    occs: &[&Occurrence],
    projects: &mut project::Cache,
) -> Result<Vec<Applied>, IssueError> {
    let mut applied: Vec<Option<Applied>> = vec![None; occs.len()];
    let mut active = Vec::with_capacity(occs.len());
    for (i, occ) in occs.iter().enumerate() {
        match projects.get(conn, occ.project_id)? {
            None => applied[i] = Some(Applied::Dropped("unknown_project")),
            Some(p) if !occ.group_type.allows_ingest(&p.organization_options) => {
                applied[i] = Some(Applied::Dropped("group_type_disabled"))
            }
            Some(_) => active.push(i),
        }
    }
    let key = |occ: &Occurrence| -> Key { (occ.project_id as i64, occ.event_id.clone()) };

    // Occurrences already stored (replays) change nothing; the first copy in the run counts.
    let ids: Vec<&str> = active.iter().map(|&i| occs[i].id.as_str()).collect();
    let stored_ids = existing_occurrences(conn, &ids)?;
    let mut fresh = Vec::new();
    let mut seen_ids = HashSet::new();
    for &i in &active {
        let id = occs[i].id.as_str();
        if !stored_ids.contains(id) && seen_ids.insert(id) {
            fresh.push(i);
        } else {
            applied[i] = Some(Applied::Duplicate);
        }
    }

    // Events: the stored copy wins; otherwise the first embedded one in the run is stored below.
    let keys: Vec<Key> = active
        .iter()
        .map(|&i| key(occs[i]))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let stored_events = load_events(conn, &keys)?;
    let mut new_events: Vec<Key> = Vec::new();
    let mut events: HashMap<Key, &Value> = HashMap::new();
    for &i in &active {
        let k = key(occs[i]);
        if events.contains_key(&k) {
            continue;
        }
        match (stored_events.get(&k), &occs[i].event) {
            (Some((data, _)), _) => {
                events.insert(k, data);
            }
            (None, Some(body)) => {
                new_events.push(k.clone());
                events.insert(k, body);
            }
            (None, None) => {
                return Err(IssueError::EventNotFound(format!(
                    "Failed to lookup event({}) for project_id({})",
                    occs[i].event_id, occs[i].project_id
                )))
            }
        }
    }

    // Groups: lock and read the existing ones, then apply every occurrence in memory.
    let hashes: Vec<Key> = fresh
        .iter()
        .map(|&i| (occs[i].project_id as i64, occs[i].fingerprint[0].clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut groups: HashMap<Key, State> = lock_groups(conn, &hashes)?;
    let mut creators: Vec<(Key, usize)> = Vec::new();
    let mut links: Vec<(usize, Key)> = Vec::new();
    for &i in &fresh {
        let occ = occs[i];
        let hash: Key = (occ.project_id as i64, occ.fingerprint[0].clone());
        let event = events[&key(occ)];
        match groups.get_mut(&hash) {
            None => {
                groups.insert(hash.clone(), created(occ, event));
                creators.push((hash.clone(), i));
                links.push((i, hash));
            }
            Some(state) => {
                if !group::same_category(&state.row, occ) {
                    tracing::error!(
                        group_id = state.row.id,
                        issue_type = state.row.group_type,
                        occurrence_type = occ.group_type.id,
                        "save_issue_from_occurrence.category_mismatch"
                    );
                    applied[i] = Some(Applied::Dropped("category_mismatch"));
                    continue;
                }
                apply(state, i, occ, event);
                links.push((i, hash));
            }
        }
    }

    // Write the groups back: new ones inserted and linked, existing ones updated.
    if !creators.is_empty() {
        let ids = next_group_ids(conn, creators.len())?;
        for ((hash, _), id) in creators.iter().zip(ids) {
            if let Some(state) = groups.get_mut(hash) {
                state.row.id = id;
            }
        }
        insert_groups(conn, creators.iter().filter_map(|(h, _)| groups.get(h)))?;
        let linked = link_hashes(conn, creators.iter().filter_map(|(h, _)| groups.get(h)))?;
        if linked != creators.len() {
            return Err(IssueError::Conflict(
                "another transaction created one of the run's groups".into(),
            ));
        }
    }
    update_groups(conn, groups.values().filter(|s| !s.new))?;
    for state in groups.values() {
        if let Some((_, event_id)) = &state.regressed_by {
            group::record(
                conn,
                &state.row,
                "set_regression",
                json!({ "event_id": event_id, "version": null }),
                "regressed",
            )?;
        }
    }

    // Results, and the group of each occurrence and event (an event keeps the first it gets).
    let creator_of: HashSet<usize> = creators.iter().map(|(_, i)| *i).collect();
    let mut group_of: HashMap<usize, i64> = HashMap::with_capacity(links.len());
    let mut event_group: HashMap<Key, i64> = HashMap::new();
    for (i, hash) in links {
        let state = &groups[&hash];
        let id = state.row.id;
        applied[i] = Some(if creator_of.contains(&i) {
            Applied::Created { group_id: id }
        } else {
            Applied::Updated {
                group_id: id,
                regressed: matches!(&state.regressed_by, Some((by, _)) if *by == i),
            }
        });
        group_of.insert(i, id);
        event_group.entry(key(occs[i])).or_insert(id);
    }

    // Rows are written with their group: new events and occurrences are inserted complete, and
    // only events stored earlier without a group are updated.
    let new_rows: Vec<(&Key, &Value, Option<i64>)> = new_events
        .iter()
        .map(|k| (k, events[k], event_group.get(k).copied()))
        .collect();
    if insert_events(conn, &new_rows)? != new_rows.len() {
        return Err(IssueError::Conflict(
            "another transaction stored one of the run's events".into(),
        ));
    }
    let rows: Vec<(&Occurrence, Option<i64>)> = fresh
        .iter()
        .map(|&i| (occs[i], group_of.get(&i).copied()))
        .collect();
    if insert_occurrences(conn, &rows)? != rows.len() {
        return Err(IssueError::Conflict(
            "another transaction stored one of the run's occurrences".into(),
        ));
    }
    let mut grouped: Vec<(&Key, i64)> = event_group.iter().map(|(k, g)| (k, *g)).collect();
    grouped.sort();
    let earlier: Vec<(&Key, i64)> = grouped
        .iter()
        .filter(|(k, _)| matches!(stored_events.get(*k), Some((_, None))))
        .copied()
        .collect();
    backfill(conn, &earlier, &grouped)?;
    Ok(applied
        .into_iter()
        .map(|a| a.unwrap_or(Applied::Duplicate))
        .collect())
}

fn created(occ: &Occurrence, event: &Value) -> State {
    let seen = occ.detection_time.0;
    State {
        row: GroupRow {
            id: 0,
            project_id: occ.project_id as i64,
            group_type: occ.group_type.id,
            status: group_status::UNRESOLVED,
            substatus: Some(group_substatus::NEW),
            priority: occ.priority,
            last_seen: seen,
            last_occurrence_id: Some(occ.id.clone()),
            data: group::materialized_data(event, occ),
        },
        hash: occ.fingerprint[0].clone(),
        new: true,
        times_seen: 1,
        first_seen: seen,
        active_at: Some(seen),
        level: occ.level_num,
        title: occ.issue_title.clone(),
        culprit: occ.culprit.clone(),
        message: group::search_message(event, occ),
        newest_applied: true,
        regressed_by: None,
    }
}

/// [`group::update`] applied to the in-memory state.
fn apply(state: &mut State, i: usize, occ: &Occurrence, event: &Value) {
    let seen = occ.detection_time.0;
    let row = &mut state.row;
    let newest = (seen, occ.id.as_str())
        >= (
            row.last_seen,
            row.last_occurrence_id.as_deref().unwrap_or(""),
        );
    state.times_seen += 1;
    state.first_seen = state.first_seen.min(seen);
    row.last_seen = row.last_seen.max(seen);
    if newest {
        let incoming = group::merged_data(&row.data, event, occ);
        row.data = concat(&row.data, incoming);
        row.last_occurrence_id = Some(occ.id.clone());
        state.title = occ.issue_title.clone();
        state.culprit = occ.culprit.clone();
        state.level = occ.level_num;
        state.message = group::search_message(event, occ);
        state.newest_applied = true;
    }
    if row.substatus == Some(group_substatus::NEW) {
        state.active_at = state.active_at.map(|a| a.min(seen)).or(Some(seen));
    }
    if row.status == group_status::RESOLVED {
        row.status = group_status::UNRESOLVED;
        row.substatus = Some(group_substatus::REGRESSED);
        state.active_at = Some(seen);
        state.regressed_by = Some((i, occ.event_id.clone()));
    }
}

/// PostgreSQL's `jsonb || jsonb`: top-level keys of `b` replace those of `a` (objects), else `b`.
fn concat(a: &Value, b: Value) -> Value {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let mut m = a.clone();
            m.extend(b);
            Value::Object(m)
        }
        (_, b) => b,
    }
}

fn split(keys: &[Key]) -> (Vec<i64>, Vec<String>) {
    keys.iter().map(|(p, e)| (*p, e.clone())).unzip()
}

fn existing_occurrences(conn: &mut PgConnection, ids: &[&str]) -> QueryResult<HashSet<String>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = Bpchar)]
        id: String,
    }
    let rows: Vec<Id> =
        diesel::sql_query("SELECT id FROM occurrences WHERE id = ANY($1::bpchar[])")
            .bind::<Array<Bpchar>, _>(ids)
            .load(conn)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// Stored events of `keys`: data and group.
fn load_events(
    conn: &mut PgConnection,
    keys: &[Key],
) -> QueryResult<HashMap<Key, (Value, Option<i64>)>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Bpchar)]
        event_id: String,
        #[diesel(sql_type = Jsonb)]
        data: Value,
        #[diesel(sql_type = Nullable<BigInt>)]
        group_id: Option<i64>,
    }
    let (pids, eids) = split(keys);
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT e.project_id, e.event_id, e.data, e.group_id FROM events e \
         JOIN unnest($1::bigint[], $2::bpchar[]) AS k(p, e) ON e.project_id = k.p AND e.event_id = k.e",
    )
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.project_id, r.event_id), (r.data, r.group_id)))
        .collect())
}

/// Inserts new events with their group; returns how many were inserted.
fn insert_events(
    conn: &mut PgConnection,
    rows: &[(&Key, &Value, Option<i64>)],
) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let pids: Vec<i64> = rows.iter().map(|(k, _, _)| k.0).collect();
    let eids: Vec<&str> = rows.iter().map(|(k, _, _)| k.1.as_str()).collect();
    let data: Vec<&Value> = rows.iter().map(|(_, d, _)| *d).collect();
    let gids: Vec<Option<i64>> = rows.iter().map(|(_, _, g)| *g).collect();
    diesel::sql_query(
        "INSERT INTO events (project_id, event_id, data, group_id) \
         SELECT * FROM unnest($1::bigint[], $2::bpchar[], $3::jsonb[], $4::bigint[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .bind::<Array<Jsonb>, _>(data)
    .bind::<Array<Nullable<BigInt>>, _>(gids)
    .execute(conn)
}

/// Inserts new occurrences with their group (none after a category mismatch); returns how many
/// were inserted.
fn insert_occurrences(
    conn: &mut PgConnection,
    rows: &[(&Occurrence, Option<i64>)],
) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = rows.iter().map(|(o, _)| o.id.as_str()).collect();
    let pids: Vec<i64> = rows.iter().map(|(o, _)| o.project_id as i64).collect();
    let eids: Vec<&str> = rows.iter().map(|(o, _)| o.event_id.as_str()).collect();
    let types: Vec<i32> = rows.iter().map(|(o, _)| o.group_type.id).collect();
    let data: Vec<&Value> = rows.iter().map(|(o, _)| &o.data).collect();
    let gids: Vec<Option<i64>> = rows.iter().map(|(_, g)| *g).collect();
    diesel::sql_query(
        "INSERT INTO occurrences (id, project_id, event_id, type, data, group_id, date_added) \
         SELECT *, clock_timestamp() \
         FROM unnest($1::bpchar[], $2::bigint[], $3::bpchar[], $4::int[], $5::jsonb[], $6::bigint[]) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind::<Array<Bpchar>, _>(ids)
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .bind::<Array<Integer>, _>(types)
    .bind::<Array<Jsonb>, _>(data)
    .bind::<Array<Nullable<BigInt>>, _>(gids)
    .execute(conn)
}

fn lock_groups(conn: &mut PgConnection, hashes: &[Key]) -> QueryResult<HashMap<Key, State>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(embed)]
        group: GroupRow,
        #[diesel(sql_type = Bpchar)]
        hash: String,
        #[diesel(sql_type = Timestamptz)]
        first_seen: DateTime<Utc>,
        #[diesel(sql_type = BigInt)]
        times_seen: i64,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        active_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Integer)]
        level: i32,
    }
    if hashes.is_empty() {
        return Ok(HashMap::new());
    }
    let (pids, hs) = split(hashes);
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT {}, h.hash, g.first_seen, g.times_seen, g.active_at, g.level \
         FROM group_hashes h JOIN groups g ON g.id = h.group_id \
         JOIN unnest($1::bigint[], $2::bpchar[]) AS k(p, h) ON h.project_id = k.p AND h.hash = k.h \
         ORDER BY g.id FOR UPDATE OF g",
        group::GROUP_COLUMNS
    ))
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(hs)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let key = (r.group.project_id, r.hash.clone());
            let state = State {
                hash: r.hash,
                new: false,
                times_seen: r.times_seen,
                first_seen: r.first_seen,
                active_at: r.active_at,
                level: r.level,
                title: String::new(),
                culprit: String::new(),
                message: String::new(),
                newest_applied: false,
                regressed_by: None,
                row: r.group,
            };
            (key, state)
        })
        .collect())
}

fn next_group_ids(conn: &mut PgConnection, n: usize) -> QueryResult<Vec<i64>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let rows: Vec<Id> = diesel::sql_query(
        "SELECT nextval(pg_get_serial_sequence('groups', 'id')) AS id FROM generate_series(1, $1)",
    )
    .bind::<BigInt, _>(n as i64)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// Column arrays of a set of group states.
#[derive(Default)]
struct Columns {
    id: Vec<i64>,
    project_id: Vec<i64>,
    group_type: Vec<i32>,
    status: Vec<i32>,
    substatus: Vec<Option<i32>>,
    priority: Vec<i32>,
    level: Vec<i32>,
    title: Vec<String>,
    culprit: Vec<String>,
    message: Vec<String>,
    times_seen: Vec<i64>,
    first_seen: Vec<DateTime<Utc>>,
    last_seen: Vec<DateTime<Utc>>,
    active_at: Vec<Option<DateTime<Utc>>>,
    last_occurrence_id: Vec<Option<String>>,
    data: Vec<Value>,
    newest: Vec<bool>,
    regressed: Vec<bool>,
}

impl Columns {
    fn of<'a>(states: impl Iterator<Item = &'a State>) -> Columns {
        let mut c = Columns::default();
        for s in states {
            c.id.push(s.row.id);
            c.project_id.push(s.row.project_id);
            c.group_type.push(s.row.group_type);
            c.status.push(s.row.status);
            c.substatus.push(s.row.substatus);
            c.priority.push(s.row.priority);
            c.level.push(s.level);
            c.title.push(s.title.clone());
            c.culprit.push(s.culprit.clone());
            c.message.push(s.message.clone());
            c.times_seen.push(s.times_seen);
            c.first_seen.push(s.first_seen);
            c.last_seen.push(s.row.last_seen);
            c.active_at.push(s.active_at);
            c.last_occurrence_id.push(s.row.last_occurrence_id.clone());
            c.data.push(s.row.data.clone());
            c.newest.push(s.newest_applied);
            c.regressed.push(s.regressed_by.is_some());
        }
        c
    }
}

fn insert_groups<'a>(
    conn: &mut PgConnection,
    states: impl Iterator<Item = &'a State>,
) -> QueryResult<()> {
    let c = Columns::of(states);
    diesel::sql_query(
        "INSERT INTO groups (id, project_id, type, status, substatus, priority, level, title, culprit, \
           message, times_seen, first_seen, last_seen, active_at, last_occurrence_id, data) \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::int[], $5::int[], $6::int[], \
           $7::int[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::timestamptz[], \
           $13::timestamptz[], $14::timestamptz[], $15::bpchar[], $16::jsonb[])",
    )
    .bind::<Array<BigInt>, _>(c.id)
    .bind::<Array<BigInt>, _>(c.project_id)
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
    Ok(())
}

/// Links each new group to its hash; returns how many links were made (fewer means another
/// transaction linked one of the hashes first).
fn link_hashes<'a>(
    conn: &mut PgConnection,
    states: impl Iterator<Item = &'a State>,
) -> QueryResult<usize> {
    let (mut pids, mut hashes, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for s in states {
        pids.push(s.row.project_id);
        hashes.push(s.hash.as_str());
        ids.push(s.row.id);
    }
    diesel::sql_query(
        "INSERT INTO group_hashes (project_id, hash, group_id) \
         SELECT * FROM unnest($1::bigint[], $2::bpchar[], $3::bigint[]) \
         ON CONFLICT (project_id, hash) DO NOTHING",
    )
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(hashes)
    .bind::<Array<BigInt>, _>(ids)
    .execute(conn)
}

fn update_groups<'a>(
    conn: &mut PgConnection,
    states: impl Iterator<Item = &'a State>,
) -> QueryResult<()> {
    let c = Columns::of(states);
    if c.id.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
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

/// The rest of [`group::backfill`] for the whole run: `earlier` events (stored before this run
/// without a group) get theirs, and the attachments and user reports of every event in
/// `grouped` that have none get its group. Both sorted by key, so concurrent runs lock rows in
/// the same order.
fn backfill(
    conn: &mut PgConnection,
    earlier: &[(&Key, i64)],
    grouped: &[(&Key, i64)],
) -> QueryResult<()> {
    let columns = |rows: &[(&Key, i64)]| -> (Vec<i64>, Vec<String>, Vec<i64>) {
        (
            rows.iter().map(|(k, _)| k.0).collect(),
            rows.iter().map(|(k, _)| k.1.clone()).collect(),
            rows.iter().map(|(_, g)| *g).collect(),
        )
    };
    if !earlier.is_empty() {
        let (pids, eids, gids) = columns(earlier);
        // Lock the events in key order first (an UPDATE locks in plan order): writers that link
        // attachments or reports take share locks on events in the same order, so neither side
        // can hold one event while waiting for another the other side holds.
        diesel::sql_query(
            "SELECT 1 FROM events e JOIN unnest($1::bigint[], $2::bpchar[]) AS u(p, e) \
             ON e.project_id = u.p AND e.event_id = u.e \
             ORDER BY e.project_id, e.event_id FOR NO KEY UPDATE OF e",
        )
        .bind::<Array<BigInt>, _>(&pids)
        .bind::<Array<Bpchar>, _>(&eids)
        .execute(conn)?;
        diesel::sql_query(
            "UPDATE events e SET group_id = u.g \
             FROM unnest($1::bigint[], $2::bpchar[], $3::bigint[]) AS u(p, e, g) \
             WHERE e.project_id = u.p AND e.event_id = u.e AND e.group_id IS NULL",
        )
        .bind::<Array<BigInt>, _>(pids)
        .bind::<Array<Bpchar>, _>(eids)
        .bind::<Array<BigInt>, _>(gids)
        .execute(conn)?;
    }
    if grouped.is_empty() {
        return Ok(());
    }
    let (pids, eids, gids) = columns(grouped);
    diesel::sql_query(
        "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::bpchar[], $3::bigint[]) AS u(p, e, g)), \
              a AS (UPDATE event_attachments a SET group_id = u.g FROM u \
                    WHERE a.project_id = u.p AND a.event_id = u.e AND a.group_id IS NULL) \
         UPDATE user_reports r SET group_id = u.g FROM u \
         WHERE r.project_id = u.p AND r.event_id = u.e AND r.group_id IS NULL",
    )
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .bind::<Array<BigInt>, _>(gids)
    .execute(conn)?;
    Ok(())
}
