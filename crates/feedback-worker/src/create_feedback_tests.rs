use super::*;

fn relay_feedback() -> Value {
    json!({
        "contexts": {"feedback": {"associated_event_id": "d0e204294e8e4833ad83cea44088c3c8", "contact_email": "jane@example.com",
                                  "message": "The new feedback widget works!", "name": "Jane Tester", "source": "api",
                                  "replay_id": "0123456789abcdef0123456789abcdef"},
                     "trace": {"trace_id": "5cda143e3ab246d98901ac1babb95373"}},
        "event_id": "5cda143e3ab246d98901ac1babb95373", "level": "info", "platform": "python", "received": 1795432200.041384,
        "timestamp": 1795432200.02033, "type": "feedback", "user": {"id": 7, "name": "Jane", "isStaff": true},
        "tags": [["a", "b"]], "sdk": {"name": "sentry.python", "version": "2.75.0"}, "dist": "drop-me",
    })
}

#[test]
fn filters_use_sentrys_reasons() {
    assert_eq!(feedback_message(&json!({})), Err(Filtered::MissingContext));
    assert_eq!(
        feedback_message(&json!({"contexts": {"feedback": {"message": null}}})),
        Err(Filtered::MissingContext)
    );
    let unattended = json!({"contexts": {"feedback": {"message": "Sent in the unattended mode"}}});
    assert_eq!(
        feedback_message(&unattended).map_err(Filtered::reason),
        Err("Sent in Unreal Unattended Mode")
    );
    assert_eq!(
        feedback_message(&json!({"contexts": {"feedback": {"message": "  \n "}}})),
        Err(Filtered::Empty)
    );
    assert_eq!(
        Filtered::MissingContext.reason(),
        "Missing Feedback Context"
    );
    assert_eq!(Filtered::Empty.reason(), "Empty Feedback Message");
}

#[test]
fn occurrence_and_event_shape() {
    let ev = relay_feedback();
    let f = build(
        ev.clone(),
        &event_id(&ev, b"{}"),
        42,
        FeedbackSource::NewFeedbackEnvelope,
        4096,
        None,
        Timestamp::now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        f.occurrence_id,
        ids::feedback_occurrence_id(42, "5cda143e3ab246d98901ac1babb95373")
    );
    let o = &f.occurrence;
    assert_eq!(
        (
            o.issue_title.as_str(),
            o.subtitle.as_str(),
            o.culprit.as_deref()
        ),
        (
            "User Feedback",
            "The new feedback widget works!",
            Some("user")
        )
    );
    assert_eq!(
        (o.group_type, o.fingerprint.clone()),
        (6001, vec![f.occurrence_id.clone()])
    );
    let names: Vec<&str> = o
        .evidence_display
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "associated_event_id",
            "contact_email",
            "message",
            "name",
            "source"
        ]
    );
    assert!(o
        .evidence_display
        .iter()
        .flatten()
        .any(|e| e.name == "message" && e.important));
    let data = o.evidence_data.clone().unwrap_or_default();
    assert_eq!(data["source"], "new_feedback_envelope");
    assert!(data.get("is_spam").is_none());

    let fixed = serde_json::to_value(o.event.clone()).unwrap_or_default();
    assert_eq!(
        fixed["user"],
        json!({"id": "7", "email": "jane@example.com"}),
        "name/isStaff removed, id a string, email fallback"
    );
    assert_eq!(
        fixed["contexts"]["replay"]["replay_id"],
        "0123456789abcdef0123456789abcdef"
    );
    assert_eq!(fixed["environment"], "production");
    let tags: Vec<(String, String)> =
        serde_json::from_value(fixed["tags"].clone()).unwrap_or_default();
    assert!(tags.contains(&("user.email".into(), "jane@example.com".into())));
    assert!(tags.contains(&("trace.id".into(), "5cda143e3ab246d98901ac1babb95373".into())));
    assert!(tags.contains(&("a".into(), "b".into())));
    assert!(fixed.get("dist").is_none(), "dist is dropped");
    assert_eq!(f.detection_time.0.timestamp(), 1795432200);
}

#[test]
fn spam_and_oversize() {
    let mut ev = relay_feedback();
    ev["contexts"]["feedback"]["message"] = json!("x".repeat(7007));
    let f = build(
        ev.clone(),
        &event_id(&ev, b"{}"),
        42,
        FeedbackSource::UserReportEnvelope,
        4096,
        Some("message longer than 4096 characters"),
        Timestamp::now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.occurrence.subtitle.chars().count(), 4096);
    let data = f.occurrence.evidence_data.clone().unwrap_or_default();
    assert_eq!(
        data["message"].as_str().map(str::len),
        Some(7007),
        "evidence keeps the original text"
    );
    assert_eq!(
        (data["is_spam"].clone(), data["spam_reason"].clone()),
        (json!(true), json!("message longer than 4096 characters"))
    );
    assert_eq!(data["source"], "user_report_envelope");
}
