//! The consumer runtime's guarantees, proven with the toy stage against the mock broker and a
//! real PostgreSQL.

mod support;

use rdkafka::message::{Headers, Message};
use sluice_testkit::process::wait_for;
use sluice_testkit::{unique, Broker, TestDb};
use std::collections::HashMap;
use std::time::Duration;
use support::*;

fn setup(partitions: i32) -> anyhow::Result<(Broker, TestDb, String)> {
    let broker = Broker::start(&[("toy", partitions), ("toy-dlq", 1)])?;
    let db = TestDb::new()?;
    create_toy_table(&db)?;
    Ok((broker, db, unique("toy-group")))
}

#[test]
fn ten_thousand_messages_all_written_and_committed() -> anyhow::Result<()> {
    let (broker, db, group) = setup(4)?;
    let topic = broker.topic("toy");
    produce(&broker, &topic, &(0..10_000).map(ok).collect::<Vec<_>>())?;
    let mut t = toy(&broker, &db.url, &group, &topic, &[])?;
    let stats = wait_rows(&db.url, 10_000, Duration::from_secs(120))?;
    let offsets = wait_committed_all(&broker, &group, &topic)?;
    assert_eq!(offsets.iter().map(|(_, h)| h).sum::<i64>(), 10_000);
    assert!(
        offsets.iter().all(|(_, h)| *h > 0),
        "all four partitions used: {offsets:?}"
    );
    assert_eq!(
        metric(&t.metrics, "toy_batches_in_flight_max"),
        Some(1.0),
        "one member: one batch in flight at a time"
    );
    stop_cleanly(&mut t.proc)?;
    let after = row_stats(&db.url).ok_or_else(|| anyhow::anyhow!("no stats"))?;
    assert_eq!(
        after,
        RowStats {
            rows: 10_000,
            times: 10_000
        },
        "each message written exactly once ({stats:?})"
    );
    Ok(())
}

#[test]
fn sigkill_mid_run_then_restart_loses_nothing() -> anyhow::Result<()> {
    let (broker, db, group) = setup(4)?;
    let topic = broker.topic("toy");
    produce(&broker, &topic, &(0..10_000).map(ok).collect::<Vec<_>>())?;
    let mut t = toy(
        &broker,
        &db.url,
        &group,
        &topic,
        &["--max-batch-size", "200"],
    )?;
    wait_rows(&db.url, 2_000, Duration::from_secs(60))?;
    t.proc.kill();
    let mid = row_stats(&db.url).map(|s| s.rows).unwrap_or_default();
    let mut t2 = toy(
        &broker,
        &db.url,
        &group,
        &topic,
        &["--max-batch-size", "200"],
    )?;
    wait_rows(&db.url, 10_000, Duration::from_secs(120))?;
    wait_committed_all(&broker, &group, &topic)?;
    stop_cleanly(&mut t2.proc)?;
    let s = row_stats(&db.url).ok_or_else(|| anyhow::anyhow!("no stats"))?;
    assert_eq!(s.rows, 10_000, "no gap after the kill at {mid} rows");
    Ok(())
}

#[test]
fn second_consumer_joins_mid_run() -> anyhow::Result<()> {
    let (broker, db, group) = setup(4)?;
    let topic = broker.topic("toy");
    let mut msgs: Vec<Out> = (0..10_000).map(ok).collect();
    for i in (0..10_000).step_by(500) {
        msgs[i].1 = "slow:300".into(); // keep batches in flight while the group rebalances
    }
    produce(&broker, &topic, &msgs)?;
    let mut a = toy(
        &broker,
        &db.url,
        &group,
        &topic,
        &["--max-batch-size", "250"],
    )?;
    wait_rows(&db.url, 1_000, Duration::from_secs(60))?;
    let mut b = toy(
        &broker,
        &db.url,
        &group,
        &topic,
        &["--max-batch-size", "250"],
    )?;
    let both = wait_for(
        "both consumers hold partitions",
        Duration::from_secs(60),
        || {
            let pa = metric(&a.metrics, "sluice_consumer_assigned_partitions")?;
            let pb = metric(&b.metrics, "sluice_consumer_assigned_partitions")?;
            (pa > 0.0 && pb > 0.0).then_some((pa, pb))
        },
    )?;
    assert_eq!(both.0 + both.1, 4.0, "{both:?}");
    wait_rows(&db.url, 10_000, Duration::from_secs(120))?;
    wait_committed_all(&broker, &group, &topic)?;
    let s = row_stats(&db.url).ok_or_else(|| anyhow::anyhow!("no stats"))?;
    assert_eq!(s.rows, 10_000, "no loss");
    for t in [&mut a, &mut b] {
        stop_cleanly(&mut t.proc)?;
    }
    eprintln!(
        "rows written twice across the rebalance: {}",
        s.times - s.rows
    );
    Ok(())
}

#[test]
fn two_members_in_one_process_split_the_partitions_and_overlap_their_batches() -> anyhow::Result<()>
{
    let (broker, db, group) = setup(4)?;
    let topic = broker.topic("toy");
    let mut msgs: Vec<Out> = (0..6_000).map(ok).collect();
    for i in (0..6_000).step_by(100) {
        msgs[i].1 = "slow:200".into(); // batches long enough to overlap
    }
    produce(&broker, &topic, &msgs)?;
    let mut t = toy(
        &broker,
        &db.url,
        &group,
        &topic,
        &["--consumers", "2", "--max-batch-size", "200"],
    )?;
    wait_rows(&db.url, 6_000, Duration::from_secs(120))?;
    let offsets = wait_committed_all(&broker, &group, &topic)?;
    assert_eq!(offsets.iter().map(|(_, h)| h).sum::<i64>(), 6_000);
    let assigned = metric(&t.metrics, "sluice_consumer_assigned_partitions")
        .ok_or_else(|| anyhow::anyhow!("no assigned gauge"))?;
    assert_eq!(
        assigned, 4.0,
        "the members' partitions add up to the topic's"
    );
    let most = metric(&t.metrics, "toy_batches_in_flight_max")
        .ok_or_else(|| anyhow::anyhow!("no in-flight gauge"))?;
    assert_eq!(most, 2.0, "one batch in flight per member, side by side");
    stop_cleanly(&mut t.proc)?;
    let s = row_stats(&db.url).ok_or_else(|| anyhow::anyhow!("no stats"))?;
    assert_eq!(s.rows, 6_000, "no loss");
    eprintln!(
        "rows written twice (members joining the group one after the other rebalance it): {}",
        s.times - s.rows
    );
    Ok(())
}

#[test]
fn poison_and_failing_messages_go_to_the_dlq_with_provenance() -> anyhow::Result<()> {
    let (broker, db, group) = setup(2)?;
    let topic = broker.topic("toy");
    let dlq_topic = broker.topic("toy-dlq");
    let mut msgs: Vec<Out> = (0..100).map(ok).collect();
    for i in [5, 17, 42] {
        msgs[i] = (
            format!("p{i}"),
            "poison".into(),
            vec![("trace".into(), format!("t{i}"))],
        );
    }
    msgs[60] = ("f60".into(), "flaky".into(), vec![]);
    msgs[70] = ("n70".into(), "never".into(), vec![]);
    msgs[80] = ("x80".into(), "panic".into(), vec![]);
    produce(&broker, &topic, &msgs)?;
    let mut t = toy(&broker, &db.url, &group, &topic, &[])?;
    wait_rows(&db.url, 95, Duration::from_secs(60))?;
    wait_committed_all(&broker, &group, &topic)?;
    let dead = dlq(&broker, &dlq_topic, 5)?;
    assert_eq!(
        dead.len(),
        5,
        "three poison, one never-found, one panicking"
    );
    let mut by_key: HashMap<String, HashMap<String, String>> = HashMap::new();
    for m in &dead {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        by_key.insert(key, headers);
    }
    // Where each message landed, read back from the input topic.
    let originals = broker.read_all(&topic, 100, Duration::from_secs(20))?;
    for key in ["p5", "p17", "p42", "n70", "x80"] {
        let h = by_key
            .get(key)
            .ok_or_else(|| anyhow::anyhow!("{key} not in the DLQ: {by_key:?}"))?;
        let orig = originals
            .iter()
            .find(|m| m.key() == Some(key.as_bytes()))
            .ok_or_else(|| anyhow::anyhow!("{key} not in input"))?;
        assert_eq!(h["original_topic"], topic);
        assert_eq!(
            h["original_partition"],
            orig.partition().to_string(),
            "{key}"
        );
        assert_eq!(h["original_offset"], orig.offset().to_string(), "{key}");
        let expected = match key {
            "n70" => "event_not_found",
            "x80" => "retry_exhausted",
            _ => "invalid_field",
        };
        assert_eq!(h["reason"], expected);
        if let Some(n) = key.strip_prefix('p') {
            assert_eq!(h["trace"], format!("t{n}"), "original headers kept");
        }
    }
    let s = row_stats(&db.url).ok_or_else(|| anyhow::anyhow!("no stats"))?;
    assert_eq!(
        s.rows, 95,
        "every good message plus the flaky one written, also those batched with the panicking one"
    );
    let rejected = metric(&t.metrics, "sluice_consumer_rejected_total").unwrap_or_default();
    assert_eq!(rejected, 5.0);
    assert!(metric(&t.metrics, "sluice_consumer_panics_total").unwrap_or_default() >= 1.0);
    assert!(by_key["x80"]["error_detail"].contains("panicked"));
    stop_cleanly(&mut t.proc)?;
    Ok(())
}

#[test]
fn circuit_breaker_flushes_commits_and_exits_non_zero() -> anyhow::Result<()> {
    let (broker, db, group) = setup(1)?;
    let topic = broker.topic("toy");
    let dlq_topic = broker.topic("toy-dlq");
    let mut msgs: Vec<Out> = (0..60)
        .map(|i| (format!("p{i}"), "poison".to_owned(), vec![]))
        .collect();
    msgs.extend((0..20).map(ok));
    produce(&broker, &topic, &msgs)?;
    let args = ["--breaker", "50", "--max-batch-size", "10"];
    let mut t = toy(&broker, &db.url, &group, &topic, &args)?;
    let status = t.proc.wait_timeout(Duration::from_secs(60))?;
    assert_ne!(status.code(), Some(0), "the breaker trips the process");
    let (committed, _) = committed_vs_high(&broker, &group, &topic)?[0];
    assert!(
        committed >= 51,
        "offsets of the dead-lettered messages were committed: {committed}"
    );
    assert_eq!(
        dlq(&broker, &dlq_topic, 100)?.len() as i64,
        committed,
        "the DLQ was flushed first"
    );

    // A restart continues after them: nothing is dead-lettered twice.
    let mut t2 = toy(&broker, &db.url, &group, &topic, &args)?;
    wait_rows(&db.url, 20, Duration::from_secs(60))?;
    wait_committed_all(&broker, &group, &topic)?;
    assert_eq!(dlq(&broker, &dlq_topic, 100)?.len(), 60);
    stop_cleanly(&mut t2.proc)?;
    Ok(())
}

#[test]
fn out_of_range_offset_resets_and_counts() -> anyhow::Result<()> {
    let (broker, db, group) = setup(1)?;
    let topic = broker.topic("toy");
    produce(&broker, &topic, &(0..100).map(ok).collect::<Vec<_>>())?;
    {
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &broker.bootstrap)
            .set("group.id", &group)
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(1_000_000))?;
        c.commit(&tpl, CommitMode::Sync)?;
    }
    assert_eq!(committed_vs_high(&broker, &group, &topic)?[0].0, 1_000_000);
    let mut t = toy(&broker, &db.url, &group, &topic, &[])?;
    wait_rows(&db.url, 100, Duration::from_secs(60))?;
    let resets = wait_for("reset metric", Duration::from_secs(10), || {
        metric(&t.metrics, "sluice_consumer_offset_resets_total").filter(|v| *v >= 1.0)
    })?;
    assert!(resets >= 1.0);
    wait_committed_all(&broker, &group, &topic)?;
    stop_cleanly(&mut t.proc)?;
    Ok(())
}

#[test]
fn sigterm_during_a_batch_completes_it_and_commits() -> anyhow::Result<()> {
    let (broker, db, group) = setup(1)?;
    let topic = broker.topic("toy");
    let mut msgs: Vec<Out> = (0..50).map(ok).collect();
    msgs[0].1 = "slow:3000".into();
    produce(&broker, &topic, &msgs)?;
    let mut t = toy(
        &broker,
        &db.url,
        &group,
        &topic,
        &["--max-batch-time-ms", "500"],
    )?;
    wait_for("a batch in flight", Duration::from_secs(30), || {
        metric(&t.metrics, "sluice_consumer_assigned_partitions").filter(|v| *v >= 1.0)
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        row_stats(&db.url).map(|s| s.rows),
        Some(0),
        "the slow batch is still running"
    );
    t.proc.signal("TERM")?;
    assert_eq!(
        t.proc.wait_timeout(Duration::from_secs(30))?.code(),
        Some(0),
        "exit 0 after draining"
    );
    let rows = row_stats(&db.url).map(|s| s.rows).unwrap_or_default();
    assert!(rows >= 1, "the in-flight batch completed");
    let (committed, _) = committed_vs_high(&broker, &group, &topic)?[0];
    assert_eq!(committed, rows, "committed exactly what was written");
    Ok(())
}

#[test]
fn database_outage_pauses_stays_in_group_and_resumes() -> anyhow::Result<()> {
    use diesel::prelude::*;
    let pg = sluice_testkit::pg::PrivatePostgres::start()?;
    let url = pg.url();
    {
        let mut c = PgConnection::establish(&url)?;
        diesel::sql_query(
            "CREATE TABLE toy_rows (key TEXT PRIMARY KEY, topic TEXT NOT NULL, partition INT NOT NULL, \
             \"offset\" BIGINT NOT NULL, times INT NOT NULL DEFAULT 1)",
        )
        .execute(&mut c)?;
    }
    let broker = Broker::start(&[("toy", 2), ("toy-dlq", 1)])?;
    let topic = broker.topic("toy");
    let group = unique("toy-group");
    produce(&broker, &topic, &(0..3_000).map(ok).collect::<Vec<_>>())?;
    let args = [
        "--max-poll-interval-ms",
        "8000",
        "--max-batch-size",
        "100",
        "--stuck-after-secs",
        "5",
    ];
    let mut t = toy(&broker, &url, &group, &topic, &args)?;
    wait_rows(&url, 500, Duration::from_secs(60))?;

    pg.stop_server()?;
    produce(&broker, &topic, &(3_000..5_000).map(ok).collect::<Vec<_>>())?;
    std::thread::sleep(Duration::from_secs(15)); // longer than max.poll.interval.ms
    assert!(
        t.proc.child.try_wait()?.is_none(),
        "the consumer survives the outage"
    );
    assert_eq!(
        metric(&t.metrics, "sluice_consumer_paused"),
        Some(1.0),
        "partitions paused"
    );
    // An outage is waited out, never reported as stuck: liveness holds.
    assert_eq!(
        metric(&t.metrics, "sluice_consumer_stuck_seconds"),
        Some(0.0)
    );
    assert_eq!(
        sluice_testkit::http::get(&t.metrics, "/health/live").map(|(s, _)| s),
        Some(200)
    );
    let during = committed_vs_high(&broker, &group, &topic)?;
    assert_eq!(
        metric(
            &t.metrics,
            "sluice_consumer_rebalances_total{kind=\"revoke\"}"
        )
        .unwrap_or(0.0),
        0.0,
        "still in the group: no revoke"
    );

    pg.start_server()?;
    // What is written right after the restart bounds what may have been committed before it.
    let written: Vec<(i32, i64)> = {
        #[derive(QueryableByName)]
        struct W {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            partition: i32,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            max: i64,
        }
        let mut c = PgConnection::establish(&url)?;
        diesel::sql_query(
            "SELECT partition, max(\"offset\") AS max FROM toy_rows GROUP BY partition",
        )
        .load::<W>(&mut c)?
        .into_iter()
        .map(|w| (w.partition, w.max))
        .collect()
    };
    for (p, (committed, _)) in during.iter().enumerate() {
        let max_written = written
            .iter()
            .find(|(wp, _)| *wp == p as i32)
            .map(|(_, m)| *m)
            .unwrap_or(-1);
        assert!(
            *committed <= max_written + 1,
            "partition {p}: committed {committed} past written {max_written}"
        );
    }
    wait_rows(&url, 5_000, Duration::from_secs(120))?;
    wait_committed_all(&broker, &group, &topic)?;
    assert_eq!(row_stats(&url).map(|s| s.rows), Some(5_000));
    wait_for("resumed", Duration::from_secs(10), || {
        metric(&t.metrics, "sluice_consumer_paused").filter(|v| *v == 0.0)
    })?;
    stop_cleanly(&mut t.proc)?;
    Ok(())
}

/// A message the stage cannot get past while the database and the broker answer: the stage
/// reports it (`sluice_consumer_stuck_seconds`) and `/health/live` fails after
/// `--stuck-after-secs`, so the orchestrator restarts it.
#[test]
fn held_batch_with_healthy_dependencies_fails_liveness() -> anyhow::Result<()> {
    let (broker, db, group) = setup(1)?;
    let topic = broker.topic("toy");
    produce(&broker, &topic, &[("s".into(), "stuck".into(), vec![])])?;
    let mut t = toy(
        &broker,
        &db.url,
        &group,
        &topic,
        &["--stuck-after-secs", "3"],
    )?;
    wait_for("stuck reported", Duration::from_secs(30), || {
        metric(&t.metrics, "sluice_consumer_stuck_seconds").filter(|v| *v >= 1.0)
    })?;
    wait_for("not live", Duration::from_secs(20), || {
        sluice_testkit::http::get(&t.metrics, "/health/live").filter(|(s, _)| *s == 503)
    })?;
    assert!(t.proc.child.try_wait()?.is_none(), "still running");
    t.proc.kill();
    Ok(())
}

/// A dead letter the broker refuses as too large is sent again cut to 64 KiB, with its
/// provenance headers and its original length, and the partition advances.
#[test]
fn a_dead_letter_refused_as_too_large_is_sent_truncated() -> anyhow::Result<()> {
    let (mut broker, db, group) = setup(1)?;
    anyhow::ensure!(broker.is_mock(), "injects broker errors");
    let topic = broker.topic("toy");
    let dlq_topic = broker.topic("toy-dlq");
    let big = format!("poison{}", "x".repeat(100_000));
    let mut msgs: Vec<Out> = vec![ok(1), ("big".into(), big.clone(), vec![])];
    msgs.extend((2..10).map(ok));
    produce(&broker, &topic, &msgs)?;
    // The next produce request (the dead letter's) fails with MESSAGE_TOO_LARGE (10).
    broker.errors(0, 10, 1)?;
    let mut t = toy(&broker, &db.url, &group, &topic, &[])?;
    wait_rows(&db.url, 9, Duration::from_secs(60))?;
    wait_committed_all(&broker, &group, &topic)?;
    let dead = dlq(&broker, &dlq_topic, 1)?;
    assert_eq!(dead.len(), 1);
    let header = |name: &str| {
        dead[0]
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(dead[0].payload().map(<[u8]>::len), Some(64 * 1024));
    assert_eq!(header("truncated_from"), Some(big.len().to_string()));
    assert_eq!(header("reason").as_deref(), Some("invalid_field"));
    assert_eq!(header("original_offset").as_deref(), Some("1"));
    assert_eq!(
        metric(&t.metrics, "sluice_consumer_dlq_truncated_total"),
        Some(1.0)
    );
    stop_cleanly(&mut t.proc)?;
    Ok(())
}
