//! The msgpack messages Relay writes to the ingest topics: named maps with a
//! `type` discriminator. Decoding is tolerant where Relay and Sentry's tests differ (payload as bin
//! or str, chunk id as `id` or `attachment_id`, numeric or string `start_time`, unknown fields
//! ignored) and strict where the pipeline needs a value, so every failure carries a DLQ reason.

use super::dlq::{DlqReason, Rejection};
use super::time::Timestamp;
use super::validate;
use crate::ids::uuid_hex;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One decoded ingest message.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestMessage {
    /// `type = "event"`: an event (error, transaction, feedback, …) with its attachment list.
    Event(EventMessage),
    /// `type = "attachment_chunk"`: one chunk of an attachment body.
    AttachmentChunk(AttachmentChunk),
    /// `type = "attachment"`: an attachment sent without its event.
    Attachment(AttachmentMessage),
    /// `type = "user_report"`: a legacy user report (its event id is inside the payload).
    UserReport(UserReportMessage),
}

/// `type = "event"`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMessage {
    /// The normalized event JSON, UTF-8.
    pub payload: Vec<u8>,
    /// When Relay received the envelope.
    pub start_time: Timestamp,
    /// 32 lowercase hex characters.
    pub event_id: String,
    pub project_id: u64,
    pub remote_addr: Option<String>,
    pub attachments: Vec<ChunkedAttachment>,
}

impl EventMessage {
    /// The event's retention in days, when Relay sent one: the longest of its attachments'.
    pub fn retention_days(&self) -> Option<u16> {
        ChunkedAttachment::longest_retention(&self.attachments)
    }
}

/// `type = "attachment_chunk"`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentChunk {
    pub payload: Vec<u8>,
    /// 32 lowercase hex characters.
    pub event_id: String,
    pub project_id: u64,
    /// Attachment id within the event, as Relay wrote it (a UUID string).
    pub id: String,
    pub chunk_index: u32,
}

/// `type = "attachment"` (standalone).
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentMessage {
    /// 32 lowercase hex characters.
    pub event_id: String,
    pub project_id: u64,
    pub attachment: ChunkedAttachment,
}

/// `type = "user_report"`.
#[derive(Debug, Clone, PartialEq)]
pub struct UserReportMessage {
    pub project_id: u64,
    pub start_time: Timestamp,
    /// JSON object: `event_id`, `name`, `email`, `comments`.
    pub payload: Vec<u8>,
    /// Only present when a producer other than Relay sets it; the payload's value is authoritative.
    pub event_id: Option<String>,
}

/// An attachment description inside `event.attachments[]` or `attachment.attachment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkedAttachment {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default = "default_attachment_type")]
    pub attachment_type: String,
    /// Number of chunk messages (0 for an empty body); absent when `data` or `stored_id` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    /// The body inlined.
    #[serde(default, with = "opt_bytes", skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<u8>>,
    /// The body stored elsewhere under this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default)]
    pub rate_limited: bool,
    /// Days the attachment (and its event) are kept, as Relay computes it from the project's
    /// configuration; the project's retention applies when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u16>,
}

impl ChunkedAttachment {
    /// The longest `retention_days` of `attachments` (0 counts as not set).
    pub fn longest_retention(attachments: &[ChunkedAttachment]) -> Option<u16> {
        attachments
            .iter()
            .filter_map(|a| a.retention_days)
            .filter(|d| *d > 0)
            .max()
    }

    /// Refuses ids, types and chunk counts that cannot be stored; cleans the name and drops a
    /// content type that is not a plain header value.
    pub fn validate(&mut self) -> Result<(), Rejection> {
        validate::ascii_id("attachment id", &self.id, validate::MAX_ID_BYTES)?;
        validate::ascii_id(
            "attachment_type",
            &self.attachment_type,
            validate::MAX_ATTACHMENT_TYPE_BYTES,
        )?;
        if self.chunks.is_some_and(|n| n > validate::MAX_CHUNKS) {
            return Err(Rejection::new(
                DlqReason::TooLarge,
                format!("attachment {} lists too many chunks", self.id),
            ));
        }
        if let Some(stored) = &self.stored_id {
            validate::ascii_id("stored_id", stored, validate::MAX_ID_BYTES)?;
        }
        if validate::clean_in_place(&mut self.name, validate::MAX_NAME_BYTES) {
            validate::normalised("attachment_name");
        }
        if self
            .content_type
            .as_deref()
            .is_some_and(|c| !validate::is_header_value(c))
        {
            self.content_type = None;
            validate::normalised("content_type");
        }
        Ok(())
    }
}

/// Makes JSON text storable in place (see [`validate::normalise_json_text`]); rewrites it from
/// its parsed value when a number must change. Text that does not parse is left for the
/// handler to reject.
fn normalise_json(payload: &mut Vec<u8>) {
    let fix = validate::normalise_json_text(payload);
    if fix.nul > 0 {
        validate::normalised("json_nul");
    }
    if fix.rewrite_numbers {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) {
            if let Ok(text) = serde_json::to_vec(&value) {
                *payload = text;
                validate::normalised("json_number");
            }
        }
    }
}

fn default_attachment_type() -> String {
    "event.attachment".to_owned()
}

/// Byte payload that Relay writes as msgpack `bin` and Sentry's tests as `str`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Payload(Vec<u8>);

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes or a string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Payload, E> {
                Ok(Payload(v.as_bytes().to_vec()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Payload, E> {
                Ok(Payload(v.into_bytes()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Payload(out))
            }
        }
        d.deserialize_any(V)
    }
}

mod opt_bytes {
    use super::Payload;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Payload>::deserialize(d)?.map(|p| p.0))
    }
}

/// Every field any ingest message type may carry; the typed message is built from it.
#[derive(Default, Deserialize, Serialize)]
struct Wire {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    ty: Option<String>,
    #[serde(default, with = "opt_bytes", skip_serializing_if = "Option::is_none")]
    payload: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    project_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attachments: Option<Vec<ChunkedAttachment>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attachment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attachment: Option<ChunkedAttachment>,
}

/// `start_time` as Relay writes it: whole epoch seconds (floats and strings accepted too).
#[derive(Deserialize)]
#[serde(transparent)]
struct WireTime(Timestamp);

impl Serialize for WireTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let secs = self.0.epoch_secs();
        if secs.fract() == 0.0 && secs >= 0.0 {
            s.serialize_u64(secs as u64)
        } else {
            s.serialize_f64(secs)
        }
    }
}

/// Deepest nesting a message may have (Relay's are 4 levels deep). rmp-serde recurses once per
/// level, so without this bound a crafted message could overflow a worker's stack.
const MAX_MSGPACK_DEPTH: usize = 32;

/// Decodes msgpack with the nesting bounded by [`MAX_MSGPACK_DEPTH`].
fn from_msgpack<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut d = rmp_serde::Deserializer::from_read_ref(bytes);
    d.set_max_depth(MAX_MSGPACK_DEPTH);
    T::deserialize(&mut d)
}

/// Whether `bytes` begin with a msgpack map marker (fixmap, map16, map32).
fn starts_with_map(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

fn missing(field: &str, ty: &str) -> Rejection {
    Rejection::new(
        DlqReason::MissingField,
        format!("{ty} message without `{field}`"),
    )
}

fn event_id_of(raw: Option<String>, ty: &str) -> Result<String, Rejection> {
    let raw = raw.ok_or_else(|| missing("event_id", ty))?;
    uuid_hex(&raw).map_err(|e| Rejection::new(DlqReason::InvalidField, format!("event_id: {e}")))
}

impl IngestMessage {
    /// Decodes one Kafka value. Truncated or non-msgpack input is `undecodable`; a field of the
    /// wrong type is `invalid_field`; an absent required field is `missing_field`; a `type` this
    /// pipeline does not handle is `unsupported_type`.
    pub fn decode(bytes: &[u8]) -> Result<Self, Rejection> {
        if !starts_with_map(bytes) {
            return Err(Rejection::new(DlqReason::Undecodable, "not a msgpack map"));
        }
        let wire: Wire = match from_msgpack(bytes) {
            Ok(w) => w,
            Err(err) => {
                // A well-formed document whose fields have the wrong types is invalid, not undecodable.
                let reason = if from_msgpack::<IgnoredAny>(bytes).is_ok() {
                    DlqReason::InvalidField
                } else {
                    DlqReason::Undecodable
                };
                return Err(Rejection::new(reason, err.to_string()));
            }
        };
        let ty = wire.ty.clone().ok_or_else(|| missing("type", "ingest"))?;
        let mut message = match ty.as_str() {
            "event" => IngestMessage::Event(EventMessage {
                payload: wire.payload.ok_or_else(|| missing("payload", "event"))?,
                start_time: wire
                    .start_time
                    .ok_or_else(|| missing("start_time", "event"))?
                    .0,
                event_id: event_id_of(wire.event_id, "event")?,
                project_id: wire
                    .project_id
                    .ok_or_else(|| missing("project_id", "event"))?,
                remote_addr: wire.remote_addr,
                attachments: wire.attachments.unwrap_or_default(),
            }),
            "attachment_chunk" => IngestMessage::AttachmentChunk(AttachmentChunk {
                payload: wire
                    .payload
                    .ok_or_else(|| missing("payload", "attachment_chunk"))?,
                event_id: event_id_of(wire.event_id, "attachment_chunk")?,
                project_id: wire
                    .project_id
                    .ok_or_else(|| missing("project_id", "attachment_chunk"))?,
                id: wire
                    .id
                    .or(wire.attachment_id)
                    .ok_or_else(|| missing("id", "attachment_chunk"))?,
                chunk_index: wire
                    .chunk_index
                    .ok_or_else(|| missing("chunk_index", "attachment_chunk"))?,
            }),
            "attachment" => IngestMessage::Attachment(AttachmentMessage {
                event_id: event_id_of(wire.event_id, "attachment")?,
                project_id: wire
                    .project_id
                    .ok_or_else(|| missing("project_id", "attachment"))?,
                attachment: wire
                    .attachment
                    .ok_or_else(|| missing("attachment", "attachment"))?,
            }),
            "user_report" => IngestMessage::UserReport(UserReportMessage {
                project_id: wire
                    .project_id
                    .ok_or_else(|| missing("project_id", "user_report"))?,
                start_time: wire
                    .start_time
                    .ok_or_else(|| missing("start_time", "user_report"))?
                    .0,
                payload: wire
                    .payload
                    .ok_or_else(|| missing("payload", "user_report"))?,
                event_id: wire.event_id,
            }),
            other => {
                return Err(Rejection::new(
                    DlqReason::UnsupportedType,
                    format!(
                        "unsupported ingest message type {:?}",
                        super::dlq::truncate_utf8(other, 64)
                    ),
                ))
            }
        };
        message.validate()?;
        Ok(message)
    }

    /// Applies the bounds of [`super::validate`]: refuses what can never be stored and makes
    /// names, content types and JSON text safe to store.
    fn validate(&mut self) -> Result<(), Rejection> {
        validate::project_id(self.project_id())?;
        match self {
            IngestMessage::Event(m) => {
                if m.attachments.len() > validate::MAX_ATTACHMENTS_PER_EVENT {
                    return Err(Rejection::new(
                        DlqReason::TooLarge,
                        format!(
                            "the event lists {} attachments; at most {} are accepted",
                            m.attachments.len(),
                            validate::MAX_ATTACHMENTS_PER_EVENT
                        ),
                    ));
                }
                for a in &mut m.attachments {
                    a.validate()?;
                }
                normalise_json(&mut m.payload);
                m.remote_addr = m
                    .remote_addr
                    .take()
                    .filter(|a| a.len() <= 64 && validate::is_header_value(a));
            }
            IngestMessage::AttachmentChunk(c) => {
                validate::ascii_id("attachment id", &c.id, validate::MAX_ID_BYTES)?;
                if c.chunk_index >= validate::MAX_CHUNKS {
                    return Err(Rejection::new(
                        DlqReason::TooLarge,
                        format!("chunk_index {} is too large", c.chunk_index),
                    ));
                }
            }
            IngestMessage::Attachment(m) => m.attachment.validate()?,
            IngestMessage::UserReport(m) => normalise_json(&mut m.payload),
        }
        Ok(())
    }

    /// Encodes as Relay does: a named msgpack map, byte payloads as `bin`.
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self.clone() {
            IngestMessage::Event(m) => Wire {
                ty: Some("event".into()),
                payload: Some(m.payload),
                start_time: Some(WireTime(m.start_time)),
                event_id: Some(m.event_id),
                project_id: Some(m.project_id),
                remote_addr: m.remote_addr,
                attachments: Some(m.attachments),
                ..Wire::default()
            },
            IngestMessage::AttachmentChunk(m) => Wire {
                ty: Some("attachment_chunk".into()),
                payload: Some(m.payload),
                event_id: Some(m.event_id),
                project_id: Some(m.project_id),
                id: Some(m.id),
                chunk_index: Some(m.chunk_index),
                ..Wire::default()
            },
            IngestMessage::Attachment(m) => Wire {
                ty: Some("attachment".into()),
                event_id: Some(m.event_id),
                project_id: Some(m.project_id),
                attachment: Some(m.attachment),
                ..Wire::default()
            },
            IngestMessage::UserReport(m) => Wire {
                ty: Some("user_report".into()),
                payload: Some(m.payload),
                start_time: Some(WireTime(m.start_time)),
                project_id: Some(m.project_id),
                event_id: m.event_id,
                ..Wire::default()
            },
        };
        // Serializing plain structs into a Vec cannot fail.
        rmp_serde::to_vec_named(&wire).unwrap_or_default()
    }

    /// The `project_id` of a message that may not decode otherwise (the breaker's tenant).
    pub fn project_of(bytes: &[u8]) -> Option<u64> {
        #[derive(Deserialize)]
        struct Project {
            project_id: Option<u64>,
        }
        if !starts_with_map(bytes) {
            return None;
        }
        from_msgpack::<Project>(bytes).ok()?.project_id
    }

    /// The message's project.
    pub fn project_id(&self) -> u64 {
        match self {
            IngestMessage::Event(m) => m.project_id,
            IngestMessage::AttachmentChunk(m) => m.project_id,
            IngestMessage::Attachment(m) => m.project_id,
            IngestMessage::UserReport(m) => m.project_id,
        }
    }

    /// The wire name of the message type (a bounded metric label).
    pub fn type_name(&self) -> &'static str {
        match self {
            IngestMessage::Event(_) => "event",
            IngestMessage::AttachmentChunk(_) => "attachment_chunk",
            IngestMessage::Attachment(_) => "attachment",
            IngestMessage::UserReport(_) => "user_report",
        }
    }
}

#[cfg(test)]
#[path = "ingest_tests.rs"]
mod tests;
