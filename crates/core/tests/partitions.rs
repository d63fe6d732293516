//! Day partitions of the payload tables created while rows of those days are being written:
//! each creation moves its day's rows out of the default partition and attaches the new one,
//! and no write that lands in between can make the attach fail (or be lost).

use chrono::NaiveDate;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use sluice_core::failure::{Classify, Failure};
use sluice_core::storage::retention::Ensured;
use sluice_core::storage::{migrate, retention, DbError};
use sluice_testkit::db::count;
use sluice_testkit::TestDb;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[test]
fn partitions_are_created_while_their_days_are_written() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let first = NaiveDate::from_ymd_opt(2031, 1, 1).ok_or_else(|| anyhow::anyhow!("date"))?;
    const DAYS: i64 = 30;

    // Two writers insert rows spread over the days, one statement (and commit) each, for as
    // long as partitions are being created.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (url, stop, written) = (db.url.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut c = PgConnection::establish(&url)?;
                let mut n: i64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let day = (n * 7 + w) % DAYS;
                    let insert = format!(
                        "INSERT INTO occurrence_payloads (id, expires_at, data) VALUES \
                         ('{w}-{n}', timestamptz '2031-01-01 12:00:00+00' + interval '{day} days', '{{}}')"
                    );
                    // A row routed to the default partition just before its day's partition
                    // was attached is refused; the failure classes make that a retry, as here.
                    let mut tries = 0;
                    while let Err(e) = c.batch_execute(&insert) {
                        let text = e.to_string();
                        let retry = matches!(DbError::Query(e).failure(), Failure::Transient(_));
                        tries += 1;
                        anyhow::ensure!(retry && tries < 10, "insert failed: {text}");
                    }
                    written.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok(())
            })
        })
        .collect();
    // Let rows of every day reach the default partition first.
    while written.load(Ordering::Relaxed) < 200 {
        std::thread::yield_now();
    }

    let mut c = db.connect()?;
    let last = first + chrono::Duration::days(DAYS - 1);
    let created = retention::ensure_partitions(&mut c, "occurrence_payloads", first, last);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    assert_eq!(
        created?,
        Ensured {
            created: DAYS as u64,
            deferred: 0
        },
        "every day's partition was created"
    );

    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) AS n FROM occurrence_payloads_default"
        )?,
        0,
        "no row of a created day is left in the default partition"
    );
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM occurrence_payloads")? as u64,
        written.load(Ordering::Relaxed),
        "no row was lost"
    );
    Ok(())
}

#[test]
fn reads_during_partition_creation_see_every_row_once() -> anyhow::Result<()> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let first = NaiveDate::from_ymd_opt(2032, 1, 1).ok_or_else(|| anyhow::anyhow!("date"))?;
    const DAYS: i64 = 40;
    const ROWS: i64 = 4_000;
    let mut c = db.connect()?;
    c.batch_execute(&format!(
        "INSERT INTO event_payloads (project_id, event_id, expires_at, data) \
         SELECT 1, lpad(n::text, 32, '0'), \
                timestamptz '2032-01-01 12:00:00+00' + make_interval(days => n % {DAYS}), '{{}}' \
         FROM generate_series(1, {ROWS}) n"
    ))?;

    // Readers count the rows over and over while the partitions are created, each count one
    // statement planned and run on its own (as every read of the API is).
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (url, stop, started) = (db.url.clone(), stop.clone(), started.clone());
            std::thread::spawn(move || -> anyhow::Result<(u64, Vec<i64>)> {
                let mut c = PgConnection::establish(&url)?;
                let (mut reads, mut wrong) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let got = diesel::sql_query(
                        "SELECT count(*) AS n FROM event_payloads WHERE project_id = $1",
                    )
                    .bind::<diesel::sql_types::BigInt, _>(1_i64)
                    .get_result::<N>(&mut c)?
                    .n;
                    reads += 1;
                    if reads == 1 {
                        started.fetch_add(1, Ordering::Relaxed);
                    }
                    if got != ROWS {
                        wrong.push(got);
                    }
                }
                Ok((reads, wrong))
            })
        })
        .collect();

    // Both readers are reading before the first partition is created.
    while started.load(Ordering::Relaxed) < 2 && !readers.iter().any(|r| r.is_finished()) {
        std::thread::yield_now();
    }
    let last = first + chrono::Duration::days(DAYS - 1);
    let created = retention::ensure_partitions(&mut c, "event_payloads", first, last);
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        let (n, wrong) = r
            .join()
            .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        assert!(wrong.is_empty(), "counts other than {ROWS}: {wrong:?}");
        reads += n;
    }
    assert_eq!(
        created?,
        Ensured {
            created: DAYS as u64,
            deferred: 0
        },
        "every day's partition was created"
    );
    assert!(reads > 0, "the readers ran");
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM event_payloads_default")?,
        0,
        "every row moved to its day's partition"
    );
    Ok(())
}

#[test]
fn a_day_whose_lock_is_not_had_in_time_is_deferred_to_the_next_call() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let first = NaiveDate::from_ymd_opt(2033, 1, 1).ok_or_else(|| anyhow::anyhow!("date"))?;
    let last = first + chrono::Duration::days(2);
    let partitions = "SELECT count(*) AS n FROM pg_class WHERE relkind = 'r' AND relname LIKE 'occurrence_payloads_p2033%'";

    // A writer's transaction stays open on the table (its row lands in the default partition),
    // so the default partition's lock cannot be had while it lasts.
    let mut writer = db.connect()?;
    writer.batch_execute(
        "BEGIN; INSERT INTO occurrence_payloads (id, expires_at, data) \
         VALUES ('held', timestamptz '2033-01-02 12:00:00+00', '{}')",
    )?;
    let mut c = db.connect()?;
    retention::set_lock_timeout(&mut c, 200)?;
    let ensured = retention::ensure_partitions(&mut c, "occurrence_payloads", first, last)?;
    assert_eq!(
        ensured,
        Ensured {
            created: 0,
            deferred: 3
        },
        "every day waited for the writer's lock and was deferred, not failed"
    );
    assert_eq!(count(&db.url, partitions)?, 0, "nothing was left half-made");

    writer.batch_execute("COMMIT")?;
    let ensured = retention::ensure_partitions(&mut c, "occurrence_payloads", first, last)?;
    assert_eq!(
        ensured,
        Ensured {
            created: 3,
            deferred: 0
        },
        "the next call created them"
    );
    assert_eq!(count(&db.url, partitions)?, 3);
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) AS n FROM occurrence_payloads_default"
        )?,
        0,
        "the writer's row moved to its day's partition"
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) AS n FROM occurrence_payloads_p20330102"
        )?,
        1
    );
    Ok(())
}
