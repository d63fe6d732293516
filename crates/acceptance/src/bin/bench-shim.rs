//! Benchmark: occurrences acknowledged per second through `producer-shim`'s HTTP API (one
//! occurrence per request, keep-alive connections, bounded count), next to a same-run baseline
//! that sends the same records straight through the core producer.
//!
//! Usage: bench-shim --brokers HOST:PORT --database-url URL [--count N] [--concurrency C]
//! The topic `ingest-occurrences` must exist. Prints one JSON line.

use clap::Parser;
use serde_json::json;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    brokers: String,
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value_t = 20_000)]
    count: u32,
    #[arg(long, default_value_t = 32)]
    concurrency: u32,
    #[arg(long, default_value = "target/release")]
    bin_dir: String,
    #[arg(long, default_value = "127.0.0.1:18300")]
    listen: String,
}

fn occurrence(n: u32) -> String {
    let event_id = format!("{:032x}", 0xbe00_0000_0000u64 + u64::from(n));
    json!({"id": format!("{:032x}", 0xab00_0000_0000u64 + u64::from(n)), "project_id": 42, "event_id": event_id,
           "fingerprint": [format!("shim-bench-{}", n % 500)], "issue_title": "Cron job missed", "subtitle": "nightly",
           "type": 4001, "detection_time": 1_795_432_000.0 + f64::from(n) / 1000.0, "level": "error",
           "event": {"event_id": event_id, "project_id": 42, "platform": "other", "timestamp": 1_795_432_000}})
    .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A database of its own, migrated (the shim waits, not ready, on an older schema).
    let db_url = sluice_acceptance::fresh_database(&args.database_url, "sluice_bench_shim", "")?;
    let mut shim = Command::new(format!("{}/producer-shim", args.bin_dir))
        .env("KAFKA_BROKERS", &args.brokers)
        .env("DATABASE_URL", &db_url)
        .args([
            "serve",
            "--listen",
            &args.listen,
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&args.listen).is_err() {
        if Instant::now() >= deadline {
            sluice_acceptance::stop(&mut shim);
            anyhow::bail!("producer-shim did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency as usize)
        .build()?;
    let url = Arc::new(format!("http://{}/api/0/occurrences", args.listen));
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, url, next, count) =
                (client.clone(), url.clone(), next.clone(), args.count);
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut failures = 0u32;
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let t = Instant::now();
                    match client.post(url.as_str()).body(occurrence(n)).send().await {
                        Ok(r) if r.status().as_u16() == 202 => lat.push(t.elapsed()),
                        _ => failures += 1,
                    }
                }
                (lat, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for w in workers {
        let (l, f) = w.await?;
        latencies.extend(l);
        failures += f;
    }
    let http_elapsed = started.elapsed();
    let rss = sluice_acceptance::peak_rss_mb(shim.id());
    let cpu = sluice_acceptance::cpu_secs(shim.id());
    sluice_acceptance::stop(&mut shim);
    latencies.sort();

    // Baseline: the same records through the core producer, same concurrency, no HTTP.
    let producer = sluice_acceptance::baseline_producer(&args.brokers)?;
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (producer, next, count) = (producer.clone(), next.clone(), args.count);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let value = occurrence(n);
                    let key = format!("shim-bench-{}-42", n % 500);
                    let _ = producer
                        .send(
                            "ingest-occurrences",
                            Some(key.as_bytes()),
                            value.as_bytes(),
                            &[],
                        )
                        .await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let base_elapsed = started.elapsed();
    let n = f64::from(args.count);
    let (http_rate, base_rate) = (
        n / http_elapsed.as_secs_f64(),
        n / base_elapsed.as_secs_f64(),
    );
    println!(
        "{}",
        json!({"bench": "producer-shim", "requests": args.count, "concurrency": args.concurrency, "failures": failures,
               "http_acked_per_sec": http_rate.round(), "baseline_producer_per_sec": base_rate.round(),
               "ratio": (http_rate / base_rate * 1000.0).round() / 1000.0,
               "p50_ms": percentile(&latencies, 0.5), "p99_ms": percentile(&latencies, 0.99), "shim_peak_rss_mb": rss, "shim_cpu_secs": cpu})
    );
    Ok(())
}
