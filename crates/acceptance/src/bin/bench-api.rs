//! Benchmark: `sluice api` listing issues of a project that holds GROUPS groups (70% unresolved,
//! 20% resolved, 10% ignored; EVENTS_PER_GROUP events each inside the last day, so the default
//! `statsPeriod=24h` series has something to count), one request at a time over keep-alive, as
//! an issue list page does. Each case is measured as HTTP answer latency (p50, p99, max) and, as
//! the same-run baseline, the same storage calls (`read::issues` plus the stats counts) made
//! directly on one database connection: the database's own floor for the same answer.
//!
//! Cases: 100 unresolved issues by last seen (the default sort), by first seen (`sort=new`), by
//! count (`sort=freq`), the fifth page by last seen (following the cursor), and a title search
//! (a scan, reported without a target).
//!
//! Usage: bench-api --admin-url POSTGRES_URL [--groups N] [--events-per-group N] [--requests N]
//! [--bin-dir DIR]. Prints one JSON line per case.

use clap::Parser;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::json;
use sluice_core::storage::read::{self, IssueFilter, Position, Sort};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    admin_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    groups: u32,
    #[arg(long, default_value_t = 2)]
    events_per_group: u32,
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    #[arg(long, default_value = "target/release")]
    bin_dir: String,
}

/// One project's groups and events, written by the database itself.
fn seed(url: &str, groups: u32, per_group: u32) -> anyhow::Result<()> {
    let mut c = PgConnection::establish(url)?;
    c.batch_execute(&format!(
        "INSERT INTO organizations (slug, name) VALUES ('bench', 'Bench');
         INSERT INTO projects (organization_id, slug, name, options)
             SELECT id, 'big', 'Big', '{{\"platform\": \"python\"}}' FROM organizations;
         INSERT INTO groups (project_id, type, status, substatus, title, culprit, times_seen,
                             first_seen, last_seen, data)
         SELECT p.id, 1,
                CASE WHEN i % 10 < 7 THEN 0 WHEN i % 10 < 9 THEN 1 ELSE 2 END,
                CASE WHEN i % 10 < 7 THEN 2 WHEN i % 10 < 9 THEN NULL ELSE 4 END,
                'ValueError: bench failure ' || i, 'app.handlers in run_' || (i % 500),
                1 + (i * 7919) % 100000,
                now() - interval '60 days' + ((i * 15485863) % 4000000) * interval '1 second',
                now() - ((i * 104729) % 86400) * interval '1 second',
                jsonb_build_object('metadata', jsonb_build_object(
                    'type', 'ValueError', 'value', 'bench failure ' || i, 'filename', 'app/handlers.py',
                    'function', 'run_' || (i % 500)))
         FROM projects p, generate_series(1::bigint, {groups}) i;
         INSERT INTO events (project_id, event_id, group_id, date_added, expires_at)
         SELECT g.project_id, md5(g.id::text || '/' || k), g.id,
                g.last_seen - (k * interval '1 minute'), now() + interval '90 days'
         FROM groups g, generate_series(1, {per_group}) k;"
    ))?;
    // Outside the seeding transaction: VACUUM refuses to run inside one.
    c.batch_execute("VACUUM ANALYZE groups")?;
    c.batch_execute("VACUUM ANALYZE events")?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50, p99 and max of `ms`, sorted ascending.
fn summary(ms: &[f64]) -> serde_json::Value {
    json!({
        "p50_ms": (percentile(ms, 0.50) * 100.0).round() / 100.0,
        "p99_ms": (percentile(ms, 0.99) * 100.0).round() / 100.0,
        "max_ms": (ms.last().copied().unwrap_or(0.0) * 100.0).round() / 100.0,
    })
}

/// The `next` cursor of a `Link` header, when it has results.
fn next_cursor(link: &str) -> Option<String> {
    link.split(',')
        .find(|part| part.contains("rel=\"next\"") && part.contains("results=\"true\""))
        .and_then(|part| part.split("cursor=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
}

#[derive(QueryableByName)]
struct Ids {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    project_id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    organization_id: i64,
}

struct Case {
    name: &'static str,
    query: &'static str,
    sort: Sort,
    text: Vec<String>,
    /// Pages to skip before the measured one.
    page: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = |name: &str| format!("{}/{name}", args.bin_dir);
    let url = sluice_acceptance::fresh_database(&args.admin_url, "bench_api", "")?;
    let t = Instant::now();
    seed(&url, args.groups, args.events_per_group)?;
    eprintln!(
        "bench-api: seeded {} groups and {} events in {:.0} s",
        args.groups,
        u64::from(args.groups) * u64::from(args.events_per_group),
        t.elapsed().as_secs_f64()
    );

    let token_out = Command::new(bin("sluice"))
        .args(["token", "create", "bench"])
        .env("DATABASE_URL", &url)
        .output()?;
    anyhow::ensure!(token_out.status.success(), "sluice token create failed");
    let token = String::from_utf8(token_out.stdout)?
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();

    let port = sluice_testkit::process::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut api = Command::new(bin("sluice"))
        .args(["api", "--listen", &listen, "--no-webhooks"])
        .env("DATABASE_URL", &url)
        .env("LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = format!("http://{listen}/api/0/projects/bench/big/issues/");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(&base).bearer_auth(&token).send().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "sluice api did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut conn = PgConnection::establish(&url)?;
    let project = diesel::sql_query(
        "SELECT p.id AS project_id, p.organization_id FROM projects p WHERE p.slug = 'big'",
    )
    .get_result::<Ids>(&mut conn)?;
    let (org_id, project_id) = (project.organization_id, project.project_id);
    let cases = [
        Case {
            name: "unresolved_by_last_seen",
            query: "?query=is:unresolved&limit=100",
            sort: Sort::Date,
            text: vec![],
            page: 0,
        },
        Case {
            name: "unresolved_by_first_seen",
            query: "?query=is:unresolved&limit=100&sort=new",
            sort: Sort::New,
            text: vec![],
            page: 0,
        },
        Case {
            name: "unresolved_by_count",
            query: "?query=is:unresolved&limit=100&sort=freq",
            sort: Sort::Freq,
            text: vec![],
            page: 0,
        },
        Case {
            name: "unresolved_by_last_seen_page_5",
            query: "?query=is:unresolved&limit=100",
            sort: Sort::Date,
            text: vec![],
            page: 4,
        },
        Case {
            name: "title_search",
            query: "?query=is:unresolved%20failure%2012345&limit=100",
            sort: Sort::Date,
            text: vec!["failure".into(), "12345".into()],
            page: 0,
        },
    ];
    for case in cases {
        // The measured URL: the page reached by following `next` links.
        let mut path = format!("{base}{}", case.query);
        let mut at = Position::default();
        for _ in 0..case.page {
            let a = client.get(&path).bearer_auth(&token).send().await?;
            let link = a
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let cursor =
                next_cursor(&link).ok_or_else(|| anyhow::anyhow!("no next page: {link}"))?;
            path = format!("{base}{}&cursor={cursor}", case.query);
            // The direct baseline reads from the same position.
            at = read_position(&cursor);
        }
        let requests = if case.text.is_empty() {
            args.requests
        } else {
            (args.requests / 50).max(10)
        };
        let mut http = Vec::with_capacity(requests);
        let mut rows = 0;
        for _ in 0..requests {
            let t = Instant::now();
            let a = client.get(&path).bearer_auth(&token).send().await?;
            anyhow::ensure!(a.status() == 200, "{path}: {}", a.status());
            let items: Vec<serde_json::Value> = serde_json::from_slice(&a.bytes().await?)?;
            http.push(t.elapsed().as_secs_f64() * 1000.0);
            rows = items.len();
        }
        let filter = IssueFilter {
            organization_id: org_id,
            project_ids: Some(vec![project_id]),
            statuses: Some(vec![0]),
            types: None,
            text: case.text.clone(),
            ids: None,
            sort: case.sort,
        };
        let mut direct = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t = Instant::now();
            let page = read::issues(&mut conn, &filter, at, 101)?;
            let ids: Vec<i64> = page.iter().take(100).map(|g| g.id).collect();
            let now = chrono::Utc::now().timestamp();
            let since = chrono::DateTime::from_timestamp(now - now % 3600 - 23 * 3600, 0)
                .unwrap_or_else(chrono::Utc::now);
            read::event_counts(&mut conn, &ids, since, 3600)?;
            direct.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        http.sort_by(|a, b| a.total_cmp(b));
        direct.sort_by(|a, b| a.total_cmp(b));
        let ratio = ((percentile(&direct, 0.99) / percentile(&http, 0.99).max(1e-9)) * 100.0)
            .round()
            / 100.0;
        println!(
            "{}",
            json!({
                "bench": "api",
                "case": case.name,
                "groups": args.groups,
                "events": u64::from(args.groups) * u64::from(args.events_per_group),
                "requests": requests,
                "rows": rows,
                "http": summary(&http),
                "baseline_direct_sql": summary(&direct),
                "p99_ratio_baseline_over_http": ratio,
            })
        );
    }
    sluice_acceptance::stop(&mut api);
    Ok(())
}

/// The storage position a `next` cursor names (`score:offset:is_prev`; score 0 is the top).
fn read_position(cursor: &str) -> Position {
    let mut parts = cursor.split(':');
    let score = parts
        .next()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| *s != 0);
    let offset = parts
        .next()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    Position { score, offset }
}
