//! `events`: the processing store. The first stored copy of an event wins; `group_id` is set
//! when the event is inserted with its group, or later by [`super::linking`].
//!
//! An event is two rows: `events` holds its natural key, group and expiry (unique, small, what
//! every lookup and link uses), and `event_payloads` its JSON, partitioned by `expires_at` so
//! that [`super::retention`] drops a day of payloads at once. The payload is written in the
//! same transaction, only for the events that transaction inserted.
//!
//! Expiry: the message's own retention (Relay's `retention_days`), else the project's
//! (`project_retention`: its option, its organization's, the database default), counted from
//! the time of the write.

use super::prepared::prepared;
use super::EventKey;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bpchar, Integer, Jsonb, Nullable, Text, Timestamptz};
use serde_json::Value;
use std::collections::HashMap;

/// An event as received: its JSON text is stored as is (no second serialization).
pub struct RawEvent<'a> {
    pub project_id: i64,
    pub event_id: &'a str,
    pub json: &'a str,
    /// Days to keep it, when the message said.
    pub retention_days: Option<i32>,
}

/// The expiry of the `input` rows `(p, …, r)`: their own days `r`, else their project's.
pub(crate) const EXPIRY: &str =
    "now() + make_interval(days => COALESCE(i.r, pr.days, sluice_default_retention_days()))";

/// Inserts `events` (first write wins) and returns the group of each of them that already has
/// one (stored and grouped earlier).
///
/// One transaction, three statements: the `events` rows, returning the keys actually inserted
/// and their expiries; then the payloads of those alone, read straight from the bound array
/// into `jsonb`; then, only when some key was already stored (a replay), the groups of those.
/// Joining the inserted keys back to the payloads inside one statement made PostgreSQL copy
/// every payload into a materialized CTE and a hash table first, which cost about as much as
/// parsing it.
///
/// Rows go in sorted by key (byte order, then their order in `events`), whatever plan the
/// retention join gets: two inserts of overlapping keys at once (a batch and the next one's
/// insert ahead, two replicas) lock them in the same order, so neither can deadlock the other.
pub fn insert_raw(
    conn: &mut PgConnection,
    events: &[RawEvent<'_>],
) -> QueryResult<HashMap<EventKey, i64>> {
    #[derive(QueryableByName)]
    struct Inserted {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Text)]
        event_id: String,
        #[diesel(sql_type = Timestamptz)]
        expires_at: DateTime<Utc>,
    }
    #[derive(QueryableByName)]
    struct Grouped {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Text)]
        event_id: String,
        #[diesel(sql_type = BigInt)]
        group_id: i64,
    }
    if events.is_empty() {
        return Ok(HashMap::new());
    }
    conn.transaction(|c| {
        let inserted: Vec<Inserted> = crate::prepared_format!(
            "WITH input AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[]) \
                            WITH ORDINALITY AS t(p, e, r, n)) \
             INSERT INTO events (project_id, event_id, expires_at) \
             SELECT i.p, i.e::bpchar, {EXPIRY} FROM input i \
             LEFT JOIN project_retention pr ON pr.project_id = i.p \
             ORDER BY i.p, i.e COLLATE \"C\", i.n \
             ON CONFLICT DO NOTHING RETURNING project_id, event_id::text AS event_id, expires_at"
        )
        .bind::<Array<BigInt>, _>(events.iter().map(|e| e.project_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .bind::<Array<Nullable<Integer>>, _>(
            events.iter().map(|e| e.retention_days).collect::<Vec<_>>(),
        )
        .load(c)?;
        // The payload of each inserted key: its first event in `events` (first write wins).
        let mut first: HashMap<(i64, &str), &str> = HashMap::with_capacity(events.len());
        for e in events {
            first.entry((e.project_id, e.event_id)).or_insert(e.json);
        }
        // Every inserted key came from `events`; one that did not match would leave an event
        // without its payload, so it fails the transaction instead.
        let payloads: Vec<(&Inserted, &str)> = inserted
            .iter()
            .map(|i| {
                let json = first.get(&(i.project_id, i.event_id.as_str())).ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        format!("stored event {} is not in the batch", i.event_id).into(),
                    )
                })?;
                Ok((i, *json))
            })
            .collect::<QueryResult<_>>()?;
        if !payloads.is_empty() {
            prepared(
                "INSERT INTO event_payloads (project_id, event_id, expires_at, data) \
                 SELECT p, e::bpchar, x, d::jsonb \
                 FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[]) AS t(p, e, x, d) \
                 ON CONFLICT DO NOTHING",
            )
            .bind::<Array<BigInt>, _>(payloads.iter().map(|(i, _)| i.project_id).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(
                payloads
                    .iter()
                    .map(|(i, _)| i.event_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Timestamptz>, _>(
                payloads.iter().map(|(i, _)| i.expires_at).collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(payloads.iter().map(|(_, d)| *d).collect::<Vec<_>>())
            .execute(c)?;
        }
        if inserted.len() == first.len() {
            // Every key was new: none has a group yet.
            return Ok(HashMap::new());
        }
        let new: std::collections::HashSet<(i64, &str)> = inserted
            .iter()
            .map(|i| (i.project_id, i.event_id.as_str()))
            .collect();
        let (pids, eids): (Vec<i64>, Vec<&str>) = first
            .keys()
            .filter(|k| !new.contains(*k))
            .map(|(p, e)| (*p, *e))
            .unzip();
        let rows: Vec<Grouped> = prepared(
            "SELECT ev.project_id, ev.event_id::text AS event_id, ev.group_id FROM events ev \
             JOIN unnest($1::bigint[], $2::text[]) AS i(p, e) \
               ON ev.project_id = i.p AND ev.event_id = i.e::bpchar \
             WHERE ev.group_id IS NOT NULL",
        )
        .bind::<Array<BigInt>, _>(pids)
        .bind::<Array<Text>, _>(eids)
        .load(c)?;
        Ok(rows
            .into_iter()
            .map(|g| ((g.project_id, g.event_id), g.group_id))
            .collect())
    })
}

/// Inserts events with their group (none when not grouped); returns how many were inserted.
pub fn insert_grouped(
    conn: &mut PgConnection,
    rows: &[(&EventKey, &Value, Option<i64>)],
) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let pids: Vec<i64> = rows.iter().map(|(k, _, _)| k.0).collect();
    let eids: Vec<&str> = rows.iter().map(|(k, _, _)| k.1.as_str()).collect();
    let data: Vec<&Value> = rows.iter().map(|(_, d, _)| *d).collect();
    let gids: Vec<Option<i64>> = rows.iter().map(|(_, _, g)| *g).collect();
    crate::prepared_format!(
        "WITH input AS (SELECT *, NULL::int AS r FROM unnest($1::bigint[], $2::bpchar[], $3::jsonb[], $4::bigint[]) AS t(p, e, d, g)), \
              keyed AS (SELECT i.p, i.e, i.d, i.g, {EXPIRY} AS x FROM input i \
                        LEFT JOIN project_retention pr ON pr.project_id = i.p), \
              ins AS (INSERT INTO events (project_id, event_id, group_id, expires_at) \
                      SELECT p, e, g, x FROM keyed ON CONFLICT DO NOTHING \
                      RETURNING project_id, event_id, expires_at), \
              payload AS (INSERT INTO event_payloads (project_id, event_id, expires_at, data) \
                          SELECT ins.project_id, ins.event_id, ins.expires_at, k.d FROM ins \
                          JOIN keyed k ON k.p = ins.project_id AND k.e = ins.event_id \
                          ON CONFLICT DO NOTHING) \
         SELECT count(*) AS n FROM ins"
    )
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .bind::<Array<Jsonb>, _>(data)
    .bind::<Array<Nullable<BigInt>>, _>(gids)
    .get_result::<Count>(conn)
    .map(|c| c.n as usize)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The stored event's data, if it is stored.
pub fn load(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
) -> QueryResult<Option<Value>> {
    let key = (project_id, event_id.to_owned());
    Ok(load_many(conn, std::slice::from_ref(&key))?
        .remove(&key)
        .map(|(data, _)| data))
}

/// The stored events of `keys`: data and group.
///
/// Two statements: the keys' rows in `events` first, then their payloads, with the range of
/// their expiries in the query so that the planner keeps only the partitions of those days (a
/// join on `expires_at` alone would plan every daily partition, which costs more than the
/// lookup itself).
pub fn load_many(
    conn: &mut PgConnection,
    keys: &[EventKey],
) -> QueryResult<HashMap<EventKey, (Value, Option<i64>)>> {
    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Bpchar)]
        event_id: String,
        #[diesel(sql_type = Nullable<BigInt>)]
        group_id: Option<i64>,
        #[diesel(sql_type = Timestamptz)]
        expires_at: DateTime<Utc>,
    }
    #[derive(QueryableByName)]
    struct Payload {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Bpchar)]
        event_id: String,
        #[diesel(sql_type = Jsonb)]
        data: Value,
    }
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let (pids, eids) = super::split_keys(keys);
    let stored: Vec<Stored> = prepared(
        "SELECT e.project_id, e.event_id, e.group_id, e.expires_at FROM events e \
         JOIN unnest($1::bigint[], $2::bpchar[]) AS k(p, e) ON e.project_id = k.p AND e.event_id = k.e",
    )
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .load(conn)?;
    let (Some(first), Some(last)) = (
        stored.iter().map(|s| s.expires_at).min(),
        stored.iter().map(|s| s.expires_at).max(),
    ) else {
        return Ok(HashMap::new());
    };
    let payloads: Vec<Payload> = prepared(
        "SELECT p.project_id, p.event_id, p.data FROM event_payloads p \
         JOIN unnest($1::bigint[], $2::bpchar[], $3::timestamptz[]) AS k(p, e, x) \
           ON p.project_id = k.p AND p.event_id = k.e AND p.expires_at = k.x \
         WHERE p.expires_at BETWEEN $4 AND $5",
    )
    .bind::<Array<BigInt>, _>(stored.iter().map(|s| s.project_id).collect::<Vec<_>>())
    .bind::<Array<Bpchar>, _>(
        stored
            .iter()
            .map(|s| s.event_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Timestamptz>, _>(stored.iter().map(|s| s.expires_at).collect::<Vec<_>>())
    .bind::<Timestamptz, _>(first)
    .bind::<Timestamptz, _>(last)
    .load(conn)?;
    let mut groups: HashMap<EventKey, Option<i64>> = stored
        .into_iter()
        .map(|s| ((s.project_id, s.event_id), s.group_id))
        .collect();
    Ok(payloads
        .into_iter()
        .filter_map(|p| {
            let key = (p.project_id, p.event_id);
            let group = groups.remove(&key)?;
            Some((key, (p.data, group)))
        })
        .collect())
}
