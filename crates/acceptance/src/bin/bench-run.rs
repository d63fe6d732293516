//! Benchmark: one `sluice run` process on PostgreSQL alone (the embedded transport), SDK-format
//! envelopes (a Python error event with a stack trace, ~3 KB, 200 exception types) over HTTP to
//! grouped issues. Reports requests answered per second, p50/p99 of the HTTP answer, the rate
//! from the first request to the last event grouped, the process's peak RSS and CPU, next to a
//! same-run baseline: the database storing the same events and counting them into groups with
//! plain batched SQL on one connection (1,000 per transaction).
//!
//! Usage: bench-run --admin-url URL [--count N] [--rate R (0 = as fast as possible)]
//!                  [--concurrency C] [--bin-dir DIR]
//! Prints one JSON line.

use clap::Parser;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::json;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    admin_url: String,
    #[arg(long, default_value_t = 30_000)]
    count: u32,
    /// Envelopes per second (0: as fast as the process answers).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    #[arg(long, default_value = "target/release")]
    bin_dir: String,
    #[arg(long, default_value = "127.0.0.1:19000")]
    listen: String,
}

const TYPES: u32 = 200;

fn event(n: u32) -> (String, String) {
    let event_id = format!("{:032x}", 0xe000_0000_0000u64 + u64::from(n));
    let ty = format!("BenchError{}", n % TYPES);
    let frames: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            json!({"filename": format!("app/module_{i}.py"), "abs_path": format!("/srv/app/module_{i}.py"),
                   "function": format!("handler_{i}"), "module": format!("app.module_{i}"), "lineno": 10 + i,
                   "in_app": true, "context_line": "    result = compute(payload)",
                   "pre_context": ["def handler(payload):", "    check(payload)"],
                   "post_context": ["    return result", ""], "vars": {"payload": "{'id': 42}"}})
        })
        .collect();
    let body = json!({
        "event_id": event_id, "timestamp": 1_795_432_000.0 + f64::from(n) / 1000.0, "platform": "python",
        "level": "error", "environment": "production", "release": "bench@1.0.0", "server_name": "bench-host",
        "sdk": {"name": "sentry.python", "version": "2.75.0"},
        "exception": {"values": [{"type": ty, "value": format!("request {n} failed"),
                                  "mechanism": {"type": "generic", "handled": true},
                                  "stacktrace": {"frames": frames}}]},
        "contexts": {"runtime": {"name": "CPython", "version": "3.11.7"}},
        "tags": {"region": "eu"}, "user": {"id": format!("user-{}", n % 1000)},
    })
    .to_string();
    (
        event_id.clone(),
        format!(
            "{{\"event_id\":\"{event_id}\",\"sent_at\":\"2026-11-23T08:00:00Z\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{body}\n",
            body.len()
        ),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .map(|d| (d.as_secs_f64() * 1e5).round() / 100.0)
        .unwrap_or(0.0)
}

fn sluice(bin_dir: &str, db: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(format!("{bin_dir}/sluice"))
        .env("DATABASE_URL", db)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

fn grouped(c: &mut PgConnection) -> anyhow::Result<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    Ok(
        diesel::sql_query("SELECT count(*) AS n FROM events WHERE group_id IS NOT NULL")
            .get_result::<N>(c)?
            .n,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = sluice_acceptance::fresh_database(&args.admin_url, "sluice_bench_run", "")?;
    let objects = std::env::temp_dir().join(format!("sluice-bench-run-{}", std::process::id()));
    std::fs::create_dir_all(&objects)?;
    let mut run = Command::new(format!("{}/sluice", args.bin_dir))
        .env("DATABASE_URL", &db)
        .args(["run", "--listen", &args.listen, "--log-level", "warn"])
        .args([
            "--object-store-url",
            &format!("file://{}", objects.display()),
        ])
        .stdout(Stdio::null())
        .spawn()?;
    let ready = Instant::now() + Duration::from_secs(30);
    while sluice_testkit::http::get(&args.listen, "/health/ready").is_none_or(|(s, _)| s != 200) {
        if Instant::now() >= ready {
            sluice_acceptance::stop(&mut run);
            anyhow::bail!("sluice run did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sluice(&args.bin_dir, &db, &["org", "create", "bench"])?;
    let project = sluice(&args.bin_dir, &db, &["project", "create", "bench", "web"])?;
    let dsn = sluice(&args.bin_dir, &db, &["key", "create", "bench", "web"])?;
    let key = sluice_acceptance::dsn_key(&dsn);
    let bodies: Arc<Vec<String>> = Arc::new((0..args.count).map(|n| event(n).1).collect());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency as usize)
        .build()?;
    let url = Arc::new(format!("http://{}/api/{project}/envelope/", args.listen));
    let auth = Arc::new(format!(
        "Sentry sentry_key={key}, sentry_version=7, sentry_client=bench/1.0"
    ));
    let next = Arc::new(AtomicU32::new(0));
    let cpu_before = sluice_acceptance::cpu_secs(run.id());
    let started = tokio::time::Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, url, auth, next, bodies) = (
                client.clone(),
                url.clone(),
                auth.clone(),
                next.clone(),
                bodies.clone(),
            );
            let (count, rate) = (args.count, args.rate);
            tokio::spawn(async move {
                let (mut lat, mut failures) = (Vec::new(), 0u32);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    if rate > 0 {
                        tokio::time::sleep_until(
                            started + Duration::from_secs_f64(f64::from(n) / f64::from(rate)),
                        )
                        .await;
                    }
                    let t = Instant::now();
                    let sent = client
                        .post(url.as_str())
                        .header("x-sentry-auth", auth.as_str())
                        .header("content-type", "application/x-sentry-envelope")
                        .body(bodies[n as usize].clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => lat.push(t.elapsed()),
                        _ => failures += 1,
                    }
                }
                (lat, failures)
            })
        })
        .collect();
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for w in workers {
        let (l, f) = w.await?;
        latencies.extend(l);
        failures += f;
    }
    let answered = started.elapsed();
    let mut conn = PgConnection::establish(&db)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while grouped(&mut conn)? < i64::from(args.count - failures) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "events not grouped within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_grouped = started.elapsed();
    sluice_acceptance::dump_metrics_if_asked(&args.listen);
    let rss = sluice_acceptance::peak_rss_mb(run.id());
    let cpu = sluice_acceptance::cpu_secs(run.id()) - cpu_before;
    sluice_acceptance::stop(&mut run);
    let _ = std::fs::remove_dir_all(&objects);
    latencies.sort();

    // Baseline: the same events stored and counted into groups by plain SQL on one connection.
    conn.batch_execute(
        "CREATE UNLOGGED TABLE IF NOT EXISTS bench_events (project_id bigint, event_id char(32), \
           hash text, data jsonb, PRIMARY KEY (project_id, event_id)); \
         CREATE UNLOGGED TABLE IF NOT EXISTS bench_groups (project_id bigint, hash text, \
           times_seen bigint, last_seen timestamptz, PRIMARY KEY (project_id, hash)); \
         TRUNCATE bench_events, bench_groups; ALTER TABLE bench_events SET LOGGED; \
         ALTER TABLE bench_groups SET LOGGED;",
    )?;
    let events: Vec<(String, String)> = (0..args.count)
        .map(|n| {
            let (id, env) = event(n);
            let body = env.lines().nth(2).unwrap_or_default().to_owned();
            (id, body)
        })
        .collect();
    let base_started = Instant::now();
    for chunk in events.chunks(1000) {
        let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
        let bodies: Vec<&str> = chunk.iter().map(|(_, b)| b.as_str()).collect();
        conn.transaction(|c| {
            diesel::sql_query(
                "WITH e AS (INSERT INTO bench_events (project_id, event_id, hash, data) \
                   SELECT 1, id, md5(d::jsonb->'exception'->'values'->0->>'type'), d::jsonb \
                   FROM unnest($1::text[], $2::text[]) AS u(id, d) \
                   ON CONFLICT DO NOTHING RETURNING hash) \
                 INSERT INTO bench_groups (project_id, hash, times_seen, last_seen) \
                 SELECT 1, hash, count(*), now() FROM e GROUP BY hash \
                 ON CONFLICT (project_id, hash) DO UPDATE \
                 SET times_seen = bench_groups.times_seen + EXCLUDED.times_seen, last_seen = now()",
            )
            .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&ids)
            .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&bodies)
            .execute(c)
            .map(|_| ())
        })?;
    }
    let base = base_started.elapsed();
    let n = f64::from(args.count);
    let grouped_rate = n / all_grouped.as_secs_f64();
    let base_rate = n / base.as_secs_f64();
    println!(
        "{}",
        json!({"bench": "sluice-run", "envelopes": args.count, "rate": args.rate, "concurrency": args.concurrency,
               "failures": failures, "answered_per_sec": (n / answered.as_secs_f64()).round(),
               "grouped_per_sec": grouped_rate.round(), "baseline_sql_per_sec": base_rate.round(),
               "ratio": (grouped_rate / base_rate * 1000.0).round() / 1000.0,
               "http_p50_ms": percentile(&latencies, 0.5), "http_p99_ms": percentile(&latencies, 0.99),
               "peak_rss_mb": rss, "cpu_secs": (cpu * 100.0).round() / 100.0,
               "cpu_s_per_1k": sluice_acceptance::cpu_per_1k(cpu, args.count)})
    );
    Ok(())
}
