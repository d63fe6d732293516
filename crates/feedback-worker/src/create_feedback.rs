//! `create_feedback_issue`: filters, evidence, the event fixed for
//! the issue platform, and the occurrence, one issue per feedback with the uuid5 ids of `sluice_core::ids`.

use serde_json::{json, Map, Value};
use sluice_core::ids;
use sluice_core::messages::enums::FeedbackSource;
use sluice_core::messages::{
    DlqReason, EmbeddedEvent, IssueEvidence, OccurrenceMessage, Rejection, Timestamp,
};

/// Group type of feedback issues.
pub const FEEDBACK_TYPE: i32 = 6001;

/// Why a feedback is filtered (Sentry's later outcome reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtered {
    MissingContext,
    UnrealUnattended,
    Empty,
}

impl Filtered {
    /// The INVALID outcome's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Filtered::MissingContext => "Missing Feedback Context",
            Filtered::UnrealUnattended => "Sent in Unreal Unattended Mode",
            Filtered::Empty => "Empty Feedback Message",
        }
    }
    /// A bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Filtered::MissingContext => "missing_context",
            Filtered::UnrealUnattended => "unreal.unattended",
            Filtered::Empty => "empty",
        }
    }
}

/// The top-level fields of a feedback event this worker reads: its id, the feedback context,
/// the user report's environment, and what the issue platform's event keeps
/// ([`fix_for_issue_platform`]). The others (breadcrumbs, extra, modules, ...) are checked as
/// JSON but never built (`sluice_core::json::object_fields`).
pub const FIELDS: &[&str] = &[
    "event_id",
    "timestamp",
    "received",
    "contexts",
    "user",
    "tags",
    "platform",
    "level",
    "environment",
    "request",
    "sdk",
    "release",
];

/// The feedback message, or why the feedback is filtered.
pub fn feedback_message(event: &Value) -> Result<&str, Filtered> {
    let message = event
        .get("contexts")
        .and_then(|c| c.get("feedback"))
        .and_then(|f| f.get("message"))
        .and_then(Value::as_str)
        .ok_or(Filtered::MissingContext)?;
    if message == "Sent in the unattended mode" {
        return Err(Filtered::UnrealUnattended);
    }
    if message.trim().is_empty() {
        return Err(Filtered::Empty);
    }
    Ok(message)
}

/// The feedback event's id (32 hex): its own, or derived from the payload when it has none.
pub fn event_id(event: &Value, payload: &[u8]) -> String {
    event
        .get("event_id")
        .and_then(Value::as_str)
        .and_then(|e| ids::uuid_hex(e).ok())
        .unwrap_or_else(|| ids::md5_hex_bytes(payload))
}

/// Everything produced for one feedback.
#[derive(Debug, Clone)]
pub struct Feedback {
    pub occurrence: OccurrenceMessage,
    /// uuid5 `fb:{project}:{event}`: occurrence id and fingerprint.
    pub occurrence_id: String,
    pub detection_time: Timestamp,
}

fn truthy(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Bool(b) => *b,
        _ => true,
    })
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

/// Builds the occurrence (with its event) for a feedback that passed the filters, taking the
/// event apart rather than copying it. `event_id` is the one [`event_id`] found when the
/// message was decoded. `spam` is the reason when spam detection flagged it; `received` is used
/// when the event has none.
pub fn build(
    event: Value,
    event_id: &str,
    project_id: u64,
    source: FeedbackSource,
    max_size: usize,
    spam: Option<&str>,
    received: Timestamp,
) -> Result<Feedback, Rejection> {
    let message = feedback_message(&event)
        .map_err(|f| Rejection::new(DlqReason::InvalidEvent, f.reason()))?;
    let subtitle: String = message.chars().take(max_size).collect();
    let occurrence_id = ids::feedback_occurrence_id(project_id, event_id);
    let detection_time = event
        .get("timestamp")
        .map(|t| serde_json::from_value::<Timestamp>(t.clone()))
        .transpose()
        .map_err(|e| Rejection::new(DlqReason::InvalidEvent, format!("timestamp: {e}")))?
        .unwrap_or(received);
    let empty = Map::new();
    let feedback = event
        .get("contexts")
        .and_then(|c| c.get("feedback"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);

    // Evidence, in Sentry's order.
    let mut data = Map::new();
    let mut display = Vec::new();
    for (key, important) in [
        ("associated_event_id", false),
        ("contact_email", false),
        ("message", true),
        ("name", false),
    ] {
        if let Some(v) = truthy(feedback.get(key)) {
            data.insert(key.into(), v.clone());
            display.push(IssueEvidence {
                name: key.into(),
                value: text(v),
                important,
            });
        }
    }
    data.insert("source".into(), json!(source.as_str()));
    display.push(IssueEvidence {
        name: "source".into(),
        value: source.as_str().into(),
        important: false,
    });
    if let Some(reason) = spam {
        data.insert("is_spam".into(), json!(true));
        data.insert("spam_reason".into(), json!(reason));
        display.push(IssueEvidence {
            name: "is_spam".into(),
            value: "True".into(),
            important: false,
        });
        display.push(IssueEvidence {
            name: "spam_reason".into(),
            value: reason.into(),
            important: false,
        });
    }

    let level = event
        .get("level")
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty())
        .unwrap_or("info")
        .to_owned();
    let fixed = fix_for_issue_platform(event, project_id, event_id, detection_time, received);
    let embedded = EmbeddedEvent::from_object(fixed)
        .map_err(|e| Rejection::new(DlqReason::InvalidEvent, format!("feedback event: {e}")))?;
    let occurrence = OccurrenceMessage {
        id: occurrence_id.clone(),
        project_id,
        event_id: Some(event_id.to_owned()),
        fingerprint: vec![occurrence_id.clone()],
        issue_title: "User Feedback".into(),
        subtitle,
        resource_id: None,
        evidence_data: Some(data),
        evidence_display: Some(display),
        group_type: FEEDBACK_TYPE,
        detection_time,
        level: Some(level),
        culprit: Some("user".into()),
        initial_issue_priority: None,
        assignee: None,
        event: Some(embedded),
        is_buffered_spans: false,
    };
    Ok(Feedback {
        occurrence,
        occurrence_id,
        detection_time,
    })
}

/// Sentry's `fix_for_issue_platform`: the input event with
/// defaults, the replay context, the user cleaned up (email falls back to the contact email),
/// tags as an object with `user.email` and `trace.id`, and the message as `logentry`. The event's
/// blocks are moved into the result, not copied.
pub fn fix_for_issue_platform(
    event: Value,
    project_id: u64,
    event_id: &str,
    ts: Timestamp,
    received: Timestamp,
) -> Map<String, Value> {
    let mut event = match event {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut take = |k: &str| event.remove(k).filter(|v| !v.is_null());
    let mut contexts = take("contexts")
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let feedback = contexts.get("feedback");
    let replay_id = truthy(feedback.and_then(|f| f.get("replay_id"))).cloned();
    let contact_email = truthy(feedback.and_then(|f| f.get("contact_email"))).cloned();
    let message = feedback
        .and_then(|f| f.get("message"))
        .cloned()
        .unwrap_or(Value::Null);
    if contexts.get("replay").is_none() {
        if let Some(replay_id) = replay_id {
            contexts["replay"] = json!({ "replay_id": replay_id });
        }
    }
    let mut user = take("user")
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if let Value::Object(u) = &mut user {
        u.remove("name");
        u.remove("isStaff");
        if let Some(id) = u.get("id").filter(|v| !v.is_null()) {
            let id = text(id);
            u.insert("id".into(), Value::String(id));
        }
        if truthy(u.get("email")).is_none() {
            if let Some(email) = contact_email {
                u.insert("email".into(), email);
            }
        }
    }
    let mut tags = Map::new();
    match take("tags") {
        Some(Value::Object(m)) => tags = m,
        Some(Value::Array(pairs)) => {
            for p in pairs {
                if let Value::Array(mut kv) = p {
                    if kv.len() >= 2 {
                        let v = kv.swap_remove(1);
                        if let Value::String(k) = kv.swap_remove(0) {
                            tags.insert(k, v);
                        }
                    }
                }
            }
        }
        _ => {}
    }
    if let Some(email) = user.get("email").and_then(Value::as_str) {
        tags.entry("user.email").or_insert_with(|| json!(email));
    }
    if let Some(trace) = contexts
        .get("trace")
        .and_then(|t| t.get("trace_id"))
        .and_then(Value::as_str)
    {
        tags.entry("trace.id").or_insert_with(|| json!(trace));
    }
    let mut out = Map::new();
    out.insert("event_id".into(), json!(event_id));
    out.insert("project_id".into(), json!(project_id));
    out.insert(
        "timestamp".into(),
        json!(ts.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    );
    out.insert(
        "received".into(),
        take("received").unwrap_or_else(|| json!(received.epoch_secs())),
    );
    out.insert("contexts".into(), contexts);
    for (key, default) in [
        ("platform", "other"),
        ("level", "info"),
        ("environment", "production"),
    ] {
        out.insert(key.into(), take(key).unwrap_or_else(|| json!(default)));
    }
    out.insert(
        "request".into(),
        take("request").unwrap_or_else(|| json!({})),
    );
    out.insert("user".into(), user);
    out.insert("tags".into(), Value::Object(tags));
    out.insert("logentry".into(), json!({ "message": message }));
    for key in ["sdk", "release"] {
        if let Some(v) = take(key).filter(|v| truthy(Some(v)).is_some()) {
            out.insert(key.into(), v);
        }
    }
    out
}

#[cfg(test)]
#[path = "create_feedback_tests.rs"]
mod tests;
