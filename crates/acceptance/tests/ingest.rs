//! `ingest-consumer` end to end with `occurrence-consumer`, Postgres, the mock broker and
//! `s3s-fs`: Relay's real captures replayed in order with their keys, and the scenarios of
//! Sentry's ingest tests (chunked, missing, empty, inline and unsupported attachments; user
//! reports before their event and duplicated; bad messages to the DLQ; grouping). Replaying both
//! ingest topics from offset 0 changes no table and emits no second outcome.

mod support;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use futures::StreamExt;
use rdkafka::Message;
use serde_json::{json, Value};
use sluice_core::messages::{
    AttachmentChunk, AttachmentMessage, ChunkedAttachment, DlqHeaders, EventMessage, IngestMessage,
    Timestamp, UserReportMessage,
};
use sluice_core::objects::Objects;
use sluice_testkit::{unique, Broker, S3Server};
use std::time::Duration;
use support::*;

const TOPICS: [(&str, i32); 9] = [
    ("ingest-events", 2),
    ("ingest-events-dlq", 1),
    ("ingest-attachments", 2),
    ("ingest-attachments-dlq", 1),
    ("ingest-feedback-events", 1),
    ("ingest-occurrences", 2),
    ("ingest-occurrences-dlq", 1),
    ("outcomes", 1),
    ("outcomes-billing", 1),
];
const START: f64 = 1_795_432_200.0;
const P: u64 = 7;

fn ts(secs: f64) -> Timestamp {
    Timestamp::from_epoch_secs(secs).unwrap_or_else(|e| panic!("{e}"))
}

fn eid(n: u32) -> String {
    format!("{:032x}", 0xabc0_0000u64 + u64::from(n))
}

fn relay(file: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let dir = format!(
        "{}/../core/tests/fixtures/relay-26.9.0",
        env!("CARGO_MANIFEST_DIR")
    );
    Ok((
        std::fs::read(format!("{dir}/{file}.key.bin"))?,
        std::fs::read(format!("{dir}/{file}.bin"))?,
    ))
}

fn error_event(n: u32, ty: &str, value: &str, attachments: Vec<ChunkedAttachment>) -> Vec<u8> {
    let id = eid(n);
    let body = json!({"event_id": id, "type": "error", "platform": "python", "level": "error",
        "timestamp": START - 10.0, "contexts": {"trace": {"trace_id": "abcd"}},
        "exception": {"values": [{"type": ty, "value": value, "stacktrace": {"frames": [
            {"module": "app.cart", "function": "checkout", "in_app": true, "lineno": n}]}}]}});
    IngestMessage::Event(EventMessage {
        payload: body.to_string().into_bytes(),
        start_time: ts(START),
        event_id: id,
        project_id: P,
        remote_addr: None,
        attachments,
    })
    .encode()
}

fn att(
    id: &str,
    name: &str,
    chunks: Option<u32>,
    data: Option<&[u8]>,
    ty: &str,
) -> ChunkedAttachment {
    ChunkedAttachment {
        id: id.into(),
        name: name.into(),
        content_type: None,
        attachment_type: ty.into(),
        chunks,
        data: data.map(<[u8]>::to_vec),
        stored_id: None,
        size: None,
        rate_limited: false,
        retention_days: None,
    }
}

fn chunk(event: u32, id: &str, index: u32, body: &[u8]) -> Vec<u8> {
    IngestMessage::AttachmentChunk(AttachmentChunk {
        payload: body.to_vec(),
        event_id: eid(event),
        project_id: P,
        id: id.into(),
        chunk_index: index,
    })
    .encode()
}

fn standalone(event: u32, a: ChunkedAttachment) -> Vec<u8> {
    IngestMessage::Attachment(AttachmentMessage {
        event_id: eid(event),
        project_id: P,
        attachment: a,
    })
    .encode()
}

fn report(event: u32, comments: &str, start: f64) -> Vec<u8> {
    IngestMessage::UserReport(UserReportMessage {
        project_id: P,
        start_time: ts(start),
        payload: json!({"event_id": eid(event), "name": "Ann", "email": "ann@example.com", "comments": comments})
            .to_string()
            .into_bytes(),
        event_id: None,
    })
    .encode()
}

/// Every table the ingest path writes, by natural keys, as sorted text lines.
fn snapshot(url: &str) -> anyhow::Result<Vec<String>> {
    #[derive(QueryableByName)]
    struct L {
        #[diesel(sql_type = Text)]
        line: String,
    }
    let mut c = PgConnection::establish(url)?;
    let q = "SELECT 'event ' || project_id || ' ' || event_id || ' ' || coalesce((SELECT hash FROM group_hashes h WHERE h.group_id = e.group_id LIMIT 1), '-') AS line FROM events e \
             UNION ALL SELECT 'attachment ' || project_id || ' ' || event_id || ' ' || attachment_id || ' ' || type || ' ' || name || ' ' || content_type || ' ' || size || ' ' || sha1 || ' ' || coalesce(blob_path, '-') || ' ' || (group_id IS NOT NULL) FROM event_attachments \
             UNION ALL SELECT 'report ' || project_id || ' ' || event_id || ' ' || name || ' ' || email || ' ' || comments || ' ' || coalesce(feedback_event_id, '-') || ' ' || (group_id IS NOT NULL) FROM user_reports \
             UNION ALL SELECT 'group ' || g.project_id || ' ' || h.hash || ' ' || g.type || ' ' || g.status || ' ' || g.times_seen || ' ' || g.title FROM groups g JOIN group_hashes h ON h.group_id = g.id \
             UNION ALL SELECT 'occurrence ' || id || ' ' || event_id FROM occurrences \
             UNION ALL SELECT 'chunks ' || count(*) FROM attachment_chunks";
    let mut lines: Vec<String> = diesel::sql_query(q)
        .load::<L>(&mut c)?
        .into_iter()
        .map(|l| l.line)
        .collect();
    lines.sort();
    Ok(lines)
}

fn json_values(broker: &Broker, topic: &str) -> anyhow::Result<Vec<Value>> {
    Ok(broker
        .read_all(topic, 1000, Duration::from_secs(20))?
        .iter()
        .filter_map(|m| serde_json::from_slice(m.payload().unwrap_or_default()).ok())
        .collect())
}

#[test]
fn relay_captures_and_ingest_scenarios_end_to_end() -> anyhow::Result<()> {
    let broker = Broker::start(&TOPICS)?;
    anyhow::ensure!(broker.is_mock(), "uses the default topic names");
    let s3 = S3Server::start("sluice")?;
    let db = migrated_db(
        "ingest-consumer",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o');
         INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'relay'), (7, 1, 'hand');",
    )?;

    // Relay's captures, in production order, with their keys.
    let mut attachments_topic = vec![
        relay("ingest-attachments/000")?,
        relay("ingest-attachments/001")?,
        relay("ingest-attachments/006")?,
        relay("ingest-attachments/007")?,
    ];
    let mut events_topic = vec![
        relay("ingest-events/000")?,
        relay("ingest-feedback-events/000")?,
    ];
    let feedback_fixture = events_topic[1].1.clone();

    // Sentry's scenarios, project 7.
    let k = |n: u32| eid(n).into_bytes();
    attachments_topic.extend([
        // A report before its event; a duplicate within 5 minutes updates it; one 10 minutes
        // later is refused.
        (k(1), report(1, "first words", START)),
        (k(1), report(1, "second words", START + 60.0)),
        (k(1), report(1, "too late", START + 600.0)),
        // Chunks, then the event listing them.
        (k(1), chunk(1, "att-1", 0, b"Hello ")),
        (k(1), chunk(1, "att-1", 1, b"World!")),
        (
            k(1),
            error_event(
                1,
                "ValueError",
                "bad cart 1",
                vec![att("att-1", "lol.txt", Some(2), None, "event.attachment")],
            ),
        ),
        // Standalone attachments: chunks missing, zero-length, inline, unsupported type, a
        // hostile name.
        (
            k(2),
            standalone(
                2,
                att("missing", "foo.txt", Some(123), None, "event.attachment"),
            ),
        ),
        (
            k(2),
            standalone(
                2,
                att("empty", "foo.txt", Some(0), None, "event.attachment"),
            ),
        ),
        (
            k(2),
            standalone(
                2,
                att(
                    "inline",
                    "foo.txt",
                    None,
                    Some(b"inline bytes"),
                    "event.view_hierarchy",
                ),
            ),
        ),
        (
            k(2),
            standalone(
                2,
                att("dump", "foo.dmp", None, Some(b"MDMP"), "event.minidump"),
            ),
        ),
        (k(2), chunk(2, "../../x", 0, b"evil")),
        (
            k(2),
            standalone(
                2,
                att("../../x", "../../x", Some(1), None, "event.attachment"),
            ),
        ),
    ]);
    // A 10 MB attachment in 1 MiB chunks, as Relay sends it.
    let big_body: Vec<u8> = (0..10_000_000u32).map(|i| (i % 253) as u8).collect();
    for (i, part) in big_body.chunks(1 << 20).enumerate() {
        attachments_topic.push((k(8), chunk(8, "big", i as u32, part)));
    }
    attachments_topic.push((
        k(8),
        error_event(
            8,
            "KeyError",
            "cart",
            vec![att("big", "core.bin", Some(10), None, "event.attachment")],
        ),
    ));
    // Same type and in-app stack → one group; another type → another group.
    events_topic.extend([
        (k(2), error_event(2, "ValueError", "bad cart 2", vec![])),
        (k(3), error_event(3, "ValueError", "bad cart 3", vec![])),
        (k(4), error_event(4, "KeyError", "cart", vec![])),
        (
            k(5),
            IngestMessage::Event(EventMessage {
                payload: json!({"event_id": eid(5), "type": "transaction"})
                    .to_string()
                    .into_bytes(),
                start_time: ts(START),
                event_id: eid(5),
                project_id: P,
                remote_addr: None,
                attachments: vec![],
            })
            .encode(),
        ),
        // Bad input.
        (b"bogus".to_vec(), b"bogus message".to_vec()),
        (
            b"empty".to_vec(),
            IngestMessage::Event(EventMessage {
                payload: b"{}".to_vec(),
                start_time: ts(START),
                event_id: eid(6),
                project_id: P,
                remote_addr: None,
                attachments: vec![],
            })
            .encode(),
        ),
        (
            b"unsupported".to_vec(),
            rmp_like_map(&[("type", "unsupported type"), ("event_id", &eid(7))]),
        ),
    ]);
    send_keyed(&broker, "ingest-attachments", &attachments_topic)?;
    send_keyed(&broker, "ingest-events", &events_topic)?;

    let env = s3.env();
    let url = s3.url("attachments");
    let (ing_group, occ_group) = (unique("ing"), unique("occ"));
    let store_flag = ["--object-store-url", url.as_str()];
    let mut ingest = stage_env(
        "ingest-consumer",
        &broker,
        &db.url,
        &ing_group,
        &store_flag,
        &env,
    )?;
    let mut occ = stage("occurrence-consumer", &broker, &db.url, &occ_group, &[])?;
    wait_committed_all(&broker, &ing_group, "ingest-events")?;
    wait_committed_all(&broker, &ing_group, "ingest-attachments")?;
    wait_committed_all(&broker, &occ_group, "ingest-occurrences")?;

    let mut c = PgConnection::establish(&db.url)?;
    #[derive(QueryableByName, Debug)]
    struct A {
        #[diesel(sql_type = Text)]
        event_id: String,
        #[diesel(sql_type = Text)]
        attachment_id: String,
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Text)]
        content_type: String,
        #[diesel(sql_type = BigInt)]
        size: i64,
        #[diesel(sql_type = Text)]
        sha1: String,
        #[diesel(sql_type = Nullable<Text>)]
        blob_path: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        group_id: Option<i64>,
    }
    let rows: Vec<A> = diesel::sql_query(
        "SELECT event_id::text, attachment_id, name, content_type, size, sha1::text, blob_path, group_id \
         FROM event_attachments ORDER BY event_id, attachment_id",
    )
    .load(&mut c)?;
    let find = |id: &str| rows.iter().find(|r| r.attachment_id == id);
    let objects = Objects::from_url_with(&url, env.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let get = |key: &str| rt.block_on(objects.get(key));

    // Relay's 10 KB chunked attachment, with its sha1, on its (grouped) event.
    let big = find("145a873a-d148-45f8-8370-b13bc3a3ffb4")
        .ok_or_else(|| anyhow::anyhow!("relay attachment: {rows:?}"))?;
    let (_, chunk_msg) = relay("ingest-attachments/000")?;
    let chunk_body = match IngestMessage::decode(&chunk_msg) {
        Ok(IngestMessage::AttachmentChunk(c)) => c.payload,
        other => anyhow::bail!("fixture: {other:?}"),
    };
    assert_eq!(big.size, 10240);
    assert_eq!(big.sha1, sha1_hex(&chunk_body));
    assert!(big.group_id.is_some(), "attachment group back-filled");
    let big_key = big.blob_path.clone().unwrap_or_default();
    assert_eq!(
        big_key,
        "attachments/42/606f3c2bc036486eac417841ebfbf7f0/145a873a-d148-45f8-8370-b13bc3a3ffb4"
    );
    assert_eq!(get(&big_key)?.as_deref(), Some(chunk_body.as_slice()));
    // Relay's inline PNG (standalone, no event).
    let png = find("418b2245-7c78-4e72-98a9-2bae4b438c20").ok_or_else(|| anyhow::anyhow!("png"))?;
    assert_eq!(
        (png.size, png.content_type.as_str(), png.group_id),
        (2056, "image/png", None)
    );
    // Hello World from two chunks.
    let hello = find("att-1").ok_or_else(|| anyhow::anyhow!("att-1"))?;
    assert_eq!(
        (hello.name.as_str(), hello.content_type.as_str(), hello.size),
        ("lol.txt", "text/plain", 12)
    );
    assert!(hello.group_id.is_some());
    assert_eq!(
        get(hello.blob_path.as_deref().unwrap_or_default())?.as_deref(),
        Some(&b"Hello World!"[..])
    );
    // Missing chunks → no row; zero-length → row without object; inline → stored; minidump → nothing.
    assert!(find("missing").is_none() && find("dump").is_none());
    let empty = find("empty").ok_or_else(|| anyhow::anyhow!("empty"))?;
    assert_eq!(
        (empty.size, empty.blob_path.as_deref(), empty.sha1.as_str()),
        (0, None, "da39a3ee5e6b4b0d3255bfef95601890afd80709")
    );
    let inline = find("inline").ok_or_else(|| anyhow::anyhow!("inline"))?;
    assert_eq!(
        get(inline.blob_path.as_deref().unwrap_or_default())?.as_deref(),
        Some(&b"inline bytes"[..])
    );
    // A hostile attachment id never reaches the key.
    let evil = find("../../x").ok_or_else(|| anyhow::anyhow!("evil"))?;
    let evil_key = evil.blob_path.clone().unwrap_or_default();
    assert!(
        !evil_key.contains("..") && evil_key.starts_with(&format!("attachments/7/{}/", eid(2))),
        "{evil_key}"
    );
    let big10 = find("big").ok_or_else(|| anyhow::anyhow!("10 MB attachment"))?;
    assert_eq!(
        (big10.size, big10.sha1.clone()),
        (10_000_000, sha1_hex(&big_body))
    );
    assert_eq!(
        get(big10.blob_path.as_deref().unwrap_or_default())?.as_deref(),
        Some(big_body.as_slice())
    );
    assert_eq!(rows.len(), 7, "{rows:?}");
    assert!(rows.iter().all(|r| r.event_id.len() == 32));

    // Groups: Relay's error and default events, ValueError ×3 (one group), KeyError.
    #[derive(QueryableByName, Debug)]
    struct G {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Text)]
        title: String,
        #[diesel(sql_type = BigInt)]
        times_seen: i64,
    }
    let groups: Vec<G> = diesel::sql_query("SELECT project_id, title, times_seen FROM groups WHERE type = 1 ORDER BY project_id, title").load(&mut c)?;
    let summary: Vec<(i64, &str, i64)> = groups
        .iter()
        .map(|g| (g.project_id, g.title.as_str(), g.times_seen))
        .collect();
    assert_eq!(summary.len(), 4, "{summary:?}");
    assert!(summary.contains(&(7, "KeyError: cart", 2)), "{summary:?}");
    assert!(
        summary
            .iter()
            .any(|(p, t, n)| *p == 7 && t.starts_with("ValueError: bad cart") && *n == 3),
        "{summary:?}"
    );
    assert!(
        summary.contains(&(42, "ZeroDivisionError: division by zero", 1)),
        "{summary:?}"
    );
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let transactions: N = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM events WHERE event_id = '{}'",
        eid(5)
    ))
    .get_result(&mut c)?;
    assert_eq!(transactions.n, 0, "transactions are dropped");

    // User reports: Relay's (its event came on the other topic) and ours, updated within 5 minutes.
    #[derive(QueryableByName, Debug)]
    struct R {
        #[diesel(sql_type = Text)]
        event_id: String,
        #[diesel(sql_type = Text)]
        comments: String,
        #[diesel(sql_type = Nullable<Text>)]
        feedback_event_id: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        group_id: Option<i64>,
    }
    let reports: Vec<R> = diesel::sql_query("SELECT event_id::text, comments, feedback_event_id::text, group_id FROM user_reports ORDER BY event_id").load(&mut c)?;
    assert_eq!(reports.len(), 2, "{reports:?}");
    let ours = reports
        .iter()
        .find(|r| r.event_id == eid(1))
        .ok_or_else(|| anyhow::anyhow!("report 1"))?;
    assert_eq!(ours.comments, "second words");
    assert_eq!(
        ours.feedback_event_id.as_deref(),
        Some(sluice_core::ids::shimmed_feedback_event_id(P, &eid(1)).as_str())
    );
    assert!(ours.group_id.is_some(), "report takes its event's group");
    let relays = reports
        .iter()
        .find(|r| r.event_id == "d0e204294e8e4833ad83cea44088c3c8")
        .ok_or_else(|| anyhow::anyhow!("relay report"))?;
    assert_eq!(relays.comments, "It broke when I clicked the button.");
    assert!(relays.feedback_event_id.is_some() && relays.group_id.is_some());

    // The feedback topic: one shimmed feedback per report, and Relay's feedback forwarded as is.
    let feedback = broker.read_all("ingest-feedback-events", 100, Duration::from_secs(20))?;
    let shimmed: Vec<_> = feedback
        .iter()
        .filter(|m| header(m, "source").as_deref() == Some("user_report_envelope"))
        .collect();
    assert_eq!(shimmed.len(), 2, "exactly one feedback per report");
    for m in &shimmed {
        let Ok(IngestMessage::Event(e)) = IngestMessage::decode(m.payload().unwrap_or_default())
        else {
            anyhow::bail!("shim is an event message")
        };
        let body: Value = serde_json::from_slice(&e.payload)?;
        assert!(body["contexts"]["feedback"]["message"].is_string());
        assert!(body["contexts"]["feedback"]["contact_email"].is_string());
    }
    assert!(
        feedback
            .iter()
            .any(|m| m.payload() == Some(feedback_fixture.as_slice())
                && header(m, "source").is_none())
    );

    // DLQ: exactly the three bad messages, with their reasons; nothing from Relay's captures.
    let dlq_msgs = broker.read_all("ingest-events-dlq", 10, Duration::from_secs(20))?;
    let mut reasons: Vec<String> = dlq_msgs
        .iter()
        .filter_map(|m| dlq_headers(m).map(|h| h.reason.as_str().to_owned()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["missing_field", "undecodable", "unsupported_type"]
    );
    assert_eq!(broker.stored("ingest-attachments-dlq")?, 0);

    // Outcomes: attachments accepted once each; missing chunks invalid.
    let outcomes = json_values(&broker, "outcomes")?;
    let mut seen: Vec<(String, u64, u64, String)> = outcomes
        .iter()
        .map(|o| {
            (
                o["event_id"].as_str().unwrap_or("-").to_owned(),
                o["category"].as_u64().unwrap_or(99),
                o["outcome"].as_u64().unwrap_or(99),
                o["reason"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    seen.sort();
    let accepted = seen.iter().filter(|o| o.1 == 4 && o.2 == 0).count();
    assert_eq!(accepted, 7, "{seen:?}");
    assert!(
        seen.contains(&(eid(2), 4, 3, "missing_chunks".into())),
        "{seen:?}"
    );
    // One ACCEPTED error outcome per stored event (the Relay captures' two and five here).
    let errors: Vec<&String> = seen
        .iter()
        .filter(|o| o.1 == 1 && o.2 == 0)
        .map(|o| &o.0)
        .collect();
    let stored: std::collections::BTreeSet<String> = {
        #[derive(QueryableByName)]
        struct E {
            #[diesel(sql_type = Text)]
            event_id: String,
        }
        diesel::sql_query("SELECT event_id::text AS event_id FROM events")
            .load::<E>(&mut PgConnection::establish(&db.url)?)?
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    };
    assert_eq!(
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        stored.iter().cloned().collect::<Vec<_>>(),
        "{seen:?}"
    );
    assert_eq!(outcomes.len(), 8 + stored.len(), "{seen:?}");

    // Replay both ingest topics from offset 0: no table changes, no second outcome.
    let before = snapshot(&db.url)?;
    let replay = unique("ing-replay");
    let mut again = stage_env(
        "ingest-consumer",
        &broker,
        &db.url,
        &replay,
        &store_flag,
        &env,
    )?;
    wait_committed_all(&broker, &replay, "ingest-events")?;
    wait_committed_all(&broker, &replay, "ingest-attachments")?;
    wait_committed_all(&broker, &occ_group, "ingest-occurrences")?;
    assert_eq!(snapshot(&db.url)?, before);
    assert_eq!(
        json_values(&broker, "outcomes")?.len(),
        outcomes.len(),
        "no second outcome"
    );
    let shimmed_after = broker
        .read_all("ingest-feedback-events", 100, Duration::from_secs(20))?
        .iter()
        .filter(|m| header(m, "source").is_some())
        .count();
    assert_eq!(shimmed_after, 2, "reports are not shimmed again");
    for p in [&mut ingest, &mut occ, &mut again] {
        p.signal("TERM")?;
        assert_eq!(p.wait_timeout(Duration::from_secs(30))?.code(), Some(0));
    }
    Ok(())
}

fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let hs = m.headers()?;
    hs.iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn dlq_headers(m: &rdkafka::message::OwnedMessage) -> Option<DlqHeaders> {
    use rdkafka::message::Headers;
    let hs = m.headers()?;
    let pairs: Vec<(&str, &[u8])> = hs.iter().filter_map(|h| Some((h.key, h.value?))).collect();
    DlqHeaders::from_pairs(pairs)
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    hex::encode(Sha1::digest(bytes))
}

/// A msgpack map of string pairs (for a message of a type the pipeline does not know).
fn rmp_like_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let map: std::collections::BTreeMap<&str, &str> = pairs.iter().copied().collect();
    rmp_serde::to_vec_named(&map).unwrap_or_default()
}

/// Standalone attachments whose chunks come in the same batch are saved from memory; when the
/// object store is down they are not lost: their chunks are stored, the batch is retried until
/// the store is back, and then the objects, rows and one ACCEPTED outcome each are there, the
/// chunks removed. A replay from offset 0 changes nothing and emits no second outcome.
#[test]
fn batched_attachments_wait_out_an_object_store_outage() -> anyhow::Result<()> {
    let broker = Broker::start(&TOPICS)?;
    let mut s3 = S3Server::start("sluice")?;
    let db = migrated_db(
        "ingest-consumer",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o');
         INSERT INTO projects (id, organization_id, slug) VALUES (7, 1, 'hand');",
    )?;
    s3.stop();
    let k = |n: u32| eid(n).into_bytes();
    send_keyed(
        &broker,
        "ingest-attachments",
        &[
            (k(31), chunk(31, "shot", 0, b"Hello ")),
            (k(31), chunk(31, "shot", 1, b"World!")),
            (
                k(31),
                standalone(
                    31,
                    att("shot", "shot.txt", Some(2), None, "event.attachment"),
                ),
            ),
            (
                k(32),
                standalone(
                    32,
                    att(
                        "note",
                        "note.txt",
                        None,
                        Some(b"a note"),
                        "event.attachment",
                    ),
                ),
            ),
        ],
    )?;
    let (env, url) = (s3.env(), s3.url("attachments"));
    let group = unique("ing");
    let flags = ["--object-store-url", url.as_str()];
    let mut ingest = stage_env("ingest-consumer", &broker, &db.url, &group, &flags, &env)?;

    // While the store is down: the chunks wait in Postgres, no row, nothing committed.
    let mut c = PgConnection::establish(&db.url)?;
    let count = |c: &mut PgConnection, table: &str| -> Option<i64> {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result::<N>(c)
            .ok()
            .map(|r| r.n)
    };
    sluice_testkit::process::wait_for(
        "the chunks of the unfinished attachment stored",
        Duration::from_secs(30),
        || (count(&mut c, "attachment_chunks") == Some(2)).then_some(()),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&mut c, "event_attachments"), Some(0));
    assert!(
        committed_vs_high(&broker, &group, "ingest-attachments")?
            .iter()
            .any(|(c, h)| c < h),
        "offsets stay behind the unfinished attachments"
    );

    s3.restart()?;
    wait_committed_all(&broker, &group, "ingest-attachments")?;
    let objects = Objects::from_url_with(&url, env.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = |key: String| rt.block_on(objects.get(&key));
    assert_eq!(
        body(format!("attachments/7/{}/shot", eid(31)))?.as_deref(),
        Some(&b"Hello World!"[..])
    );
    assert_eq!(
        body(format!("attachments/7/{}/note", eid(32)))?.as_deref(),
        Some(&b"a note"[..])
    );
    assert_eq!(count(&mut c, "event_attachments"), Some(2));
    assert_eq!(count(&mut c, "attachment_chunks"), Some(0));
    let accepted = |broker: &Broker| -> anyhow::Result<Vec<String>> {
        let mut ids: Vec<String> = json_values(broker, "outcomes")?
            .iter()
            .filter(|o| o["outcome"] == 0 && o["category"] == 4)
            .map(|o| o["event_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        Ok(ids)
    };
    let once = vec![eid(31), eid(32)];
    assert_eq!(accepted(&broker)?, once);
    ingest.kill();

    // Replay from offset 0: same rows, no second outcome.
    let before = snapshot(&db.url)?;
    let replay = unique("ing-replay");
    let mut again = stage_env("ingest-consumer", &broker, &db.url, &replay, &flags, &env)?;
    wait_committed_all(&broker, &replay, "ingest-attachments")?;
    again.kill();
    assert_eq!(snapshot(&db.url)?, before);
    assert_eq!(accepted(&broker)?, once);
    Ok(())
}

#[test]
fn a_backlog_of_attachments_written_ahead_is_stored_once() -> anyhow::Result<()> {
    const N: u32 = 1_200;
    let broker = Broker::start(&TOPICS)?;
    let s3 = S3Server::start("sluice")?;
    let db = migrated_db(
        "ingest-consumer",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o');
         INSERT INTO projects (id, organization_id, slug) VALUES (7, 1, 'hand');",
    )?;
    // Each attachment: one chunk, then its message, keyed by event; bodies all differ.
    let body = |n: u32| -> Vec<u8> { (0..2048u32).map(|i| ((i * 31 + n) % 251) as u8).collect() };
    let msgs: Vec<(Vec<u8>, Vec<u8>)> = (0..N)
        .flat_map(|n| {
            let id = format!("a{n}");
            [
                (eid(n).into_bytes(), chunk(n, &id, 0, &body(n))),
                (
                    eid(n).into_bytes(),
                    standalone(n, att(&id, "dump.bin", Some(1), None, "event.attachment")),
                ),
            ]
        })
        .collect();
    send_keyed(&broker, "ingest-attachments", &msgs)?;

    // Small batches over a backlog: each batch is cut while the one before is in flight, so
    // its objects are written ahead.
    let (env, url) = (s3.env(), s3.url("attachments"));
    let group = unique("ahead");
    let flags = [
        "--object-store-url",
        url.as_str(),
        "--max-batch-size",
        "100",
    ];
    let (mut ingest, metrics) =
        stage_metered("ingest-consumer", &broker, &db.url, &group, &flags, &env)?;
    wait_committed_all(&broker, &group, "ingest-attachments")?;
    let ahead = metric(
        &metrics,
        "sluice_ingest_object_writes_total{when=\"ahead\"}",
    )
    .unwrap_or(0.0);
    let with_batch = metric(
        &metrics,
        "sluice_ingest_object_writes_total{when=\"with_batch\"}",
    )
    .unwrap_or(0.0);
    ingest.kill();
    eprintln!("{ahead} objects written ahead, {with_batch} with their batch");
    assert!(
        ahead > 0.0,
        "objects were written ahead ({ahead} ahead, {with_batch} with their batch)"
    );
    // More than one only where a write was retried.
    assert!(
        ahead + with_batch >= f64::from(N),
        "every attachment's object was written"
    );

    // Every row points at its object, which holds its body; sha1 and size match.
    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = Text)]
        attachment_id: String,
        #[diesel(sql_type = BigInt)]
        size: i64,
        #[diesel(sql_type = Text)]
        sha1: String,
        #[diesel(sql_type = Nullable<Text>)]
        blob_path: Option<String>,
    }
    let rows: Vec<Stored> = diesel::sql_query(
        "SELECT attachment_id, size, sha1, blob_path FROM event_attachments ORDER BY attachment_id",
    )
    .load(&mut PgConnection::establish(&db.url)?)?;
    assert_eq!(rows.len(), N as usize);
    let objects = Objects::from_url_with(&url, env.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut keys = Vec::with_capacity(rows.len());
    for r in &rows {
        let n: u32 = r.attachment_id.trim_start_matches('a').parse()?;
        let key = format!("attachments/7/{}/a{n}", eid(n));
        assert_eq!(r.blob_path.as_deref(), Some(key.as_str()));
        assert_eq!(
            (r.size, r.sha1.as_str()),
            (2048, sha1_hex(&body(n)).as_str())
        );
        keys.push((n, key));
    }
    // Read back 16 at a time (one by one, s3s-fs takes most of a minute).
    let read = rt.block_on(
        futures::stream::iter(keys)
            .map(|(n, key)| {
                let objects = objects.clone();
                async move { (n, objects.get(&key).await) }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>(),
    );
    for (n, stored) in read {
        assert_eq!(
            stored?.as_deref(),
            Some(body(n).as_slice()),
            "attachment a{n}"
        );
    }
    let accepted = || -> anyhow::Result<usize> {
        Ok(broker
            .read_all("outcomes", 10 * N as usize, Duration::from_secs(30))?
            .iter()
            .filter_map(|m| serde_json::from_slice::<Value>(m.payload().unwrap_or_default()).ok())
            .filter(|o| o["outcome"] == 0 && o["category"] == 4)
            .count())
    };
    assert_eq!(
        accepted()?,
        N as usize,
        "one ACCEPTED outcome per attachment"
    );
    assert_eq!(
        sluice_testkit::db::count(&db.url, "SELECT count(*) AS n FROM attachment_chunks")?,
        0
    );

    // A replay from offset 0 changes nothing and emits no second outcome.
    let before = snapshot(&db.url)?;
    let replay = unique("ahead-replay");
    let mut again = stage_env("ingest-consumer", &broker, &db.url, &replay, &flags, &env)?;
    wait_committed_all(&broker, &replay, "ingest-attachments")?;
    again.kill();
    assert_eq!(snapshot(&db.url)?, before);
    assert_eq!(accepted()?, N as usize);
    Ok(())
}

#[test]
fn a_backlog_of_error_events_inserted_ahead_is_stored_once() -> anyhow::Result<()> {
    const N: u32 = 1_200;
    // 150 events come again, with another value, about a batch after their first copy: the
    // two copies are in neighbouring batches, and the first one must be the one kept.
    const AGAIN: u32 = 150;
    let broker = Broker::start(&TOPICS)?;
    let db = migrated_db(
        "ingest-consumer",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o');
         INSERT INTO projects (id, organization_id, slug) VALUES (7, 1, 'hand');",
    )?;
    let mut msgs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for n in 0..N {
        let event = error_event(n, "ValueError", &format!("bad cart {n}"), Vec::new());
        msgs.push((eid(n).into_bytes(), event));
        if (100..100 + AGAIN).contains(&n) {
            let again = n - 100;
            let copy = error_event(again, "ValueError", "second copy", Vec::new());
            msgs.push((eid(again).into_bytes(), copy));
        }
    }
    send_keyed(&broker, "ingest-events", &msgs)?;

    // Small batches over a backlog: each batch is cut while the one before is in flight, so
    // its events are inserted ahead.
    let group = unique("events-ahead");
    let objects = tempfile::tempdir()?;
    let store = format!("file://{}", objects.path().display());
    let flags = [
        "--max-batch-size",
        "100",
        "--object-store-url",
        store.as_str(),
    ];
    let (mut ingest, metrics) =
        stage_metered("ingest-consumer", &broker, &db.url, &group, &flags, &[])?;
    wait_committed_all(&broker, &group, "ingest-events")?;
    let inserted = |when: &str| {
        metric(
            &metrics,
            &format!("sluice_ingest_event_inserts_total{{when=\"{when}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let (ahead, with_batch) = (inserted("ahead"), inserted("with_batch"));
    ingest.kill();
    eprintln!("{ahead} events inserted ahead, {with_batch} with their batch");
    assert!(
        ahead > 0.0,
        "events were inserted ahead ({ahead} ahead, {with_batch} with their batch)"
    );
    assert_eq!(
        ahead + with_batch,
        f64::from(N + AGAIN),
        "every event message of the batched path was inserted once, ahead or with its batch"
    );

    // One row per event, holding its first copy; every event's occurrence produced, one
    // ACCEPTED outcome per event.
    assert_eq!(
        sluice_testkit::db::count(&db.url, "SELECT count(*) AS n FROM events")?,
        i64::from(N)
    );
    assert_eq!(
        sluice_testkit::db::count(
            &db.url,
            "SELECT count(*) AS n FROM event_payloads \
             WHERE data->'exception'->'values'->0->>'value' LIKE 'bad cart %'"
        )?,
        i64::from(N),
        "every stored payload is its event's first copy"
    );
    let read = |topic: &str| -> anyhow::Result<Vec<Value>> {
        Ok(broker
            .read_all(topic, 10 * N as usize, Duration::from_secs(30))?
            .iter()
            .filter_map(|m| serde_json::from_slice::<Value>(m.payload().unwrap_or_default()).ok())
            .collect())
    };
    let occurred: std::collections::HashSet<String> = read("ingest-occurrences")?
        .iter()
        .filter_map(|o| o["event_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(occurred.len(), N as usize, "an occurrence for every event");
    assert!((0..N).all(|n| occurred.contains(&eid(n))));
    let accepted = || -> anyhow::Result<usize> {
        Ok(read("outcomes")?
            .iter()
            .filter(|o| o["outcome"] == 0 && o["category"] == 1)
            .count())
    };
    assert_eq!(accepted()?, N as usize, "one ACCEPTED outcome per event");

    // A replay from offset 0 changes nothing and emits no second outcome.
    let before = snapshot(&db.url)?;
    let replay = unique("events-ahead-replay");
    let mut again = stage_env("ingest-consumer", &broker, &db.url, &replay, &flags, &[])?;
    wait_committed_all(&broker, &replay, "ingest-events")?;
    again.kill();
    assert_eq!(snapshot(&db.url)?, before);
    assert_eq!(accepted()?, N as usize);
    Ok(())
}
