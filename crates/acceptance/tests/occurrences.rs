//! `occurrence-consumer` end to end: a stream of occurrences, status changes and regressing
//! occurrences through the mock broker into PostgreSQL. Replaying from offset 0 and splitting
//! the work between two consumers both leave every table as one pass did.

mod support;

use diesel::prelude::*;
use diesel::sql_types::Text;
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

/// Every table, by natural keys (no generated ids, no wall-clock columns).
fn snapshot(url: &str) -> anyhow::Result<Vec<String>> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Text)]
        s: String,
    }
    let queries = [
        "SELECT h.hash, g.type, g.status, g.substatus, g.priority, g.level, g.title, g.culprit, g.message, g.times_seen, \
         g.first_seen, g.last_seen, g.last_occurrence_id, g.data FROM groups g JOIN group_hashes h ON h.group_id = g.id",
        "SELECT o.id, o.event_id, o.type, o.data, h.hash FROM occurrences o LEFT JOIN group_hashes h ON h.group_id = o.group_id",
        "SELECT e.project_id, e.event_id, e.data, h.hash FROM events e LEFT JOIN group_hashes h ON h.group_id = e.group_id",
        "SELECT h.hash, a.type, a.data, row_number() OVER (PARTITION BY a.group_id ORDER BY a.id) FROM activities a \
         JOIN group_hashes h ON h.group_id = a.group_id",
        "SELECT h.hash, gh.status, row_number() OVER (PARTITION BY gh.group_id ORDER BY gh.id) FROM group_history gh \
         JOIN group_hashes h ON h.group_id = gh.group_id",
        "SELECT s.id, h.hash FROM applied_status_changes s JOIN group_hashes h ON h.group_id = s.group_id",
    ];
    let mut c = PgConnection::establish(url)?;
    let mut out = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let mut rows: Vec<String> =
            diesel::sql_query(format!("SELECT row_to_json(q)::text AS s FROM ({q}) q"))
                .load::<R>(&mut c)?
                .into_iter()
                .map(|r| format!("{i}:{}", r.s))
                .collect();
        rows.sort();
        out.extend(rows);
    }
    Ok(out)
}

fn assert_same(actual: &[String], expected: &[String], what: &str) {
    let missing: Vec<&String> = expected.iter().filter(|r| !actual.contains(r)).collect();
    let extra: Vec<&String> = actual.iter().filter(|r| !expected.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:#?}\nextra {extra:#?}"
    );
}

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
