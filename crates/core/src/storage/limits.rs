//! Counters of the optional issue-platform limits: sliding windows in `rate_limit_counters`
//! and noise counters in `noise_counters`, shared by every replica.

use super::prepared::prepared;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bpchar, Text, Timestamptz};

/// Takes one unit from the sliding window `key` at `at` (epoch seconds) when fewer than `limit`
/// were taken in the `window` seconds up to `at`, counted in `granularity`-second buckets.
/// Buckets older than the window are pruned on the way. Returns whether the unit was granted.
pub fn take(
    conn: &mut PgConnection,
    key: &str,
    at: i64,
    (window, granularity, limit): (u64, u64, u64),
) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Granted {
        #[diesel(sql_type = BigInt)]
        granted: i64,
    }
    let granularity = granularity.max(1) as i64;
    let bucket = at.div_euclid(granularity);
    let buckets = (window as i64 / granularity).max(1);
    let row: Granted = prepared(
        "WITH pruned AS (DELETE FROM rate_limit_counters WHERE key = $1 AND bucket <= $2 - $3), \
              used AS (SELECT coalesce(sum(count), 0) AS n FROM rate_limit_counters \
                       WHERE key = $1 AND bucket > $2 - $3 AND bucket <= $2), \
              taken AS (INSERT INTO rate_limit_counters AS r (key, bucket, count) \
                        SELECT $1, $2, 1 FROM used WHERE n < $4 \
                        ON CONFLICT (key, bucket) DO UPDATE SET count = r.count + 1, touched_at = now() RETURNING 1) \
         SELECT count(*) AS granted FROM taken",
    )
    .bind::<Text, _>(key)
    .bind::<BigInt, _>(bucket)
    .bind::<BigInt, _>(buckets)
    .bind::<BigInt, _>(limit as i64)
    .get_result(conn)?;
    Ok(row.granted > 0)
}

/// Counts one more occurrence of `hash` at `at` and returns the count: an expired counter starts
/// again at 1, and every increment pushes the expiry `expiry_secs` past `at`.
pub fn noise_bump(
    conn: &mut PgConnection,
    project_id: i64,
    hash: &str,
    at: DateTime<Utc>,
    expiry_secs: i64,
) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }
    let seen: Count = prepared(
        "INSERT INTO noise_counters AS n (project_id, hash, count, expires_at) \
         VALUES ($1, $2::bpchar, 1, $3 + make_interval(secs => $4)) \
         ON CONFLICT (project_id, hash) DO UPDATE SET \
           count = CASE WHEN n.expires_at <= $3 THEN 1 ELSE n.count + 1 END, \
           expires_at = EXCLUDED.expires_at \
         RETURNING count",
    )
    .bind::<BigInt, _>(project_id)
    .bind::<Bpchar, _>(hash)
    .bind::<Timestamptz, _>(at)
    .bind::<BigInt, _>(expiry_secs)
    .get_result(conn)?;
    Ok(seen.count)
}

/// Removes the noise counter of `hash` (its group is created).
pub fn noise_reset(conn: &mut PgConnection, project_id: i64, hash: &str) -> QueryResult<()> {
    prepared("DELETE FROM noise_counters WHERE project_id = $1 AND hash = $2::bpchar")
        .bind::<BigInt, _>(project_id)
        .bind::<Bpchar, _>(hash)
        .execute(conn)?;
    Ok(())
}
