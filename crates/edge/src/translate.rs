//! An envelope's items as the Kafka messages Relay writes for them, in the order they must be
//! acknowledged:
//!
//! - An `event` without attachments goes to `ingest-events`. With attachments it goes to
//!   `ingest-attachments`, after each attachment's body as `attachment_chunk` messages (at most
//!   1 MiB each) on the same partition, listed in the event's `attachments`.
//! - A crash report (`event.minidump`, `event.applecrashreport` attachment) makes its envelope an
//!   error event even without an `event` item (see [`crate::crash`]).
//! - An `attachment` with no event in its envelope is a standalone `attachment` message for the
//!   envelope's `event_id`, its body inline up to 1 MiB and chunked beyond.
//! - A `user_report` is a `user_report` message on `ingest-attachments`, its JSON unchanged.
//! - A `feedback` is an `event` message on `ingest-feedback-events`.
//! - Every other item type (transactions, sessions, client reports, profiles, replays, …) is
//!   accepted and not processed: it is counted with an outcome.
//!
//! Message keys are 16 bytes, as Relay writes them: the event id's UUID with the organization id
//! XORed into its first half, so all messages of one event share a partition.

use crate::crash;
use crate::envelope::{Envelope, Item, ItemType};
use crate::normalize::{self, Received};
use sluice_core::messages::enums::Outcome;
use sluice_core::messages::ingest::{
    AttachmentChunk, AttachmentMessage, ChunkedAttachment, EventMessage, IngestMessage,
    UserReportMessage,
};
use sluice_core::messages::time::Timestamp;

/// Largest attachment chunk, and largest body sent inline in a standalone attachment.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Sentry's data categories (the `category` of an outcome).
pub mod category {
    pub const DEFAULT: u16 = 0;
    pub const ERROR: u16 = 1;
    pub const TRANSACTION: u16 = 2;
    pub const SECURITY: u16 = 3;
    pub const ATTACHMENT: u16 = 4;
    pub const SESSION: u16 = 5;
    pub const PROFILE: u16 = 6;
    pub const REPLAY: u16 = 7;
    pub const MONITOR: u16 = 10;
    pub const SPAN: u16 = 12;
    pub const USER_REPORT_V2: u16 = 14;
    pub const ATTACHMENT_ITEM: u16 = 22;
    pub const PROFILE_CHUNK: u16 = 18;
    pub const LOG_ITEM: u16 = 23;
}

/// The topics items go to.
#[derive(Debug, Clone)]
pub struct Topics {
    pub events: String,
    pub attachments: String,
    pub feedback: String,
}

/// One message to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub key: [u8; 16],
    pub payload: Vec<u8>,
}

/// An item that is accepted but not turned into a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    /// The item type, for metrics (one of a bounded set of names).
    pub item: &'static str,
    pub outcome: Outcome,
    pub reason: String,
    pub category: u16,
    pub quantity: u64,
    pub event_id: Option<String>,
}

/// What an envelope becomes.
#[derive(Debug, Default)]
pub struct Plan {
    /// Messages in waves: every message of a wave is acknowledged before the next is sent.
    pub waves: Vec<Vec<Outgoing>>,
    pub dropped: Vec<Dropped>,
    /// Items turned into messages, by type name (for metrics).
    pub accepted: Vec<&'static str>,
    /// Items that are neither processed nor billed (client reports, metrics), by type name.
    pub ignored: Vec<&'static str>,
}

/// The request an envelope came with.
#[derive(Debug, Clone)]
pub struct Origin {
    pub org_id: u64,
    pub received: Received,
    pub start_time: Timestamp,
    pub remote_addr: Option<String>,
}

/// An attachment's id: derived from its event and its place in the envelope, so a client that
/// retries an envelope (after a timeout, say) sends the same attachments, not copies.
fn attachment_id(event_id: &str, index: usize) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("sluice-attachment:{event_id}:{index}").as_bytes(),
    )
    .to_string()
}

/// Relay's message key for an event id.
pub fn message_key(event_id: &str, org_id: u64) -> [u8; 16] {
    let (high, low) = uuid::Uuid::try_parse(event_id)
        .unwrap_or_default()
        .as_u64_pair();
    uuid::Uuid::from_u64_pair(high ^ org_id, low).into_bytes()
}

/// A bounded metric label for an item type.
pub fn item_label(ty: &ItemType) -> &'static str {
    match ty {
        ItemType::Event => "event",
        ItemType::Attachment => "attachment",
        ItemType::UserReport => "user_report",
        ItemType::Feedback => "feedback",
        ItemType::Other(s) => match s.as_str() {
            "transaction" => "transaction",
            "session" => "session",
            "sessions" => "sessions",
            "client_report" => "client_report",
            "profile" => "profile",
            "profile_chunk" => "profile_chunk",
            "replay_event" => "replay_event",
            "replay_recording" => "replay_recording",
            "replay_video" => "replay_video",
            "check_in" => "check_in",
            "span" => "span",
            "log" => "log",
            "statsd" => "statsd",
            "metric_buckets" => "metric_buckets",
            "security" => "security",
            "raw_security" => "raw_security",
            "otel_span" => "otel_span",
            _ => "unknown",
        },
    }
}

/// The outcome category of an item Relay counts, or `None` for items that are not billed
/// (client reports, metrics): those are only counted in metrics.
fn item_category(ty: &ItemType) -> Option<u16> {
    use category::*;
    Some(match item_label(ty) {
        "transaction" => TRANSACTION,
        "session" | "sessions" => SESSION,
        "profile" => PROFILE,
        "profile_chunk" => PROFILE_CHUNK,
        "replay_event" | "replay_recording" | "replay_video" => REPLAY,
        "check_in" => MONITOR,
        "span" | "otel_span" => SPAN,
        "log" => LOG_ITEM,
        "security" | "raw_security" => SECURITY,
        "unknown" => DEFAULT,
        _ => return None,
    })
}

/// The outcome reason of items this installation does not process (Sentry's reason for items
/// of a feature that is turned off).
pub const FEATURE_DISABLED: &str = "feature_disabled";

/// An attachment's two outcomes, as Sentry counts them: its bytes and the item.
pub fn attachment_outcomes(
    item: &Item,
    outcome: Outcome,
    reason: &str,
    event_id: &Option<String>,
) -> [Dropped; 2] {
    let mut bytes = invalid("attachment", category::ATTACHMENT, reason, event_id.clone());
    bytes.outcome = outcome;
    bytes.quantity = (item.payload.len() as u64).max(1);
    let mut one = bytes.clone();
    one.category = category::ATTACHMENT_ITEM;
    one.quantity = 1;
    [bytes, one]
}

fn invalid(item: &'static str, category: u16, reason: &str, event_id: Option<String>) -> Dropped {
    Dropped {
        item,
        outcome: Outcome::Invalid,
        reason: reason.to_owned(),
        category,
        quantity: 1,
        event_id,
    }
}

fn attachment_meta(item: &Item, id: String) -> ChunkedAttachment {
    ChunkedAttachment {
        id,
        name: item
            .filename
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Unnamed Attachment".to_owned()),
        content_type: item.content_type.clone(),
        attachment_type: item
            .attachment_type
            .clone()
            .unwrap_or_else(|| "event.attachment".to_owned()),
        chunks: None,
        data: None,
        stored_id: None,
        size: Some(item.payload.len() as u64),
        rate_limited: false,
        retention_days: None,
    }
}

/// The chunk messages of one attachment body.
fn chunks(
    item: &Item,
    event_id: &str,
    project_id: u64,
    id: &str,
    topic: &str,
    key: [u8; 16],
) -> Vec<Outgoing> {
    item.payload
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, chunk)| Outgoing {
            topic: topic.to_owned(),
            key,
            payload: IngestMessage::AttachmentChunk(AttachmentChunk {
                payload: chunk.to_vec(),
                event_id: event_id.to_owned(),
                project_id,
                id: id.to_owned(),
                chunk_index: i as u32,
            })
            .encode(),
        })
        .collect()
}

/// Turns `envelope` into messages and outcomes. The envelope has passed the size limits (at
/// most one event-like item); `event_id` is the envelope's (the header's, or one made up for it).
pub fn plan(envelope: &Envelope, event_id: Option<&str>, origin: &Origin, topics: &Topics) -> Plan {
    let header_id = event_id.map(str::to_owned);
    let project_id = origin.received.project_id;
    let received = Received {
        event_id: header_id.clone(),
        ..origin.received.clone()
    };
    let mut plan = Plan::default();
    let attachments: Vec<&Item> = envelope
        .items
        .iter()
        .filter(|i| i.ty == ItemType::Attachment)
        .collect();

    // The event, with the envelope's attachments. A crash report makes one (see `crash`).
    let mut attachments_taken = false;
    let event_item = envelope.items.iter().find(|i| i.ty == ItemType::Event);
    let event_payload: Option<std::borrow::Cow<[u8]>> =
        match (event_item, crash::kind(&envelope.items)) {
            (Some(item), None) => Some(std::borrow::Cow::Borrowed(&item.payload[..])),
            (Some(item), Some(k)) => Some(crash::with_placeholder(&item.payload, k).into()),
            (None, Some(k)) => Some(crash::with_placeholder(b"{}", k).into()),
            (None, None) => None,
        };
    if let Some(payload) = event_payload {
        match normalize::event(&payload, &received, false) {
            Ok((event_id, payload)) => {
                let key = message_key(&event_id, origin.org_id);
                let mut chunk_wave = Vec::new();
                let mut listed = Vec::with_capacity(attachments.len());
                for (index, a) in attachments.iter().enumerate() {
                    let id = attachment_id(&event_id, index);
                    let mut meta = attachment_meta(a, id.clone());
                    let parts = chunks(a, &event_id, project_id, &id, &topics.attachments, key);
                    meta.chunks = Some(parts.len() as u32);
                    chunk_wave.extend(parts);
                    listed.push(meta);
                    plan.accepted.push("attachment");
                }
                attachments_taken = true;
                let topic = if listed.is_empty() {
                    &topics.events
                } else {
                    &topics.attachments
                };
                let message = IngestMessage::Event(EventMessage {
                    payload,
                    start_time: origin.start_time,
                    event_id: event_id.clone(),
                    project_id,
                    remote_addr: origin.remote_addr.clone(),
                    attachments: listed,
                });
                if !chunk_wave.is_empty() {
                    plan.waves.push(chunk_wave);
                }
                plan.waves.push(vec![Outgoing {
                    topic: topic.clone(),
                    key,
                    payload: message.encode(),
                }]);
                plan.accepted.push("event");
            }
            Err(e) => {
                plan.dropped.push(invalid(
                    "event",
                    category::ERROR,
                    e.reason(),
                    header_id.clone(),
                ));
                for a in &attachments {
                    plan.dropped.extend(attachment_outcomes(
                        a,
                        Outcome::Invalid,
                        e.reason(),
                        &header_id,
                    ));
                }
                attachments_taken = true;
            }
        }
    }

    let mut last_wave = Vec::new();
    // Attachments without their event.
    if !attachments_taken && !attachments.is_empty() {
        let event_id = header_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let key = message_key(&event_id, origin.org_id);
        let mut chunk_wave = Vec::new();
        for (index, a) in attachments.iter().enumerate() {
            let id = attachment_id(&event_id, index);
            let mut meta = attachment_meta(a, id.clone());
            if a.payload.len() <= CHUNK_BYTES {
                meta.data = Some(a.payload.to_vec());
            } else {
                let parts = chunks(a, &event_id, project_id, &id, &topics.attachments, key);
                meta.chunks = Some(parts.len() as u32);
                chunk_wave.extend(parts);
            }
            last_wave.push(Outgoing {
                topic: topics.attachments.clone(),
                key,
                payload: IngestMessage::Attachment(AttachmentMessage {
                    event_id: event_id.clone(),
                    project_id,
                    attachment: meta,
                })
                .encode(),
            });
            plan.accepted.push("attachment");
        }
        if !chunk_wave.is_empty() {
            plan.waves.push(chunk_wave);
        }
    }

    for item in &envelope.items {
        match &item.ty {
            ItemType::Event | ItemType::Attachment => {}
            ItemType::UserReport => match report_event_id(&item.payload) {
                Some(event_id) => {
                    last_wave.push(Outgoing {
                        topic: topics.attachments.clone(),
                        key: message_key(&event_id, origin.org_id),
                        payload: IngestMessage::UserReport(UserReportMessage {
                            project_id,
                            start_time: origin.start_time,
                            payload: item.payload.to_vec(),
                            event_id: None,
                        })
                        .encode(),
                    });
                    plan.accepted.push("user_report");
                }
                None => plan.dropped.push(invalid(
                    "user_report",
                    category::USER_REPORT_V2,
                    "invalid_json",
                    header_id.clone(),
                )),
            },
            ItemType::Feedback => match normalize::event(&item.payload, &received, true) {
                Ok((event_id, payload)) => {
                    last_wave.push(Outgoing {
                        topic: topics.feedback.clone(),
                        key: message_key(&event_id, origin.org_id),
                        payload: IngestMessage::Event(EventMessage {
                            payload,
                            start_time: origin.start_time,
                            event_id,
                            project_id,
                            remote_addr: origin.remote_addr.clone(),
                            attachments: Vec::new(),
                        })
                        .encode(),
                    });
                    plan.accepted.push("feedback");
                }
                Err(e) => plan.dropped.push(invalid(
                    "feedback",
                    category::USER_REPORT_V2,
                    e.reason(),
                    header_id.clone(),
                )),
            },
            other => {
                let label = item_label(other);
                if let Some(category) = item_category(other) {
                    plan.dropped.push(Dropped {
                        item: label,
                        outcome: Outcome::Invalid,
                        reason: FEATURE_DISABLED.to_owned(),
                        category,
                        quantity: 1,
                        event_id: header_id.clone(),
                    });
                } else {
                    plan.ignored.push(label);
                }
            }
        }
    }
    if !last_wave.is_empty() {
        plan.waves.push(last_wave);
    }
    plan
}

/// The event id a user report names, when the payload is a JSON object with a valid one.
fn report_event_id(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v.as_object()?
        .get("event_id")?
        .as_str()
        .and_then(normalize::event_id)
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
