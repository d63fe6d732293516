//! The little event normalization the pipeline needs, done where Relay would do it: an event id,
//! `timestamp` and `received` as epoch seconds, a known `level` and `platform`, the event `type`,
//! `logentry` from a plain `message`, `exception` as `{"values": […]}`, and the project and key
//! the event was sent for. Everything else is passed on as the SDK sent it.

use serde_json::{json, Map, Value};

/// Why an event payload cannot be used (it is dropped with an INVALID outcome, as Relay does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("the event is not a JSON object: {0}")]
    Json(String),
}

impl InvalidEvent {
    /// The outcome reason Relay gives this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            InvalidEvent::Json(_) => "invalid_json",
        }
    }
}

/// What the request adds to each event.
#[derive(Debug, Clone)]
pub struct Received {
    pub project_id: u64,
    pub key_id: i64,
    /// Epoch seconds.
    pub at: f64,
    /// The envelope's `event_id`: when set, it is the event's id whatever the payload says
    /// (as Relay does, so the id the client was answered with is the stored one).
    pub event_id: Option<String>,
}

/// Timestamps further in the future than this (seconds) are taken as clock drift.
const MAX_FUTURE_SECS: f64 = 60.0;
/// Timestamps further in the past than this are replaced by the time received.
const MAX_PAST_SECS: f64 = 30.0 * 86_400.0;

/// The platforms Sentry knows; any other becomes `other`.
const PLATFORMS: &[&str] = &[
    "as3",
    "c",
    "cfml",
    "cocoa",
    "csharp",
    "elixir",
    "go",
    "groovy",
    "haskell",
    "java",
    "javascript",
    "native",
    "node",
    "objc",
    "other",
    "perl",
    "php",
    "python",
    "ruby",
    "dart",
    "unity",
    "nintendo-switch",
    "playstation",
    "xbox",
    "rust",
    "swift",
    "kotlin",
    "powershell",
];

/// A UUID in any of its spellings as 32 lowercase hex characters.
pub fn event_id(s: &str) -> Option<String> {
    uuid::Uuid::try_parse(s.trim())
        .ok()
        .filter(|u| !u.is_nil())
        .map(|u| u.simple().to_string())
}

fn epoch(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => {
            if let Ok(f) = s.trim().parse::<f64>() {
                return Some(f).filter(|f| f.is_finite());
            }
            let s = s.trim();
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                        .map(|t| t.and_utc())
                })
                .ok()
                .map(|t| t.timestamp_micros() as f64 / 1e6)
        }
        _ => None,
    }
}

/// `v` as one of Sentry's levels, `default` when it is missing or not one of them.
pub(crate) fn level(v: Option<&Value>, default: &'static str) -> String {
    let Some(s) = v.and_then(Value::as_str) else {
        return default.into();
    };
    match s.trim().to_ascii_lowercase().as_str() {
        "fatal" | "critical" => "fatal".into(),
        "error" => "error".into(),
        "warning" | "warn" => "warning".into(),
        "info" | "log" => "info".into(),
        "debug" => "debug".into(),
        _ => default.into(),
    }
}

/// Normalizes an `event` (or, with `feedback`, a `feedback`) item's payload; returns its event id
/// and the JSON to put in the ingest message.
pub fn event(
    payload: &[u8],
    received: &Received,
    feedback: bool,
) -> Result<(String, Vec<u8>), InvalidEvent> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| InvalidEvent::Json(e.to_string()))?;
    let Value::Object(mut e) = value else {
        return Err(InvalidEvent::Json("not an object".into()));
    };
    let id = received
        .event_id
        .clone()
        .or_else(|| e.get("event_id").and_then(Value::as_str).and_then(event_id))
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    e.insert("event_id".into(), json!(id));

    let at = received.at;
    let timestamp = e
        .get("timestamp")
        .and_then(epoch)
        .filter(|t| *t <= at + MAX_FUTURE_SECS && *t >= at - MAX_PAST_SECS)
        .unwrap_or(at);
    e.insert("timestamp".into(), json!(timestamp));
    e.insert("received".into(), json!(at));

    let default_level = if feedback { "info" } else { "error" };
    let lvl = level(e.get("level"), default_level);
    e.insert("level".into(), json!(lvl));

    let platform = match e.get("platform").and_then(Value::as_str) {
        Some(p) if PLATFORMS.contains(&p) => p.to_owned(),
        _ => "other".to_owned(),
    };
    e.insert("platform".into(), json!(platform));

    normalize_message(&mut e);
    if let Some(Value::Array(values)) = e.get("exception") {
        let values = values.clone();
        e.insert("exception".into(), json!({ "values": values }));
    }

    let ty = if feedback {
        "feedback"
    } else {
        match e.get("type").and_then(Value::as_str) {
            Some("transaction") => "transaction",
            Some("feedback") => "feedback",
            _ if has_exception(&e) => "error",
            _ => "default",
        }
    };
    e.insert("type".into(), json!(ty));
    e.insert("project".into(), json!(received.project_id));
    e.insert("key_id".into(), json!(received.key_id.to_string()));
    e.insert("version".into(), json!("7"));
    // Serializing a map of JSON values cannot fail.
    let bytes = serde_json::to_vec(&Value::Object(e)).unwrap_or_default();
    Ok((id, bytes))
}

fn has_exception(e: &Map<String, Value>) -> bool {
    e.get("exception")
        .and_then(|x| x.get("values"))
        .and_then(Value::as_array)
        .is_some_and(|v| !v.is_empty())
}

/// `message` (a string, or the legacy object) becomes `logentry` unless one was sent.
fn normalize_message(e: &mut Map<String, Value>) {
    let Some(message) = e.remove("message") else {
        return;
    };
    if e.get("logentry").is_some_and(|l| !l.is_null()) {
        return;
    }
    let entry = match message {
        Value::String(s) => json!({ "formatted": s }),
        Value::Object(o) => Value::Object(o),
        Value::Null => return,
        other => json!({ "formatted": other.to_string() }),
    };
    e.insert("logentry".into(), entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received() -> Received {
        Received {
            project_id: 42,
            key_id: 4201,
            at: 1_795_432_200.0,
            event_id: None,
        }
    }

    fn norm(v: Value) -> Value {
        let (_, bytes) =
            event(v.to_string().as_bytes(), &received(), false).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn fills_what_the_pipeline_needs() {
        let e = norm(json!({"message": "hello", "extra": {"a": 1}}));
        assert_eq!(e["event_id"].as_str().map(str::len), Some(32));
        assert_eq!(e["timestamp"], json!(1_795_432_200.0));
        assert_eq!(e["received"], json!(1_795_432_200.0));
        assert_eq!(e["level"], "error");
        assert_eq!(e["platform"], "other");
        assert_eq!(e["type"], "default");
        assert_eq!(e["logentry"], json!({"formatted": "hello"}));
        assert!(e.get("message").is_none());
        assert_eq!(e["project"], 42);
        assert_eq!(e["key_id"], "4201");
        assert_eq!(e["extra"], json!({"a": 1}));
    }

    #[test]
    fn keeps_what_is_valid() {
        let e = norm(json!({
            "event_id": "9EC79C33-EC99-42AB-8353-589FCB2E04DC",
            "timestamp": "2026-11-23T08:29:00.5Z",
            "level": "warn", "platform": "python",
            "exception": [{"type": "ValueError", "value": "x"}],
        }));
        assert_eq!(e["event_id"], "9ec79c33ec9942ab8353589fcb2e04dc");
        assert_eq!(e["timestamp"], json!(1_795_422_540.5));
        assert_eq!(e["level"], "warning");
        assert_eq!(e["platform"], "python");
        assert_eq!(e["type"], "error");
        assert_eq!(e["exception"]["values"][0]["type"], "ValueError");
    }

    #[test]
    fn out_of_range_values_are_replaced() {
        let e = norm(
            json!({"timestamp": 4e12, "level": "loud", "platform": "cobol",
                            "event_id": "not-a-uuid"}),
        );
        assert_eq!(e["timestamp"], json!(1_795_432_200.0));
        assert_eq!(e["level"], "error");
        assert_eq!(e["platform"], "other");
        assert_eq!(e["event_id"].as_str().map(str::len), Some(32));
        let old = norm(json!({"timestamp": 1_000_000_000}));
        assert_eq!(old["timestamp"], json!(1_795_432_200.0));
    }

    #[test]
    fn feedback_is_typed_and_defaults_to_info() {
        let r = Received {
            event_id: Some("5cda143e3ab246d98901ac1babb95373".into()),
            ..received()
        };
        let (id, bytes) = event(br#"{"contexts":{"feedback":{"message":"hi"}}}"#, &r, true)
            .unwrap_or_else(|e| panic!("{e}"));
        let e: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id, "5cda143e3ab246d98901ac1babb95373");
        assert_eq!(e["type"], "feedback");
        assert_eq!(e["level"], "info");
    }

    #[test]
    fn non_objects_are_invalid() {
        for bad in [&b"[1]"[..], b"nope", b""] {
            assert!(event(bad, &received(), false).is_err());
        }
    }
}
