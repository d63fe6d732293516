//! `occurrence-consumer` end to end: a stream of occurrences, status changes and regressing
//! occurrences through the mock broker into PostgreSQL. Replaying from offset 0 and splitting
//! the work between two consumers both leave every table as one pass did.

mod support;

use serde_json::json;
use sluice_testkit::process::Proc;
use sluice_testkit::{unique, Broker, TestDb};
use std::time::Duration;
use support::*;

const TOPIC: &str = "ingest-occurrences";

fn occurrence(n: u32, fp: &str, detect: f64) -> String {
    let event_id = format!("{:032x}", 0xe000_0000u64 + u64::from(n));
    json!({
        "id": format!("{n:032x}"), "project_id": 42, "event_id": event_id, "fingerprint": [fp],
        "issue_title": format!("{fp} title {n}"), "subtitle": "sub", "culprit": format!("c{n}"), "type": 1001,
        "detection_time": detect, "level": "error",
        "event": {"event_id": event_id, "project_id": 42, "platform": "python", "timestamp": detect, "tags": [["a", "b"]]},
    })
    .to_string()
}

fn status(id: &str, fp: &str, st: i32, sub: Option<i32>) -> String {
    json!({"payload_type": "status_change", "id": id, "project_id": 42, "fingerprint": [fp], "new_status": st, "new_substatus": sub})
        .to_string()
}

fn stream() -> Vec<Out> {
    let mut out = Vec::new();
    let mut n = 0;
    let key = |fp: &str| format!("{fp}-42");
    for round in 0..3 {
        for f in 0..20 {
            n += 1;
            let fp = format!("fp{f}");
            out.push((
                key(&fp),
                occurrence(n, &fp, 1_795_432_000.0 + f64::from(round * 100 + f)),
                vec![],
            ));
        }
    }
    for f in 0..10 {
        let fp = format!("fp{f}");
        out.push((key(&fp), status(&format!("res-{f}"), &fp, 1, None), vec![]));
    }
    for f in 10..15 {
        let fp = format!("fp{f}");
        out.push((
            key(&fp),
            status(&format!("ign-{f}"), &fp, 2, Some(5)),
            vec![],
        ));
    }
    for f in 0..5 {
        n += 1;
        let fp = format!("fp{f}");
        out.push((
            key(&fp),
            occurrence(n, &fp, 1_795_433_000.0 + f64::from(f)),
            vec![],
        ));
    }
    out.push(("bad-42".into(), "{not json".into(), vec![]));
    out.push((
        "x-42".into(),
        occurrence(999, "x", 1.0).replace("1001", "300"),
        vec![],
    ));
    out
}

fn consumer(broker: &Broker, db: &str, group: &str) -> anyhow::Result<Proc> {
    let topics = [
        "--occurrences-topic",
        &broker.topic(TOPIC),
        "--outcomes-topic",
        &broker.topic("outcomes"),
    ];
    stage("occurrence-consumer", broker, db, group, &topics)
}

fn database() -> anyhow::Result<TestDb> {
    migrated_db(
        "occurrence-consumer",
        "INSERT INTO organizations (id, slug) VALUES (1, 'acme'); \
         INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'web');",
    )
}

use sluice_testkit::db::{assert_same_rows as assert_same, issue_snapshot as snapshot};

fn run_until_committed(
    broker: &Broker,
    db: &str,
    group: &str,
    consumers: usize,
) -> anyhow::Result<()> {
    let mut procs = (0..consumers)
        .map(|_| consumer(broker, db, group))
        .collect::<Result<Vec<_>, _>>()?;
    wait_committed_all(broker, group, &broker.topic(TOPIC))?;
    for p in &mut procs {
        p.signal("TERM")?;
        assert_eq!(p.wait_timeout(Duration::from_secs(30))?.code(), Some(0));
    }
    Ok(())
}

#[test]
fn replay_and_two_consumers_reach_the_state_of_one_pass() -> anyhow::Result<()> {
    let broker = Broker::start(&[(TOPIC, 8), ("ingest-occurrences-dlq", 1), ("outcomes", 1)])?;
    let msgs = stream();
    produce(&broker, &broker.topic(TOPIC), &msgs)?;

    let one = database()?;
    run_until_committed(&broker, &one.url, &unique("occ"), 1)?;
    let first = snapshot(&one.url)?;
    assert_eq!(
        first.iter().filter(|r| r.starts_with("0:")).count(),
        20,
        "20 groups"
    );
    let groups: Vec<&String> = first.iter().filter(|r| r.starts_with("0:")).collect();
    assert!(
        groups
            .iter()
            .any(|g| g.contains("\"times_seen\":4") && g.contains("\"substatus\":6")),
        "fp0..4 regressed"
    );
    assert!(
        groups
            .iter()
            .any(|g| g.contains("\"status\":2") && g.contains("\"substatus\":5")),
        "fp10..14 ignored"
    );
    let dlq = broker.read_all(
        &broker.topic("ingest-occurrences-dlq"),
        2,
        Duration::from_secs(20),
    )?;
    assert_eq!(dlq.len(), 2, "the malformed and the unknown-type message");

    // Replay the whole topic from offset 0 with a new group into the same database.
    run_until_committed(&broker, &one.url, &unique("occ-replay"), 1)?;
    assert_same(&snapshot(&one.url)?, &first, "a replay changes nothing");

    // Two consumers in one group over 8 partitions, into a fresh database.
    let two = database()?;
    run_until_committed(&broker, &two.url, &unique("occ-two"), 2)?;
    assert_same(
        &snapshot(&two.url)?,
        &first,
        "two consumers reach the state of one",
    );
    Ok(())
}

/// With noise reduction on, occurrences held back before a new issue is created are reported
/// on the outcomes topic as RATE_LIMITED once each; a replay reports nothing again.
#[test]
fn held_back_occurrences_are_reported_once_as_rate_limited() -> anyhow::Result<()> {
    use rdkafka::Message;
    let broker = Broker::start(&[(TOPIC, 2), ("ingest-occurrences-dlq", 1), ("outcomes", 1)])?;
    // Type 1006 creates its issue at the third occurrence within 24 h.
    let msgs: Vec<Out> = (1..=3)
        .map(|n| {
            let v = occurrence(n, "noisy", 1_795_432_000.0 + f64::from(n)).replace("1001", "1006");
            ("noisy-42".to_owned(), v, vec![])
        })
        .collect();
    produce(&broker, &broker.topic(TOPIC), &msgs)?;
    let db = database()?;
    let env = [(
        "SLUICE_ISSUES__NOISE_REDUCTION".to_owned(),
        "true".to_owned(),
    )];
    let topics = [
        "--occurrences-topic",
        &broker.topic(TOPIC),
        "--outcomes-topic",
        &broker.topic("outcomes"),
    ];
    for group in [unique("noise"), unique("noise-replay")] {
        let mut p = stage_env(
            "occurrence-consumer",
            &broker,
            &db.url,
            &group,
            &topics,
            &env,
        )?;
        wait_committed_all(&broker, &group, &broker.topic(TOPIC))?;
        p.signal("TERM")?;
        assert_eq!(p.wait_timeout(Duration::from_secs(30))?.code(), Some(0));
    }
    let outcomes: Vec<serde_json::Value> = broker
        .read_all(
            &broker.topic("outcomes"),
            usize::MAX,
            Duration::from_secs(20),
        )?
        .iter()
        .filter_map(|m| serde_json::from_slice(m.payload()?).ok())
        .collect();
    let reported: Vec<(String, u64, String)> = outcomes
        .iter()
        .map(|o| {
            (
                o["event_id"].as_str().unwrap_or_default().to_owned(),
                o["outcome"].as_u64().unwrap_or(99),
                o["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let held = |n: u64| {
        (
            format!("{:032x}", 0xe000_0000u64 + n),
            2,
            "noise_reduction".to_owned(),
        )
    };
    assert_eq!(
        reported,
        vec![held(1), held(2)],
        "two held back, each reported once"
    );
    let groups: Vec<String> = snapshot(&db.url)?
        .into_iter()
        .filter(|r| r.starts_with("0:"))
        .collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert!(groups[0].contains("\"times_seen\":1"), "{groups:?}");
    Ok(())
}
