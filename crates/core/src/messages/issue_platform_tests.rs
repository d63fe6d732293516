use super::*;
use serde_json::json;

fn decode(v: Value) -> Result<IssuePlatformMessage, DlqReason> {
    IssuePlatformMessage::decode(v.to_string().as_bytes()).map_err(|e| e.reason)
}

fn occurrence(extra: Value) -> Value {
    let mut base = json!({
        "id": "55f1e8a0-8d9c-4b6b-9a44-0f4d7c5b0d11",
        "project_id": 42,
        "event_id": "606f3c2bc036486eac417841ebfbf7f0",
        "fingerprint": ["touch-id"],
        "issue_title": "Something broke",
        "subtitle": "in the thing",
        "type": 6001,
        "detection_time": 1795432200.25,
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}

#[test]
fn occurrence_defaults_and_timestamps() {
    for t in [
        json!(1795432200.25),
        json!("2026-11-23T11:10:00.25Z"),
        json!("2026-11-23T12:10:00.25+01:00"),
    ] {
        let Ok(IssuePlatformMessage::Occurrence(o)) =
            decode(occurrence(json!({"detection_time": t})))
        else {
            panic!("decode")
        };
        assert_eq!(o.detection_time.epoch_secs(), 1795432200.25);
        assert_eq!(
            o.level.as_deref(),
            Some("info"),
            "absent level defaults to info"
        );
        assert!(o.event.is_none());
    }
    let Ok(IssuePlatformMessage::Occurrence(o)) =
        decode(occurrence(json!({"level": null, "event": {}})))
    else {
        panic!("decode")
    };
    assert_eq!(o.level, None, "explicit null level stays null");
    assert!(o.event.is_none(), "empty event means no event");
}

#[test]
fn embedded_event_shapes() {
    let ev = json!({
        "event_id": "606f3c2bc036486eac417841ebfbf7f0",
        "project_id": 42,
        "platform": "python",
        "timestamp": "2026-11-23T11:10:00",
        "received": 1795432200,
        "tags": [["a", "1"], ["b", 2]],
        "contexts": {"feedback": {"message": "hi"}},
        "not_whitelisted": true,
    });
    let Ok(IssuePlatformMessage::Occurrence(o)) = decode(occurrence(json!({"event": ev}))) else {
        panic!("decode")
    };
    let e = o.event.clone().unwrap_or_else(|| panic!("event kept"));
    assert_eq!(
        e.tags,
        Some(Tags(vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into())
        ]))
    );
    assert_eq!(e.timestamp.map(|t| t.epoch_secs()), Some(1795432200.0));
    assert!(e.optional.contexts.is_some());
    let out = IssuePlatformMessage::Occurrence(o).to_json();
    assert!(
        out["event"].get("not_whitelisted").is_none(),
        "unknown keys dropped"
    );
    assert_eq!(out["payload_type"], "occurrence");

    let obj_tags =
        json!({"event_id": "e", "project_id": 1, "platform": "x", "tags": {"k": "v", "n": null}});
    let Ok(IssuePlatformMessage::Occurrence(o)) = decode(occurrence(json!({"event": obj_tags})))
    else {
        panic!("decode")
    };
    assert_eq!(
        o.event.and_then(|e| e.tags),
        Some(Tags(vec![("k".into(), "v".into())]))
    );

    assert_eq!(
        decode(occurrence(
            json!({"event": {"event_id": "e", "project_id": 1}})
        ))
        .map(|_| ()),
        Err(DlqReason::MissingField),
        "event without platform"
    );
}

#[test]
fn occurrence_round_trip() {
    let ev = json!({"event_id": "606f3c2bc036486eac417841ebfbf7f0", "project_id": 42, "platform": "other",
                    "timestamp": 1795432200.5, "tags": {"level": "error"}});
    let src = occurrence(json!({
        "evidence_display": [{"name": "n", "value": "v", "important": true}],
        "evidence_data": {"k": [1, 2]},
        "culprit": "user",
        "initial_issue_priority": 75,
        "event": ev,
        "resource_id": null,
    }));
    let msg = decode(src).unwrap_or_else(|r| panic!("{r}"));
    let again = IssuePlatformMessage::decode(&msg.encode()).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(again, msg);
    assert_eq!(msg.partition_key().as_deref(), Some("touch-id-42"));
    assert_eq!(msg.ordering_key(), "touch-id");
}

#[test]
fn status_change_ids_and_validation() {
    let sc = json!({"payload_type": "status_change", "id": "abc", "project_id": 1,
                    "fingerprint": ["group-1"], "new_status": 2, "new_substatus": 5});
    let Ok(IssuePlatformMessage::StatusChange(s)) = decode(sc.clone()) else {
        panic!("decode")
    };
    assert_eq!(
        (s.id.as_str(), s.new_status, s.new_substatus),
        ("abc", 2, Some(5))
    );
    let msg = IssuePlatformMessage::StatusChange(s);
    assert_eq!(msg.partition_key().as_deref(), Some("group-1-1"));
    assert_eq!(IssuePlatformMessage::decode(&msg.encode()).ok(), Some(msg));

    let legacy =
        r#"{"payload_type":"status_change","project_id":1,"fingerprint":["g"],"new_status":1}"#;
    let Ok(IssuePlatformMessage::StatusChange(l)) = IssuePlatformMessage::decode(legacy.as_bytes())
    else {
        panic!("decode")
    };
    assert_eq!(
        l.id,
        crate::ids::md5_hex_bytes(legacy.as_bytes()),
        "id-less legacy gets md5 of its bytes"
    );
    assert_eq!(l.new_substatus, None);

    let empty = json!({"payload_type": "status_change", "project_id": 1, "fingerprint": [], "new_status": 1});
    assert_eq!(decode(empty).map(|_| ()), Err(DlqReason::InvalidField));
}

#[test]
fn rejections_carry_reasons() {
    let r = |b: &[u8]| {
        IssuePlatformMessage::decode(b)
            .map(|_| ())
            .map_err(|e| e.reason)
    };
    assert_eq!(r(b"{not json"), Err(DlqReason::Undecodable));
    assert_eq!(r(b"[1,2]"), Err(DlqReason::InvalidField));
    assert_eq!(
        r(br#"{"payload_type":"bogus"}"#),
        Err(DlqReason::UnsupportedType)
    );
    assert_eq!(r(br#"{"payload_type":7}"#), Err(DlqReason::InvalidField));
    let mut no_title = occurrence(json!({}));
    if let Value::Object(m) = &mut no_title {
        m.remove("issue_title");
    }
    assert_eq!(decode(no_title).map(|_| ()), Err(DlqReason::MissingField));
    assert_eq!(
        decode(occurrence(json!({"project_id": "x"}))).map(|_| ()),
        Err(DlqReason::InvalidField)
    );
    assert_eq!(
        decode(occurrence(json!({"detection_time": "soon"}))).map(|_| ()),
        Err(DlqReason::InvalidField)
    );
    assert_eq!(
        r(br#"{"id":"x","detection_time":NaN}"#),
        Err(DlqReason::Undecodable)
    );
}

/// `EmbeddedEvent::from_object` builds what deserializing the same object builds, and fails
/// where it fails.
#[test]
fn embedded_event_from_an_object_matches_its_deserialization() {
    let cases = [
        json!({"event_id": "e1", "project_id": 42, "platform": "python"}),
        json!({"event_id": "e1", "project_id": 42, "platform": "other",
               "timestamp": 1795432200.25, "received": "2026-11-20T10:30:00Z",
               "tags": {"a": "1", "n": 2, "skip": null}, "level": "info",
               "contexts": {"feedback": {"message": "hi"}}, "user": {"email": "u@x.io"},
               "request": {}, "sdk": null, "unknown_block": {"kept": false}}),
        json!({"event_id": "e1", "project_id": 42, "platform": "js",
               "tags": [["a", "1"], null, ["b", true]], "level": null, "timestamp": null}),
        // Failures: a required field missing or of the wrong type, a bad timestamp or tags.
        json!({"project_id": 42, "platform": "js"}),
        json!({"event_id": "e1", "project_id": "42", "platform": "js"}),
        json!({"event_id": "e1", "project_id": 42, "platform": 7}),
        json!({"event_id": "e1", "project_id": 42, "platform": "js", "timestamp": "soon"}),
        json!({"event_id": "e1", "project_id": 42, "platform": "js", "tags": "a=1"}),
    ];
    for case in cases {
        let Value::Object(m) = case.clone() else {
            panic!("not an object: {case}");
        };
        let direct = EmbeddedEvent::from_object(m).ok();
        let derived = serde_json::from_value::<EmbeddedEvent>(case.clone()).ok();
        assert_eq!(direct, derived, "for {case}");
    }
}
