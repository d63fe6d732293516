//! Benchmark: `sluice cleanup --once` removing EVENTS expired events (rows and ~400-byte JSON
//! payloads), ATTACHMENTS expired attachments (rows and their objects in the object store) and
//! 10,000 dead groups, next to a same-run baseline doing the same removal in the plainest way:
//! one `DELETE` per table, then one batched object deletion.
//!
//! Also reported: the database size before and after each, since cleanup drops the payload
//! partitions (the disk comes back) where the plain `DELETE`s leave dead rows for vacuum.
//!
//! Usage: bench-cleanup --admin-url POSTGRES_URL [--events N] [--attachments N] [--bin-dir DIR].
//! Objects go to an `s3s-fs` server of its own. Prints one JSON line.

use clap::Parser;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use futures::StreamExt;
use serde_json::json;
use sluice_core::objects::Objects;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    admin_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    events: u32,
    #[arg(long, default_value_t = 100_000)]
    attachments: u32,
    #[arg(long, default_value = "target/release")]
    bin_dir: String,
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn one(url: &str, sql: &str) -> anyhow::Result<i64> {
    Ok(diesel::sql_query(sql)
        .get_result::<N>(&mut PgConnection::establish(url)?)?
        .n)
}

fn db_size(url: &str) -> anyhow::Result<i64> {
    one(url, "SELECT pg_database_size(current_database()) AS n")
}

fn remaining(url: &str) -> anyhow::Result<i64> {
    one(
        url,
        "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM event_payloads) \
              + (SELECT count(*) FROM event_attachments) + (SELECT count(*) FROM groups) AS n",
    )
}

async fn put_all(objects: &Objects, keys: &[String]) -> anyhow::Result<()> {
    let results: Vec<_> = futures::stream::iter(keys.iter().map(|k| async move {
        objects
            .put(k, bytes::Bytes::from_static(b"expired object!!"), None)
            .await
    }))
    .buffer_unordered(64)
    .collect()
    .await;
    for r in results {
        r?;
    }
    Ok(())
}

async fn prepared(args: &Args, name: &str, objects: &Objects) -> anyhow::Result<(String, i64)> {
    let url = sluice_acceptance::fresh_database(&args.admin_url, name, "")?;
    let keys = sluice_acceptance::seed_expired(&url, args.events, args.attachments)?;
    put_all(objects, &keys).await?;
    let size = db_size(&url)?;
    Ok((url, size))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let s3 = sluice_testkit::S3Server::start("bench")?;
    let (store_url, store_env) = (s3.url("attachments"), s3.env());
    let objects = Objects::from_url_with(&store_url, store_env.clone())?;
    let rows = i64::from(args.events) * 2 + i64::from(args.attachments) + 10_000;

    // sluice cleanup.
    let (url, size_before) = prepared(&args, "sluice_bench_cleanup", &objects).await?;
    let started = Instant::now();
    let out = std::process::Command::new(format!("{}/sluice", args.bin_dir))
        .args([
            "cleanup",
            "--once",
            "--duty-percent",
            "100",
            "--log-level",
            "warn",
        ])
        .args(["--database-url", &url, "--object-store-url", &store_url])
        .envs(store_env.iter().map(|(k, v)| (k, v)))
        .output()?;
    let cleanup = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "cleanup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(remaining(&url)? == 0, "cleanup left rows");
    anyhow::ensure!(
        one(&url, "SELECT count(*) AS n FROM object_deletions")? == 0,
        "cleanup left objects queued"
    );
    let size_after = db_size(&url)?;

    // The plain way: one DELETE per table, then the objects.
    let (base_url, base_before) = prepared(&args, "sluice_bench_cleanup_base", &objects).await?;
    let started = Instant::now();
    let mut c = PgConnection::establish(&base_url)?;
    c.batch_execute(
        "DELETE FROM events WHERE expires_at <= now();
         DELETE FROM event_payloads WHERE expires_at <= now();
         CREATE TEMP TABLE gone AS
           WITH d AS (DELETE FROM event_attachments WHERE expires_at <= now() RETURNING blob_path)
           SELECT blob_path FROM d;
         DELETE FROM group_hashes h USING groups g
           WHERE h.group_id = g.id AND g.last_seen <= now() - interval '90 days'
             AND NOT EXISTS (SELECT 1 FROM events e WHERE e.group_id = g.id);
         DELETE FROM groups g WHERE g.last_seen <= now() - interval '90 days'
             AND NOT EXISTS (SELECT 1 FROM events e WHERE e.group_id = g.id);",
    )?;
    #[derive(QueryableByName)]
    struct Path {
        #[diesel(sql_type = diesel::sql_types::Text)]
        blob_path: String,
    }
    let keys: Vec<String> = diesel::sql_query("SELECT blob_path FROM gone")
        .load::<Path>(&mut c)?
        .into_iter()
        .map(|p| p.blob_path)
        .collect();
    for chunk in keys.chunks(10_000) {
        objects.delete_many(chunk).await?;
    }
    let base = started.elapsed();
    anyhow::ensure!(remaining(&base_url)? == 0, "the baseline left rows");
    let base_after = db_size(&base_url)?;
    drop(c);

    let secs = |d: Duration| (d.as_secs_f64() * 100.0).round() / 100.0;
    let (rate, base_rate) = (
        rows as f64 / cleanup.as_secs_f64(),
        rows as f64 / base.as_secs_f64(),
    );
    println!(
        "{}",
        json!({
            "bench": "cleanup", "events": args.events, "attachments": args.attachments,
            "rows": rows, "objects": args.attachments,
            "cleanup_secs": secs(cleanup), "baseline_secs": secs(base),
            "cleanup_rows_per_sec": rate.round(), "baseline_rows_per_sec": base_rate.round(),
            "ratio": (rate / base_rate * 1000.0).round() / 1000.0,
            "cleanup_db_mb_before": size_before >> 20, "cleanup_db_mb_after": size_after >> 20,
            "baseline_db_mb_before": base_before >> 20, "baseline_db_mb_after": base_after >> 20,
        })
    );
    Ok(())
}
