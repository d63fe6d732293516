//! Benchmark: feedback events per second through `feedback-worker`, from the feedback topic to
//! acknowledged occurrences (and outcomes) with offsets committed, next to a same-run baseline
//! that makes the same effects directly: the user-report rows and outcome keys in batched SQL, and
//! an occurrence and an outcome record per feedback produced through the core producer.
//!
//! The worker joins its group before the feedback is produced; the time runs from the first
//! produced message to the last committed offset. Then the same feedback again as a backlog
//! (`backlog_*`): a new group on a fresh database reads what the first run left in the topic,
//! timed from when it holds its partitions, without the bench's own producing in the window. Latency: produce → the feedback's outcome
//! recorded (its last effect).
//!
//! Usage: bench-feedback --brokers HOST:PORT --admin-url POSTGRES_URL [--count N]
//! Topics: ingest-feedback-events, its DLQ, ingest-occurrences, outcomes. Prints one JSON line.

use clap::Parser;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::ClientConfig;
use serde_json::json;

use sluice_core::messages::{EventMessage, IngestMessage, Timestamp};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    target: sluice_acceptance::Target,
    #[arg(long, default_value_t = 10_000)]
    count: u32,
    /// Latency mode: produce at this steady rate (per second) instead of a burst; no baseline.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Breadcrumbs in each feedback event, as a browser SDK sends them (none by default). The
    /// worker drops them; the baseline's records stay the size of a feedback without them.
    #[arg(long, default_value_t = 0)]
    breadcrumbs: u32,
}

const TOPIC: &str = "ingest-feedback-events";

/// The worker's database: one project with heuristic spam detection.
const SETUP: &str = "INSERT INTO organizations (id, slug) VALUES (1, 'b'); \
     INSERT INTO projects (id, organization_id, slug, options) \
     VALUES (42, 1, 'b', '{\"feedback.spam_detection\": \"heuristic\"}');";

fn associated_event_id(n: u32) -> String {
    format!("{:032x}", 0xae00_0000u64 + u64::from(n))
}

fn feedback_event_id(n: u32) -> String {
    format!("{:032x}", 0xfe00_0000_0000u64 + u64::from(n))
}

/// `count` breadcrumbs of a page's clicks and requests, about 180 bytes each.
fn breadcrumbs(n: u32, count: u32) -> serde_json::Value {
    let values: Vec<_> = (0..count)
        .map(|i| {
            json!({"timestamp": 1_795_432_100.0 + f64::from(i), "type": "default", "category": "ui.click",
                   "message": format!("body > div#app > main.page > button.export-{n}-{i}"),
                   "data": {"url": "https://shop.example/orders?page=2", "status_code": 200}})
        })
        .collect();
    json!({ "values": values })
}

fn feedback(n: u32, crumbs: u32) -> Vec<u8> {
    let event_id = feedback_event_id(n);
    let message = if n % 10 == 0 {
        "Click here for free crypto: http://x.example".to_owned()
    } else {
        format!("The export button does nothing ({n})")
    };
    let mut body = json!({"event_id": event_id, "type": "feedback", "platform": "javascript", "level": "info",
                      "timestamp": 1_795_432_200.0 + f64::from(n) / 1000.0, "user": {"id": n},
                      "contexts": {"feedback": {"message": message, "contact_email": "u@example.com", "name": "U",
                                                "associated_event_id": associated_event_id(n)},
                                   "trace": {"trace_id": "0123456789abcdef0123456789abcdef"}}});
    if crumbs > 0 {
        body["breadcrumbs"] = breadcrumbs(n, crumbs);
    }
    IngestMessage::Event(EventMessage {
        payload: body.to_string().into_bytes(),
        start_time: Timestamp::now(),
        event_id,
        project_id: 42,
        remote_addr: None,
        attachments: vec![],
    })
    .encode()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url =
        sluice_acceptance::fresh_database(&args.target.admin_url, "sluice_bench_feedback", SETUP)?;
    let group = format!("bench-fb-{}", std::process::id());
    // Timed from the first produced feedback to the last committed offset, with the worker
    // already in its group.
    let (mut child, metrics) =
        args.target
            .start_joined(args.target.stage("feedback-worker", &url, &group))?;
    let started = Instant::now();
    let pace = sluice_acceptance::Pace::new(args.rate);
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.target.brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", pace.linger_ms())
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let mut produced_at = std::collections::HashMap::new();
    for n in 0..args.count {
        pace.wait(n as usize);
        let key = format!("k{n}");
        let value = feedback(n, args.breadcrumbs);
        p.send(BaseRecord::to(TOPIC).key(&key).payload(&value))
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        produced_at.insert(
            format!(
                "feedback:{}",
                sluice_core::ids::feedback_occurrence_id(42, &feedback_event_id(n))
            ),
            sluice_acceptance::now_ms(),
        );
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60))?;
    let done = sluice_acceptance::wait_committed(&args.target.brokers, &group, TOPIC).await?;
    let pipeline = done - started;
    let (rss, cpu) = sluice_acceptance::finish(&mut child, &metrics);
    // Produce → the feedback's ACCEPTED outcome recorded, its last effect (after its issue was
    // produced and acknowledged and its user report written).
    let latency = sluice_acceptance::latencies(
        &produced_at,
        &url,
        "SELECT key AS key, (extract(epoch FROM emitted_at) * 1000)::bigint AS ms FROM emitted_outcomes",
    )?;
    if args.rate > 0 {
        println!(
            "{}",
            json!({"bench": "feedback", "mode": "steady", "rate_per_sec": args.rate,
                   "feedbacks": args.count, "latency": latency, "worker_peak_rss_mb": rss,
                   "worker_cpu_secs": cpu,
                   "cpu_secs_per_1k": sluice_acceptance::cpu_per_1k(cpu, args.count)})
        );
        return Ok(());
    }

    // Baseline: the same effects without the worker, in a fresh database: the user-report rows
    // and outcome keys written with batched SQL (1,000 per statement), and one occurrence-sized
    // and one outcome-sized record per feedback produced and acknowledged concurrently.
    let base_url = sluice_acceptance::fresh_database(
        &args.target.admin_url,
        "sluice_bench_feedback_base",
        "INSERT INTO organizations (id, slug) VALUES (1, 'b');
         INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'b');",
    )?;
    let producer = args.target.baseline_producer()?;
    let started = Instant::now();
    let count = args.count;
    let sql = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use diesel::prelude::*;
        use diesel::sql_types::{Array, Text};
        let mut c = diesel::PgConnection::establish(&base_url)?;
        let ids: Vec<u32> = (0..count).collect();
        for batch in ids.chunks(1000) {
            let events: Vec<String> = batch.iter().map(|n| associated_event_id(*n)).collect();
            let keys: Vec<String> = batch.iter().map(|n| format!("feedback:{n}")).collect();
            diesel::sql_query(
                "WITH r AS (INSERT INTO user_reports (project_id, event_id, name, email, comments, feedback_event_id) \
                   SELECT 42, e::bpchar, 'U', 'u@example.com', 'The export button does nothing', e::bpchar \
                   FROM unnest($1::text[]) AS t(e) ON CONFLICT DO NOTHING) \
                 INSERT INTO emitted_outcomes (key) SELECT unnest($2::text[]) ON CONFLICT DO NOTHING",
            )
            .bind::<Array<Text>, _>(events)
            .bind::<Array<Text>, _>(keys)
            .execute(&mut c)?;
        }
        Ok(())
    });
    let sends = (0..args.count).map(|n| {
        let producer = producer.clone();
        async move {
            let value = feedback(n, 0);
            let key = format!("k{n}-42");
            let occurrence = producer
                .send("ingest-occurrences", Some(key.as_bytes()), &value, &[])
                .await
                .is_ok();
            let outcome = producer
                .send("outcomes", None, &value[..value.len().min(300)], &[])
                .await
                .is_ok();
            occurrence && outcome
        }
    });
    let ok = futures::future::join_all(sends)
        .await
        .into_iter()
        .filter(|b| *b)
        .count();
    sql.await??;
    let base = started.elapsed();

    // The same feedback again as a backlog: a new group on a fresh database reads what the run
    // above left in the topic, timed from when the worker holds its partitions, so the bench
    // producing the load (on the same cores) is not in the window, as it is not in the
    // baseline's.
    let backlog_url = sluice_acceptance::fresh_database(
        &args.target.admin_url,
        "sluice_bench_feedback_backlog",
        SETUP,
    )?;
    let backlog_group = format!("bench-fb-backlog-{}", std::process::id());
    let (mut child, metrics, backlog_started) = args.target.start_on_backlog(args.target.stage(
        "feedback-worker",
        &backlog_url,
        &backlog_group,
    ))?;
    let backlog = sluice_acceptance::wait_committed(&args.target.brokers, &backlog_group, TOPIC)
        .await?
        - backlog_started;
    let backlog_usage = sluice_acceptance::finish(&mut child, &metrics);
    let accepted = sluice_testkit::db::count(
        &backlog_url,
        "SELECT count(*) AS n FROM emitted_outcomes WHERE key LIKE 'feedback:%'",
    )?;
    anyhow::ensure!(
        accepted == i64::from(args.count),
        "{accepted} feedback outcomes from the backlog"
    );

    let n = f64::from(args.count);
    let (rate, base_rate) = (n / pipeline.as_secs_f64(), n / base.as_secs_f64());
    let backlog_rate = n / backlog.as_secs_f64();
    println!(
        "{}",
        json!({"bench": "feedback", "feedbacks": args.count, "breadcrumbs": args.breadcrumbs, "feedback_per_sec": rate.round(),
               "baseline_per_sec": base_rate.round(), "baseline_acked": ok,
               "ratio": (rate / base_rate * 1000.0).round() / 1000.0, "worker_peak_rss_mb": rss,
               "worker_cpu_secs": cpu, "latency": latency,
               "backlog_per_sec": backlog_rate.round(),
               "backlog_ratio": (backlog_rate / base_rate * 1000.0).round() / 1000.0,
               "backlog_peak_rss_mb": backlog_usage.0, "backlog_cpu_secs": backlog_usage.1})
    );
    Ok(())
}
