//! The whole pipeline end to end: the four binaries as separate processes against the mock
//! broker, PostgreSQL and `s3s-fs`, fed the demo's mixed stream (`sluice_acceptance::stream`).
//! Asserts the exact final state: groups and statuses, attachment bytes read back from S3, user
//! reports with their groups, the distinct outcomes, and DLQs holding exactly the bad messages.
//! Feeding the stream a second time changes nothing.

mod support;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use rdkafka::Message;
use serde_json::Value;
use sluice_acceptance::stream;
use sluice_core::objects::Objects;
use sluice_testkit::paths::existing_bin;
use sluice_testkit::process::{free_port, wait_for, Proc};
use sluice_testkit::{Broker, S3Server};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const TOPICS: [(&str, i32); 9] = [
    ("ingest-events", 2),
    ("ingest-events-dlq", 1),
    ("ingest-attachments", 2),
    ("ingest-attachments-dlq", 1),
    ("ingest-feedback-events", 2),
    ("ingest-feedback-events-dlq", 1),
    ("ingest-occurrences", 2),
    ("ingest-occurrences-dlq", 1),
    ("outcomes", 1),
];

fn groups(url: &str) -> anyhow::Result<Vec<stream::GroupLine>> {
    Ok(stream::groups(&mut PgConnection::establish(url)?)?)
}

#[derive(QueryableByName, Debug)]
struct Stored {
    #[diesel(sql_type = Text)]
    attachment_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    blob_path: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    group_id: Option<i64>,
}

#[derive(QueryableByName, Debug)]
struct Report {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    group_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    feedback_event_id: Option<String>,
}

fn shim(broker: &Broker, db: &str) -> anyhow::Result<(Proc, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(existing_bin("producer-shim")?);
    cmd.env("KAFKA_BROKERS", &broker.bootstrap)
        .env("DATABASE_URL", db)
        .args(["serve", "--listen", &addr])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port()?)])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let proc = Proc::spawn("producer-shim", cmd)?;
    wait_for("producer-shim listening", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&addr).ok()
    })?;
    Ok((proc, addr))
}

/// Distinct outcomes as `event_id/category/outcome/reason`.
fn outcomes(broker: &Broker) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = broker
        .read_all("outcomes", usize::MAX, Duration::from_secs(20))?
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(m.payload()?).ok())
        .map(|o| {
            format!(
                "{}/{}/{}/{}",
                o["event_id"].as_str().unwrap_or("-"),
                o["category"],
                o["outcome"],
                o["reason"].as_str().unwrap_or("-")
            )
        })
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Waits until every stage committed all of its input.
fn wait_all_committed(broker: &Broker) -> anyhow::Result<()> {
    for (group, topic) in [
        ("ingest", "ingest-events"),
        ("ingest", "ingest-attachments"),
        ("feedback", "ingest-feedback-events"),
        ("occurrences", "ingest-occurrences"),
    ] {
        wait_committed_all(broker, group, topic)?;
    }
    Ok(())
}

#[test]
fn mixed_stream_through_all_four_processes() -> anyhow::Result<()> {
    let broker = Broker::start(&TOPICS)?;
    anyhow::ensure!(broker.is_mock(), "uses the default topic names");
    let s3 = S3Server::start("sluice")?;
    let db = migrated_db("ingest-consumer", stream::SETUP)?;
    let mut env = s3.env();
    env.push(("OBJECT_STORE_URL".into(), s3.url("attachments")));
    let _ingest = stage_env("ingest-consumer", &broker, &db.url, "ingest", &[], &env)?;
    let _feedback = stage("feedback-worker", &broker, &db.url, "feedback", &[])?;
    let _occurrences = stage("occurrence-consumer", &broker, &db.url, "occurrences", &[])?;
    let (_shim, addr) = shim(&broker, &db.url)?;

    let statuses = stream::feed(&broker.bootstrap, &addr)?;
    assert_eq!(statuses, vec![202, 202], "acknowledged by Kafka");

    let expected = stream::expected_group_lines();
    let settled = wait_for("the expected groups", Duration::from_secs(90), || {
        groups(&db.url).ok().filter(|g| *g == expected)
    });
    assert_eq!(groups(&db.url)?, expected, "{settled:?}");
    wait_all_committed(&broker)?;

    // Attachments: the chunked log of event 1 and the standalone screenshot of event 2, with
    // their groups, read back from S3.
    let stored: Vec<Stored> = diesel::sql_query(
        "SELECT attachment_id, blob_path, group_id FROM event_attachments ORDER BY attachment_id",
    )
    .load(&mut db.connect()?)?;
    assert_eq!(stored.len(), 2, "{stored:?}");
    let objects = Objects::from_url_with(&s3.url("attachments"), s3.env())?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut bodies = Vec::new();
    for a in &stored {
        assert!(a.group_id.is_some(), "{a:?} has its group");
        let path = a.blob_path.clone().unwrap_or_default();
        let body = rt.block_on(objects.get(&path))?.unwrap_or_default();
        bodies.push((a.attachment_id.clone(), String::from_utf8(body.to_vec())?));
    }
    assert_eq!(
        bodies,
        vec![
            ("log-1".to_owned(), "Hello World!".to_owned()),
            ("shot-2".to_owned(), "screen".to_owned())
        ]
    );

    // User reports: one before its event, one after; both grouped and shimmed once.
    let reports: Vec<Report> = diesel::sql_query(
        "SELECT name, group_id, feedback_event_id::text AS feedback_event_id FROM user_reports ORDER BY name",
    )
    .load(&mut db.connect()?)?;
    assert_eq!(
        reports.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["Ann", "Bea"]
    );
    assert!(
        reports
            .iter()
            .all(|r| r.group_id.is_some() && r.feedback_event_id.is_some()),
        "{reports:?}"
    );

    // Outcomes: the four error events, the two attachments and the four feedbacks (two sent as
    // feedback, two shimmed from user reports) accepted, once each, and nothing else.
    let e = stream::event_id;
    let shimmed = |n| sluice_core::ids::shimmed_feedback_event_id(stream::PROJECT, &e(n));
    let mut want = vec![
        format!("{}/1/0/-", e(1)),
        format!("{}/1/0/-", e(2)),
        format!("{}/1/0/-", e(3)),
        format!("{}/1/0/-", e(4)),
        format!("{}/4/0/-", e(1)),
        format!("{}/4/0/-", e(2)),
        format!("{}/14/0/-", e(6)),
        format!("{}/14/0/-", e(7)),
        format!("{}/14/0/-", shimmed(1)),
        format!("{}/14/0/-", shimmed(3)),
    ];
    want.sort();
    assert_eq!(outcomes(&broker)?, want);
    assert_eq!(broker.stored("outcomes")?, want.len(), "each outcome once");

    // DLQs: exactly the two bad messages.
    assert_eq!(
        broker.dlq_reasons("ingest-events-dlq")?,
        vec!["undecodable"]
    );
    assert_eq!(
        broker.dlq_reasons("ingest-attachments-dlq")?,
        vec!["missing_field"]
    );
    assert!(broker.dlq_reasons("ingest-feedback-events-dlq")?.is_empty());
    assert!(broker.dlq_reasons("ingest-occurrences-dlq")?.is_empty());

    // Feeding the same stream again changes nothing.
    let before = sluice_testkit::db::issue_snapshot(&db.url)?;
    let outcome_count = broker.stored("outcomes")?;
    stream::feed(&broker.bootstrap, &addr)?;
    wait_all_committed(&broker)?;
    sluice_testkit::db::assert_same_rows(
        &sluice_testkit::db::issue_snapshot(&db.url)?,
        &before,
        "a second feed",
    );
    assert_eq!(groups(&db.url)?, expected);
    assert_eq!(
        broker.stored("outcomes")?,
        outcome_count,
        "no outcome twice"
    );
    Ok(())
}
