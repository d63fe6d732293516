//! Where a group was seen: `group_releases` (per release and environment), `group_environments`
//! (per environment, with the first release seen there) and `groups.first_release`.

use super::prepared::prepared;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text};

/// One event of a group.
pub struct Seen<'a> {
    pub group_id: i64,
    pub project_id: i64,
    /// `None` when the event names no release (not counted per release).
    pub release: Option<&'a str>,
    /// `""` when the event names no environment.
    pub environment: &'a str,
    /// When it happened, epoch seconds.
    pub at: f64,
}

/// Counts `seen` (events not counted before) into the group's releases and environments: first
/// and last seen widened, times seen added. Rows are written in key order, so concurrent
/// writers of the same groups do not deadlock.
pub fn record(conn: &mut PgConnection, seen: &[Seen<'_>]) -> QueryResult<()> {
    if seen.is_empty() {
        return Ok(());
    }
    let groups: Vec<i64> = seen.iter().map(|s| s.group_id).collect();
    let projects: Vec<i64> = seen.iter().map(|s| s.project_id).collect();
    let releases: Vec<Option<&str>> = seen.iter().map(|s| s.release).collect();
    let environments: Vec<&str> = seen.iter().map(|s| s.environment).collect();
    let at: Vec<f64> = seen.iter().map(|s| s.at).collect();
    prepared(
        "WITH s AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::float8[]) \
                    AS s(g, p, r, e, t)), \
              rel AS ( \
                INSERT INTO group_releases AS x \
                  (group_id, project_id, release, environment, first_seen, last_seen, times_seen) \
                SELECT g, min(p), r, e, to_timestamp(min(t)), to_timestamp(max(t)), count(*) \
                FROM s WHERE r IS NOT NULL GROUP BY g, r, e ORDER BY g, r, e \
                ON CONFLICT (group_id, release, environment) DO UPDATE SET \
                  first_seen = least(x.first_seen, EXCLUDED.first_seen), \
                  last_seen = greatest(x.last_seen, EXCLUDED.last_seen), \
                  times_seen = x.times_seen + EXCLUDED.times_seen) \
         INSERT INTO group_environments AS x \
           (group_id, project_id, environment, first_release, first_seen, last_seen, times_seen) \
         SELECT g, min(p), e, (array_agg(r ORDER BY t) FILTER (WHERE r IS NOT NULL))[1], \
                to_timestamp(min(t)), to_timestamp(max(t)), count(*) \
         FROM s GROUP BY g, e ORDER BY g, e \
         ON CONFLICT (group_id, environment) DO UPDATE SET \
           first_release = COALESCE(x.first_release, EXCLUDED.first_release), \
           first_seen = least(x.first_seen, EXCLUDED.first_seen), \
           last_seen = greatest(x.last_seen, EXCLUDED.last_seen), \
           times_seen = x.times_seen + EXCLUDED.times_seen",
    )
    .bind::<Array<BigInt>, _>(groups)
    .bind::<Array<BigInt>, _>(projects)
    .bind::<Array<Nullable<Text>>, _>(releases)
    .bind::<Array<Text>, _>(environments)
    .bind::<Array<Double>, _>(at)
    .execute(conn)?;
    Ok(())
}

/// Sets `groups.first_release` of new groups (group id, release of the event that created it).
pub fn set_first_release(conn: &mut PgConnection, created: &[(i64, &str)]) -> QueryResult<()> {
    if created.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = created.iter().map(|(g, _)| *g).collect();
    let releases: Vec<&str> = created.iter().map(|(_, r)| *r).collect();
    prepared(
        "UPDATE groups g SET first_release = x.r FROM unnest($1::bigint[], $2::text[]) AS x(id, r) \
         WHERE g.id = x.id AND g.first_release IS NULL",
    )
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Array<Text>, _>(releases)
    .execute(conn)?;
    Ok(())
}
