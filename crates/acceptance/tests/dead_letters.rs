//! `sluice dlq` through the binaries, against the mock broker, `ingest-consumer` and Postgres:
//! dead letters are listed and shown with their provenance and project, filtered by reason and
//! project, replayed to their original topic with a `sluice_replayed_from` header (never the
//! truncated ones), a dry run sends nothing, and a second replay of the same letters changes no
//! row: processing is idempotent, so each letter takes effect exactly once.

mod support;

use rdkafka::message::{Headers, Message};
use serde_json::Value;
use sluice_testkit::db::{count, issue_snapshot};
use sluice_testkit::{unique, Broker};
use std::time::Duration;
use support::*;

/// A dead letter to produce: key, value, headers.
type Letter = (String, Vec<u8>, Vec<(String, String)>);

fn produce_letters(broker: &Broker, letters: &[Letter]) -> anyhow::Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()?;
    for (k, v, hs) in letters {
        let headers = hs.iter().fold(OwnedHeaders::new(), |h, (hk, hv)| {
            h.insert(Header {
                key: hk,
                value: Some(hv),
            })
        });
        p.send(
            BaseRecord::to("ingest-events-dlq")
                .key(k)
                .payload(v)
                .headers(headers),
        )
        .map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
    }
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

fn dlq_cmd(broker: &Broker, args: &[&str]) -> anyhow::Result<(String, String)> {
    sluice_dlq(args, &[("KAFKA_BROKERS", &broker.bootstrap)])
}

#[test]
fn dead_letters_are_listed_filtered_and_replayed_exactly_once() -> anyhow::Result<()> {
    let broker = Broker::start(&INGEST_TOPICS)?;
    let db = migrated_db(
        "sluice",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o');
         INSERT INTO projects (id, organization_id, slug) VALUES (7, 1, 'a'), (8, 1, 'b');",
    )?;

    // Letters as the runtime leaves them after an incident: 20 events of project 7 and 10 of
    // project 8 that exhausted their retries, and one cut short as too large.
    let mut letters: Vec<Letter> = (0..30)
        .map(|n| {
            let project = if n < 20 { 7 } else { 8 };
            (
                eid(n),
                event(n, project),
                provenance(n as usize, "retry_exhausted"),
            )
        })
        .collect();
    let sent = letters.len();
    let mut cut = provenance(99, "too_large");
    cut.push(("truncated_from".into(), "70000000".into()));
    letters.push((eid(99), event(99, 7), cut));
    produce_letters(&broker, &letters)?;
    // And a real one: the consumer dead-letters a value that is not msgpack.
    produce(
        &broker,
        "ingest-events",
        &[("bad".into(), "not msgpack at all".into(), vec![])],
    )?;
    let group = unique("ing");
    let mut ingest = stage("ingest-consumer", &broker, &db.url, &group, &[])?;
    wait_committed_all(&broker, &group, "ingest-events")?;
    assert_eq!(broker.stored("ingest-events-dlq")?, sent + 2);

    // list: every letter, with reason, provenance and project.
    let (out, err) = dlq_cmd(&broker, &["list", "ingest-events"])?;
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), sent + 2, "{out}");
    assert!(
        err.contains(&format!("{} of {} dead letters", sent + 2, sent + 2)),
        "{err}"
    );
    let undecodable: Vec<&&str> = rows.iter().filter(|l| l.contains("undecodable")).collect();
    assert_eq!(undecodable.len(), 1, "{out}");
    assert!(undecodable[0].contains("ingest-events/0/0"), "{out}");
    assert!(undecodable[0].contains("not msgpack"), "{out}");

    // Filters: reason and project; JSON lines.
    let (out, _) = dlq_cmd(
        &broker,
        &[
            "list",
            "ingest-events-dlq",
            "--reason",
            "retry_exhausted",
            "--project",
            "8",
            "--json",
        ],
    )?;
    let json: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(json.len(), 10);
    assert!(json
        .iter()
        .all(|j| j["project_id"] == 8 && j["reason"] == "retry_exhausted"));

    // show: every header of one letter.
    let (out, _) = dlq_cmd(&broker, &["show", "ingest-events", "--at", "0:0"])?;
    let shown: Value = serde_json::from_str(&out)?;
    assert_eq!(shown["headers"]["sentry-trace"], "abc-def");
    assert_eq!(shown["error_detail"], "database statement timeout");

    // A dry run sends nothing.
    let before = broker.stored("ingest-events")?;
    let (out, _) = dlq_cmd(
        &broker,
        &[
            "replay",
            "ingest-events",
            "--reason",
            "retry_exhausted",
            "--reason",
            "too_large",
            "--dry-run",
        ],
    )?;
    assert!(
        out.contains(&format!(
            "{sent} of {} dead letters in ingest-events-dlq would be replayed, 1 skipped",
            sent + 2
        )),
        "{out}"
    );
    assert_eq!(broker.stored("ingest-events")?, before);
    assert_eq!(count(&db.url, "SELECT count(*) AS n FROM events")?, 0);

    // Replay: the letters go back to ingest-events (not the truncated one) and are processed.
    let (out, _) = dlq_cmd(
        &broker,
        &[
            "replay",
            "ingest-events",
            "--reason",
            "retry_exhausted",
            "--reason",
            "too_large",
        ],
    )?;
    assert!(
        out.contains(&format!("replayed to ingest-events: {sent}")),
        "{out}"
    );
    assert_eq!(broker.stored("ingest-events")?, before + sent);
    wait_committed_all(&broker, &group, "ingest-events")?;
    sluice_testkit::process::wait_for("replayed events grouped", Duration::from_secs(60), || {
        count(&db.url, "SELECT count(*) AS n FROM events")
            .ok()
            .filter(|n| *n == sent as i64)
    })?;
    let replayed = broker.read_all("ingest-events", before + sent, Duration::from_secs(20))?;
    let marked = replayed
        .iter()
        .filter(|m| {
            m.headers().is_some_and(|h| {
                h.iter().any(|h| {
                    h.key == "sluice_replayed_from"
                        && h.value
                            .is_some_and(|v| v.starts_with(b"ingest-events-dlq/0/"))
                })
            }) && m
                .headers()
                .is_some_and(|h| h.iter().all(|h| h.key != "reason"))
        })
        .count();
    assert_eq!(
        marked, sent,
        "each replay names its letter and drops the provenance"
    );
    let first = issue_snapshot(&db.url)?;

    // The same letters replayed again: nothing changes.
    dlq_cmd(
        &broker,
        &["replay", "ingest-events", "--reason", "retry_exhausted"],
    )?;
    assert_eq!(broker.stored("ingest-events")?, before + 2 * sent);
    wait_committed_all(&broker, &group, "ingest-events")?;
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM events")?,
        sent as i64
    );
    sluice_testkit::db::assert_same_rows(
        &issue_snapshot(&db.url)?,
        &first,
        "after a second replay",
    );
    stop_cleanly(&mut ingest)?;
    Ok(())
}
