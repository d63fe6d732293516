//! Benchmark: issue occurrences from the broker to committed rows through `occurrence-consumer`,
//! next to a same-run baseline that writes the equivalent rows with batched SQL directly.
//!
//! The pipeline is timed from the first produced message until every occurrence is a committed
//! row with its group (the consumer has joined its group before); offsets are then checked too.
//!
//! Usage: bench-occurrences --brokers HOST:PORT --admin-url POSTGRES_URL [--count N] [--fingerprints F]
//! The topic `ingest-occurrences` (any number of partitions), its DLQ and `outcomes` must exist on the broker.
//! Prints one JSON line with both rates, their ratio and the consumer's peak RSS.

use clap::Parser;
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

/// The fingerprint of occurrence `n`: skewed, as real issues are (a few fingerprints take most
/// occurrences). `n` is spread over [0, 1) by a multiplicative hash, then cubed, so fingerprint
/// 0 takes about 8% of 20,000 occurrences over 2,000 fingerprints and the tail gets a few each.
fn fingerprint(n: u32, fingerprints: u32) -> u32 {
    let u = f64::from(n.wrapping_mul(2_654_435_761)) / 4_294_967_296.0;
    ((u * u * u) * f64::from(fingerprints)) as u32 % fingerprints.max(1)
}

/// An occurrence message with an embedded event of about 600 bytes.
fn message(n: u32, fingerprints: u32) -> (String, String) {
    let fp = format!("bench-fp-{}", fingerprint(n, fingerprints));
    let event_id = format!("{:032x}", 0xbe00_0000_0000u64 + u64::from(n));
    let t = 1_795_432_000.0 + f64::from(n) / 1000.0;
    let v = json!({
        "id": occurrence_id(n), "project_id": 42, "event_id": event_id,
        "fingerprint": [fp], "issue_title": format!("Slow DB query {n}"), "subtitle": "SELECT * FROM things",
        "culprit": "/api/things", "type": 1001, "detection_time": t, "level": "warning",
        "evidence_display": [{"name": "query", "value": "SELECT * FROM things", "important": true}],
        "event": {"event_id": event_id, "project_id": 42, "platform": "python", "timestamp": t,
                  "received": t, "transaction": "/api/things/{id}", "server_name": "web-7f9c",
                  "request": {"url": "https://app.example.com/api/things/17", "method": "GET"},
                  "tags": {"environment": "prod", "region": "eu-west-1", "http.method": "GET"},
                  "user": {"id": format!("user-{}", n % 500), "ip_address": "10.0.0.7"},
                  "sdk": {"name": "sentry.python", "version": "2.75.0"},
                  "contexts": {"trace": {"trace_id": "0123456789abcdef0123456789abcdef",
                                         "span_id": "0123456789abcdef", "op": "http.server"},
                               "runtime": {"name": "CPython", "version": "3.11.7"}}},
    });
    (format!("{fp}-42"), v.to_string())
}

/// The baseline: the plainest SQL that writes the same rows. Per 1,000 occurrences, one
/// transaction of three statements, every value bound as an array (one round trip each):
///
/// 1. the events and their payloads, skipping events already stored;
/// 2. a group and its hash for each fingerprint not seen before (ids drawn from the sequence
///    once, so the group and its hash agree);
/// 3. the occurrences and their payloads, deduplicated by id, each with its group; `times_seen`
///    and `last_seen` bumped by the occurrences actually inserted, and the same counts added to
///    the groups' `group_environments` rows (the consumer keeps them too; these events name no
///    environment or release); `events.group_id` back-filled.
fn baseline(url: &str, msgs: &[(String, String)]) -> anyhow::Result<Duration> {
    use diesel::sql_types::{Array, Double, Text};
    let mut c = PgConnection::establish(url)?;
    // Parsing is the client's work, as it is the consumer's; the clock starts after it, so
    // the baseline is the database's floor for these rows.
    #[derive(Default)]
    struct Batch {
        ids: Vec<String>,
        events: Vec<String>,
        fingerprints: Vec<String>,
        times: Vec<f64>,
        titles: Vec<String>,
        event_payloads: Vec<String>,
        payloads: Vec<String>,
    }
    let batches: Vec<Batch> = msgs
        .chunks(1000)
        .map(|batch| {
            let mut b = Batch::default();
            for (_, v) in batch {
                let Ok(j) = serde_json::from_str::<serde_json::Value>(v) else {
                    continue;
                };
                let text = |k: &str| j[k].as_str().unwrap_or_default().to_owned();
                b.ids.push(text("id"));
                b.events.push(text("event_id"));
                b.fingerprints
                    .push(j["fingerprint"][0].as_str().unwrap_or_default().to_owned());
                b.times
                    .push(j["detection_time"].as_f64().unwrap_or_default());
                b.titles.push(text("issue_title"));
                b.event_payloads.push(j["event"].to_string());
                b.payloads.push(v.clone());
            }
            b
        })
        .collect();
    let started = Instant::now();
    for b in &batches {
        c.transaction(|c| {
            diesel::sql_query(
                "WITH m AS (SELECT * FROM unnest($1::bpchar[], $2::text[]) AS m(e, d)), \
                      ins AS (INSERT INTO events (project_id, event_id, expires_at) \
                              SELECT 42, e, now() + interval '90 days' FROM m \
                              ON CONFLICT DO NOTHING RETURNING event_id, expires_at) \
                 INSERT INTO event_payloads (project_id, event_id, expires_at, data) \
                 SELECT 42, ins.event_id, ins.expires_at, m.d::jsonb FROM ins JOIN m ON m.e = ins.event_id",
            )
            .bind::<Array<Text>, _>(&b.events)
            .bind::<Array<Text>, _>(&b.event_payloads)
            .execute(c)?;
            diesel::sql_query(
                "WITH f AS (SELECT md5(fp)::bpchar AS hash, min(t) AS first, max(t) AS last, max(title) AS title \
                            FROM unnest($1::text[], $2::float8[], $3::text[]) AS m(fp, t, title) GROUP BY 1), \
                      n AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('groups', 'id')) AS id, f.* FROM f \
                            WHERE NOT EXISTS (SELECT 1 FROM group_hashes h WHERE h.project_id = 42 AND h.hash = f.hash)), \
                      g AS (INSERT INTO groups (id, project_id, type, status, substatus, priority, level, title, \
                                                culprit, message, times_seen, first_seen, last_seen, data) \
                            SELECT id, 42, 1001, 0, 7, 25, 30, title, '', '', 0, to_timestamp(first), \
                                   to_timestamp(last), '{}'::jsonb FROM n) \
                 INSERT INTO group_hashes (project_id, hash, group_id) SELECT 42, hash, id FROM n",
            )
            .bind::<Array<Text>, _>(&b.fingerprints)
            .bind::<Array<Double>, _>(&b.times)
            .bind::<Array<Text>, _>(&b.titles)
            .execute(c)?;
            diesel::sql_query(
                "WITH k AS (SELECT m.*, h.group_id FROM unnest($1::bpchar[], $2::bpchar[], $3::text[], $4::float8[], $5::text[]) \
                                AS m(id, e, fp, t, d) \
                            JOIN group_hashes h ON h.project_id = 42 AND h.hash = md5(m.fp)::bpchar), \
                      ins AS (INSERT INTO occurrences (id, project_id, event_id, type, group_id, date_added, expires_at) \
                              SELECT id, 42, e, 1001, group_id, clock_timestamp(), now() + interval '90 days' FROM k \
                              ON CONFLICT DO NOTHING RETURNING id, group_id, expires_at), \
                      pay AS (INSERT INTO occurrence_payloads (id, expires_at, data) \
                              SELECT ins.id, ins.expires_at, k.d::jsonb FROM ins JOIN k ON k.id = ins.id), \
                      bump AS (UPDATE groups g SET times_seen = g.times_seen + c.n, \
                                      last_seen = GREATEST(g.last_seen, c.last) \
                               FROM (SELECT ins.group_id, count(*) AS n, to_timestamp(max(k.t)) AS last \
                                     FROM ins JOIN k ON k.id = ins.id GROUP BY 1) c \
                               WHERE g.id = c.group_id), \
                      env AS (INSERT INTO group_environments AS x (group_id, project_id, environment, \
                                     first_release, first_seen, last_seen, times_seen) \
                              SELECT ins.group_id, 42, '', NULL, to_timestamp(min(k.t)), to_timestamp(max(k.t)), count(*) \
                              FROM ins JOIN k ON k.id = ins.id GROUP BY 1 ORDER BY 1 \
                              ON CONFLICT (group_id, environment) DO UPDATE SET \
                                first_seen = least(x.first_seen, EXCLUDED.first_seen), \
                                last_seen = greatest(x.last_seen, EXCLUDED.last_seen), \
                                times_seen = x.times_seen + EXCLUDED.times_seen) \
                 UPDATE events e SET group_id = h.group_id \
                 FROM unnest($2::bpchar[], $3::text[]) AS m(e, fp) \
                 JOIN group_hashes h ON h.project_id = 42 AND h.hash = md5(m.fp)::bpchar \
                 WHERE e.project_id = 42 AND e.event_id = m.e AND e.group_id IS NULL",
            )
            .bind::<Array<Text>, _>(&b.ids)
            .bind::<Array<Text>, _>(&b.events)
            .bind::<Array<Text>, _>(&b.fingerprints)
            .bind::<Array<Double>, _>(&b.times)
            .bind::<Array<Text>, _>(&b.payloads)
            .execute(c)?;
            Ok::<_, diesel::result::Error>(())
        })?;
    }
    let elapsed = started.elapsed();
    // The baseline wrote what the pipeline writes.
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let grouped: N = diesel::sql_query(
        "SELECT count(*) AS n FROM occurrences o JOIN events e ON e.project_id = o.project_id \
         AND e.event_id = o.event_id AND e.group_id = o.group_id",
    )
    .get_result(&mut c)?;
    anyhow::ensure!(
        grouped.n == msgs.len() as i64,
        "the baseline grouped {} of {} occurrences",
        grouped.n,
        msgs.len()
    );
    Ok(elapsed)
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
    let watch = sluice_acceptance::CommitWatch::new(&args.target.brokers, &group, TOPIC)?;
    while !watch.done()? {
        std::thread::sleep(Duration::from_millis(10));
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
