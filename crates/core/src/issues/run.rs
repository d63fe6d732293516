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

    // Events: embedded ones stored (first copy wins), the rest read back.
    let mut embedded: HashMap<Key, &Value> = HashMap::new();
    let mut order: Vec<Key> = Vec::new();
    for &i in &active {
        if let Some(body) = &occs[i].event {
            let k = key(occs[i]);
            if !embedded.contains_key(&k) {
                order.push(k.clone());
                embedded.insert(k, body);
            }
        }
    }
    let mut events: HashMap<Key, Value> = HashMap::new();
    if !order.is_empty() {
        let stored = insert_events(conn, &order, &embedded)?;
        for k in stored {
            if let Some(body) = embedded.get(&k) {
                events.insert(k, (*body).clone());
            }
        }
    }
    let missing: Vec<Key> = active
        .iter()
        .map(|&i| key(occs[i]))
        .filter(|k| !events.contains_key(k))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        events.extend(load_events(conn, &missing)?);
    }
    for &i in &active {
        let k = key(occs[i]);
        if !events.contains_key(&k) {
            match embedded.get(&k) {
                Some(body) => {
                    events.insert(k, (*body).clone());
                }
                None => {
                    return Err(IssueError::EventNotFound(format!(
                        "Failed to lookup event({}) for project_id({})",
                        occs[i].event_id, occs[i].project_id
                    )))
                }
            }
        }
    }

    // Occurrence rows: only those actually inserted change a group.
    let inserted = insert_occurrences(conn, occs, &active)?;
    let mut fresh = Vec::new();
    let mut seen_ids = HashSet::new();
    for &i in &active {
        let occ = occs[i];
        if inserted.contains(&occ.id) && seen_ids.insert(occ.id.as_str()) {
            fresh.push(i);
        } else {
            applied[i] = Some(Applied::Duplicate);
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
        let event = &events[&key(occ)];
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

    // Results and back-fill (the first group an event gets stays).
    let creator_of: HashSet<usize> = creators.iter().map(|(_, i)| *i).collect();
    let mut fills: Vec<(Key, String, i64)> = Vec::with_capacity(links.len());
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
        fills.push((key(occs[i]), occs[i].id.clone(), id));
    }
    backfill(conn, &fills)?;
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

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = BigInt)]
    project_id: i64,
    #[diesel(sql_type = Bpchar)]
    event_id: String,
}

fn insert_events(
    conn: &mut PgConnection,
    order: &[Key],
    bodies: &HashMap<Key, &Value>,
) -> QueryResult<Vec<Key>> {
    let (pids, eids) = split(order);
    let data: Vec<Value> = order
        .iter()
        .map(|k| bodies.get(k).map(|b| (*b).clone()).unwrap_or(Value::Null))
        .collect();
    let rows: Vec<KeyRow> = diesel::sql_query(
        "INSERT INTO events (project_id, event_id, data) \
         SELECT * FROM unnest($1::bigint[], $2::bpchar[], $3::jsonb[]) \
         ON CONFLICT DO NOTHING RETURNING project_id, event_id",
    )
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .bind::<Array<Jsonb>, _>(data)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.project_id, r.event_id))
        .collect())
}

fn load_events(conn: &mut PgConnection, keys: &[Key]) -> QueryResult<HashMap<Key, Value>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Bpchar)]
        event_id: String,
        #[diesel(sql_type = Jsonb)]
        data: Value,
    }
    let (pids, eids) = split(keys);
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT e.project_id, e.event_id, e.data FROM events e \
         JOIN unnest($1::bigint[], $2::bpchar[]) AS k(p, e) ON e.project_id = k.p AND e.event_id = k.e",
    )
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.project_id, r.event_id), r.data))
        .collect())
}

fn insert_occurrences(
    conn: &mut PgConnection,
    occs: &[&Occurrence],
    active: &[usize],
) -> QueryResult<HashSet<String>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = Bpchar)]
        id: String,
    }
    let pick = |f: &dyn Fn(&Occurrence) -> String| -> Vec<String> {
        active.iter().map(|&i| f(occs[i])).collect()
    };
    let ids = pick(&|o| o.id.clone());
    let eids = pick(&|o| o.event_id.clone());
    let pids: Vec<i64> = active.iter().map(|&i| occs[i].project_id as i64).collect();
    let types: Vec<i32> = active.iter().map(|&i| occs[i].group_type.id).collect();
    let data: Vec<&Value> = active.iter().map(|&i| &occs[i].data).collect();
    let rows: Vec<Id> = diesel::sql_query(
        "INSERT INTO occurrences (id, project_id, event_id, type, data) \
         SELECT * FROM unnest($1::bpchar[], $2::bigint[], $3::bpchar[], $4::int[], $5::jsonb[]) \
         ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind::<Array<Bpchar>, _>(ids)
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .bind::<Array<Integer>, _>(types)
    .bind::<Array<Jsonb>, _>(data)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
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

/// [`group::backfill`] for the whole run: `fills` holds (event key, occurrence id, group id) in
/// arrival order; an event keeps the first group it gets.
fn backfill(conn: &mut PgConnection, fills: &[(Key, String, i64)]) -> QueryResult<()> {
    if fills.is_empty() {
        return Ok(());
    }
    let mut first: HashMap<&Key, i64> = HashMap::new();
    for (k, _, g) in fills {
        first.entry(k).or_insert(*g);
    }
    let mut events: Vec<(&Key, i64)> = first.into_iter().collect();
    events.sort();
    let pids: Vec<i64> = events.iter().map(|(k, _)| k.0).collect();
    let eids: Vec<&str> = events.iter().map(|(k, _)| k.1.as_str()).collect();
    let gids: Vec<i64> = events.iter().map(|(_, g)| *g).collect();
    diesel::sql_query(
        "UPDATE events e SET group_id = u.g \
         FROM unnest($1::bigint[], $2::bpchar[], $3::bigint[]) AS u(p, e, g) \
         WHERE e.project_id = u.p AND e.event_id = u.e AND e.group_id IS NULL",
    )
    .bind::<Array<BigInt>, _>(&pids)
    .bind::<Array<Bpchar>, _>(&eids)
    .bind::<Array<BigInt>, _>(&gids)
    .execute(conn)?;
    let oids: Vec<&str> = fills.iter().map(|(_, o, _)| o.as_str()).collect();
    let ogids: Vec<i64> = fills.iter().map(|(_, _, g)| *g).collect();
    diesel::sql_query(
        "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::bpchar[], $3::bigint[]) AS u(p, e, g)), \
              o AS (UPDATE occurrences o SET group_id = x.g \
                    FROM unnest($4::bpchar[], $5::bigint[]) AS x(id, g) WHERE o.id = x.id), \
              a AS (UPDATE event_attachments a SET group_id = u.g FROM u \
                    WHERE a.project_id = u.p AND a.event_id = u.e AND a.group_id IS NULL) \
         UPDATE user_reports r SET group_id = u.g FROM u \
         WHERE r.project_id = u.p AND r.event_id = u.e AND r.group_id IS NULL",
    )
    .bind::<Array<BigInt>, _>(&pids)
    .bind::<Array<Bpchar>, _>(&eids)
    .bind::<Array<BigInt>, _>(&gids)
    .bind::<Array<Bpchar>, _>(&oids)
    .bind::<Array<BigInt>, _>(&ogids)
    .execute(conn)?;
    Ok(())
}
