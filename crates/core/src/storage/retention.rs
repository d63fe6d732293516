//! Retention: what expires, and removing it in steps that never hold long locks.
//!
//! The rules, applied as of a time `now` (cleanup's clock, which `--now` can move):
//! - events, occurrences and attachments expire at their `expires_at`, fixed when they were
//!   written: the message's `retention_days` when Relay sent one, else the project's retention
//!   (its `sluice:retention-days` option, else its organization's, else the database setting
//!   `sluice.retention_days`, else 90 days);
//! - payloads of events and occurrences live in day partitions by expiry: a partition whose day
//!   has ended is dropped whole; rows that landed in the default partition (no partition for
//!   their day yet) are deleted in batches;
//! - an expired attachment row is deleted and its object queued in `object_deletions` in the
//!   same statement; the queue is emptied only once the object store confirmed the deletion;
//! - user reports expire with their project's retention, counted from `date_added`;
//! - a group is removed (with its hashes, activity and history) once it has no event and no
//!   occurrence left and was last seen longer ago than its project's retention;
//! - idempotency records (`emitted_outcomes`, `applied_status_changes`) and idle rate-limit
//!   counters are kept for the replay window (at least the input topics' Kafka retention), so a
//!   replay within it never bills or applies twice; noise counters and attachment chunks at
//!   their own `expires_at`.
//!
//! Each step deletes at most `limit` rows per statement (rows locked by a consumer are skipped
//! and taken next time), so a step never holds locks for long and can run beside the stages.

use super::prepared::prepared;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Double, Text, Timestamptz};

/// Tables whose payloads are partitioned by expiry day.
pub const PARTITIONED: [&str; 2] = ["event_payloads", "occurrence_payloads"];

/// A batched deletion: one table's expired rows.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// What it removes, as shown to the operator and in metric labels.
    pub name: &'static str,
    table: &'static str,
    /// Columns that identify a row (`ctid` for tables nothing updates).
    keys: &'static str,
    /// Which rows are expired: `$1` is now, `$2` the replay window in seconds.
    expired: &'static str,
    /// Whether rows can be locked (plain tables); partitions' default tables are not locked.
    lockable: bool,
}

/// The batched steps, in the order cleanup runs them: rows that refer to groups before groups.
pub const STEPS: [Step; 12] = [
    Step {
        name: "events",
        table: "events",
        keys: "project_id, event_id",
        expired: "expires_at <= $1",
        lockable: true,
    },
    Step {
        name: "event_payloads (default partition)",
        table: "event_payloads_default",
        keys: "ctid",
        expired: "expires_at <= $1",
        lockable: false,
    },
    Step {
        name: "occurrences",
        table: "occurrences",
        keys: "id",
        expired: "expires_at <= $1",
        lockable: true,
    },
    Step {
        name: "occurrence_payloads (default partition)",
        table: "occurrence_payloads_default",
        keys: "ctid",
        expired: "expires_at <= $1",
        lockable: false,
    },
    Step {
        name: "user_reports",
        table: "user_reports",
        keys: "id",
        expired:
            "date_added <= $1 - make_interval(days => sluice_shortest_retention_days()) \
             AND date_added <= $1 - make_interval(days => sluice_project_retention_days(project_id))",
        lockable: true,
    },
    Step {
        name: "emitted_outcomes",
        table: "emitted_outcomes",
        keys: "key",
        expired: "emitted_at <= $1 - make_interval(secs => $2)",
        lockable: true,
    },
    Step {
        name: "applied_status_changes",
        table: "applied_status_changes",
        keys: "id",
        expired: "applied_at <= $1 - make_interval(secs => $2)",
        lockable: true,
    },
    // A delivered or given-up webhook delivery is kept for the replay window: its row is what
    // keeps a replayed effect from notifying twice. Pending deliveries are never removed here.
    Step {
        name: "webhook_deliveries",
        table: "webhook_deliveries",
        keys: "id",
        expired: "(delivered_at IS NOT NULL OR failed_at IS NOT NULL) \
                  AND date_added <= $1 - make_interval(secs => $2)",
        lockable: true,
    },
    Step {
        name: "rate_limit_counters",
        table: "rate_limit_counters",
        keys: "key, bucket",
        expired: "touched_at <= $1 - make_interval(secs => $2)",
        lockable: true,
    },
    Step {
        name: "noise_counters",
        table: "noise_counters",
        keys: "project_id, hash",
        expired: "expires_at <= $1",
        lockable: true,
    },
    // The embedded transport's messages are kept for the replay window, as a Kafka topic's
    // retention would keep them, and never before every consumer group reading the partition
    // has read them (a stage stopped for longer loses nothing).
    Step {
        name: "queue_messages",
        table: "queue_messages",
        keys: "topic, partition, \"offset\"",
        expired: "produced_at <= $1 - make_interval(secs => $2) \
                  AND NOT EXISTS (SELECT 1 FROM queue_offsets o \
                      WHERE o.topic = queue_messages.topic AND o.partition = queue_messages.partition \
                        AND o.next_offset <= queue_messages.\"offset\")",
        lockable: true,
    },
    Step {
        name: "attachment_chunks",
        table: "attachment_chunks",
        keys: "project_id, event_id, attachment_id, chunk_index",
        expired: "expires_at <= $1",
        lockable: true,
    },
];

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl Step {
    /// How many rows are expired as of `now`.
    pub fn count(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
        window_secs: f64,
    ) -> QueryResult<u64> {
        diesel::sql_query(format!(
            "SELECT count(*) AS n FROM {} WHERE {}",
            self.table, self.expired
        ))
        .bind::<Timestamptz, _>(now)
        .bind::<Double, _>(window_secs)
        .get_result::<Count>(conn)
        .map(|c| c.n as u64)
    }

    /// Deletes up to `limit` expired rows; returns how many it deleted.
    pub fn delete(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
        window_secs: f64,
        limit: i64,
    ) -> QueryResult<u64> {
        let join: Vec<String> = self
            .keys
            .split(',')
            .map(|k| format!("t.{k} = d.{k}", k = k.trim()))
            .collect();
        let lock = if self.lockable {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        diesel::sql_query(format!(
            "WITH d AS (SELECT {keys} FROM {table} WHERE {expired} LIMIT $3 {lock}), \
                  gone AS (DELETE FROM {table} t USING d WHERE {join} RETURNING 1) \
             SELECT count(*) AS n FROM gone",
            keys = self.keys,
            table = self.table,
            expired = self.expired,
            join = join.join(" AND "),
        ))
        .bind::<Timestamptz, _>(now)
        .bind::<Double, _>(window_secs)
        .bind::<BigInt, _>(limit)
        .get_result::<Count>(conn)
        .map(|c| c.n as u64)
    }
}

/// How many attachment rows are expired as of `now`.
pub fn expired_attachments(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<u64> {
    prepared("SELECT count(*) AS n FROM event_attachments WHERE expires_at <= $1")
        .bind::<Timestamptz, _>(now)
        .get_result::<Count>(conn)
        .map(|c| c.n as u64)
}

/// Deletes up to `limit` expired attachment rows and queues their objects for deletion, in one
/// statement; returns how many rows it deleted. Bodies Relay stored itself (`objectstore:` paths)
/// are Relay's store's to expire, not queued here.
pub fn delete_attachments(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> QueryResult<u64> {
    prepared(
        "WITH d AS (SELECT id FROM event_attachments WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED), \
              gone AS (DELETE FROM event_attachments a USING d WHERE a.id = d.id \
                       RETURNING a.project_id, a.event_id, a.attachment_id, a.blob_path), \
              queued AS (INSERT INTO object_deletions (path, project_id, event_id, attachment_id) \
                         SELECT blob_path, project_id, event_id, attachment_id FROM gone \
                         WHERE blob_path IS NOT NULL AND blob_path NOT LIKE 'objectstore:%' \
                         ON CONFLICT (path) DO NOTHING) \
         SELECT count(*) AS n FROM gone",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<BigInt, _>(limit)
    .get_result::<Count>(conn)
    .map(|c| c.n as u64)
}

/// Up to `limit` queued object keys. Keys that a live attachment row names again (its message
/// was replayed and stored it anew) are taken off the queue instead: their object is in use.
pub fn queued_objects(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct Path {
        #[diesel(sql_type = Text)]
        path: String,
    }
    prepared(
        "DELETE FROM object_deletions q USING event_attachments a \
         WHERE a.project_id = q.project_id AND a.event_id = q.event_id AND a.attachment_id = q.attachment_id",
    )
    .execute(conn)?;
    let rows: Vec<Path> =
        prepared("SELECT path FROM object_deletions ORDER BY queued_at, path LIMIT $1")
            .bind::<BigInt, _>(limit)
            .load(conn)?;
    Ok(rows.into_iter().map(|p| p.path).collect())
}

/// How many objects wait for deletion.
pub fn queued_object_count(conn: &mut PgConnection) -> QueryResult<u64> {
    prepared("SELECT count(*) AS n FROM object_deletions")
        .get_result::<Count>(conn)
        .map(|c| c.n as u64)
}

/// Takes `paths` off the queue once their objects are gone.
pub fn forget_objects(conn: &mut PgConnection, paths: &[String]) -> QueryResult<usize> {
    prepared("DELETE FROM object_deletions WHERE path = ANY($1)")
        .bind::<diesel::sql_types::Array<Text>, _>(paths)
        .execute(conn)
}

/// Groups that can go as of `now`: no event or occurrence left, last seen longer ago than
/// their project's retention.
const DOOMED_GROUPS: &str = "SELECT g.id FROM groups g \
     WHERE g.last_seen <= $1 - make_interval(days => sluice_shortest_retention_days()) \
       AND g.last_seen <= $1 - make_interval(days => sluice_project_retention_days(g.project_id)) \
       AND NOT EXISTS (SELECT 1 FROM events e WHERE e.group_id = g.id) \
       AND NOT EXISTS (SELECT 1 FROM occurrences o WHERE o.group_id = g.id)";

/// How many groups would be removed as of `now`.
pub fn expired_groups(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<u64> {
    diesel::sql_query(format!("SELECT count(*) AS n FROM ({DOOMED_GROUPS}) g"))
        .bind::<Timestamptz, _>(now)
        .get_result::<Count>(conn)
        .map(|c| c.n as u64)
}

/// Removes up to `limit` expired groups with their hashes, activity and history, and unlinks
/// the attachments and user reports that still name them; returns how many groups it removed.
/// Groups a consumer holds are skipped; a consumer that waits for one of them finds its hash
/// gone and creates a new group.
pub fn delete_groups(conn: &mut PgConnection, now: DateTime<Utc>, limit: i64) -> QueryResult<u64> {
    conn.transaction(|conn| {
        prepared(
            "CREATE TEMPORARY TABLE IF NOT EXISTS doomed_groups (id BIGINT PRIMARY KEY) ON COMMIT DELETE ROWS",
        )
        .execute(conn)?;
        let n = diesel::sql_query(format!(
            "INSERT INTO doomed_groups {DOOMED_GROUPS} ORDER BY g.id LIMIT $2 FOR UPDATE OF g SKIP LOCKED"
        ))
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(limit)
        .execute(conn)?;
        if n == 0 {
            return Ok(0);
        }
        for sql in [
            "DELETE FROM group_hashes t USING doomed_groups d WHERE t.group_id = d.id",
            "DELETE FROM activities t USING doomed_groups d WHERE t.group_id = d.id",
            "DELETE FROM group_history t USING doomed_groups d WHERE t.group_id = d.id",
            "UPDATE event_attachments t SET group_id = NULL FROM doomed_groups d WHERE t.group_id = d.id",
            "UPDATE user_reports t SET group_id = NULL FROM doomed_groups d WHERE t.group_id = d.id",
            "DELETE FROM groups t USING doomed_groups d WHERE t.id = d.id",
        ] {
            diesel::sql_query(sql).execute(conn)?;
        }
        Ok(n as u64)
    })
}

/// A partition of an expiry-partitioned table.
#[derive(Debug, Clone)]
pub struct Partition {
    pub table: &'static str,
    pub name: String,
    /// The UTC day its rows expire on.
    pub day: NaiveDate,
    /// Its size on disk, indexes and TOAST included.
    pub bytes: i64,
}

/// The day partitions of `table`, oldest first.
pub fn partitions(conn: &mut PgConnection, table: &'static str) -> QueryResult<Vec<Partition>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Date)]
        day: NaiveDate,
        #[diesel(sql_type = BigInt)]
        bytes: i64,
    }
    let rows: Vec<Row> = prepared(
        "SELECT c.relname::text AS name, to_date(right(c.relname::text, 8), 'YYYYMMDD') AS day, \
                pg_total_relation_size(c.oid) AS bytes \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::regclass AND c.relname ~ '_p[0-9]{8}$' ORDER BY 2",
    )
    .bind::<Text, _>(table)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| Partition {
            table,
            name: r.name,
            day: r.day,
            bytes: r.bytes,
        })
        .collect())
}

/// What [`ensure_partitions`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ensured {
    /// Partitions created.
    pub created: u64,
    /// Days left without their partition because a lock was not had within the session's
    /// `lock_timeout` (a long transaction on the table). Their rows wait in the default
    /// partition; a later call creates them.
    pub deferred: u64,
}

/// Creates the missing day partitions of `table` from `from` to `to` (inclusive), moving rows
/// of those days out of the default partition. A day whose locks are not had in time is
/// deferred, and the next days are still tried.
pub fn ensure_partitions(
    conn: &mut PgConnection,
    table: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> QueryResult<Ensured> {
    let mut ensured = Ensured::default();
    let mut day = from;
    while day <= to {
        // One transaction per day, so locks are held for one partition at a time. NULL: a
        // lock was not had in time, and the day's work was rolled back.
        #[derive(QueryableByName)]
        struct Created {
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bool>)]
            created: Option<bool>,
        }
        let c: Created = prepared("SELECT sluice_ensure_partition($1, $2) AS created")
            .bind::<Text, _>(table)
            .bind::<Date, _>(day)
            .get_result(conn)?;
        match c.created {
            Some(created) => ensured.created += u64::from(created),
            None => ensured.deferred += 1,
        }
        day = match day.succ_opt() {
            Some(d) => d,
            None => break,
        };
    }
    Ok(ensured)
}

/// Detaches and drops `partition` (its day has ended: every row in it has expired). The detach
/// takes a short exclusive lock on the parent, given up after the session's `lock_timeout`.
pub fn drop_partition(conn: &mut PgConnection, partition: &Partition) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::sql_query(format!(
            "ALTER TABLE {} DETACH PARTITION {}",
            partition.table,
            quote_ident(&partition.name)
        ))
        .execute(conn)?;
        diesel::sql_query(format!("DROP TABLE {}", quote_ident(&partition.name))).execute(conn)?;
        Ok(())
    })
}

/// The longest retention any project has (or the default), in days: how far ahead partitions
/// are created.
pub fn longest_retention_days(conn: &mut PgConnection) -> QueryResult<i64> {
    prepared(
        "SELECT GREATEST(sluice_default_retention_days(), COALESCE(max(days), 0))::bigint AS n \
         FROM project_retention",
    )
    .get_result::<Count>(conn)
    .map(|c| c.n)
}

/// Bounds how long any statement of this session waits for a lock.
pub fn set_lock_timeout(conn: &mut PgConnection, millis: u64) -> QueryResult<()> {
    diesel::sql_query(format!("SET lock_timeout = {millis}"))
        .execute(conn)
        .map(|_| ())
}

/// Tries to become the only cleanup running (a session-level advisory lock); false when
/// another holds it.
pub fn try_lock(conn: &mut PgConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    diesel::sql_query(format!(
        "SELECT pg_try_advisory_lock({CLEANUP_LOCK}) AS locked"
    ))
    .get_result::<Locked>(conn)
    .map(|l| l.locked)
}

/// Releases [`try_lock`].
pub fn unlock(conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query(format!("SELECT pg_advisory_unlock({CLEANUP_LOCK})"))
        .execute(conn)
        .map(|_| ())
}

/// Advisory lock key of cleanup (arbitrary, fixed; differs from migrate's).
const CLEANUP_LOCK: i64 = 0x0073_6c75_6963_6502;

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
