//! Benchmark of `ingest-consumer`, each part next to a same-run baseline:
//! - events: realistic ~6 KB error events from `ingest-events` to stored rows and acknowledged
//!   occurrences with offsets committed, vs. the same rows written with PostgreSQL's fastest path
//!   (`COPY`, 5,000 rows per transaction) plus the same number of occurrence records produced
//!   directly; then the same events again as a backlog (`events_backlog_*`): a new consumer
//!   group on a fresh database reads what the first run left in the topic, timed from when it
//!   holds its partitions, so the bench producing the load (on the same cores) is not in the
//!   window, as it is not in the baseline's;
//! - attachments: 10 KB attachments (a chunk plus a standalone attachment message each) from
//!   `ingest-attachments` to objects in `s3s-fs`, rows and outcomes, vs. raw PUTs of the same
//!   bodies to the same server; then again as a backlog (`attachments_backlog_*`), as for the
//!   events.
//!
//! - `--backlog`: memory under a backlog instead. N attachments of M MiB, each in 1 MiB chunks
//!   followed by the event that lists it (`ingest-attachments`), plus the events
//!   (`ingest-events`), all produced before the consumer starts; reports the consumer's peak RSS
//!   and its throughput next to raw PUTs of the same bodies.
//!
//! Usage: bench-ingest --brokers HOST:PORT --admin-url POSTGRES_URL [--events N] [--attachments N]
//!        [--backlog [--backlog-attachments N] [--attachment-mib M]]
//! Each consumer is started and has joined its group before the messages are produced; the time
//! runs from the first produced message to the last committed offset.
//! Prints one JSON line.

use clap::Parser;
use diesel::prelude::*;
use futures::StreamExt;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use sluice_acceptance::{fresh_database, peak_rss_mb, stop, wait_committed};

use sluice_core::messages::{
    AttachmentChunk, AttachmentMessage, ChunkedAttachment, EventMessage, IngestMessage, Timestamp,
};
use sluice_core::objects::Objects;
use sluice_testkit::S3Server;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    target: sluice_acceptance::Target,
    #[arg(long, default_value_t = 20_000)]
    events: u32,
    #[arg(long, default_value_t = 3_000)]
    attachments: u32,
    /// Measure memory under a backlog (see the module comment).
    #[arg(long)]
    backlog: bool,
    #[arg(long, default_value_t = 2_000)]
    backlog_attachments: u32,
    #[arg(long, default_value_t = 3)]
    attachment_mib: u32,
    /// Latency mode: produce the events at this steady rate (per second) instead of a burst;
    /// no attachments and no baseline.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// With `--rate`: run occurrence-consumer too and measure from the produced event to its
    /// grouped occurrence (the whole pipeline) besides the event row.
    #[arg(long)]
    pipeline: bool,
}

const SETUP: &str = "INSERT INTO organizations (id, slug) VALUES (1, 'bench'); \
                     INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'bench');";

fn event_id(n: u32) -> String {
    format!("{:032x}", 0xbe00_0000_0000u64 + u64::from(n))
}

/// A Python-SDK-like error event of about 6 KB; 100 distinct stacks.
fn event_body(n: u32) -> Value {
    let kind = n % 100;
    let frames: Vec<Value> = (0..12)
        .map(|i| {
            json!({"filename": format!("app/module_{i}.py"), "module": format!("app.module_{i}"),
                   "function": format!("handler_{kind}_{i}"), "lineno": 10 + i, "in_app": i % 3 != 0,
                   "context_line": "    return process(request, payload, retries=3)",
                   "pre_context": ["def handler(request):", "    payload = request.json()", "    validate(payload)"],
                   "post_context": ["", "def other():", "    pass"],
                   "vars": {"request": "<Request 'POST /api/checkout'>", "retries": "3", "payload": "{'cart': [1, 2, 3]}"}})
        })
        .collect();
    json!({"event_id": event_id(n), "type": "error", "platform": "python", "level": "error",
           "timestamp": 1_795_432_200.0 + f64::from(n) / 1000.0, "received": 1_795_432_200.5,
           "environment": "production", "release": "shop@1.2.3", "server_name": "web-1",
           "exception": {"values": [{"type": format!("CheckoutError{kind}"), "value": format!("cart {n} rejected"),
                                     "mechanism": {"type": "generic", "handled": true},
                                     "stacktrace": {"frames": frames}}]},
           "tags": [["browser", "Firefox"], ["os", "Linux"], ["customer", "acme"]],
           "contexts": {"trace": {"trace_id": "0123456789abcdef0123456789abcdef", "span_id": "0123456789abcdef"},
                        "runtime": {"name": "CPython", "version": "3.11.7"}},
           "sdk": {"name": "sentry.python", "version": "2.75.0"},
           "modules": {"django": "5.1", "requests": "2.32.3", "urllib3": "2.2.3", "certifi": "2026.10.18"}})
}

fn event_message(n: u32) -> Vec<u8> {
    IngestMessage::Event(EventMessage {
        payload: event_body(n).to_string().into_bytes(),
        start_time: Timestamp::now(),
        event_id: event_id(n),
        project_id: 42,
        remote_addr: None,
        attachments: vec![],
    })
    .encode()
}

fn body_10k(n: u32) -> Vec<u8> {
    (0..10 * 1024u32)
        .map(|i| (i.wrapping_mul(7).wrapping_add(n) % 251) as u8)
        .collect()
}

fn attachment_messages(n: u32) -> [Vec<u8>; 2] {
    let id = format!("att-{n}");
    let chunk = IngestMessage::AttachmentChunk(AttachmentChunk {
        payload: body_10k(n),
        event_id: event_id(n),
        project_id: 42,
        id: id.clone(),
        chunk_index: 0,
    });
    let att = IngestMessage::Attachment(AttachmentMessage {
        event_id: event_id(n),
        project_id: 42,
        attachment: ChunkedAttachment {
            id,
            name: "report.bin".into(),
            content_type: Some("application/octet-stream".into()),
            attachment_type: "event.attachment".into(),
            chunks: Some(1),
            data: None,
            stored_id: None,
            size: Some(10 * 1024),
            rate_limited: false,
            retention_days: None,
        },
    });
    [chunk.encode(), att.encode()]
}

fn produce(
    brokers: &str,
    topic: &str,
    rate: u32,
    msgs: impl Iterator<Item = (String, Vec<u8>)>,
) -> anyhow::Result<HashMap<String, i64>> {
    let pace = sluice_acceptance::Pace::new(rate);
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", pace.linger_ms())
        .set("message.max.bytes", "20000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2000000")
        .create()?;
    let mut produced_at = HashMap::new();
    for (n, (k, v)) in msgs.enumerate() {
        pace.wait(n);
        p.send(BaseRecord::to(topic).key(&k).payload(&v))
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        produced_at.insert(k, sluice_acceptance::now_ms());
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(120))?;
    Ok(produced_at)
}

/// One measured run: `ingest-consumer` reading `topic` joins its group, then `messages` are
/// produced. Returns the time from the first produced message to the last committed offset, the
/// consumer's peak RSS, and when each key's (last) message was produced. `BENCH_METRICS` set: the consumer's metrics go to stderr.
async fn measure(
    args: &Args,
    db: &str,
    topic: &str,
    env: &[(String, String)],
    store: &str,
    messages: impl Iterator<Item = (String, Vec<u8>)>,
) -> anyhow::Result<(Duration, (u64, f64), HashMap<String, i64>)> {
    let group = format!("bench-{topic}-{}", std::process::id());
    let mut cmd = args.target.stage("ingest-consumer", db, &group);
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .env("OBJECT_STORE_URL", store)
        .args(["--topics", topic]);
    let (mut child, metrics) = args.target.start_joined(cmd)?;
    let started = Instant::now();
    let produced_at = produce(&args.target.brokers, topic, args.rate, messages)?;
    eprintln!(
        "{topic}: input produced and acknowledged after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let elapsed = wait_committed(&args.target.brokers, &group, topic).await? - started;
    let rss = sluice_acceptance::finish(&mut child, &metrics);
    Ok((elapsed, rss, produced_at))
}

/// The events again as a backlog: a new consumer group, on a fresh database, reads the events
/// the measured run left in `topic`, timed from when it holds its partitions to its last commit
/// (the bench producing the load is not in the window, as it is not in the baseline's).
async fn drain(
    args: &Args,
    db: &str,
    topic: &str,
    env: &[(String, String)],
    store: &str,
) -> anyhow::Result<(Duration, (u64, f64))> {
    let group = format!("bench-drain-{topic}-{}", std::process::id());
    let mut cmd = args.target.stage("ingest-consumer", db, &group);
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .env("OBJECT_STORE_URL", store)
        .args(["--topics", topic]);
    let (mut child, metrics, started) = args.target.start_on_backlog(cmd)?;
    let elapsed = wait_committed(&args.target.brokers, &group, topic).await? - started;
    Ok((elapsed, sluice_acceptance::finish(&mut child, &metrics)))
}

/// The two tables the events baseline copies into (only the columns it writes).
mod copied {
    diesel::table! {
        events (project_id, event_id) {
            project_id -> Int8,
            event_id -> Bpchar,
            expires_at -> Timestamptz,
        }
    }
    diesel::table! {
        event_payloads (project_id, event_id, expires_at) {
            project_id -> Int8,
            event_id -> Bpchar,
            expires_at -> Timestamptz,
            data -> Jsonb,
        }
    }
}

/// `s` as a CSV field: quoted, quotes doubled.
fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Baseline for events: the same rows written with `COPY` (PostgreSQL's fastest path; CSV,
/// 5,000 rows of each table per transaction), and one occurrence-sized record per event
/// produced and acknowledged, concurrently.
async fn events_baseline(args: &Args, url: &str) -> anyhow::Result<Duration> {
    let bodies: Vec<String> = (0..args.events)
        .map(|n| event_body(n).to_string())
        .collect();
    let producer = args.target.baseline_producer()?;
    let started = Instant::now();
    let url = url.to_owned();
    let sql = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use diesel::pg::CopyFormat;
        use diesel::ExecuteCopyFromDsl as _;
        let io = |e: std::io::Error| diesel::result::Error::SerializationError(Box::new(e));
        let mut c = PgConnection::establish(&url)?;
        let expires = (chrono::Utc::now() + chrono::Duration::days(90)).to_rfc3339();
        for (i, batch) in bodies.chunks(5_000).enumerate() {
            let ids: Vec<String> = (0..batch.len())
                .map(|j| event_id((i * 5_000 + j) as u32))
                .collect();
            c.transaction(|c| {
                diesel::copy_from(copied::events::table)
                    .from_raw_data(
                        (
                            copied::events::project_id,
                            copied::events::event_id,
                            copied::events::expires_at,
                        ),
                        |w| {
                            for id in &ids {
                                writeln!(w, "42,{id},{expires}").map_err(io)?;
                            }
                            Ok::<_, diesel::result::Error>(())
                        },
                    )
                    .with_format(CopyFormat::Csv)
                    .execute(c)?;
                diesel::copy_from(copied::event_payloads::table)
                    .from_raw_data(
                        (
                            copied::event_payloads::project_id,
                            copied::event_payloads::event_id,
                            copied::event_payloads::expires_at,
                            copied::event_payloads::data,
                        ),
                        |w| {
                            for (id, body) in ids.iter().zip(batch) {
                                writeln!(w, "42,{id},{expires},{}", csv_field(body)).map_err(io)?;
                            }
                            Ok::<_, diesel::result::Error>(())
                        },
                    )
                    .with_format(CopyFormat::Csv)
                    .execute(c)?;
                Ok::<_, diesel::result::Error>(())
            })?;
        }
        Ok(())
    });
    let sends = (0..args.events).map(|n| {
        let producer = producer.clone();
        async move {
            let value = json!({"id": event_id(n), "project_id": 42, "event_id": event_id(n), "fingerprint": [format!("{:032x}", n % 100)],
                               "issue_title": "CheckoutError: cart rejected", "subtitle": "app.module_11 in handler", "type": 1,
                               "detection_time": 1_795_432_200.0, "level": "error", "culprit": "app.module_11 in handler"}).to_string();
            producer.send("ingest-occurrences", Some(format!("{n}-42").as_bytes()), value.as_bytes(), &[]).await.is_ok()
        }
    });
    let acked = futures::future::join_all(sends)
        .await
        .into_iter()
        .filter(|b| *b)
        .count();
    sql.await??;
    anyhow::ensure!(acked == args.events as usize, "baseline produce failed");
    Ok(started.elapsed())
}

/// Lets the previous phase's writes reach the disk (a Postgres checkpoint, then the kernel's
/// writeback), so they do not slow down the next measured phase.
fn settle(url: &str) -> anyhow::Result<()> {
    diesel::sql_query("CHECKPOINT").execute(&mut PgConnection::establish(url)?)?;
    let _ = std::process::Command::new("sync").status();
    Ok(())
}

/// How many of the `n` attachments' objects hold their bodies, read back one by one (32 at a
/// time). Listing the store instead takes s3s-fs most of a minute once it holds tens of
/// thousands of objects.
async fn stored_bodies(objects: &Objects, n: u32) -> anyhow::Result<u32> {
    let found = futures::stream::iter(0..n)
        .map(|n| {
            let objects = objects.clone();
            async move {
                let key = objects.attachment_key(42, &event_id(n), &format!("att-{n}"))?;
                let body = objects.get(&key).await?;
                anyhow::Ok(body.is_some_and(|b| b.as_ref() == body_10k(n).as_slice()))
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let mut stored = 0;
    for f in found {
        stored += u32::from(f?);
    }
    Ok(stored)
}

/// Baseline for attachments: `n` raw PUTs of the same 10 KB bodies under `prefix`, 32 at a time
/// (the consumer's concurrency).
async fn raw_puts(s3: &S3Server, prefix: &str, n: u32) -> anyhow::Result<Duration> {
    let objects = Objects::from_url_with(&s3.url(prefix), s3.env())?;
    let started = Instant::now();
    let puts = futures::stream::iter(0..n)
        .map(|n| {
            let objects = objects.clone();
            async move {
                let key = objects.attachment_key(42, &event_id(n), &format!("att-{n}"))?;
                objects
                    .put(
                        &key,
                        bytes::Bytes::from(body_10k(n)),
                        Some("application/octet-stream"),
                    )
                    .await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    anyhow::ensure!(puts.iter().all(Result::is_ok), "baseline PUTs failed");
    let elapsed = started.elapsed();
    eprintln!(
        "raw PUTs ({prefix}): {:.0}/s",
        f64::from(n) / elapsed.as_secs_f64()
    );
    Ok(elapsed)
}

/// 1 MiB of a backlog attachment: a pseudo-random 1 KiB block repeated, which lz4 compresses
/// about 50:1 (so the mock broker, which keeps 5 MiB of compressed batches per partition, can
/// hold the backlog) while every batch still decompresses to its full size in the consumer.
fn chunk_body(n: u32, index: u32) -> Vec<u8> {
    let mut x = u64::from(n) << 32 | u64::from(index) | 1;
    let block: Vec<u8> = (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    block.repeat(1024)
}

/// The chunks of a backlog attachment (1 MiB each) and the event that lists it.
fn backlog_attachment(n: u32, mib: u32) -> Vec<Vec<u8>> {
    let eid = event_id(100_000 + n);
    let id = format!("big-{n}");
    let mut out: Vec<Vec<u8>> = (0..mib)
        .map(|i| {
            IngestMessage::AttachmentChunk(AttachmentChunk {
                payload: chunk_body(n, i),
                event_id: eid.clone(),
                project_id: 42,
                id: id.clone(),
                chunk_index: i,
            })
            .encode()
        })
        .collect();
    let mut body = event_body(n);
    body["event_id"] = json!(eid);
    out.push(
        IngestMessage::Event(EventMessage {
            payload: body.to_string().into_bytes(),
            start_time: Timestamp::now(),
            event_id: eid,
            project_id: 42,
            remote_addr: None,
            attachments: vec![ChunkedAttachment {
                id,
                name: "core.dmp".into(),
                content_type: None,
                attachment_type: "event.attachment".into(),
                chunks: Some(mib),
                data: None,
                stored_id: None,
                size: Some(u64::from(mib) << 20),
                rate_limited: false,
                retention_days: None,
            }],
        })
        .encode(),
    );
    out
}

/// Memory under a backlog: everything is produced first, then the consumer works through it.
async fn backlog(args: &Args) -> anyhow::Result<()> {
    let (n, mib) = (args.backlog_attachments, args.attachment_mib);
    let url = fresh_database(&args.target.admin_url, "sluice_bench_backlog", SETUP)?;
    let s3 = S3Server::start("bench")?;
    let started = Instant::now();
    produce(
        &args.target.brokers,
        "ingest-attachments",
        0,
        (0..n).flat_map(|i| {
            backlog_attachment(i, mib)
                .into_iter()
                .map(move |m| (event_id(100_000 + i), m))
        }),
    )?;
    produce(
        &args.target.brokers,
        "ingest-events",
        0,
        (0..args.events).map(|i| (event_id(i), event_message(i))),
    )?;
    eprintln!(
        "backlog produced in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let group = format!("bench-backlog-{}", std::process::id());
    let store = s3.url("attachments");
    let mut cmd = args.target.stage("ingest-consumer", &url, &group);
    cmd.envs(s3.env())
        .env("OBJECT_STORE_URL", &store)
        .args(["--topics", "ingest-events,ingest-attachments"]);
    let started = Instant::now();
    let (mut child, _) = args.target.start_joined(cmd)?;
    wait_committed(&args.target.brokers, &group, "ingest-attachments").await?;
    let elapsed = wait_committed(&args.target.brokers, &group, "ingest-events").await? - started;
    let rss = peak_rss_mb(child.id());
    stop(&mut child);
    let objects = Objects::from_url_with(&store, s3.env())?
        .list(Some("attachments"))
        .await?;
    anyhow::ensure!(
        objects.len() == n as usize,
        "{} objects stored",
        objects.len()
    );
    anyhow::ensure!(
        objects
            .iter()
            .all(|(_, size)| *size == u64::from(mib) << 20),
        "an object has the wrong size"
    );
    let stored = sluice_testkit::db::count(&url, "SELECT count(*) AS n FROM events")?;
    anyhow::ensure!(
        stored == i64::from(args.events + n),
        "{stored} events stored"
    );
    // Baseline: raw PUTs of bodies of the same size, 32 at a time, for a tenth of them.
    let sample = (n / 10).max(1);
    let objects_client = Objects::from_url_with(&s3.url("baseline"), s3.env())?;
    let body = bytes::Bytes::from(vec![7u8; (mib as usize) << 20]);
    let base_started = Instant::now();
    let puts = futures::stream::iter(0..sample)
        .map(|i| {
            let (objects_client, body) = (objects_client.clone(), body.clone());
            async move {
                let key = objects_client.attachment_key(42, &event_id(i), "base")?;
                objects_client.put(&key, body, None).await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    anyhow::ensure!(puts.iter().all(Result::is_ok), "baseline PUTs failed");
    let mb = |count: u32, d: Duration| (f64::from(count * mib) / d.as_secs_f64()).round();
    println!(
        "{}",
        json!({"bench": "ingest-backlog", "attachments": n, "attachment_mib": mib, "events": args.events,
               "seconds": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
               "attachment_mib_per_sec": mb(n, elapsed), "baseline_put_mib_per_sec": mb(sample, base_started.elapsed()),
               "consumer_peak_rss_mb": rss, "rss_limit_mb": 256})
    );
    Ok(())
}

/// The events phase: `args.events` error events through ingest-consumer (see [`measure`]).
async fn measure_events(
    args: &Args,
    url: &str,
) -> anyhow::Result<(Duration, (u64, f64), HashMap<String, i64>)> {
    measure(
        args,
        url,
        "ingest-events",
        &[],
        "file:///tmp/sluice-bench-unused",
        (0..args.events).map(|n| (event_id(n), event_message(n))),
    )
    .await
}

/// The latency mode: error events at a steady rate through ingest-consumer (and, with
/// `--pipeline`, occurrence-consumer), latency from produce to the event row and to the grouped
/// occurrence.
async fn steady(args: &Args) -> anyhow::Result<()> {
    let url = fresh_database(&args.target.admin_url, "sluice_bench_ingest", SETUP)?;
    let occurrences = if args.pipeline {
        let group = format!("bench-occ-{}", std::process::id());
        Some(
            args.target
                .start_joined(args.target.stage("occurrence-consumer", &url, &group))?,
        )
    } else {
        None
    };
    let (elapsed, (rss, cpu), produced) = measure_events(args, &url).await?;
    let events_latency = sluice_acceptance::latencies(
        &produced,
        &url,
        "SELECT event_id::text AS key, (extract(epoch FROM date_added) * 1000)::bigint AS ms FROM events",
    )?;
    let mut pipeline = Value::Null;
    if let Some((mut child, _)) = occurrences {
        let deadline = Instant::now() + Duration::from_secs(120);
        let grouped = "SELECT count(*) AS n FROM occurrences WHERE group_id IS NOT NULL";
        while sluice_testkit::db::count(&url, grouped)? < i64::from(args.events) {
            anyhow::ensure!(Instant::now() < deadline, "occurrences did not all arrive");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let occ_cpu = sluice_acceptance::cpu_secs(child.id());
        let occ_rss = peak_rss_mb(child.id());
        stop(&mut child);
        pipeline = json!({
            "latency_to_grouped_issue": sluice_acceptance::latencies(
                &produced,
                &url,
                "SELECT event_id::text AS key, (extract(epoch FROM date_added) * 1000)::bigint AS ms \
                 FROM occurrences WHERE group_id IS NOT NULL",
            )?,
            "occurrence_consumer_peak_rss_mb": occ_rss, "occurrence_consumer_cpu_secs": occ_cpu,
        });
    }
    println!(
        "{}",
        json!({"bench": "ingest", "mode": "steady", "rate_per_sec": args.rate, "events": args.events,
               "secs": elapsed.as_secs_f64(), "events_latency": events_latency,
               "consumer_peak_rss_mb": rss, "consumer_cpu_secs": cpu,
               "cpu_secs_per_1k": sluice_acceptance::cpu_per_1k(cpu, args.events),
               "pipeline": pipeline})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.backlog {
        return backlog(&args).await;
    }
    if args.rate > 0 {
        return steady(&args).await;
    }
    let n_events = f64::from(args.events);
    let n_att = f64::from(args.attachments);

    // Events.
    let url = fresh_database(&args.target.admin_url, "sluice_bench_ingest", SETUP)?;
    let (events_elapsed, events_rss, events_produced) = measure_events(&args, &url).await?;
    let stored = sluice_testkit::db::count(&url, "SELECT count(*) AS n FROM events")?;
    anyhow::ensure!(stored == i64::from(args.events), "{stored} events stored");
    let events_latency = sluice_acceptance::latencies(
        &events_produced,
        &url,
        "SELECT event_id::text AS key, (extract(epoch FROM date_added) * 1000)::bigint AS ms FROM events",
    )?;
    let base_url = fresh_database(&args.target.admin_url, "sluice_bench_ingest_base", SETUP)?;
    settle(&url)?;
    let events_base = events_baseline(&args, &base_url).await?;
    settle(&base_url)?;
    let drain_url = fresh_database(&args.target.admin_url, "sluice_bench_ingest_drain", SETUP)?;
    let (drain_elapsed, drain_usage) = drain(
        &args,
        &drain_url,
        "ingest-events",
        &[],
        "file:///tmp/sluice-bench-unused",
    )
    .await?;
    let drained = sluice_testkit::db::count(&drain_url, "SELECT count(*) AS n FROM events")?;
    anyhow::ensure!(
        drained == i64::from(args.events),
        "{drained} events stored from the backlog"
    );

    // Attachments, once the events phase's writes are on disk.
    settle(&url)?;
    let s3 = S3Server::start("bench")?;
    // A fresh s3s-fs is several times slower on its first thousands of PUTs: warm it up, then
    // take the baseline before and after the consumer's run and use the mean.
    raw_puts(&s3, "warm-up", args.attachments).await?;
    let att_base_before = raw_puts(&s3, "baseline-before", args.attachments).await?;
    let store = s3.url("attachments");
    let (att_elapsed, att_rss, att_produced) = measure(
        &args,
        &url,
        "ingest-attachments",
        &s3.env(),
        &store,
        (0..args.attachments).flat_map(|n| {
            attachment_messages(n)
                .into_iter()
                .map(move |m| (event_id(n), m))
        }),
    )
    .await?;
    let stored =
        stored_bodies(&Objects::from_url_with(&store, s3.env())?, args.attachments).await?;
    anyhow::ensure!(
        stored == args.attachments,
        "{stored} of {} objects stored with their bodies",
        args.attachments
    );
    let att_latency = sluice_acceptance::latencies(
        &att_produced,
        &url,
        "SELECT event_id::text AS key, (extract(epoch FROM date_added) * 1000)::bigint AS ms FROM event_attachments",
    )?;
    // The attachments again as a backlog, into a fresh database (the objects are written again
    // under the same keys, as a replay would).
    let att_drain_url = fresh_database(
        &args.target.admin_url,
        "sluice_bench_ingest_drain_attachments",
        SETUP,
    )?;
    let (att_drain_elapsed, att_drain_usage) = drain(
        &args,
        &att_drain_url,
        "ingest-attachments",
        &s3.env(),
        &store,
    )
    .await?;
    let att_drained = sluice_testkit::db::count(
        &att_drain_url,
        "SELECT count(*) AS n FROM event_attachments",
    )?;
    anyhow::ensure!(
        att_drained == i64::from(args.attachments),
        "{att_drained} attachments stored from the backlog"
    );
    let att_base_after = raw_puts(&s3, "baseline-after", args.attachments).await?;
    let att_base = (att_base_before + att_base_after) / 2;

    let rate = |n: f64, d: Duration| (n / d.as_secs_f64()).round();
    let ratio = |a: f64, b: f64| (a / b * 1000.0).round() / 1000.0;
    let (ev, evb) = (rate(n_events, events_elapsed), rate(n_events, events_base));
    let evd = rate(n_events, drain_elapsed);
    let (at, atb) = (rate(n_att, att_elapsed), rate(n_att, att_base));
    let atd = rate(n_att, att_drain_elapsed);
    println!(
        "{}",
        json!({"bench": "ingest", "events": args.events, "event_bytes": event_body(1).to_string().len(),
               "events_per_sec": ev, "events_baseline_per_sec": evb, "events_ratio": ratio(ev, evb),
               "events_consumer_peak_rss_mb": events_rss.0, "events_consumer_cpu_secs": events_rss.1, "events_latency": events_latency,
               "events_backlog_per_sec": evd, "events_backlog_ratio": ratio(evd, evb),
               "events_backlog_peak_rss_mb": drain_usage.0, "events_backlog_cpu_secs": drain_usage.1,
               "attachments": args.attachments, "attachments_per_sec": at, "attachments_baseline_put_per_sec": atb,
               "attachments_ratio": ratio(at, atb), "attachments_consumer_peak_rss_mb": att_rss.0, "attachments_consumer_cpu_secs": att_rss.1, "attachments_latency": att_latency,
               "attachments_backlog_per_sec": atd, "attachments_backlog_ratio": ratio(atd, atb),
               "attachments_backlog_peak_rss_mb": att_drain_usage.0, "attachments_backlog_cpu_secs": att_drain_usage.1,
               "object_store_cpus": std::env::var("S3S_FS_CPUS").ok()})
    );
    Ok(())
}
