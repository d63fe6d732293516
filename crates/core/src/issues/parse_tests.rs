use super::*;
use crate::messages::IssuePlatformMessage;
use serde_json::json;

fn msg(extra: Value) -> OccurrenceMessage {
    let mut base = json!({
        "id": "55F1E8A0-8D9C-4B6B-9A44-0F4D7C5B0D11",
        "project_id": 42,
        "event_id": "606f3c2b-c036-486e-ac41-7841ebfbf7f0",
        "fingerprint": ["hi", "bye"],
        "issue_title": "something bad happened",
        "subtitle": "it was bad",
        "culprit": "api/123",
        "type": 1001,
        "detection_time": 1795432200.5,
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        for (k, v) in e {
            if v.is_null() && k.starts_with('-') {
                b.remove(&k[1..]);
            } else {
                b.insert(k, v);
            }
        }
    }
    match IssuePlatformMessage::decode(base.to_string().as_bytes()) {
        Ok(IssuePlatformMessage::Occurrence(o)) => *o,
        other => panic!("decode: {other:?}"),
    }
}

fn reason(m: &OccurrenceMessage) -> Option<DlqReason> {
    parse(m).err().map(|r| r.reason)
}

#[test]
fn uuid_coercion_and_fingerprint_hashes() {
    let o = parse(&msg(json!({}))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.id, "55f1e8a08d9c4b6b9a440f4d7c5b0d11");
    assert_eq!(o.event_id, "606f3c2bc036486eac417841ebfbf7f0");
    assert_eq!(o.fingerprint, vec![md5_hex("hi"), md5_hex("bye")]);
    assert_eq!(o.culprit, "api/123");
    // A fingerprint that is already an md5 is hashed again (Sentry's test vector).
    let pre = parse(&msg(json!({"fingerprint": [md5_hex("1")]}))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pre.fingerprint,
        vec!["28c8edde3d61a0411511d3b1866f0636".to_owned()]
    );
    let two = parse(&msg(json!({"fingerprint": [md5_hex("2")]}))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        two.fingerprint,
        vec!["665f644e43731ff9db3d341da5c827e1".to_owned()]
    );
}

#[test]
fn invalid_ids_and_types() {
    assert_eq!(
        reason(&msg(json!({"id": "hi"}))),
        Some(DlqReason::InvalidField)
    );
    assert_eq!(
        reason(&msg(json!({"event_id": "hi"}))),
        Some(DlqReason::InvalidField)
    );
    assert_eq!(
        reason(&msg(json!({"type": 300}))),
        Some(DlqReason::UnknownGroupType)
    );
    assert_eq!(
        reason(&msg(json!({"level": "loud"}))),
        Some(DlqReason::InvalidField)
    );
    assert_eq!(
        reason(&msg(json!({"fingerprint": []}))),
        Some(DlqReason::InvalidField)
    );
    assert_eq!(
        reason(&msg(json!({"-event_id": null}))),
        Some(DlqReason::MissingField),
        "no event id, no event"
    );
}

#[test]
fn priority_defaults_to_the_group_type_and_can_be_overridden() {
    let low = parse(&msg(json!({}))).map(|o| (o.priority, o.initial_issue_priority));
    assert_eq!(low, Ok((25, None)), "performance types default to LOW");
    let high = parse(&msg(json!({"initial_issue_priority": 75}))).map(|o| o.priority);
    assert_eq!(high, Ok(75));
    let err = parse(&msg(json!({"type": 1}))).map(|o| o.priority);
    assert_eq!(err, Ok(50));
}

#[test]
fn embedded_event_checks_and_shape() {
    let ev = json!({"event_id": "606f3c2bc036486eac417841ebfbf7f0", "project_id": 42, "platform": "python",
                    "timestamp": 1795432199.25, "received": 1795432200, "tags": {"a": "b"}, "level": "error"});
    let o = parse(&msg(json!({"event": ev, "level": "warning"}))).unwrap_or_else(|e| panic!("{e}"));
    let body = o.event.unwrap_or_default();
    assert_eq!(body["type"], "generic");
    assert_eq!(body["level"], "warning", "the occurrence's level wins");
    assert_eq!(body["metadata"]["title"], "something bad happened");
    assert_eq!(
        body["timestamp"], 1795432199.25,
        "epoch-number timestamps accepted"
    );
    assert_eq!(body["tags"], json!([["a", "b"]]));

    let other_id =
        json!({"event_id": "00000000000000000000000000000001", "project_id": 42, "platform": "x"});
    assert_eq!(
        reason(&msg(json!({"event": other_id}))),
        Some(DlqReason::IdMismatch)
    );
    let other_project =
        json!({"event_id": "606f3c2bc036486eac417841ebfbf7f0", "project_id": 7, "platform": "x"});
    assert_eq!(
        reason(&msg(json!({"event": other_project}))),
        Some(DlqReason::IdMismatch)
    );
    let from_event = json!({"event_id": "606F3C2B-C036-486E-AC41-7841EBFBF7F0", "project_id": 42, "platform": "x"});
    let o = parse(&msg(json!({"event": from_event, "-event_id": null}))).map(|o| o.event_id);
    assert_eq!(
        o.as_deref(),
        Ok("606f3c2bc036486eac417841ebfbf7f0"),
        "top-level event id taken from the event"
    );
}
