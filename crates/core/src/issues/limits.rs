//! The optional issue-platform limits (reference §5.5 step 5 and §5.7 steps 2a–2b; design §4):
//! the per-fingerprint occurrence rate limit, noise reduction and the per-type issue creation
//! quotas. All are off by default, and error occurrences (type 1) are never subject to them.
//!
//! State lives in PostgreSQL (`rate_limit_counters`, `noise_counters`), so every replica sees the
//! same windows and counts. Windows are measured on the occurrence's detection time, not the
//! clock, so a consumer catching up on a backlog judges each occurrence by when it happened.
//! A limited occurrence keeps its `occurrences` row (with `dropped` set and no group): a
//! redelivery is recognised as a duplicate and never counted twice.

use super::parse::Occurrence;
use crate::config::IssueSettings;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bpchar, Text, Timestamptz};

/// Why an occurrence was held back (also its metric label and outcome reason).
pub const RATE_LIMITED: &str = "occurrence_rate_limit";
pub const NOISE: &str = "noise_reduction";
pub const CREATION_QUOTA: &str = "issue_creation_quota";

/// How long a noise counter lives after its last increment (Sentry's NoiseConfig expiry).
const NOISE_EXPIRY_SECS: i64 = 24 * 3600;

/// Error occurrences (group type 1) are never subject to a limit.
fn exempt(occ: &Occurrence) -> bool {
    occ.group_type.id == 1
}

/// Whether any limit can apply to `occ` under `settings`.
pub fn any_enabled(settings: &IssueSettings, occ: &Occurrence) -> bool {
    !exempt(occ)
        && (settings.occurrence_rate_limit.enabled
            || settings.creation_quotas
            || (settings.noise_reduction && occ.group_type.noise_ignore_limit.is_some()))
}

/// Step 5: the per-project, per-fingerprint occurrence rate limit. `Some(reason)` when limited.
pub fn check_occurrence(
    conn: &mut PgConnection,
    settings: &IssueSettings,
    occ: &Occurrence,
) -> QueryResult<Option<&'static str>> {
    let q = &settings.occurrence_rate_limit;
    if exempt(occ) || !q.enabled {
        return Ok(None);
    }
    let key = format!(
        "occurrence_rate_limit:{}-{}",
        occ.project_id, occ.fingerprint[0]
    );
    let granted = take(
        conn,
        &key,
        occ.detection_time.0.timestamp(),
        (q.window_seconds, q.granularity_seconds, q.limit),
    )?;
    Ok((!granted).then_some(RATE_LIMITED))
}

/// Steps 2a–2b, before a new group is created: noise reduction, then the type's creation quota.
/// `Some(reason)` when creation is held back.
pub fn check_creation(
    conn: &mut PgConnection,
    settings: &IssueSettings,
    occ: &Occurrence,
) -> QueryResult<Option<&'static str>> {
    if exempt(occ) {
        return Ok(None);
    }
    let hash = &occ.fingerprint[0];
    if let (true, Some(limit)) = (settings.noise_reduction, occ.group_type.noise_ignore_limit) {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            count: i64,
        }
        // An expired counter starts again at 1; every increment pushes the expiry out.
        let seen: Count = diesel::sql_query(
            "INSERT INTO noise_counters AS n (project_id, hash, count, expires_at) \
             VALUES ($1, $2::bpchar, 1, $3 + make_interval(secs => $4)) \
             ON CONFLICT (project_id, hash) DO UPDATE SET \
               count = CASE WHEN n.expires_at <= $3 THEN 1 ELSE n.count + 1 END, \
               expires_at = EXCLUDED.expires_at \
             RETURNING count",
        )
        .bind::<BigInt, _>(occ.project_id as i64)
        .bind::<Bpchar, _>(hash)
        .bind::<Timestamptz, _>(occ.detection_time.0)
        .bind::<BigInt, _>(NOISE_EXPIRY_SECS)
        .get_result(conn)?;
        if (seen.count as u64) < limit {
            return Ok(Some(NOISE));
        }
        diesel::sql_query("DELETE FROM noise_counters WHERE project_id = $1 AND hash = $2::bpchar")
            .bind::<BigInt, _>(occ.project_id as i64)
            .bind::<Bpchar, _>(hash)
            .execute(conn)?;
    }
    if settings.creation_quotas {
        let key = format!(
            "issue-platform-issues:{}:{}",
            occ.project_id, occ.group_type.slug
        );
        let at = occ.detection_time.0.timestamp();
        if !take(conn, &key, at, occ.group_type.creation_quota)? {
            return Ok(Some(CREATION_QUOTA));
        }
    }
    Ok(None)
}

/// Takes one unit from the sliding window `key` at `at` (epoch seconds) when fewer than `limit`
/// were taken in the `window` seconds up to `at`, counted in `granularity`-second buckets.
/// Buckets older than the window are pruned on the way. Returns whether the unit was granted.
fn take(
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
    let row: Granted = diesel::sql_query(
        "WITH pruned AS (DELETE FROM rate_limit_counters WHERE key = $1 AND bucket <= $2 - $3), \
              used AS (SELECT coalesce(sum(count), 0) AS n FROM rate_limit_counters \
                       WHERE key = $1 AND bucket > $2 - $3 AND bucket <= $2), \
              taken AS (INSERT INTO rate_limit_counters AS r (key, bucket, count) \
                        SELECT $1, $2, 1 FROM used WHERE n < $4 \
                        ON CONFLICT (key, bucket) DO UPDATE SET count = r.count + 1 RETURNING 1) \
         SELECT count(*) AS granted FROM taken",
    )
    .bind::<Text, _>(key)
    .bind::<BigInt, _>(bucket)
    .bind::<BigInt, _>(buckets)
    .bind::<BigInt, _>(limit as i64)
    .get_result(conn)?;
    Ok(row.granted > 0)
}

/// Marks the occurrence row as held back by `reason`.
pub fn mark_dropped(conn: &mut PgConnection, occurrence_id: &str, reason: &str) -> QueryResult<()> {
    diesel::sql_query("UPDATE occurrences SET dropped = $2 WHERE id = $1::bpchar")
        .bind::<Bpchar, _>(occurrence_id)
        .bind::<Text, _>(reason)
        .execute(conn)?;
    Ok(())
}

/// The reason a stored occurrence was held back, if it was.
pub fn dropped_reason(
    conn: &mut PgConnection,
    occurrence_id: &str,
) -> QueryResult<Option<&'static str>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        dropped: Option<String>,
    }
    Ok(
        diesel::sql_query("SELECT dropped FROM occurrences WHERE id = $1::bpchar")
            .bind::<Bpchar, _>(occurrence_id)
            .get_result::<Row>(conn)
            .optional()?
            .and_then(|r| r.dropped)
            .and_then(|r| {
                [RATE_LIMITED, NOISE, CREATION_QUOTA]
                    .into_iter()
                    .find(|known| *known == r)
            }),
    )
}
