use super::*;
use rmpv::Value;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/relay-26.9.0/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn pack(pairs: Vec<(&str, Value)>) -> Vec<u8> {
    let map = Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    );
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &map).unwrap_or_else(|e| panic!("encode: {e}"));
    out
}

fn decode_ok(bytes: &[u8]) -> IngestMessage {
    IngestMessage::decode(bytes).unwrap_or_else(|e| panic!("decode: {e}"))
}

#[test]
fn relay_event_with_attachment_list() {
    let IngestMessage::Event(ev) = decode_ok(&fixture("ingest-attachments/001.bin")) else {
        panic!("not an event")
    };
    assert_eq!(ev.event_id, "606f3c2bc036486eac417841ebfbf7f0");
    assert_eq!(ev.project_id, 42);
    assert_eq!(ev.start_time.epoch_secs(), 1_795_432_199.0);
    assert_eq!(ev.attachments.len(), 1);
    let a = &ev.attachments[0];
    assert_eq!(a.id, "145a873a-d148-45f8-8370-b13bc3a3ffb4");
    assert_eq!(a.name, "blob-10k.bin");
    assert_eq!(a.attachment_type, "event.attachment");
    assert_eq!(
        (a.chunks, a.size, a.rate_limited),
        (Some(1), Some(10240), false)
    );
    assert_eq!(a.content_type.as_deref(), Some("application/octet-stream"));
    let json: serde_json::Value = serde_json::from_slice(&ev.payload).unwrap_or_default();
    assert_eq!(json["event_id"], "606f3c2bc036486eac417841ebfbf7f0");
}

#[test]
fn relay_chunk_user_report_attachment_and_feedback() {
    let IngestMessage::AttachmentChunk(c) = decode_ok(&fixture("ingest-attachments/000.bin"))
    else {
        panic!("not a chunk")
    };
    assert_eq!((c.chunk_index, c.payload.len()), (0, 10240));
    assert_eq!(c.id, "145a873a-d148-45f8-8370-b13bc3a3ffb4");

    let IngestMessage::UserReport(r) = decode_ok(&fixture("ingest-attachments/006.bin")) else {
        panic!("not a user report")
    };
    assert_eq!((r.project_id, r.event_id.as_deref()), (42, None));
    let json: serde_json::Value = serde_json::from_slice(&r.payload).unwrap_or_default();
    assert_eq!(json["event_id"], "d0e204294e8e4833ad83cea44088c3c8");

    let IngestMessage::Attachment(a) = decode_ok(&fixture("ingest-attachments/007.bin")) else {
        panic!("not an attachment")
    };
    assert_eq!(a.attachment.content_type.as_deref(), Some("image/png"));
    let data = a.attachment.data.unwrap_or_default();
    assert!(data.starts_with(b"\x89PNG"), "inline data kept as bytes");

    let IngestMessage::Event(f) = decode_ok(&fixture("ingest-feedback-events/000.bin")) else {
        panic!("not an event")
    };
    assert_eq!(f.remote_addr.as_deref(), Some("127.0.0.1"));
    assert!(f.attachments.is_empty());

    let IngestMessage::Event(e) = decode_ok(&fixture("ingest-events/000.bin")) else {
        panic!("not an event")
    };
    assert_eq!(e.event_id, "d0e204294e8e4833ad83cea44088c3c8");
}

#[test]
fn relay_messages_round_trip() {
    for name in [
        "ingest-attachments/000.bin",
        "ingest-attachments/001.bin",
        "ingest-attachments/006.bin",
        "ingest-attachments/007.bin",
        "ingest-events/000.bin",
        "ingest-feedback-events/000.bin",
    ] {
        let msg = decode_ok(&fixture(name));
        assert_eq!(decode_ok(&msg.encode()), msg, "{name}");
    }
}

#[test]
fn payload_as_str_and_chunk_id_alias() {
    let event = pack(vec![
        ("type", Value::from("event")),
        ("payload", Value::from(r#"{"event_id":"aa"}"#)),
        ("start_time", Value::from(1_700_000_000u64)),
        (
            "event_id",
            Value::from("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"),
        ),
        ("project_id", Value::from(7u64)),
    ]);
    let IngestMessage::Event(ev) = decode_ok(&event) else {
        panic!("not an event")
    };
    assert_eq!(ev.payload, br#"{"event_id":"aa"}"#.to_vec());
    assert_eq!(
        ev.event_id, "aaaaaaaabbbbccccddddeeeeeeeeeeee",
        "normalised"
    );
    assert!(ev.attachments.is_empty() && ev.remote_addr.is_none());

    let chunk = |key: &str| {
        pack(vec![
            ("type", Value::from("attachment_chunk")),
            ("payload", Value::Binary(vec![1, 2, 3])),
            ("event_id", Value::from("aaaaaaaabbbbccccddddeeeeeeeeeeee")),
            ("project_id", Value::from(7u64)),
            (key, Value::from("att-1")),
            ("chunk_index", Value::from(2u64)),
        ])
    };
    for key in ["id", "attachment_id"] {
        let IngestMessage::AttachmentChunk(c) = decode_ok(&chunk(key)) else {
            panic!("not a chunk")
        };
        assert_eq!(
            (c.id.as_str(), c.chunk_index, c.payload.as_slice()),
            ("att-1", 2, &[1u8, 2, 3][..])
        );
    }
}

#[test]
fn start_time_float_and_string() {
    for t in [
        Value::from(1_700_000_000.5f64),
        Value::from("2023-11-14T22:13:20.5Z"),
    ] {
        let bytes = pack(vec![
            ("type", Value::from("user_report")),
            ("payload", Value::from("{}")),
            ("start_time", t),
            ("project_id", Value::from(7u64)),
        ]);
        let IngestMessage::UserReport(r) = decode_ok(&bytes) else {
            panic!("not a report")
        };
        assert_eq!(r.start_time.epoch_secs(), 1_700_000_000.5);
    }
}

#[test]
fn bad_input_gets_a_reason() {
    let reason = |b: &[u8]| IngestMessage::decode(b).map(|_| ()).map_err(|e| e.reason);
    let good = fixture("ingest-events/000.bin");
    assert_eq!(reason(&good[..good.len() / 2]), Err(DlqReason::Undecodable));
    assert_eq!(reason(b""), Err(DlqReason::Undecodable));
    assert_eq!(reason(b"{\"json\":true}"), Err(DlqReason::Undecodable));
    assert_eq!(
        reason(&pack(vec![
            ("type", Value::from("session")),
            ("project_id", Value::from(1u64))
        ])),
        Err(DlqReason::UnsupportedType)
    );
    assert_eq!(
        reason(&pack(vec![("project_id", Value::from(1u64))])),
        Err(DlqReason::MissingField)
    );
    assert_eq!(
        reason(&pack(vec![
            ("type", Value::from("event")),
            ("payload", Value::from("{}")),
            ("start_time", Value::from(1u64)),
            ("project_id", Value::from(1u64)),
        ])),
        Err(DlqReason::MissingField),
        "event without event_id"
    );
    assert_eq!(
        reason(&pack(vec![
            ("type", Value::from("event")),
            ("project_id", Value::from("seven"))
        ])),
        Err(DlqReason::InvalidField)
    );
    assert_eq!(
        reason(&pack(vec![
            ("type", Value::from("attachment")),
            ("event_id", Value::from("not-hex")),
            ("project_id", Value::from(1u64)),
        ])),
        Err(DlqReason::InvalidField)
    );
    assert_eq!(
        reason(&pack(vec![
            ("type", Value::from("attachment")),
            ("event_id", Value::from("aaaaaaaabbbbccccddddeeeeeeeeeeee")),
            ("project_id", Value::from(1u64)),
        ])),
        Err(DlqReason::MissingField),
        "attachment without its description"
    );
}
