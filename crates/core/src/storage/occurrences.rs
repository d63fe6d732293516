//! `occurrences`: one row per occurrence id (replays find it and change nothing). An occurrence
//! held back by a limit keeps its row with `dropped` set and no group.
//!
//! As with events, the JSON lives in `occurrence_payloads`, partitioned by expiry (the
//! project's retention, counted from the write), and is written only for the rows inserted.

use super::events::EXPIRY;
use super::prepared::prepared;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bpchar, Integer, Jsonb, Nullable, Text};
use serde_json::Value;
use std::collections::HashMap;

/// An occurrence row.
pub struct Row<'a> {
    pub id: &'a str,
    pub project_id: i64,
    pub event_id: &'a str,
    pub group_type: i32,
    pub data: &'a Value,
    /// None when not grouped (held back by a limit, or a category mismatch).
    pub group_id: Option<i64>,
    /// Why the occurrence was held back, if it was.
    pub dropped: Option<&'a str>,
}

/// Which of `ids` are stored, with the reason each was held back, if it was.
pub fn existing(
    conn: &mut PgConnection,
    ids: &[&str],
) -> QueryResult<HashMap<String, Option<String>>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = Bpchar)]
        id: String,
        #[diesel(sql_type = Nullable<Text>)]
        dropped: Option<String>,
    }
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    // One index probe per id, as in `outcomes::emitted`.
    let rows: Vec<Id> = prepared(
        "SELECT o.id, o.dropped FROM unnest($1::bpchar[]) AS k(id) \
         CROSS JOIN LATERAL (SELECT id, dropped FROM occurrences WHERE id = k.id LIMIT 1) o",
    )
    .bind::<Array<Bpchar>, _>(ids)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.id, r.dropped)).collect())
}

/// Inserts `rows` (ids not stored yet); returns how many were inserted.
pub fn insert(conn: &mut PgConnection, rows: &[Row<'_>]) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = rows.iter().map(|o| o.id).collect();
    let pids: Vec<i64> = rows.iter().map(|o| o.project_id).collect();
    let eids: Vec<&str> = rows.iter().map(|o| o.event_id).collect();
    let types: Vec<i32> = rows.iter().map(|o| o.group_type).collect();
    let data: Vec<&Value> = rows.iter().map(|o| o.data).collect();
    let gids: Vec<Option<i64>> = rows.iter().map(|o| o.group_id).collect();
    let dropped: Vec<Option<&str>> = rows.iter().map(|o| o.dropped).collect();
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    crate::prepared_format!(
        "WITH input AS (SELECT *, NULL::int AS r FROM unnest($1::bpchar[], $2::bigint[], $3::bpchar[], \
                         $4::int[], $5::jsonb[], $6::bigint[], $7::text[]) AS t(id, p, e, ty, d, g, dr)), \
              keyed AS (SELECT i.*, {EXPIRY} AS x FROM input i \
                        LEFT JOIN project_retention pr ON pr.project_id = i.p), \
              ins AS (INSERT INTO occurrences (id, project_id, event_id, type, group_id, dropped, date_added, expires_at) \
                      SELECT id, p, e, ty, g, dr, clock_timestamp(), x FROM keyed \
                      ON CONFLICT (id) DO NOTHING RETURNING id, expires_at), \
              payload AS (INSERT INTO occurrence_payloads (id, expires_at, data) \
                          SELECT ins.id, ins.expires_at, k.d FROM ins JOIN keyed k ON k.id = ins.id \
                          ON CONFLICT DO NOTHING) \
         SELECT count(*) AS n FROM ins"
    )
    .bind::<Array<Bpchar>, _>(ids)
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .bind::<Array<Integer>, _>(types)
    .bind::<Array<Jsonb>, _>(data)
    .bind::<Array<Nullable<BigInt>>, _>(gids)
    .bind::<Array<Nullable<Text>>, _>(dropped)
    .get_result::<Count>(conn)
    .map(|c| c.n as usize)
}
