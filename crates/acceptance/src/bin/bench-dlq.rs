//! Benchmark: `sluice dlq replay` of COUNT dead letters (1 KiB values with provenance headers)
//! from `ingest-events-dlq` back to `ingest-events`, next to a same-run baseline doing the same
//! work in the plainest way: one consumer reading the DLQ to its end and one producer writing
//! every message to `ingest-events-copy`, flushed.
//!
//! Usage: bench-dlq --brokers HOST:PORT [--count N] [--bin-dir DIR]. The three topics must exist.
//! Prints one JSON line.

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    brokers: String,
    #[arg(long, default_value_t = 100_000)]
    count: u32,
    #[arg(long, default_value = "target/release")]
    bin_dir: String,
}

const DLQ: &str = "ingest-events-dlq";

fn producer(brokers: &str) -> anyhow::Result<BaseProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

fn fill(brokers: &str, count: u32) -> anyhow::Result<()> {
    let p = producer(brokers)?;
    let value = vec![b'x'; 1024];
    for n in 0..count {
        let offset = n.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "original_topic",
                value: Some("ingest-events"),
            })
            .insert(Header {
                key: "original_partition",
                value: Some("0"),
            })
            .insert(Header {
                key: "original_offset",
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: "reason",
                value: Some("retry_exhausted"),
            });
        let key = format!("{n:032x}");
        loop {
            match p.send(
                BaseRecord::to(DLQ)
                    .key(&key)
                    .payload(&value)
                    .headers(headers.clone()),
            ) {
                Ok(()) => break,
                Err((e, _)) if e.to_string().contains("Queue full") => {
                    p.poll(Duration::from_millis(10));
                }
                Err((e, _)) => anyhow::bail!("produce: {e}"),
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60))?;
    Ok(())
}

/// Reads the DLQ to its end and writes every message to `ingest-events-copy`.
fn baseline(brokers: &str) -> anyhow::Result<u64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-dlq-baseline")
        .set("enable.auto.commit", "false")
        .create()?;
    let (low, high) = c.fetch_watermarks(DLQ, 0, Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(DLQ, 0, Offset::Offset(low))?;
    c.assign(&tpl)?;
    let p = producer(brokers)?;
    let mut n = 0u64;
    while let Some(m) = c.poll(Duration::from_secs(10)) {
        let m = m?;
        loop {
            let mut rec =
                BaseRecord::to("ingest-events-copy").payload(m.payload().unwrap_or_default());
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            match p.send(rec) {
                Ok(()) => break,
                Err((e, _)) if e.to_string().contains("Queue full") => {
                    p.poll(Duration::from_millis(10));
                }
                Err((e, _)) => anyhow::bail!("produce: {e}"),
            }
        }
        p.poll(Duration::ZERO);
        n += 1;
        if m.offset() >= high - 1 {
            break;
        }
    }
    p.flush(Duration::from_secs(60))?;
    Ok(n)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fill(&args.brokers, args.count)?;

    let started = Instant::now();
    let out = std::process::Command::new(format!("{}/sluice", args.bin_dir))
        .args([
            "dlq",
            "replay",
            "ingest-events",
            "--kafka-brokers",
            &args.brokers,
        ])
        .output()?;
    let replay = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success()
            && stdout.contains(&format!("replayed to ingest-events: {}", args.count)),
        "replay failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let started = Instant::now();
    let copied = baseline(&args.brokers)?;
    let base = started.elapsed();
    anyhow::ensure!(copied == u64::from(args.count), "baseline copied {copied}");

    let n = f64::from(args.count);
    let (rate, base_rate) = (n / replay.as_secs_f64(), n / base.as_secs_f64());
    println!(
        "{}",
        json!({
            "bench": "dlq_replay", "letters": args.count, "value_bytes": 1024,
            "replay_per_sec": rate.round(), "baseline_copy_per_sec": base_rate.round(),
            "ratio": (rate / base_rate * 1000.0).round() / 1000.0,
            "replay_secs": replay.as_secs_f64(), "baseline_secs": base.as_secs_f64(),
        })
    );
    Ok(())
}
