//! The messages an envelope becomes, compared with what Relay 26.9.0 wrote to Kafka for the same
//! SDK traffic (the captures in `crates/core/tests/fixtures/relay-26.9.0`).

use super::*;
use bytes::Bytes;
use serde_json::{json, Value};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../core/tests/fixtures/relay-26.9.0/", $name))
    };
}

fn topics() -> Topics {
    Topics {
        events: "ingest-events".into(),
        attachments: "ingest-attachments".into(),
        feedback: "ingest-feedback-events".into(),
    }
}

fn origin(event_id: Option<&str>) -> Origin {
    Origin {
        org_id: 1,
        received: Received {
            project_id: 42,
            key_id: 4201,
            at: 1_795_432_200.0,
            event_id: event_id.map(str::to_owned),
        },
        start_time: Timestamp::now(),
        remote_addr: Some("127.0.0.1".into()),
    }
}

fn decode(bytes: &[u8]) -> IngestMessage {
    IngestMessage::decode(bytes).unwrap_or_else(|e| panic!("{e:?}"))
}

fn envelope(parts: &[(&str, &[u8])], header: Value) -> Envelope {
    let mut body = header.to_string().into_bytes();
    body.push(b'\n');
    for (headers, payload) in parts {
        body.extend_from_slice(headers.as_bytes());
        body.push(b'\n');
        body.extend_from_slice(payload);
        body.push(b'\n');
    }
    Envelope::parse(Bytes::from(body)).unwrap_or_else(|e| panic!("{e}"))
}

fn event_of(m: &IngestMessage) -> (&EventMessage, Value) {
    let IngestMessage::Event(e) = m else {
        panic!("not an event: {m:?}")
    };
    let v = serde_json::from_slice(&e.payload).unwrap_or_else(|e| panic!("{e}"));
    (e, v)
}

/// The SDK's event: Relay's payload without what Relay adds.
fn sdk_event(relay: &Value) -> Value {
    let mut v = relay.clone();
    if let Some(o) = v.as_object_mut() {
        for k in [
            "_dsc",
            "_metrics",
            "grouping_config",
            "key_id",
            "project",
            "received",
            "version",
            "type",
        ] {
            o.remove(k);
        }
    }
    v
}

#[test]
fn an_error_event_becomes_relays_message() {
    let relay = decode(fixture!("ingest-events/000.bin"));
    let (relay_event, relay_json) = event_of(&relay);
    let sdk = sdk_event(&relay_json).to_string();
    let env = envelope(
        &[(r#"{"type":"event"}"#, sdk.as_bytes())],
        json!({"event_id": relay_event.event_id}),
    );
    let plan = plan(
        &env,
        env.headers.event_id.as_deref(),
        &origin(None),
        &topics(),
    );
    assert_eq!(plan.waves.len(), 1);
    let out = &plan.waves[0][0];
    assert_eq!(out.topic, "ingest-events");
    assert_eq!(&out.key[..], &fixture!("ingest-events/000.key.bin")[..]);
    let ours = decode(&out.payload);
    let (ours_event, ours_json) = event_of(&ours);
    assert_eq!(ours_event.event_id, relay_event.event_id);
    assert_eq!(ours_event.project_id, relay_event.project_id);
    assert!(ours_event.attachments.is_empty());
    for k in [
        "event_id",
        "type",
        "level",
        "platform",
        "project",
        "key_id",
        "version",
        "exception",
        "timestamp",
        "environment",
        "release",
        "tags",
        "contexts",
        "sdk",
    ] {
        assert_eq!(ours_json[k], relay_json[k], "{k}");
    }
}

#[test]
fn an_event_with_an_attachment_is_chunked_as_relay_does() {
    let relay = decode(fixture!("ingest-attachments/001.bin"));
    let (relay_event, relay_json) = event_of(&relay);
    let IngestMessage::AttachmentChunk(relay_chunk) =
        decode(fixture!("ingest-attachments/000.bin"))
    else {
        panic!("not a chunk")
    };
    let sdk = sdk_event(&relay_json).to_string();
    let env = envelope(
        &[
            (r#"{"type":"event"}"#, sdk.as_bytes()),
            (
                &format!(
                    r#"{{"type":"attachment","length":{},"filename":"blob-10k.bin","content_type":"application/octet-stream"}}"#,
                    relay_chunk.payload.len()
                ),
                &relay_chunk.payload,
            ),
        ],
        json!({"event_id": relay_event.event_id}),
    );
    let plan = plan(
        &env,
        env.headers.event_id.as_deref(),
        &origin(None),
        &topics(),
    );
    assert_eq!(plan.waves.len(), 2, "chunks first, then the event");
    let key = &fixture!("ingest-attachments/000.key.bin")[..];
    let chunk = &plan.waves[0][0];
    assert_eq!(
        (chunk.topic.as_str(), &chunk.key[..]),
        ("ingest-attachments", key)
    );
    let IngestMessage::AttachmentChunk(ours_chunk) = decode(&chunk.payload) else {
        panic!("not a chunk")
    };
    assert_eq!(ours_chunk.payload, relay_chunk.payload);
    assert_eq!(ours_chunk.chunk_index, 0);
    let event = &plan.waves[1][0];
    assert_eq!(
        (event.topic.as_str(), &event.key[..]),
        ("ingest-attachments", key)
    );
    let ours = decode(&event.payload);
    let (ours_event, ours_json) = event_of(&ours);
    assert_eq!(ours_json["type"], relay_json["type"]);
    let (a, r) = (&ours_event.attachments[0], &relay_event.attachments[0]);
    assert_eq!(a.id, ours_chunk.id);
    assert_eq!(
        (
            &a.name,
            &a.content_type,
            &a.attachment_type,
            a.chunks,
            a.size
        ),
        (
            &r.name,
            &r.content_type,
            &r.attachment_type,
            r.chunks,
            r.size
        )
    );
}

#[test]
fn user_reports_feedback_and_standalone_attachments() {
    let IngestMessage::UserReport(report) = decode(fixture!("ingest-attachments/006.bin")) else {
        panic!("not a report")
    };
    let relay_fb = decode(fixture!("ingest-feedback-events/000.bin"));
    let (relay_fb_event, relay_fb_json) = event_of(&relay_fb);
    let IngestMessage::Attachment(relay_att) = decode(fixture!("ingest-attachments/007.bin"))
    else {
        panic!("not an attachment")
    };
    let feedback = sdk_event(&relay_fb_json).to_string();
    let fb_env = envelope(
        &[(r#"{"type":"feedback"}"#, feedback.as_bytes())],
        json!({"event_id": relay_fb_event.event_id}),
    );
    let fb_plan = plan(
        &fb_env,
        fb_env.headers.event_id.as_deref(),
        &origin(None),
        &topics(),
    );
    let fb = &fb_plan.waves[0][0];
    assert_eq!(fb.topic, "ingest-feedback-events");
    assert_eq!(
        &fb.key[..],
        &fixture!("ingest-feedback-events/000.key.bin")[..]
    );
    let ours = decode(&fb.payload);
    let (ours_fb, ours_json) = event_of(&ours);
    assert_eq!(ours_fb.event_id, relay_fb_event.event_id);
    for k in ["type", "level", "contexts", "platform"] {
        assert_eq!(ours_json[k], relay_fb_json[k], "{k}");
    }

    let data = relay_att.attachment.data.clone().unwrap_or_default();
    let env = envelope(
        &[
            (r#"{"type":"user_report"}"#, &report.payload),
            (
                &format!(
                    r#"{{"type":"attachment","length":{},"filename":"screenshot.png","content_type":"image/png"}}"#,
                    data.len()
                ),
                &data,
            ),
            (r#"{"type":"client_report"}"#, br#"{"discarded_events":[]}"#),
            (r#"{"type":"transaction"}"#, b"{}"),
        ],
        json!({"event_id": relay_att.event_id}),
    );
    let plan = plan(
        &env,
        env.headers.event_id.as_deref(),
        &origin(None),
        &topics(),
    );
    assert_eq!(plan.waves.len(), 1);
    let by_topic =
        |t: &str| -> Vec<&Outgoing> { plan.waves[0].iter().filter(|o| o.topic == t).collect() };

    let att = by_topic("ingest-attachments");
    assert_eq!(att.len(), 2);
    for o in att {
        match decode(&o.payload) {
            IngestMessage::UserReport(r) => {
                assert_eq!(r.payload, report.payload);
                assert_eq!(&o.key[..], &fixture!("ingest-attachments/006.key.bin")[..]);
            }
            IngestMessage::Attachment(a) => {
                assert_eq!(&o.key[..], &fixture!("ingest-attachments/007.key.bin")[..]);
                assert_eq!(a.event_id, relay_att.event_id);
                assert_eq!(a.attachment.data, relay_att.attachment.data);
                assert_eq!(a.attachment.name, relay_att.attachment.name);
                assert_eq!(a.attachment.content_type, relay_att.attachment.content_type);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(plan.dropped.len(), 1);
    assert_eq!(plan.dropped[0].item, "transaction");
    assert_eq!(plan.dropped[0].category, category::TRANSACTION);
    assert_eq!(plan.ignored, vec!["client_report"]);
}

#[test]
fn large_standalone_attachments_are_chunked() {
    let big = vec![7u8; CHUNK_BYTES * 2 + 5];
    let env = envelope(
        &[(
            &format!(r#"{{"type":"attachment","length":{}}}"#, big.len()),
            &big,
        )],
        json!({"event_id": "9ec79c33ec9942ab8353589fcb2e04dc"}),
    );
    let plan = plan(
        &env,
        env.headers.event_id.as_deref(),
        &origin(None),
        &topics(),
    );
    assert_eq!(plan.waves.len(), 2);
    assert_eq!(plan.waves[0].len(), 3);
    let IngestMessage::Attachment(a) = decode(&plan.waves[1][0].payload) else {
        panic!("not an attachment")
    };
    assert_eq!(a.attachment.chunks, Some(3));
    assert_eq!(a.attachment.data, None);
    assert_eq!(a.attachment.size, Some(big.len() as u64));
    assert_eq!(a.attachment.name, "Unnamed Attachment");
}

#[test]
fn an_invalid_event_is_dropped_with_its_attachments() {
    let env = envelope(
        &[
            (r#"{"type":"event"}"#, b"{nope"),
            (r#"{"type":"attachment","length":3}"#, b"abc"),
        ],
        json!({"event_id": "9ec79c33ec9942ab8353589fcb2e04dc"}),
    );
    let plan = plan(
        &env,
        env.headers.event_id.as_deref(),
        &origin(None),
        &topics(),
    );
    assert!(plan.waves.is_empty());
    assert_eq!(plan.dropped.len(), 3);
    assert_eq!(plan.dropped[0].reason, "invalid_json");
    assert_eq!(
        (plan.dropped[1].category, plan.dropped[1].quantity),
        (category::ATTACHMENT, 3)
    );
    assert_eq!(
        (plan.dropped[2].category, plan.dropped[2].quantity),
        (category::ATTACHMENT_ITEM, 1)
    );
}
