//! `applied_status_changes`: status changes applied once per id (replays change nothing).

use super::prepared::prepared;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bpchar};

/// Records that the status change `id` is applied to `group_id`; `false` when it was before.
pub fn record(
    conn: &mut PgConnection,
    id: &str,
    project_id: i64,
    group_id: i64,
) -> QueryResult<bool> {
    let n = prepared(
        "INSERT INTO applied_status_changes (id, project_id, group_id) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind::<Bpchar, _>(id)
    .bind::<BigInt, _>(project_id)
    .bind::<BigInt, _>(group_id)
    .execute(conn)?;
    Ok(n == 1)
}
