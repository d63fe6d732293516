//! The demo's driver: provisions the demo organization and project, feeds the mixed stream
//! (`sluice_acceptance::stream`: Relay's messages to the ingest topics, then occurrences and
//! status changes through producer-shim's HTTP API), waits until the pipeline has processed it,
//! and prints the groups, attachments, user reports, outcomes and dead letters.
//!
//! Usage: demo-feed --brokers HOST:PORT --database-url URL [--shim 127.0.0.1:8300] [--wait-secs 120]

use clap::Parser;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use rdkafka::Message;
use sluice_acceptance::stream;
use sluice_testkit::Broker;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: String,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, default_value = "127.0.0.1:8300")]
    shim: String,
    /// How long to wait for the pipeline to reach the stream's expected groups.
    #[arg(long, default_value_t = 120)]
    wait_secs: u64,
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

fn lines(c: &mut PgConnection, sql: &str) -> QueryResult<Vec<String>> {
    Ok(diesel::sql_query(sql)
        .load::<Line>(c)?
        .into_iter()
        .map(|l| l.line)
        .collect())
}

fn type_name(t: i32) -> &'static str {
    sluice_core::issues::grouptype::get(t)
        .map(|g| g.slug)
        .unwrap_or("unknown")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut c = PgConnection::establish(&args.database_url)?;
    c.batch_execute(stream::SETUP)?;
    let m = stream::mixed();
    let statuses = stream::feed(&args.brokers, &args.shim)?;
    println!(
        "fed {} messages to ingest-attachments and {} to ingest-events; producer-shim answered {:?} \
         (202 = acknowledged by Kafka, 201 = processed directly) for {} occurrences and {} status changes",
        m.attachments.len(),
        m.events.len(),
        statuses,
        m.occurrences.len(),
        m.status_changes.len()
    );

    let expected = stream::expected_group_lines();
    let started = Instant::now();
    // Done when every stage has committed all of its input (so a re-run, whose groups already
    // exist, still waits for its messages) and the groups are the expected ones.
    let inputs = [
        ("ingest-consumer", "ingest-events"),
        ("ingest-consumer", "ingest-attachments"),
        ("feedback-worker", "ingest-feedback-events"),
        ("occurrence-consumer", "ingest-occurrences"),
    ];
    let reached = loop {
        let mut committed = true;
        for (group, topic) in inputs {
            committed &= sluice_acceptance::committed_all(&args.brokers, group, topic)?;
        }
        if committed && stream::groups(&mut c)? == expected {
            break true;
        }
        if started.elapsed() > Duration::from_secs(args.wait_secs) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "\n== groups ({}, after {:.1} s)",
        if reached {
            "as expected"
        } else {
            "NOT the expected state yet"
        },
        started.elapsed().as_secs_f64()
    );
    #[derive(QueryableByName)]
    struct Issue {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        group_type: i32,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = BigInt)]
        times_seen: i64,
        #[diesel(sql_type = Text)]
        priority: String,
        #[diesel(sql_type = Text)]
        release: String,
        #[diesel(sql_type = Text)]
        environments: String,
        #[diesel(sql_type = Text)]
        title: String,
    }
    let issues: Vec<Issue> = diesel::sql_query(
        "SELECT g.type AS group_type, \
                CASE g.status WHEN 0 THEN 'unresolved' WHEN 1 THEN 'resolved' WHEN 2 THEN 'ignored' \
                  ELSE g.status::text END AS status, \
                g.times_seen, \
                CASE g.priority WHEN 25 THEN 'low' WHEN 50 THEN 'medium' WHEN 75 THEN 'high' \
                  ELSE g.priority::text END AS priority, \
                coalesce(g.first_release, '-') AS release, \
                coalesce((SELECT string_agg(e.environment, ',' ORDER BY e.environment) \
                          FROM group_environments e WHERE e.group_id = g.id AND e.environment <> ''), '-') \
                  AS environments, \
                g.title \
         FROM groups g ORDER BY 1, 2, 3, 7",
    )
    .load(&mut c)?;
    println!(
        "{:<36} {:<11} {:>10}  {:<8} {:<12} {:<12} title",
        "type", "status", "times_seen", "priority", "release", "environment"
    );
    for i in issues {
        println!(
            "{:<36} {:<11} {:>10}  {:<8} {:<12} {:<12} {}",
            type_name(i.group_type),
            i.status,
            i.times_seen,
            i.priority,
            i.release,
            i.environments,
            i.title
        );
    }

    println!("\n== attachments");
    for l in lines(
        &mut c,
        "SELECT format('%s  %s  %s bytes  sha1 %s  group %s  %s', attachment_id, name, size, sha1, \
         coalesce(group_id::text, '-'), coalesce(blob_path, '(empty)')) AS line \
         FROM event_attachments ORDER BY attachment_id",
    )? {
        println!("{l}");
    }
    println!("\n== user reports");
    for l in lines(
        &mut c,
        "SELECT format('%s <%s>: %s  group %s  feedback %s', name, email, comments, \
         coalesce(group_id::text, '-'), coalesce(feedback_event_id::text, '-')) AS line \
         FROM user_reports ORDER BY name",
    )? {
        println!("{l}");
    }

    let broker = Broker::existing(&args.brokers);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for msg in broker.read_all("outcomes", usize::MAX, Duration::from_secs(10))? {
        let Some(v) = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        else {
            continue;
        };
        let outcome = match v["outcome"].as_u64() {
            Some(0) => "accepted",
            Some(1) => "filtered",
            Some(2) => "rate_limited",
            Some(3) => "invalid",
            _ => "other",
        };
        let category = match v["category"].as_u64() {
            Some(4) => "attachment",
            Some(14) => "user_report_v2",
            Some(1) => "error",
            _ => "other",
        };
        let reason = v["reason"].as_str().unwrap_or("-");
        *counts
            .entry(format!("{outcome:<13} {category:<15} {reason}"))
            .or_default() += 1;
    }
    println!("\n== outcomes (outcome, category, reason: count)");
    for (k, n) in &counts {
        println!("{k}: {n}");
    }
    println!("\n== dead-letter queues");
    for topic in [
        "ingest-events-dlq",
        "ingest-attachments-dlq",
        "ingest-feedback-events-dlq",
        "ingest-occurrences-dlq",
    ] {
        let reasons = broker.dlq_reasons(topic)?;
        println!("{topic:<28} {} {:?}", reasons.len(), reasons);
    }
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = Nullable<BigInt>)]
        n: Option<i64>,
    }
    let events: Count = diesel::sql_query("SELECT count(*) AS n FROM events").get_result(&mut c)?;
    println!("\nevents stored: {}", events.n.unwrap_or(0));
    anyhow::ensure!(
        reached,
        "the pipeline did not reach the expected groups within {} s",
        args.wait_secs
    );
    Ok(())
}
