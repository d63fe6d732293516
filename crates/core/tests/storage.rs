//! Migrations and the pool against a real PostgreSQL (a fresh database per test).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use sluice_core::failure::{Classify, Failure};
use sluice_core::messages::DlqReason;
use sluice_core::storage::{migrate, Db, DbError};
use sluice_testkit::TestDb;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

fn tables(db: &TestDb) -> Vec<String> {
    let mut c = db.connect().unwrap_or_else(|e| panic!("{e}"));
    diesel::sql_query("SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
        .load::<Name>(&mut c)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|n| n.name)
        .collect()
}

/// How many migrations `migrations/` holds.
fn migration_count() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join("up.sql").exists())
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn migrations_twice_is_a_no_op() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    let first = migrate(&db.url)?;
    assert!(migration_count() >= 7);
    assert_eq!(first.len(), migration_count(), "{first:?}");
    let before = tables(&db);
    for t in [
        "organizations",
        "projects",
        "events",
        "groups",
        "group_hashes",
        "occurrences",
        "applied_status_changes",
        "event_attachments",
        "user_reports",
        "activities",
        "group_history",
        "attachment_chunks",
        "rate_limit_counters",
        "noise_counters",
    ] {
        assert!(
            before.contains(&t.to_owned()),
            "missing table {t}: {before:?}"
        );
    }
    assert!(migrate(&db.url)?.is_empty(), "second run applies nothing");
    assert_eq!(tables(&db), before);
    // Payload columns use lz4 where the server has it.
    let mut c = db.connect()?;
    let lz4: Vec<Name> = diesel::sql_query(
        "SELECT 'lz4' AS name FROM pg_settings \
         WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)",
    )
    .load(&mut c)?;
    let methods: Vec<Name> = diesel::sql_query(
        "SELECT attrelid::regclass::text || ':' || attcompression::text AS name FROM pg_attribute \
         WHERE attname = 'data' AND attrelid IN ('event_payloads'::regclass, 'occurrence_payloads'::regclass) ORDER BY 1",
    )
    .load(&mut c)?;
    let expected = if lz4.is_empty() {
        ["event_payloads:", "occurrence_payloads:"]
    } else {
        ["event_payloads:l", "occurrence_payloads:l"]
    };
    assert_eq!(
        methods.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        expected
    );
    Ok(())
}

#[test]
fn concurrent_migrations_both_succeed() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || migrate(&url).map_err(|e| e.to_string()))
        })
        .collect();
    let mut applied = Vec::new();
    for h in handles {
        let r = h.join().map_err(|_| anyhow::anyhow!("thread panicked"))?;
        applied.push(r.map_err(anyhow::Error::msg)?.len());
    }
    applied.sort();
    assert_eq!(
        applied,
        vec![0, 0, migration_count()],
        "exactly one run applied the migrations"
    );
    Ok(())
}

#[test]
fn minimal_org_and_project_rows_work() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let mut c = db.connect()?;
    diesel::sql_query("INSERT INTO organizations (id, slug) VALUES (1, 'acme')").execute(&mut c)?;
    diesel::sql_query("INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'web')")
        .execute(&mut c)?;
    let n: Vec<Count> = diesel::sql_query(
        "SELECT count(*) AS n FROM projects p JOIN organizations o ON o.id = p.organization_id \
         WHERE p.options = '{}'::jsonb AND o.options = '{}'::jsonb",
    )
    .load(&mut c)?;
    assert_eq!(n[0].n, 1, "options default to an empty object");
    // Natural-key uniqueness holds.
    let dup = diesel::sql_query("INSERT INTO organizations (id, slug) VALUES (2, 'acme')")
        .execute(&mut c);
    assert!(dup.is_err(), "slug is unique");
    diesel::sql_query(
        "INSERT INTO events (project_id, event_id, expires_at) VALUES (42, repeat('a', 32), now())",
    )
    .execute(&mut c)?;
    let dup = diesel::sql_query(
        "INSERT INTO events (project_id, event_id, expires_at) VALUES (42, repeat('a', 32), now())",
    )
    .execute(&mut c);
    assert!(dup.is_err(), "(project_id, event_id) is the key of events");
    Ok(())
}

#[test]
fn raw_events_first_write_wins_and_replays_return_their_groups() -> anyhow::Result<()> {
    use sluice_core::storage::events::{insert_raw, RawEvent};
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let mut c = db.connect()?;
    c.batch_execute(
        "INSERT INTO organizations (id, slug) VALUES (1, 'acme'); \
         INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'web');",
    )?;
    let (a, b, d) = ("a".repeat(32), "b".repeat(32), "d".repeat(32));
    let (a, b, d) = (a.as_str(), b.as_str(), d.as_str());
    fn raw<'a>(json: &'a str, event_id: &'a str, retention_days: Option<i32>) -> RawEvent<'a> {
        RawEvent {
            project_id: 42,
            event_id,
            json,
            retention_days,
        }
    }
    // A key twice in one batch: the first payload is stored.
    let groups = insert_raw(
        &mut c,
        &[
            raw(r#"{"n":1}"#, a, None),
            raw(r#"{"n":2}"#, b, Some(7)),
            raw(r#"{"n":3}"#, a, None),
        ],
    )?;
    assert!(groups.is_empty(), "new events have no group");
    let rows = sluice_testkit::db::lines(
        &db.url,
        "SELECT e.event_id || ' ' || (p.data->>'n') || ' ' || \
                (e.expires_at = p.expires_at) || ' ' || (e.expires_at < now() + interval '8 days') AS line \
         FROM events e JOIN event_payloads p USING (project_id, event_id) ORDER BY 1",
    )?;
    assert_eq!(
        rows,
        [format!("{a} 1 true false"), format!("{b} 2 true true")]
    );
    // A replay with a new event: the stored ones keep their payloads, the grouped one
    // reports its group, the new one is stored.
    c.batch_execute(&format!(
        "INSERT INTO groups (id, project_id, type, first_seen, last_seen) \
         VALUES (7, 42, 1, now(), now()); UPDATE events SET group_id = 7 WHERE event_id = '{a}'"
    ))?;
    let groups = insert_raw(
        &mut c,
        &[
            raw(r#"{"n":4}"#, a, None),
            raw(r#"{"n":5}"#, b, None),
            raw(r#"{"n":6}"#, d, None),
        ],
    )?;
    assert_eq!(
        groups.into_iter().collect::<Vec<_>>(),
        [((42, a.to_owned()), 7)]
    );
    let rows = sluice_testkit::db::lines(
        &db.url,
        "SELECT e.event_id || ' ' || (p.data->>'n') AS line FROM events e \
         JOIN event_payloads p USING (project_id, event_id) ORDER BY 1",
    )?;
    assert_eq!(rows, [format!("{a} 1"), format!("{b} 2"), format!("{d} 6")]);
    Ok(())
}

#[tokio::test]
async fn pool_runs_on_blocking_threads_and_reports_outages() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let pool = Db::new(&db.url, 2);
    pool.ping().await?;
    let n = pool
        .run(|c| {
            diesel::sql_query("INSERT INTO organizations (id, slug) VALUES (7, 'x')").execute(c)?;
            Ok::<_, DbError>(
                diesel::sql_query("SELECT count(*) AS n FROM organizations")
                    .get_result::<Count>(c)?
                    .n,
            )
        })
        .await?;
    assert_eq!(n, 1);

    let port = sluice_testkit::process::free_port()?;
    let down = Db::new(&format!("postgres://postgres@127.0.0.1:{port}/none"), 1);
    match down.ping().await {
        Err(e @ DbError::Unavailable(_)) => assert!(e.failure().is_outage()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn pooled_connections_recover_after_a_server_restart() -> anyhow::Result<()> {
    let pg = sluice_testkit::pg::PrivatePostgres::start()?;
    let pool = Db::new(&pg.url(), 8);
    let tx = |pool: Db| async move {
        pool.run(|c| {
            c.transaction(|c| {
                diesel::sql_query("SELECT pg_sleep(0.05)").execute(c)?;
                diesel::sql_query("SELECT 1").execute(c)
            })
            .map_err(DbError::Query)
        })
        .await
    };
    // Eight connections open in the pool.
    let warm = futures::future::join_all((0..8).map(|_| tx(pool.clone()))).await;
    assert!(warm.iter().all(Result::is_ok), "{warm:?}");
    pg.stop_server()?;
    pg.start_server()?;
    // The first call meets a dead connection (an outage, retried by the caller); the dead ones
    // left in the pool are then replaced before anyone gets them.
    let mut failures = Vec::new();
    for _ in 0..10 {
        if let Err(e) = tx(pool.clone()).await {
            assert!(e.failure().is_outage(), "{e}");
            failures.push(e.to_string());
        }
    }
    assert!(failures.len() <= 1, "{failures:?}");
    pool.ping().await?;
    Ok(())
}

/// Errors PostgreSQL really returns, classified: values the database cannot hold are the
/// message's fault (dead-lettered at once), never an outage.
#[tokio::test]
async fn real_postgres_errors_are_classified_by_cause() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    let pool = Db::new(&db.url, 2);
    let run = |sql: &'static str, bind: String| {
        let pool = pool.clone();
        async move {
            pool.run(move |c| {
                diesel::sql_query(sql)
                    .bind::<Text, _>(bind)
                    .execute(c)
                    .map_err(DbError::Query)
            })
            .await
        }
    };
    let permanent = |r: Result<usize, DbError>| match r {
        Err(e) => match e.failure() {
            Failure::Permanent(r) => r.reason,
            other => panic!("{e}: {other:?}"),
        },
        Ok(_) => panic!("the statement succeeded"),
    };
    let cases = [
        (
            "SELECT $1::text",
            "a\u{0}b".to_owned(),
            DlqReason::InvalidField,
        ),
        (
            "SELECT $1::jsonb",
            r#"{"a":"\u0000"}"#.to_owned(),
            DlqReason::InvalidField,
        ),
        (
            "SELECT $1::jsonb",
            r#"{"a":1e-20000}"#.to_owned(),
            DlqReason::InvalidField,
        ),
        (
            "SELECT $1::timestamptz",
            "300000-01-01".to_owned(),
            DlqReason::InvalidField,
        ),
        (
            "SELECT $1::bigint",
            "99999999999999999999".to_owned(),
            DlqReason::InvalidField,
        ),
    ];
    for (sql, bind, reason) in cases {
        assert_eq!(
            permanent(run(sql, bind.clone()).await),
            reason,
            "{sql} {bind:?}"
        );
    }
    // An index row too large (what a very long natural key meets).
    pool.run(|c| {
        diesel::sql_query("CREATE TABLE long_keys (k text PRIMARY KEY)")
            .execute(c)
            .map_err(DbError::Query)
    })
    .await?;
    // Incompressible (a linear congruential sequence), so the index cannot shrink it.
    let mut x: u64 = 1;
    let long: String = (0..8000)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(b'a' + ((x >> 33) % 26) as u8)
        })
        .collect();
    assert_eq!(
        permanent(run("INSERT INTO long_keys VALUES ($1)", long).await),
        DlqReason::TooLarge
    );
    // A table this build expects but the database lacks: every message would fail alike.
    let missing = run("INSERT INTO no_such_table VALUES ($1)", "x".into()).await;
    assert!(
        matches!(&missing, Err(e) if e.failure().is_outage()),
        "{missing:?}"
    );
    Ok(())
}

/// A schema change made while the process runs (a newer binary's migration) outdates a
/// statement its connections prepared: that call fails once, the connection is dropped with its
/// statements, and the next call works on a fresh one. Pool connections plan every call.
#[tokio::test]
async fn a_statement_outdated_by_a_schema_change_fails_once() -> anyhow::Result<()> {
    use sluice_core::storage::prepared::prepared;
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        plan_cache_mode: String,
    }
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        v: String,
    }
    let db = TestDb::new()?;
    let mut admin = db.connect()?;
    admin.batch_execute("CREATE TABLE t (v varchar(8)); INSERT INTO t VALUES ('a')")?;
    let pool = Db::new(&db.url, 1);
    let read = || {
        pool.run(|c| {
            Ok::<_, DbError>(
                prepared("SELECT v FROM t WHERE $1 <> ''")
                    .bind::<Text, _>("zz")
                    .load::<Row>(c)?,
            )
        })
    };
    let rows = read().await?;
    assert_eq!(rows.iter().map(|r| r.v.as_str()).collect::<Vec<_>>(), ["a"]);
    let mode = pool
        .run(|c| {
            Ok::<_, DbError>(
                diesel::sql_query("SELECT current_setting('plan_cache_mode') AS plan_cache_mode")
                    .get_result::<Setting>(c)?,
            )
        })
        .await?;
    assert_eq!(mode.plan_cache_mode, "force_custom_plan");

    // The column it returns changes type (varchar(8) to text).
    admin.batch_execute("ALTER TABLE t ALTER COLUMN v TYPE text")?;
    let failed = read().await;
    assert!(
        failed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("cached plan") && e.failure().is_outage()),
        "an outage (retried, never dead-lettered): {:?}",
        failed.map(|r| r.len())
    );
    assert_eq!(
        read().await?.len(),
        1,
        "the next call runs on a fresh connection"
    );
    assert_eq!(read().await?.len(), 1);
    Ok(())
}

#[test]
fn key_lookups_find_each_stored_key_once_and_nothing_else() -> anyhow::Result<()> {
    use sluice_core::storage::{occurrences, outcomes, user_reports};
    use std::collections::{HashMap, HashSet};
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let mut c = db.connect()?;

    // Outcome keys: a key asked twice is found once; unknown keys are not found.
    outcomes::record(&mut c, &["a".into(), "b".into()])?;
    let found = outcomes::emitted(&mut c, &["a".into(), "a".into(), "zz".into(), "b".into()])?;
    assert_eq!(found, HashSet::from(["a".to_owned(), "b".to_owned()]));

    // Occurrence ids, with the reason one was held back.
    let (one, two, three) = ("1".repeat(32), "2".repeat(32), "3".repeat(32));
    c.batch_execute(&format!(
        "INSERT INTO occurrences (id, project_id, event_id, type, dropped, expires_at) VALUES \
         ('{one}', 1, repeat('e', 32), 1, NULL, now() + interval '1 day'), \
         ('{two}', 1, repeat('f', 32), 1, 'issue_limit', now() + interval '1 day')"
    ))?;
    let stored = occurrences::existing(&mut c, &[&one, &three, &two, &one])?;
    assert_eq!(
        stored,
        HashMap::from([
            (one.clone(), None),
            (two.clone(), Some("issue_limit".to_owned()))
        ])
    );

    // Events with a legacy report still waiting for its feedback: not one already turned into
    // feedback, nor one written by a feedback.
    let (w, shimmed, from_feedback, none) = (
        "a".repeat(32),
        "b".repeat(32),
        "c".repeat(32),
        "d".repeat(32),
    );
    c.batch_execute(&format!(
        "INSERT INTO user_reports (project_id, event_id, feedback_event_id, legacy_report) VALUES \
         (7, '{w}', NULL, true), (7, '{shimmed}', repeat('9', 32), true), \
         (7, '{from_feedback}', NULL, false), (8, '{none}', NULL, true)"
    ))?;
    let keys: Vec<(i64, String)> = [&w, &shimmed, &from_feedback, &none, &w]
        .iter()
        .map(|e| (7, e.to_string()))
        .collect();
    assert_eq!(
        user_reports::with_waiting(&mut c, &keys)?,
        vec![(7, w.clone())],
        "only the waiting report's event, once (project 8's report is not project 7's)"
    );
    Ok(())
}

/// The grouping back-fill and writers of attachments lock the same events from both sides at
/// once: each round, two back-fills group a new set of events while two writers add attachments
/// to those events, listing them from the last to the first. Every lock on an event is taken in
/// one key order, so no transaction deadlocks (PostgreSQL would end one with an error), and
/// every attachment ends with its event's group.
#[test]
fn grouping_backfill_and_attachment_writers_never_deadlock() -> anyhow::Result<()> {
    use sluice_core::storage::{attachments, linking, EventKey};
    use std::sync::{Arc, Barrier};
    const ROUNDS: i64 = 30;
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let mut c = db.connect()?;
    c.batch_execute(&format!(
        "INSERT INTO events (project_id, event_id, group_id, expires_at) \
         SELECT 1, md5(r || '-' || g), NULL, now() + interval '1 day' \
         FROM generate_series(0, {}) r, generate_series(1, 200) g",
        ROUNDS - 1
    ))?;
    #[derive(QueryableByName)]
    struct Key {
        #[diesel(sql_type = BigInt)]
        round: i64,
        #[diesel(sql_type = Text)]
        event_id: String,
    }
    let mut rounds: Vec<Vec<EventKey>> = vec![Vec::new(); ROUNDS as usize];
    for k in diesel::sql_query(format!(
        "SELECT r::bigint AS round, md5(r || '-' || g) AS event_id \
         FROM generate_series(0, {}) r, generate_series(1, 200) g",
        ROUNDS - 1
    ))
    .load::<Key>(&mut c)?
    {
        rounds[k.round as usize].push((1, k.event_id));
    }
    for keys in &mut rounds {
        keys.sort();
    }
    let (url, rounds, barrier) = (db.url.clone(), Arc::new(rounds), Arc::new(Barrier::new(4)));
    let threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>> = (0..4)
        .map(|t| {
            let (url, rounds, barrier) = (url.clone(), rounds.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut c = PgConnection::establish(&url);
                // A thread that failed still meets the others at each round's start, so they
                // are not left waiting; its first error is returned at the end.
                let mut failed: Option<anyhow::Error> = None;
                for (round, keys) in rounds.iter().enumerate() {
                    barrier.wait();
                    let c = match (&mut c, &failed) {
                        (Ok(c), None) => c,
                        _ => continue,
                    };
                    let step: anyhow::Result<()> = if t % 2 == 0 {
                        let group = 1000 + round as i64;
                        let grouped: Vec<(&EventKey, i64)> =
                            keys.iter().map(|k| (k, group)).collect();
                        c.transaction(|c| linking::backfill(c, &grouped, &grouped))
                            .map_err(Into::into)
                    } else {
                        let rows: Vec<attachments::Row> = keys
                            .iter()
                            .rev()
                            .map(|(p, e)| attachments::Row {
                                project_id: *p,
                                event_id: e.clone(),
                                attachment_id: format!("writer-{t}"),
                                group_id: None,
                                kind: "event.attachment".into(),
                                name: "a.txt".into(),
                                content_type: "text/plain".into(),
                                size: 1,
                                sha1: "0".repeat(40),
                                blob_path: None,
                                retention_days: None,
                            })
                            .collect();
                        attachments::insert(c, &rows).map_err(Into::into)
                    };
                    failed = step.err();
                }
                c?;
                failed.map_or(Ok(()), Err)
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
    }
    let all: Count =
        diesel::sql_query("SELECT count(*) AS n FROM event_attachments").get_result(&mut c)?;
    assert_eq!(all.n, 2 * ROUNDS * 200, "every attachment row stored");
    let wrong: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM event_attachments a JOIN events e USING (project_id, event_id) \
         WHERE e.group_id IS NULL OR a.group_id IS DISTINCT FROM e.group_id",
    )
    .get_result(&mut c)?;
    assert_eq!(wrong.n, 0, "every attachment has its event's group");
    Ok(())
}
