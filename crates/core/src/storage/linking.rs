//! The one owner of the rule that fills `group_id` on an event's rows, and of its lock order.
//!
//! The rule: the first group an event gets stays. When the issue platform groups an event, the
//! event, its attachments and its user reports that have no group yet get that group
//! ([`backfill`]). A writer that adds an attachment or a report looks its event's group up when
//! inserting, and rows still left without one re-read it under a share lock after the insert is
//! committed ([`fill_groups`]): the event may have been grouped while the insert ran, and that
//! back-fill could not see the new rows yet.
//!
//! The lock order, which both sides follow so neither can hold one event while waiting for
//! another the other side holds: events first, in (project id, event id) order as the keys sort
//! here (the caller sorts them; ids compare byte by byte); then the attachments and reports.
//! The back-fill takes `FOR NO KEY UPDATE` on the events it groups before updating them (an
//! `UPDATE` alone locks in plan order); writers of attachments and reports take `FOR SHARE` on
//! the events in the same key order before setting groups.
//!
//! The order holds within one call. A transaction of the occurrence stage may call the
//! back-fill more than once (once per run of occurrences between status changes, or once per
//! message when a batch is retried message by message), so a later call can lock an event that
//! sorts before one an earlier call holds. A writer waiting across the two then deadlocks with
//! it; PostgreSQL ends one of the two transactions and its stage retries it (a deadlock is a
//! transient failure), so nothing is lost, only time.
//!
//! Both lock through one index probe per key, in the order of the keys given (a `LATERAL`
//! subquery with `LIMIT 1`, run once per key in turn). A join on the list of keys, sorted by
//! `ORDER BY`, also locks in key order, but PostgreSQL plans it as a scan of the whole events
//! table for a batch of keys until that table holds several hundred thousand rows: 23 ms
//! against 5 ms for a thousand keys at 60,000 events.

use super::prepared::prepared;
use super::{user_reports, EventKey};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bpchar, Nullable, Text};

/// Grouping back-fill for a set of events: `earlier` events (stored before without a group) get
/// their group, and the attachments and user reports of every event in `grouped` that have none
/// get its group. Both sorted by key by the caller. Runs inside the caller's transaction.
pub fn backfill(
    conn: &mut PgConnection,
    earlier: &[(&EventKey, i64)],
    grouped: &[(&EventKey, i64)],
) -> QueryResult<()> {
    let sorted = |rows: &[(&EventKey, i64)]| rows.windows(2).all(|w| w[0].0 <= w[1].0);
    debug_assert!(
        sorted(earlier) && sorted(grouped),
        "back-fill keys must be sorted: they give the lock order"
    );
    let columns = |rows: &[(&EventKey, i64)]| -> (Vec<i64>, Vec<String>, Vec<i64>) {
        (
            rows.iter().map(|(k, _)| k.0).collect(),
            rows.iter().map(|(k, _)| k.1.clone()).collect(),
            rows.iter().map(|(_, g)| *g).collect(),
        )
    };
    if !earlier.is_empty() {
        let (pids, eids, gids) = columns(earlier);
        prepared(
            "SELECT 1 FROM unnest($1::bigint[], $2::bpchar[]) AS u(p, e) \
             CROSS JOIN LATERAL (SELECT 1 FROM events e WHERE e.project_id = u.p AND e.event_id = u.e \
                                 LIMIT 1 FOR NO KEY UPDATE) locked",
        )
        .bind::<Array<BigInt>, _>(&pids)
        .bind::<Array<Bpchar>, _>(&eids)
        .execute(conn)?;
        prepared(
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
    let reports = prepared(
        "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::bpchar[], $3::bigint[]) AS u(p, e, g)), \
              a AS (UPDATE event_attachments a SET group_id = u.g FROM u \
                    WHERE a.project_id = u.p AND a.event_id = u.e AND a.group_id IS NULL) \
         UPDATE user_reports r SET group_id = u.g FROM u \
         WHERE r.project_id = u.p AND r.event_id = u.e AND r.group_id IS NULL \
         RETURNING r.id, r.project_id, r.group_id",
    )
    .bind::<Array<BigInt>, _>(pids)
    .bind::<Array<Bpchar>, _>(eids)
    .bind::<Array<BigInt>, _>(gids)
    .load::<user_reports::Grouped>(conn)?;
    let reports: Vec<_> = reports.iter().map(user_reports::Grouped::key).collect();
    user_reports::notify_grouped(conn, &reports)
}

/// Rows that belong to an event and take its group.
#[derive(Debug, Clone, Copy)]
pub enum Linked {
    Attachments,
    Reports,
}

/// Sets `group_id` on the `linked` rows of the events of `keys` that have none, from each
/// event's group read under a share lock: one transaction that first locks every event in key
/// order (sorted here), then sets the groups in one statement.
pub fn fill_groups(conn: &mut PgConnection, linked: Linked, keys: &[EventKey]) -> QueryResult<()> {
    #[derive(QueryableByName)]
    struct Event {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Text)]
        event_id: String,
        #[diesel(sql_type = Nullable<BigInt>)]
        group_id: Option<i64>,
    }
    if keys.is_empty() {
        return Ok(());
    }
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    let (project_ids, event_ids) = super::split_keys(&keys);
    // One statement per table, the same text otherwise.
    macro_rules! fill_sql {
        ($table:literal) => {
            concat!(
                "UPDATE ",
                $table,
                " t SET group_id = u.g \
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS u(p, e, g) \
                 WHERE t.project_id = u.p AND t.event_id = u.e::bpchar AND t.group_id IS NULL \
                 RETURNING t.id, t.project_id, t.group_id"
            )
        };
    }
    let update = match linked {
        Linked::Attachments => prepared(fill_sql!("event_attachments")),
        Linked::Reports => prepared(fill_sql!("user_reports")),
    };
    conn.transaction(|c| {
        let events: Vec<Event> = prepared(
            "SELECT ev.project_id, ev.event_id::text AS event_id, ev.group_id \
             FROM unnest($1::bigint[], $2::text[]) AS k(p, e) \
             CROSS JOIN LATERAL (SELECT project_id, event_id, group_id FROM events \
                                 WHERE project_id = k.p AND event_id = k.e::bpchar LIMIT 1 FOR SHARE) ev",
        )
        .bind::<Array<BigInt>, _>(project_ids)
        .bind::<Array<Text>, _>(event_ids)
        .load(c)?;
        let (mut pids, mut eids, mut gids) = (Vec::new(), Vec::new(), Vec::new());
        for e in events {
            if let Some(g) = e.group_id {
                pids.push(e.project_id);
                eids.push(e.event_id);
                gids.push(g);
            }
        }
        if pids.is_empty() {
            return Ok(());
        }
        let rows = update
            .bind::<Array<BigInt>, _>(pids)
            .bind::<Array<Text>, _>(eids)
            .bind::<Array<BigInt>, _>(gids)
            .load::<user_reports::Grouped>(c)?;
        if matches!(linked, Linked::Reports) {
            let reports: Vec<_> = rows.iter().map(user_reports::Grouped::key).collect();
            user_reports::notify_grouped(c, &reports)?;
        }
        Ok(())
    })
}
