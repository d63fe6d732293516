//! JSON messages on `ingest-occurrences`: occurrences and status
//! changes, told apart by `payload_type` (absent = occurrence).

use super::dlq::{DlqReason, Rejection};
use super::time::Timestamp;
use crate::ids::md5_hex_bytes;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// `payload_type` of an occurrence.
pub const PAYLOAD_OCCURRENCE: &str = "occurrence";
/// `payload_type` of a status change.
pub const PAYLOAD_STATUS_CHANGE: &str = "status_change";

/// One decoded `ingest-occurrences` message.
#[derive(Debug, Clone, PartialEq)]
pub enum IssuePlatformMessage {
    Occurrence(Box<OccurrenceMessage>),
    StatusChange(StatusChangeMessage),
}

/// One line of evidence shown with an issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueEvidence {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub important: bool,
}

/// An issue occurrence as produced (Sentry's `IssueOccurrence.to_dict()` plus extras). Field
/// names and types are Sentry's; hashing, defaults and registry checks belong to processing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OccurrenceMessage {
    /// UUID, hyphens allowed.
    pub id: String,
    pub project_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Raw (unhashed) fingerprint parts.
    pub fingerprint: Vec<String>,
    pub issue_title: String,
    pub subtitle: String,
    #[serde(default)]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub evidence_data: Option<Map<String, Value>>,
    #[serde(default)]
    pub evidence_display: Option<Vec<IssueEvidence>>,
    /// Group type id.
    #[serde(rename = "type")]
    pub group_type: i32,
    pub detection_time: Timestamp,
    /// Absent means `"info"`; an explicit `null` stays `None`.
    #[serde(default = "default_level")]
    pub level: Option<String>,
    #[serde(default)]
    pub culprit: Option<String>,
    #[serde(default)]
    pub initial_issue_priority: Option<i32>,
    #[serde(default)]
    pub assignee: Option<String>,
    /// The event to create with the occurrence; `None` (or `{}` on the wire) means "look it up".
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "non_empty_event"
    )]
    pub event: Option<EmbeddedEvent>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_buffered_spans: bool,
}

fn default_level() -> Option<String> {
    Some("info".to_owned())
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn non_empty_event<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EmbeddedEvent>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.is_empty() => Ok(None),
        Some(Value::Object(m)) => EmbeddedEvent::from_object(m)
            .map(Some)
            .map_err(de::Error::custom),
        Some(v) => EmbeddedEvent::deserialize(v)
            .map(Some)
            .map_err(de::Error::custom),
    }
}

/// The event embedded in an occurrence: `event_id`, `platform` and `project_id`
/// required; timestamps as epoch numbers or RFC 3339; tags as an object or a list of pairs;
/// keys outside Sentry's whitelist are dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddedEvent {
    pub event_id: String,
    pub project_id: u64,
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(flatten)]
    pub optional: OptionalEventFields,
}

impl EmbeddedEvent {
    /// The embedded event of a JSON object, exactly as deserializing it makes it, but taking each
    /// field out of the object: deserializing goes through serde's buffering of the flattened
    /// fields, which copies the whole event twice.
    pub fn from_object(mut m: Map<String, Value>) -> Result<EmbeddedEvent, serde_json::Error> {
        fn required<T: de::DeserializeOwned>(
            m: &mut Map<String, Value>,
            key: &'static str,
        ) -> Result<T, serde_json::Error> {
            match m.remove(key) {
                Some(v) => serde_json::from_value(v),
                None => Err(de::Error::missing_field(key)),
            }
        }
        fn optional<T: de::DeserializeOwned>(
            m: &mut Map<String, Value>,
            key: &str,
        ) -> Result<Option<T>, serde_json::Error> {
            m.remove(key)
                .map_or(Ok(None), serde_json::from_value::<Option<T>>)
        }
        Ok(EmbeddedEvent {
            event_id: required(&mut m, "event_id")?,
            project_id: required(&mut m, "project_id")?,
            platform: required(&mut m, "platform")?,
            timestamp: optional(&mut m, "timestamp")?,
            received: optional(&mut m, "received")?,
            tags: optional(&mut m, "tags")?,
            level: optional(&mut m, "level")?,
            optional: OptionalEventFields::take_from(&mut m),
        })
    }
}

macro_rules! optional_event_fields {
    ($($name:ident),* $(,)?) => {
        /// The whitelisted optional blocks of an embedded event, kept as JSON.
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        pub struct OptionalEventFields {
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $name: Option<Value>,
            )*
        }

        impl OptionalEventFields {
            /// The whitelisted blocks taken out of an event object (`null` counts as absent).
            fn take_from(m: &mut Map<String, Value>) -> OptionalEventFields {
                OptionalEventFields {
                    $($name: m.remove(stringify!($name)).filter(|v| !v.is_null()),)*
                }
            }
        }
    };
}

optional_event_fields!(
    breadcrumbs,
    contexts,
    debug_meta,
    dist,
    environment,
    extra,
    modules,
    release,
    request,
    sdk,
    server_name,
    stacktrace,
    trace_id,
    transaction,
    user,
);

/// Event tags: accepted as an object or a list of `[key, value]` pairs, written as pairs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tags(pub Vec<(String, String)>);

impl Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(k, v)| [k, v]))
    }
}

fn scalar_text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tags;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object or a list of [key, value] pairs")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Tags, E> {
                Ok(Tags::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tags, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if let Some(v) = scalar_text(v) {
                        out.push((k, v));
                    }
                }
                Ok(Tags(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tags, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = seq.next_element::<Option<(String, Value)>>()? {
                    if let Some((k, v)) = pair {
                        if let Some(v) = scalar_text(v) {
                            out.push((k, v));
                        }
                    }
                }
                Ok(Tags(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A status change for the group a fingerprint belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChangeMessage {
    /// Always present after decoding: a legacy message without one gets md5 of its bytes.
    #[serde(default)]
    pub id: String,
    pub project_id: u64,
    /// Raw parts; non-empty.
    pub fingerprint: Vec<String>,
    pub new_status: i32,
    #[serde(default)]
    pub new_substatus: Option<i32>,
}

fn classify(err: serde_json::Error) -> Rejection {
    let text = err.to_string();
    let reason = if text.starts_with("missing field") {
        DlqReason::MissingField
    } else {
        DlqReason::InvalidField
    };
    Rejection::new(reason, text)
}

impl IssuePlatformMessage {
    /// Decodes one Kafka value: invalid JSON is `undecodable`, an unknown `payload_type` is
    /// `unsupported_type`, absent required keys `missing_field`, wrong types `invalid_field`.
    pub fn decode(bytes: &[u8]) -> Result<Self, Rejection> {
        let message = Self::decode_unchecked(bytes)?;
        let project_id = match &message {
            IssuePlatformMessage::Occurrence(o) => o.project_id,
            IssuePlatformMessage::StatusChange(s) => s.project_id,
        };
        super::validate::project_id(project_id)?;
        Ok(message)
    }

    fn decode_unchecked(bytes: &[u8]) -> Result<Self, Rejection> {
        // Escaped NUL characters cannot be stored: they become U+FFFD (see `validate`).
        let normalised;
        let bytes = if bytes.windows(6).any(|w| w == b"\\u0000") {
            let mut copy = bytes.to_vec();
            if super::validate::normalise_json_text(&mut copy).nul > 0 {
                super::validate::normalised("json_nul");
            }
            normalised = copy;
            normalised.as_slice()
        } else {
            bytes
        };
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Rejection::new(DlqReason::Undecodable, e.to_string()))?;
        let Value::Object(mut map) = value else {
            return Err(Rejection::new(
                DlqReason::InvalidField,
                "message is not a JSON object",
            ));
        };
        let payload_type = match map.remove("payload_type") {
            None | Some(Value::Null) => PAYLOAD_OCCURRENCE.to_owned(),
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(Rejection::new(
                    DlqReason::InvalidField,
                    format!("payload_type is {other}"),
                ))
            }
        };
        match payload_type.as_str() {
            PAYLOAD_OCCURRENCE => serde_json::from_value::<OccurrenceMessage>(Value::Object(map))
                .map(|o| IssuePlatformMessage::Occurrence(Box::new(o)))
                .map_err(classify),
            PAYLOAD_STATUS_CHANGE => {
                let mut sc: StatusChangeMessage =
                    serde_json::from_value(Value::Object(map)).map_err(classify)?;
                if sc.fingerprint.is_empty() {
                    return Err(Rejection::new(
                        DlqReason::InvalidField,
                        "fingerprint must be non-empty",
                    ));
                }
                if sc.id.is_empty() {
                    sc.id = md5_hex_bytes(bytes);
                }
                Ok(IssuePlatformMessage::StatusChange(sc))
            }
            other => Err(Rejection::new(
                DlqReason::UnsupportedType,
                format!(
                    "Unknown payload type: {}",
                    super::dlq::truncate_utf8(other, 64)
                ),
            )),
        }
    }

    /// The `project_id` of a message that may not decode otherwise (the breaker's tenant).
    pub fn project_of(bytes: &[u8]) -> Option<u64> {
        #[derive(Deserialize)]
        struct Project {
            project_id: Option<u64>,
        }
        serde_json::from_slice::<Project>(bytes).ok()?.project_id
    }

    /// The JSON value as produced: the message's fields plus `payload_type`.
    pub fn to_json(&self) -> Value {
        serde_json::from_slice(&self.encode()).unwrap_or(Value::Null)
    }

    /// Serialized JSON bytes, the Kafka value: the message's fields in their declared order,
    /// then `payload_type`. Written in one pass: going through a JSON tree first would copy the
    /// whole embedded event once more for every occurrence.
    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Tagged<'a, T> {
            #[serde(flatten)]
            fields: &'a T,
            payload_type: &'static str,
        }
        // Started at about the size most messages end at, so the buffer is not grown (and
        // copied) four or five times on the way there.
        fn tagged<T: Serialize>(
            fields: &T,
            payload_type: &'static str,
            capacity: usize,
        ) -> Vec<u8> {
            let mut out = Vec::with_capacity(capacity);
            match serde_json::to_writer(
                &mut out,
                &Tagged {
                    fields,
                    payload_type,
                },
            ) {
                Ok(()) => out,
                Err(_) => Vec::new(),
            }
        }
        match self {
            IssuePlatformMessage::Occurrence(o) => {
                let capacity = if o.event.is_some() { 2048 } else { 1024 };
                tagged(o.as_ref(), PAYLOAD_OCCURRENCE, capacity)
            }
            IssuePlatformMessage::StatusChange(s) => tagged(s, PAYLOAD_STATUS_CHANGE, 256),
        }
    }

    /// The partition key `"{fingerprint[0]}-{project_id}"`, or none without a fingerprint.
    pub fn partition_key(&self) -> Option<String> {
        let (fp, project) = match self {
            IssuePlatformMessage::Occurrence(o) => (o.fingerprint.first(), o.project_id),
            IssuePlatformMessage::StatusChange(s) => (s.fingerprint.first(), s.project_id),
        };
        fp.map(|f| format!("{f}-{project}"))
    }

    /// The raw first fingerprint part (`""` when empty): the unit of ordering in a batch.
    pub fn ordering_key(&self) -> &str {
        let fp = match self {
            IssuePlatformMessage::Occurrence(o) => &o.fingerprint,
            IssuePlatformMessage::StatusChange(s) => &s.fingerprint,
        };
        fp.first().map(String::as_str).unwrap_or("")
    }
}

/// Splits a request body into items: one JSON object, a JSON array, or NDJSON (one object per
/// line, blank lines skipped). The error says what is wrong, with the line for NDJSON.
pub fn split_items(body: &[u8]) -> Result<Vec<Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(v @ Value::Object(_)) => Ok(vec![v]),
        Ok(_) => Err("expected a JSON object, a JSON array or NDJSON".into()),
        Err(_) => std::str::from_utf8(body)
            .map_err(|_| "body is not UTF-8".to_owned())?
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
            .collect(),
    }
}

#[cfg(test)]
#[path = "issue_platform_tests.rs"]
mod tests;
