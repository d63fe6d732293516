//! Benchmark: issue occurrences from the broker to committed rows through `occurrence-consumer`,
//! next to a same-run baseline that writes the equivalent rows with batched SQL directly.
//!
//! The pipeline is timed from the first produced message until every occurrence is a committed
//! row with its group (the consumer has joined its group before); offsets are then checked too.
//!
//! Usage: bench-occurrences --brokers HOST:PORT --admin-url POSTGRES_URL [--count N] [--fingerprints F]
//! The topic `ingest-occurrences` (8 partitions), its DLQ and `outcomes` must exist on the broker.
//! Prints one JSON line with both rates, their ratio and the consumer's peak RSS.

use clap::Parser;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    target: sluice_acceptance::Target,
    #[arg(long, default_value_t = 20_000)]
    count: u32,
    #[arg(long, default_value_t = 2_000)]
    fingerprints: u32,
    /// Expired events seeded into the database first (see `seed_expired`).
    #[arg(long, default_value_t = 0)]
    seed_expired_events: u32,
    /// Expired attachment rows seeded into the database first (their objects do not exist).
    #[arg(long, default_value_t = 0)]
    seed_expired_attachments: u32,
    /// Run `sluice cleanup --once` (its default pacing) from just before the load starts.
    #[arg(long)]
    with_cleanup: bool,
    /// Produce at this steady rate (messages per second) instead of a burst: the latency mode.
    /// The baseline is skipped (the rate is the pace).
    #[arg(long, default_value_t = 0)]
    rate: u32,
}

const TOPIC: &str = "ingest-occurrences";

const SETUP: &str = "INSERT INTO organizations (id, slug) VALUES (1, 'bench'); INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'bench');";

fn occurrence_id(n: u32) -> String {
    format!("{:032x}", 0xa000_0000_0000u64 + u64::from(n))
}

fn message(n: u32, fingerprints: u32) -> (String, String) {
    let fp = format!("bench-fp-{}", n % fingerprints);
    let event_id = format!("{:032x}", 0xbe00_0000_0000u64 + u64::from(n));
    let t = 1_795_432_000.0 + f64::from(n) / 1000.0;
    let v = json!({
        "id": occurrence_id(n), "project_id": 42, "event_id": event_id,
        "fingerprint": [fp], "issue_title": format!("Slow DB query {n}"), "subtitle": "SELECT * FROM things",
        "culprit": "/api/things", "type": 1001, "detection_time": t, "level": "warning",
        "evidence_display": [{"name": "query", "value": "SELECT * FROM things", "important": true}],
        "event": {"event_id": event_id, "project_id": 42, "platform": "python", "timestamp": t,
                  "tags": {"environment": "prod"}, "contexts": {"trace": {"trace_id": "0123456789abcdef0123456789abcdef"}}},
    });
    (format!("{fp}-42"), v.to_string())
}

/// The baseline: the same rows (events, occurrences, groups, hashes) written with batched,
/// set-based SQL in batches of 1000, one transaction per batch.
fn baseline(url: &str, msgs: &[(String, String)]) -> anyhow::Result<Duration> {
    let mut c = PgConnection::establish(url)?;
    let started = Instant::now();
    for batch in msgs.chunks(1000) {
        let rows: Vec<serde_json::Value> = batch
            .iter()
            .filter_map(|(_, v)| serde_json::from_str(v).ok())
            .collect();
        let payload = serde_json::Value::Array(rows)
            .to_string()
            .replace('\'', "''");
        c.batch_execute(&format!(
            "BEGIN;
             CREATE TEMP TABLE IF NOT EXISTS b (j jsonb) ON COMMIT DELETE ROWS;
             INSERT INTO b SELECT jsonb_array_elements('{payload}'::jsonb);
             WITH ins AS (INSERT INTO events (project_id, event_id, expires_at)
                 SELECT 42, j->>'event_id', now() + interval '90 days' FROM b ON CONFLICT DO NOTHING
                 RETURNING event_id, expires_at)
               INSERT INTO event_payloads (project_id, event_id, expires_at, data)
               SELECT 42, ins.event_id, ins.expires_at, b.j->'event' FROM ins JOIN b ON (b.j->>'event_id')::bpchar = ins.event_id;
             WITH ins AS (INSERT INTO occurrences (id, project_id, event_id, type, expires_at)
                 SELECT j->>'id', 42, j->>'event_id', 1001, now() + interval '90 days' FROM b ON CONFLICT DO NOTHING
                 RETURNING id, expires_at)
               INSERT INTO occurrence_payloads (id, expires_at, data)
               SELECT ins.id, ins.expires_at, b.j FROM ins JOIN b ON (b.j->>'id')::bpchar = ins.id;
             CREATE TEMP TABLE IF NOT EXISTS f (hash char(32), n bigint, first timestamptz, last timestamptz, title text) ON COMMIT DELETE ROWS;
             INSERT INTO f SELECT md5(j->'fingerprint'->>0), count(*), to_timestamp(min((j->>'detection_time')::float8)),
                    to_timestamp(max((j->>'detection_time')::float8)), max(j->>'issue_title') FROM b GROUP BY 1;
             UPDATE groups g SET times_seen = g.times_seen + f.n, last_seen = GREATEST(g.last_seen, f.last), title = f.title
               FROM group_hashes h JOIN f ON f.hash = h.hash WHERE h.group_id = g.id AND h.project_id = 42;
             WITH new AS (
               INSERT INTO groups (project_id, type, status, substatus, priority, level, title, culprit, message, times_seen, first_seen, last_seen, data)
               SELECT 42, 1001, 0, 7, 25, 30, f.title, '', '', f.n, f.first, f.last, jsonb_build_object('hash', f.hash)
               FROM f WHERE NOT EXISTS (SELECT 1 FROM group_hashes h WHERE h.project_id = 42 AND h.hash = f.hash)
               RETURNING id, data->>'hash' AS hash)
             INSERT INTO group_hashes (project_id, hash, group_id) SELECT 42, hash, id FROM new;
             UPDATE occurrences o SET group_id = h.group_id FROM b JOIN group_hashes h ON h.hash = md5(b.j->'fingerprint'->>0)
               WHERE o.id = b.j->>'id';
             COMMIT;"
        ))?;
    }
    Ok(started.elapsed())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let msgs: Vec<(String, String)> = (0..args.count)
        .map(|n| message(n, args.fingerprints))
        .collect();

    // Both databases get the same expired data, when asked for.
    let seed = |url: &str| -> anyhow::Result<()> {
        if args.seed_expired_events > 0 || args.seed_expired_attachments > 0 {
            sluice_acceptance::seed_expired(
                url,
                args.seed_expired_events,
                args.seed_expired_attachments,
            )?;
        }
        Ok(())
    };
    let pipeline_url =
        sluice_acceptance::fresh_database(&args.target.admin_url, "sluice_bench_pipeline", SETUP)?;
    seed(&pipeline_url)?;
    let group = format!("bench-{}", std::process::id());
    // Timed from the first produced message, with the consumer already in its group (start-up
    // and the group join are not part of the rate).
    let (mut child, metrics) = args.target.start_joined(args.target.stage(
        "occurrence-consumer",
        &pipeline_url,
        &group,
    ))?;
    let objects_dir = std::env::temp_dir().join(format!("bench-cleanup-{}", std::process::id()));
    let mut cleanup = if args.with_cleanup {
        let child = std::process::Command::new(format!("{}/sluice", args.target.bin_dir))
            .args([
                "cleanup",
                "--once",
                "--log-level",
                "warn",
                "--database-url",
                &pipeline_url,
            ])
            .args([
                "--object-store-url",
                &format!("file://{}", objects_dir.display()),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()?;
        // Past the partition step, into the deletes.
        std::thread::sleep(Duration::from_millis(1000));
        Some((child, Instant::now()))
    } else {
        None
    };
    let started = Instant::now();
    let pace = sluice_acceptance::Pace::new(args.rate);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.target.brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", pace.linger_ms())
        .set("queue.buffering.max.messages", "1000000")
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut produced_at = std::collections::HashMap::with_capacity(msgs.len());
    for (n, (k, v)) in msgs.iter().enumerate() {
        pace.wait(n);
        producer
            .send(BaseRecord::to(TOPIC).key(k).payload(v))
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        produced_at.insert(occurrence_id(n as u32), sluice_acceptance::now_ms());
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60))?;
    let produced = started.elapsed();
    // Every occurrence is a committed row with its group.
    let mut c = PgConnection::establish(&pipeline_url)?;
    loop {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let done: N =
            diesel::sql_query("SELECT count(*) AS n FROM occurrences WHERE group_id IS NOT NULL")
                .get_result(&mut c)?;
        if done.n >= i64::from(args.count) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pipeline = started.elapsed();
    let cleanup_still_running = cleanup
        .as_mut()
        .map(|(c, _)| matches!(c.try_wait(), Ok(None)));
    let cleanup_secs = match cleanup.as_mut() {
        Some((c, at)) => {
            let status = c.wait()?;
            anyhow::ensure!(status.success(), "cleanup failed");
            Some(at.elapsed().as_secs_f64() + 1.0)
        }
        None => None,
    };
    let _ = std::fs::remove_dir_all(&objects_dir);
    while !sluice_acceptance::committed_all(&args.target.brokers, &group, TOPIC)? {
        std::thread::sleep(Duration::from_millis(50));
    }
    sluice_acceptance::dump_metrics_if_asked(&metrics);
    // Produce → occurrence row written (the set-based path stamps rows as it writes them).
    let latency = sluice_acceptance::latencies(
        &produced_at,
        &pipeline_url,
        "SELECT id::text AS key, (extract(epoch FROM date_added) * 1000)::bigint AS ms FROM occurrences",
    )?;
    let rss = sluice_acceptance::peak_rss_mb(child.id());
    let cpu = sluice_acceptance::cpu_secs(child.id());
    sluice_acceptance::stop(&mut child);

    if args.rate > 0 {
        println!(
            "{}",
            json!({
                "bench": "occurrences", "mode": "steady", "rate_per_sec": args.rate,
                "messages": args.count, "fingerprints": args.fingerprints,
                "latency": latency, "consumer_peak_rss_mb": rss, "consumer_cpu_secs": cpu,
                "cpu_secs_per_1k": sluice_acceptance::cpu_per_1k(cpu, args.count),
            })
        );
        return Ok(());
    }
    let base_url =
        sluice_acceptance::fresh_database(&args.target.admin_url, "sluice_bench_baseline", SETUP)?;
    seed(&base_url)?;
    let base = baseline(&base_url, &msgs)?;

    let n = f64::from(args.count);
    let (p_rate, b_rate) = (n / pipeline.as_secs_f64(), n / base.as_secs_f64());
    println!(
        "{}",
        json!({
            "bench": "occurrences", "messages": args.count, "fingerprints": args.fingerprints,
            "seeded_expired_events": args.seed_expired_events, "with_cleanup": args.with_cleanup,
            "cleanup_secs": cleanup_secs, "cleanup_outlasted_load": cleanup_still_running,
            "pipeline_per_sec": p_rate.round(), "baseline_sql_per_sec": b_rate.round(),
            "ratio": (p_rate / b_rate * 1000.0).round() / 1000.0, "consumer_peak_rss_mb": rss, "latency": latency, "consumer_cpu_secs": cpu,
            "pipeline_secs": pipeline.as_secs_f64(), "produce_secs": produced.as_secs_f64(), "baseline_secs": base.as_secs_f64(),
        })
    );
    Ok(())
}
