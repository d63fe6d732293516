//! Hostile input through the binaries: every bad message is followed by good ones on the same
//! partition. Each test asserts that the good messages are processed (all offsets committed
//! within seconds), that every bad message is in its DLQ with the expected reason (and nothing
//! else is), or was made safe and stored, and that no process exited (each stops cleanly on
//! SIGTERM at the end).

mod support;

use rdkafka::message::{Headers, Message};
use serde_json::{json, Value};
use sluice_core::messages::{
    AttachmentChunk, AttachmentMessage, ChunkedAttachment, EventMessage, IngestMessage, Timestamp,
    UserReportMessage,
};
use sluice_testkit::db::{count, lines};
use sluice_testkit::{unique, Broker, S3Server};
use std::collections::BTreeMap;
use support::*;

const TOPICS: [(&str, i32); 9] = [
    ("ingest-events", 1),
    ("ingest-events-dlq", 1),
    ("ingest-attachments", 1),
    ("ingest-attachments-dlq", 1),
    ("ingest-feedback-events", 1),
    ("ingest-feedback-events-dlq", 1),
    ("ingest-occurrences", 1),
    ("ingest-occurrences-dlq", 1),
    ("outcomes", 1),
];
const START: f64 = 1_795_432_200.0;
const P: u64 = 7;

fn eid(n: u32) -> String {
    format!("{:032x}", 0xbad0_0000u64 + u64::from(n))
}

fn ts(secs: f64) -> Timestamp {
    Timestamp::from_epoch_secs(secs).unwrap_or_else(|e| panic!("{e}"))
}

/// An error event whose JSON text is `body` with its `event_id` set.
fn event_text(n: u32, text: &str, attachments: Vec<ChunkedAttachment>) -> Vec<u8> {
    IngestMessage::Event(EventMessage {
        payload: text.as_bytes().to_vec(),
        start_time: ts(START),
        event_id: eid(n),
        project_id: P,
        remote_addr: None,
        attachments,
    })
    .encode()
}

fn event(n: u32, extra: Value, attachments: Vec<ChunkedAttachment>) -> Vec<u8> {
    let mut body = json!({"event_id": eid(n), "type": "error", "platform": "python",
        "timestamp": START - 5.0, "exception": {"values": [{"type": "HostileError", "value": format!("case {n}")}]}});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    event_text(n, &body.to_string(), attachments)
}

fn att(id: &str, name: &str, content_type: Option<&str>, data: Option<&[u8]>) -> ChunkedAttachment {
    ChunkedAttachment {
        id: id.into(),
        name: name.into(),
        content_type: content_type.map(str::to_owned),
        attachment_type: "event.attachment".into(),
        chunks: data.is_none().then_some(1),
        data: data.map(<[u8]>::to_vec),
        stored_id: None,
        size: None,
        rate_limited: false,
        retention_days: None,
    }
}

fn standalone(n: u32, a: ChunkedAttachment) -> Vec<u8> {
    IngestMessage::Attachment(AttachmentMessage {
        event_id: eid(n),
        project_id: P,
        attachment: a,
    })
    .encode()
}

fn chunk(n: u32, id: &str, index: u32) -> Vec<u8> {
    IngestMessage::AttachmentChunk(AttachmentChunk {
        payload: b"chunk".to_vec(),
        event_id: eid(n),
        project_id: P,
        id: id.into(),
        chunk_index: index,
    })
    .encode()
}

/// A msgpack map written field by field (for shapes the typed encoder cannot produce).
fn msgpack(v: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(v).unwrap_or_default()
}

/// Messages of one topic with what must become of each: `Some(reason)` = dead-lettered.
#[derive(Default)]
struct Plan {
    msgs: Vec<(Vec<u8>, Vec<u8>)>,
    dlq: BTreeMap<i64, String>,
}

impl Plan {
    fn ok(&mut self, value: Vec<u8>) {
        self.msgs.push((b"k".to_vec(), value));
    }
    fn bad(&mut self, value: Vec<u8>, reason: &str) {
        self.dlq.insert(self.msgs.len() as i64, reason.to_owned());
        self.msgs.push((b"k".to_vec(), value));
    }
}

/// Every message in `topic`'s DLQ as (original offset → reason); asserts the provenance headers.
fn dead_letters(broker: &Broker, topic: &str) -> anyhow::Result<BTreeMap<i64, String>> {
    let mut out = BTreeMap::new();
    for m in broker.read_all(
        &format!("{topic}-dlq"),
        usize::MAX,
        std::time::Duration::from_secs(20),
    )? {
        let header = |name: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        assert_eq!(header("original_topic"), topic);
        let offset: i64 = header("original_offset").parse()?;
        out.insert(offset, header("reason"));
    }
    Ok(out)
}

#[test]
fn ingest_consumer_survives_hostile_messages() -> anyhow::Result<()> {
    let broker = Broker::start(&TOPICS)?;
    anyhow::ensure!(broker.is_mock(), "uses the default topic names");
    let s3 = S3Server::start("sluice")?;
    let db = migrated_db(
        "ingest-consumer",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o');
         INSERT INTO projects (id, organization_id, slug) VALUES (7, 1, 'p'), (9, 1, 'noisy');",
    )?;

    let mut events = Plan::default();
    events.ok(event(1, json!({}), vec![]));
    events.bad(b"\xc1 not msgpack at all".to_vec(), "undecodable");
    // An escaped NUL: stored, as U+FFFD.
    events.ok(event_text(
        2,
        &format!(
            r#"{{"event_id":"{}","message":"nul \u0000 here","level":"error"}}"#,
            eid(2)
        ),
        vec![],
    ));
    // An escaped backslash followed by `u0000` is plain text.
    events.ok(event_text(
        3,
        &format!(
            r#"{{"event_id":"{}","message":"literal \\u0000 text"}}"#,
            eid(3)
        ),
        vec![],
    ));
    // A number PostgreSQL's numeric cannot hold.
    events.ok(event_text(
        4,
        &format!(
            r#"{{"event_id":"{}","message":"tiny","extra":{{"x":1e-20000}}}}"#,
            eid(4)
        ),
        vec![],
    ));
    // start_time beyond any timestamp column.
    events.bad(
        msgpack(
            &json!({"type": "event", "payload": "{}", "start_time": 1e13,
            "event_id": eid(5), "project_id": P}),
        ),
        "invalid_field",
    );
    // Too many attachments for one event.
    let many: Vec<ChunkedAttachment> = (0..101)
        .map(|i| att(&format!("a{i}"), "x", None, Some(b"x")))
        .collect();
    events.bad(event(6, json!({}), many), "too_large");
    // A project id no bigint holds.
    events.bad(
        msgpack(
            &json!({"type": "event", "payload": "{}", "start_time": START,
            "event_id": eid(7), "project_id": u64::MAX}),
        ),
        "invalid_field",
    );
    // 20,000 `{{ default }}` over 800 in-app frames: grouped within the bounds.
    let frames: Vec<Value> = (0..800)
        .map(|i| json!({"module": format!("app.m{i}"), "function": "f", "in_app": true}))
        .collect();
    events.ok(event(
        8,
        json!({"fingerprint": vec!["{{ default }}"; 20_000],
               "exception": {"values": [{"type": "Deep", "value": "v", "stacktrace": {"frames": frames}}]}}),
        vec![],
    ));
    // JSON nested beyond the parser's limit.
    events.bad(
        event_text(
            9,
            &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            vec![],
        ),
        "undecodable",
    );
    // msgpack nested 100,000 deep in an unknown field.
    let mut deep = vec![0x82, 0xa4];
    deep.extend(b"type");
    deep.extend([0xa5]);
    deep.extend(b"event");
    deep.extend([0xa1, b'x']);
    deep.extend(std::iter::repeat_n(0x91u8, 100_000));
    deep.push(0xc0);
    events.bad(deep, "undecodable");
    // A payload event_id that is not a UUID.
    events.bad(
        event_text(
            11,
            &json!({"event_id": "x".repeat(5000)}).to_string(),
            vec![],
        ),
        "invalid_field",
    );
    // A user report whose name holds an escaped NUL: stored with U+FFFD.
    events.ok(
        IngestMessage::UserReport(UserReportMessage {
            project_id: P,
            start_time: ts(START),
            payload: format!(
                r#"{{"event_id":"{}","name":"Ann\u0000","email":"ann@example.com","comments":"it broke"}}"#,
                eid(1)
            )
            .into_bytes(),
            event_id: None,
        })
        .encode(),
    );
    // One project's malformed traffic, far beyond the breaker's 1,000 in a row.
    for i in 0..1_100 {
        events.bad(
            msgpack(&json!({"type": "no-such-type", "project_id": 9, "n": i})),
            "unsupported_type",
        );
    }
    events.ok(event(12, json!({}), vec![]));

    let mut attachments = Plan::default();
    attachments.bad(chunk(20, "id\0nul", 0), "invalid_field");
    attachments.bad(chunk(20, &"l".repeat(3000), 0), "invalid_field");
    // A content type with a control character: the attachment is stored without it.
    attachments.ok(standalone(
        21,
        att(
            "ctl",
            "ctl.txt",
            Some("text/plain\u{1}\r\nx-evil: 1"),
            Some(b"body"),
        ),
    ));
    // Missing chunks and an id longer than any index row.
    attachments.bad(
        standalone(22, att(&"m".repeat(3000), "m.txt", None, None)),
        "invalid_field",
    );
    let mut huge = att("huge", "h.txt", None, None);
    huge.chunks = Some(u32::MAX);
    attachments.bad(standalone(23, huge), "too_large");
    attachments.bad(chunk(24, "idx", u32::MAX), "too_large");
    let mut untyped = att("untyped", "u.txt", None, Some(b"u"));
    untyped.attachment_type = String::new();
    attachments.bad(standalone(25, untyped), "invalid_field");
    // A name with NUL and control characters: stored cleaned.
    attachments.ok(standalone(
        26,
        att("named", "bad\0na\u{7}me.txt", None, Some(b"named body")),
    ));
    attachments.ok(standalone(27, att("fine", "fine.txt", None, Some(b"fine"))));
    attachments.ok(event(28, json!({}), vec![]));

    send_keyed(&broker, "ingest-events", &events.msgs)?;
    send_keyed(&broker, "ingest-attachments", &attachments.msgs)?;

    let group = unique("hostile-ing");
    let url = s3.url("attachments");
    let (mut ingest, metrics) = stage_metered(
        "ingest-consumer",
        &broker,
        &db.url,
        &group,
        &["--object-store-url", url.as_str()],
        &s3.env(),
    )?;
    wait_committed_all(&broker, &group, "ingest-events")?;
    wait_committed_all(&broker, &group, "ingest-attachments")?;

    assert_eq!(dead_letters(&broker, "ingest-events")?, events.dlq);
    assert_eq!(
        dead_letters(&broker, "ingest-attachments")?,
        attachments.dlq
    );

    let stored = lines(
        &db.url,
        "SELECT event_id::text || ' ' || coalesce(data->>'message', '-') AS line FROM event_payloads ORDER BY 1",
    )?;
    let want: Vec<String> = [
        (1, "-"),
        (2, "nul \u{fffd} here"),
        (3, "literal \\u0000 text"),
        (4, "tiny"),
        (8, "-"),
        (12, "-"),
        (28, "-"),
    ]
    .iter()
    .map(|(n, m)| format!("{} {m}", eid(*n)))
    .collect();
    assert_eq!(stored, want);
    assert_eq!(
        lines(
            &db.url,
            "SELECT (data->'extra'->>'x') AS line FROM event_payloads WHERE data ? 'extra'"
        )?,
        vec!["0.0".to_owned()]
    );
    assert_eq!(
        lines(
            &db.url,
            "SELECT attachment_id || ' ' || name || ' ' || content_type AS line FROM event_attachments ORDER BY 1"
        )?,
        vec![
            "ctl ctl.txt text/plain".to_owned(),
            "fine fine.txt text/plain".to_owned(),
            "named badname.txt text/plain".to_owned(),
        ]
    );
    assert_eq!(
        lines(&db.url, "SELECT name AS line FROM user_reports")?,
        vec!["Ann\u{fffd}".to_owned()]
    );
    // The breaker held for project 9 instead of stopping the stage.
    let (_, exposition) = sluice_testkit::http::get(&metrics, "/metrics")
        .ok_or_else(|| anyhow::anyhow!("metrics do not answer"))?;
    assert!(
        exposition
            .contains("sluice_consumer_breaker_held_total{project=\"9\",topic=\"ingest-events\"}"),
        "no breaker_held sample for project 9"
    );
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM attachment_chunks")?,
        0
    );
    stop_cleanly(&mut ingest)?;
    Ok(())
}

fn feedback(n: u32, project: u64, text: &str) -> Vec<u8> {
    IngestMessage::Event(EventMessage {
        payload: text.as_bytes().to_vec(),
        start_time: ts(START),
        event_id: eid(n),
        project_id: project,
        remote_addr: None,
        attachments: vec![],
    })
    .encode()
}

fn feedback_body(n: u32, name: &str, message: &str, associated: Option<&str>) -> String {
    let mut ctx =
        format!(r#"{{"contact_email":"u{n}@example.com","name":"{name}","message":"{message}""#);
    if let Some(a) = associated {
        ctx.push_str(&format!(r#","associated_event_id":"{a}""#));
    }
    ctx.push('}');
    format!(
        r#"{{"event_id":"{}","type":"feedback","platform":"javascript","level":"info","timestamp":{},"contexts":{{"feedback":{ctx}}}}}"#,
        eid(n),
        START + 1.0
    )
}

fn occurrence(n: u32, fields: Value) -> Vec<u8> {
    let event_id = eid(100 + n);
    let mut o = json!({
        "id": format!("{n:032x}"), "project_id": 42, "event_id": event_id,
        "fingerprint": [format!("hostile-{n}")], "issue_title": format!("title {n}"),
        "subtitle": "sub", "culprit": "c", "type": 1001, "detection_time": START, "level": "error",
        "event": {"event_id": event_id, "project_id": 42, "platform": "python", "timestamp": START},
    });
    if let (Value::Object(o), Value::Object(f)) = (&mut o, fields) {
        o.extend(f);
    }
    o.to_string().into_bytes()
}

#[test]
fn feedback_worker_and_occurrence_consumer_survive_hostile_messages() -> anyhow::Result<()> {
    let broker = Broker::start(&TOPICS)?;
    anyhow::ensure!(broker.is_mock(), "uses the default topic names");
    let db = migrated_db(
        "occurrence-consumer",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o');
         INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'p');",
    )?;

    let mut fb = Plan::default();
    fb.ok(feedback(1, 42, &feedback_body(1, "Ann", "first", None)));
    fb.bad(b"garbage".to_vec(), "undecodable");
    // An escaped NUL in the name of a feedback that names an event: its report row is stored.
    fb.ok(feedback(
        2,
        42,
        &feedback_body(2, "Bo\\u0000b", "nul name", Some(&eid(99))),
    ));
    fb.bad(
        msgpack(
            &json!({"type": "event", "payload": "{}", "start_time": START,
            "event_id": eid(3), "project_id": u64::MAX}),
        ),
        "invalid_field",
    );
    fb.bad(
        msgpack(
            &json!({"type": "attachment_chunk", "payload": "x", "event_id": eid(4),
            "project_id": 42, "id": "a", "chunk_index": 0}),
        ),
        "unsupported_type",
    );
    fb.bad(feedback(5, 42, "not json"), "invalid_event");
    let mut deep = vec![0x81, 0xa1, b'x'];
    deep.extend(std::iter::repeat_n(0x91u8, 100_000));
    deep.push(0xc0);
    fb.bad(deep, "undecodable");
    fb.ok(feedback(6, 42, &feedback_body(6, "Cy", "last", None)));

    let mut occ = Plan::default();
    occ.ok(occurrence(1, json!({})));
    occ.bad(b"{not json".to_vec(), "undecodable");
    // An escaped NUL in the title: the group is stored with U+FFFD.
    occ.ok(String::from_utf8(occurrence(2, json!({})))?
        .replace("title 2", "title\\u00002")
        .into_bytes());
    occ.bad(
        occurrence(3, json!({"detection_time": 1e13})),
        "invalid_field",
    );
    occ.bad(
        String::from_utf8(occurrence(4, json!({})))?
            .replace("\"project_id\":42", "\"project_id\":18446744073709551615")
            .into_bytes(),
        "invalid_field",
    );
    // A number PostgreSQL cannot hold, in evidence data.
    occ.ok(
        String::from_utf8(occurrence(5, json!({"evidence_data": {"v": 1}})))?
            .replace("\"v\":1", "\"v\":1e-20000")
            .into_bytes(),
    );
    occ.bad(
        format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes(),
        "undecodable",
    );
    // A fingerprint entry and a title far longer than any index row.
    occ.ok(occurrence(
        7,
        json!({"fingerprint": ["f".repeat(10_000)], "issue_title": "t".repeat(100_000)}),
    ));
    occ.ok(occurrence(8, json!({})));

    send_keyed(&broker, "ingest-feedback-events", &fb.msgs)?;
    send_keyed(&broker, "ingest-occurrences", &occ.msgs)?;
    let (fb_group, occ_group) = (unique("hostile-fb"), unique("hostile-occ"));
    let mut worker = stage("feedback-worker", &broker, &db.url, &fb_group, &[])?;
    let mut consumer = stage("occurrence-consumer", &broker, &db.url, &occ_group, &[])?;
    wait_committed_all(&broker, &fb_group, "ingest-feedback-events")?;
    // The feedback worker's occurrences land on the same topic: wait for them too.
    sluice_testkit::process::wait_for(
        "feedback occurrences",
        std::time::Duration::from_secs(30),
        || (broker.stored("ingest-occurrences").ok()? >= occ.msgs.len() + 3).then_some(()),
    )?;
    wait_committed_all(&broker, &occ_group, "ingest-occurrences")?;

    assert_eq!(dead_letters(&broker, "ingest-feedback-events")?, fb.dlq);
    assert_eq!(dead_letters(&broker, "ingest-occurrences")?, occ.dlq);
    assert_eq!(
        lines(
            &db.url,
            "SELECT name || ' ' || event_id::text AS line FROM user_reports"
        )?,
        vec![format!("Bo\u{fffd}b {}", eid(99))]
    );
    let titles = lines(
        &db.url,
        "SELECT left(title, 40) AS line FROM groups ORDER BY 1",
    )?;
    for want in [
        "title 1",
        "title\u{fffd}2",
        "title 5",
        "title 8",
        &"t".repeat(40),
    ] {
        assert!(
            titles.iter().any(|t| t == want),
            "{want:?} not in {titles:?}"
        );
    }
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) AS n FROM groups WHERE type = 6001"
        )?,
        3,
        "one feedback issue per good feedback"
    );
    stop_cleanly(&mut worker)?;
    stop_cleanly(&mut consumer)?;
    Ok(())
}
