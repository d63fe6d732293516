//! A realistic mixed stream for the demo and the end-to-end test: what Relay writes for an app
//! with a few errors (stack traces), a chunked log attached to an event, a standalone chunked
//! attachment, user reports before and after their events, two feedbacks (one spam), a
//! transaction, two deliberately bad messages; and what other services raise through
//! producer-shim (occurrences and status changes). Every id and time is fixed, so feeding it
//! twice changes nothing.

use serde_json::{json, Value};
use sluice_core::messages::{
    AttachmentChunk, AttachmentMessage, ChunkedAttachment, EventMessage, IngestMessage, Timestamp,
    UserReportMessage,
};

/// Organization and project the stream belongs to (the project has heuristic spam detection).
pub const ORG: i64 = 1;
pub const PROJECT: u64 = 42;
/// Rows that provision them (idempotent).
pub const SETUP: &str =
    "INSERT INTO organizations (id, slug) VALUES (1, 'demo-org') ON CONFLICT DO NOTHING; \
    INSERT INTO projects (id, organization_id, slug, options) \
    VALUES (42, 1, 'demo', '{\"feedback.spam_detection\": \"heuristic\"}') \
    ON CONFLICT (id) DO UPDATE SET options = projects.options || EXCLUDED.options;";

/// When the traffic was received (epoch seconds).
pub const START: f64 = 1_795_432_200.0;

/// A Kafka message: key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// The whole stream.
pub struct Mixed {
    /// For `ingest-events`, in order.
    pub events: Vec<Record>,
    /// For `ingest-attachments`, in order (chunks before what uses them).
    pub attachments: Vec<Record>,
    /// JSON items for producer-shim's `POST /api/0/occurrences`, then `/status-changes`.
    pub occurrences: Vec<Value>,
    pub status_changes: Vec<Value>,
}

/// The event id of the stream's event `n`.
pub fn event_id(n: u32) -> String {
    format!("{:032x}", 0xde30_0000u64 + u64::from(n))
}

fn ts(secs: f64) -> Timestamp {
    Timestamp::from_epoch_secs(secs).unwrap_or_else(|_| Timestamp::now())
}

fn key(n: u32) -> Vec<u8> {
    format!("{n:016x}").into_bytes()
}

fn event(n: u32, body: Value, attachments: Vec<ChunkedAttachment>) -> Record {
    let mut body = body;
    body["event_id"] = json!(event_id(n));
    body["timestamp"] = json!(START - 5.0 + f64::from(n));
    let msg = IngestMessage::Event(EventMessage {
        payload: body.to_string().into_bytes(),
        start_time: ts(START + f64::from(n)),
        event_id: event_id(n),
        project_id: PROJECT,
        remote_addr: Some("10.0.0.7".into()),
        attachments,
    });
    (key(n), msg.encode())
}

fn error(ty: &str, value: &str, frames: &[(&str, &str, u32)]) -> Value {
    let frames: Vec<Value> = frames
        .iter()
        .map(|(module, function, line)| {
            json!({"module": module, "function": function, "lineno": line, "in_app": true,
                   "filename": format!("{}.py", module.replace('.', "/"))})
        })
        .chain(std::iter::once(
            json!({"module": "django.core.handlers", "function": "inner", "in_app": false}),
        ))
        .rev()
        .collect();
    json!({"type": "error", "platform": "python", "level": "error", "environment": "production",
           "release": "shop@1.4.2", "transaction": "/checkout",
           "tags": [["browser", "Firefox 133"], ["server_name", "web-3"]],
           "contexts": {"trace": {"trace_id": "4c79f60c11214eb38604f4ae0781bfb2", "span_id": "fa90fdead5f74052"}},
           "exception": {"values": [{"type": ty, "value": value, "stacktrace": {"frames": frames}}]}})
}

fn chunked(id: &str, name: &str, chunks: u32, ty: &str) -> ChunkedAttachment {
    ChunkedAttachment {
        id: id.into(),
        name: name.into(),
        content_type: Some("text/plain".into()),
        attachment_type: ty.into(),
        chunks: Some(chunks),
        data: None,
        stored_id: None,
        size: None,
        rate_limited: false,
        retention_days: None,
    }
}

fn chunk(event: u32, id: &str, index: u32, body: &[u8]) -> Record {
    let msg = IngestMessage::AttachmentChunk(AttachmentChunk {
        payload: body.to_vec(),
        event_id: event_id(event),
        project_id: PROJECT,
        id: id.into(),
        chunk_index: index,
    });
    (key(event), msg.encode())
}

fn report(event: u32, name: &str, comments: &str, at: f64) -> Record {
    let msg = IngestMessage::UserReport(UserReportMessage {
        project_id: PROJECT,
        start_time: ts(at),
        payload: json!({"event_id": event_id(event), "name": name,
                        "email": format!("{}@example.com", name.to_lowercase()), "comments": comments})
        .to_string()
        .into_bytes(),
        event_id: None,
    });
    (key(event), msg.encode())
}

fn feedback(n: u32, message: &str) -> Record {
    event(
        n,
        json!({"type": "feedback", "platform": "javascript", "level": "info",
               "contexts": {"feedback": {"contact_email": format!("user{n}@example.com"),
                                         "name": format!("User {n}"), "message": message,
                                         "url": "https://shop.example/checkout"}}}),
        vec![],
    )
}

fn occurrence(n: u32, fp: &str, ty: i32, title: &str, level: &str) -> Value {
    let id = format!("{:032x}", 0xd3c0_0000u64 + u64::from(n));
    let eid = format!("{:032x}", 0xd3e0_0000u64 + u64::from(n));
    let at = START + f64::from(n);
    json!({"id": id, "project_id": PROJECT, "event_id": eid, "fingerprint": [fp],
           "issue_title": title, "subtitle": "seen by the demo", "culprit": "jobs.nightly",
           "type": ty, "detection_time": at, "level": level,
           "evidence_display": [{"name": "where", "value": "jobs.nightly", "important": true}],
           "event": {"event_id": eid, "project_id": PROJECT, "platform": "python", "timestamp": at}})
}

/// The stream. Expected results are listed by [`expected_groups`].
pub fn mixed() -> Mixed {
    let checkout = [("app.cart", "checkout", 88), ("app.cart", "total", 41)];
    let payments = [("app.payments", "charge", 17)];
    // Relay writes events that carry attachments, their chunks, standalone attachments and user
    // reports to `ingest-attachments`; every other event to `ingest-events`.
    let attachments = vec![
        // A report that arrives before its event: saved, shimmed when event 3 arrives.
        report(3, "Bea", "Paying failed twice", START),
        chunk(1, "log-1", 0, b"Hello "),
        chunk(1, "log-1", 1, b"World!"),
        event(
            1,
            error("KeyError", "'cart'", &checkout),
            vec![chunked("log-1", "app.log", 2, "event.attachment")],
        ),
        // A report after its event.
        report(1, "Ann", "The cart emptied itself", START + 2.0),
        chunk(2, "shot-2", 0, b"screen"),
        (
            key(2),
            IngestMessage::Attachment(AttachmentMessage {
                event_id: event_id(2),
                project_id: PROJECT,
                attachment: chunked("shot-2", "screen.txt", 1, "event.attachment"),
            })
            .encode(),
        ),
        // Deliberately bad: a msgpack map without a type.
        (key(98), vec![0x80]),
    ];
    let events = vec![
        event(2, error("KeyError", "'cart_id'", &checkout), vec![]),
        event(
            3,
            error("ValueError", "amount must be positive", &payments),
            vec![],
        ),
        event(
            4,
            json!({"type": "default", "platform": "python", "level": "warning",
                   "logentry": {"formatted": "Disk almost full on web-3"}}),
            vec![],
        ),
        event(
            5,
            json!({"type": "transaction", "platform": "python", "transaction": "/checkout"}),
            vec![],
        ),
        feedback(6, "The checkout button does nothing on Firefox"),
        feedback(
            7,
            "Buy now cheap https://spam.example https://deals.example https://more.example",
        ),
        // Deliberately bad: not msgpack at all.
        (key(99), b"\xc1 not msgpack".to_vec()),
    ];
    let occurrences = vec![
        occurrence(1, "demo-db", 1001, "Slow DB query", "warning"),
        occurrence(2, "demo-db", 1001, "Slow DB query", "warning"),
        occurrence(3, "demo-cron", 4001, "Cron job missed", "error"),
        occurrence(4, "demo-n1", 1006, "N+1 query", "warning"),
    ];
    let status_changes = vec![
        json!({"id": "demo-resolve-cron", "project_id": PROJECT, "fingerprint": ["demo-cron"], "new_status": 1}),
        json!({"id": "demo-ignore-n1", "project_id": PROJECT, "fingerprint": ["demo-n1"], "new_status": 2, "new_substatus": 5}),
    ];
    Mixed {
        events,
        attachments,
        occurrences,
        status_changes,
    }
}

/// The groups the stream ends with: (type, status in words, times seen, title), sorted.
pub fn expected_groups() -> Vec<(i32, &'static str, i64, &'static str)> {
    let mut v = vec![
        // The newest event of the group names it.
        (1, "unresolved", 2, "KeyError: 'cart_id'"),
        (1, "unresolved", 1, "ValueError: amount must be positive"),
        (1, "unresolved", 1, "Disk almost full on web-3"),
        (1001, "unresolved", 2, "Slow DB query"),
        (1006, "ignored", 1, "N+1 query"),
        (4001, "resolved", 1, "Cron job missed"),
        (6001, "unresolved", 1, "User Feedback"),
        (6001, "ignored", 1, "User Feedback"),
        (6001, "unresolved", 1, "User Feedback"),
        (6001, "unresolved", 1, "User Feedback"),
    ];
    v.sort();
    v
}

/// A group as [`expected_groups`] lists them: (type, status in words, times seen, title).
pub type GroupLine = (i32, String, i64, String);

/// Every group of the database behind `conn`, sorted like [`expected_groups`].
pub fn groups(conn: &mut diesel::PgConnection) -> diesel::QueryResult<Vec<GroupLine>> {
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Integer, Text};
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer, column_name = "type")]
        group_type: i32,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = BigInt)]
        times_seen: i64,
        #[diesel(sql_type = Text)]
        title: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT g.type, CASE g.status WHEN 0 THEN 'unresolved' WHEN 1 THEN 'resolved' \
         WHEN 2 THEN 'ignored' ELSE g.status::text END AS status, g.times_seen, g.title FROM groups g \
         ORDER BY 1, 2, 3, 4",
    )
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.group_type, r.status, r.times_seen, r.title))
        .collect())
}

/// [`expected_groups`] as [`GroupLine`]s.
pub fn expected_group_lines() -> Vec<GroupLine> {
    expected_groups()
        .into_iter()
        .map(|(t, s, n, title)| (t, s.to_owned(), n, title.to_owned()))
        .collect()
}

/// Produces the stream's Kafka messages (attachments topic first), then raises its occurrences
/// and status changes through the producer-shim listening on `shim_addr`. Returns the shim's
/// HTTP statuses.
pub fn feed(brokers: &str, shim_addr: &str) -> anyhow::Result<Vec<u16>> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let m = mixed();
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "20000000")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random")
        .create()?;
    for (topic, records) in [
        ("ingest-attachments", &m.attachments),
        ("ingest-events", &m.events),
    ] {
        for (k, v) in records {
            p.send(BaseRecord::to(topic).key(k).payload(v))
                .map_err(|(e, _)| anyhow::anyhow!("produce to {topic}: {e}"))?;
        }
        p.flush(std::time::Duration::from_secs(30))?;
    }
    let mut statuses = Vec::new();
    for (path, body) in [
        ("/api/0/occurrences", Value::Array(m.occurrences)),
        ("/api/0/status-changes", Value::Array(m.status_changes)),
    ] {
        let (status, text) = sluice_testkit::http::post(
            shim_addr,
            path,
            body.to_string().as_bytes(),
            &[("content-type", "application/json")],
        )
        .ok_or_else(|| anyhow::anyhow!("producer-shim at {shim_addr} did not answer"))?;
        anyhow::ensure!(status < 300, "producer-shim {path}: {status} {text}");
        statuses.push(status);
    }
    Ok(statuses)
}

/// A message for a named topic: (topic, key, value).
pub type Addressed = (&'static str, Vec<u8>, Vec<u8>);

const TYPES: [&str; 7] = [
    "KeyError",
    "ValueError",
    "TypeError",
    "IndexError",
    "TimeoutError",
    "PermissionError",
    "ZeroDivisionError",
];

/// Event ids of [`load`] (distinct from [`mixed`]'s).
pub fn load_event_id(n: usize) -> String {
    format!("{:032x}", 0x10ad_0000_0000u64 + n as u64)
}

fn load_event(n: usize, attachments: Vec<ChunkedAttachment>) -> Vec<u8> {
    let frames: Vec<(String, String, u32)> = (0..(n % 13) % 4 + 1)
        .map(|d| {
            (
                format!("app.mod{}", (n % 13 + d) % 13),
                format!("fn{d}"),
                (n % 97) as u32,
            )
        })
        .collect();
    let refs: Vec<(&str, &str, u32)> = frames
        .iter()
        .map(|(m, f, l)| (m.as_str(), f.as_str(), *l))
        .collect();
    let mut body = error(TYPES[n % TYPES.len()], &format!("value {}", n % 50), &refs);
    body["event_id"] = json!(load_event_id(n));
    body["timestamp"] = json!(START + n as f64 / 10.0);
    IngestMessage::Event(EventMessage {
        payload: body.to_string().into_bytes(),
        start_time: ts(START + n as f64 / 10.0),
        event_id: load_event_id(n),
        project_id: PROJECT,
        remote_addr: None,
        attachments,
    })
    .encode()
}

/// A deterministic load of about `messages` messages over every input topic, in production
/// order: error events over ~90 fingerprints, every 10th with a two-chunk attachment (on
/// `ingest-attachments`, chunks first), every 10th (offset 5) followed by a standalone one-chunk
/// attachment, user reports for every 20th event (alternately before and
/// after it), a feedback for every 25th, and issue-platform occurrences over 17 fingerprints with
/// a resolve (and regressions after it) or an ignore for some fingerprints, produced straight to
/// `ingest-occurrences` keyed like producer-shim does. Feeding it twice changes nothing.
pub fn load(messages: usize) -> Vec<Addressed> {
    let events = messages * 100 / 150;
    let mut out: Vec<Addressed> = Vec::with_capacity(messages + 16);
    let occ_key = |fp: &str| format!("{fp}-{PROJECT}").into_bytes();
    for n in 0..events {
        let k = load_event_id(n).into_bytes();
        let rep = |at: f64| -> Vec<u8> {
            IngestMessage::UserReport(UserReportMessage {
                project_id: PROJECT,
                start_time: ts(at),
                payload: json!({"event_id": load_event_id(n), "name": format!("user {n}"),
                                "email": format!("u{n}@example.com"), "comments": format!("report {n}")})
                .to_string()
                .into_bytes(),
                event_id: None,
            })
            .encode()
        };
        if n % 20 == 0 && n % 40 != 0 {
            out.push((
                "ingest-attachments",
                k.clone(),
                rep(START + n as f64 / 10.0),
            ));
        }
        if n % 10 == 0 {
            let id = format!("log-{n}");
            for (i, part) in [
                &b"first half of a log line "[..],
                &b"and the second half"[..],
            ]
            .iter()
            .enumerate()
            {
                let chunk = IngestMessage::AttachmentChunk(AttachmentChunk {
                    payload: part.to_vec(),
                    event_id: load_event_id(n),
                    project_id: PROJECT,
                    id: id.clone(),
                    chunk_index: i as u32,
                });
                out.push(("ingest-attachments", k.clone(), chunk.encode()));
            }
            let a = chunked(&id, "app.log", 2, "event.attachment");
            out.push(("ingest-attachments", k.clone(), load_event(n, vec![a])));
        } else {
            out.push(("ingest-events", k.clone(), load_event(n, vec![])));
        }
        if n % 10 == 5 {
            // A standalone attachment of an event already sent, its one chunk just before it.
            let id = format!("shot-{n}");
            let chunk = IngestMessage::AttachmentChunk(AttachmentChunk {
                payload: format!("screenshot of event {n}").into_bytes(),
                event_id: load_event_id(n),
                project_id: PROJECT,
                id: id.clone(),
                chunk_index: 0,
            });
            out.push(("ingest-attachments", k.clone(), chunk.encode()));
            let a = IngestMessage::Attachment(AttachmentMessage {
                event_id: load_event_id(n),
                project_id: PROJECT,
                attachment: chunked(&id, "shot.txt", 1, "event.attachment"),
            });
            out.push(("ingest-attachments", k.clone(), a.encode()));
        }
        if n % 40 == 0 {
            out.push((
                "ingest-attachments",
                k.clone(),
                rep(START + n as f64 / 10.0 + 1.0),
            ));
        }
        if n % 25 == 0 {
            let (key, value) = feedback(
                0x10_0000 + n as u32,
                &format!("Feedback number {n}: the page is slow"),
            );
            out.push(("ingest-events", key, value));
        }
        if n % 5 == 0 {
            let fp = format!("perf-{}", n % 17);
            let mut o = occurrence(0x10_0000 + n as u32, &fp, 1001, "Slow DB query", "warning");
            o["detection_time"] = json!(START + n as f64 / 10.0);
            out.push((
                "ingest-occurrences",
                occ_key(&fp),
                o.to_string().into_bytes(),
            ));
            // Half-way, some fingerprints are resolved (later occurrences regress them) and one
            // is ignored.
            if n == events / 2 / 5 * 5 {
                for (i, status) in [(1, 1), (2, 1), (3, 2)] {
                    let fp = format!("perf-{i}");
                    let mut sc = json!({"payload_type": "status_change",
                                        "id": format!("load-status-{i}"), "project_id": PROJECT,
                                        "fingerprint": [fp], "new_status": status});
                    if status == 2 {
                        sc["new_substatus"] = json!(5);
                    }
                    out.push((
                        "ingest-occurrences",
                        occ_key(&fp),
                        sc.to_string().into_bytes(),
                    ));
                }
            }
        }
    }
    out
}

/// `n` malformed messages of many kinds, spread over every input topic: truncated msgpack,
/// msgpack of the wrong shape or types, unsupported types, huge strings, invalid UTF-8, NaN,
/// deep nesting, and bad issue-platform JSON. Each must end in its topic's DLQ with a reason.
pub fn malformed(n: usize) -> Vec<Addressed> {
    let good = load_event(1, vec![]);
    (0..n)
        .map(|i| {
            let k = format!("bad-{i}").into_bytes();
            let event_with = |payload: Vec<u8>| {
                IngestMessage::Event(EventMessage {
                    payload,
                    start_time: ts(START),
                    event_id: format!("{:032x}", 0xbad0_0000u64 + i as u64),
                    project_id: PROJECT,
                    remote_addr: None,
                    attachments: vec![],
                })
                .encode()
            };
            let eid = format!("{:032x}", 0xbad0_0000u64 + i as u64);
            match i % 10 {
                0 => ("ingest-events", k, good[..good.len() / 2].to_vec()),
                1 => ("ingest-events", k, vec![0x93, 0x01, 0x02, 0x03]),
                // {"type": "spaceship"}
                2 => (
                    "ingest-attachments",
                    k,
                    [&[0x81, 0xa4][..], b"type", &[0xa9], b"spaceship"].concat(),
                ),
                3 => (
                    "ingest-events",
                    k,
                    event_with(
                        json!({"event_id": "x".repeat(300_000), "type": "error"})
                            .to_string()
                            .into_bytes(),
                    ),
                ),
                4 => (
                    "ingest-events",
                    k,
                    event_with(vec![0xff, 0xfe, b'{', 0xc3, 0x28, b'}']),
                ),
                5 => (
                    "ingest-events",
                    k,
                    event_with(format!("{{\"event_id\": \"{eid}\", \"x\": NaN}}").into_bytes()),
                ),
                6 => (
                    "ingest-events",
                    k,
                    event_with(
                        std::iter::repeat_n(b'[', 100_000)
                            .chain(std::iter::repeat_n(b']', 100_000))
                            .collect(),
                    ),
                ),
                7 => ("ingest-feedback-events", k, good[..10].to_vec()),
                8 => (
                    "ingest-occurrences",
                    k,
                    json!({"id": "not-a-uuid", "project_id": PROJECT,
                    "fingerprint": ["x"], "issue_title": "t", "subtitle": "s", "type": 1001,
                    "detection_time": "yesterday"})
                    .to_string()
                    .into_bytes(),
                ),
                _ => (
                    "ingest-occurrences",
                    k,
                    json!({"payload_type": "telepathy", "project_id": PROJECT})
                        .to_string()
                        .into_bytes(),
                ),
            }
        })
        .collect()
}
