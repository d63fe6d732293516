//! The issue-platform payload builder: what every producer of
//! `ingest-occurrences` sends. Occurrences may carry event data (its event id must match);
//! status changes need a non-empty fingerprint and always get an id. The Kafka key is
//! `"{fingerprint[0]}-{project_id}"` (none without a fingerprint), the value the JSON payload.

use crate::messages::{
    EmbeddedEvent, IssuePlatformMessage, OccurrenceMessage, StatusChangeMessage,
};

/// Sentry's producer errors, with its messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("occurrence must be provided")]
    OccurrenceMissing,
    #[error("status_change must be provided")]
    StatusChangeMissing,
    #[error("Unknown payload type: {0}")]
    UnknownPayloadType(String),
    #[error("Event id on occurrence and event_data must be the same")]
    EventIdMismatch,
    #[error("fingerprint must be non-empty")]
    EmptyFingerprint,
}

/// A message ready for Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub wire: Wire,
    pub message: IssuePlatformMessage,
}

impl Record {
    /// Produces the record to `topic` under its key; resolves once the broker acknowledged it.
    pub async fn send(
        &self,
        producer: &crate::kafka::producer::Producer,
        topic: &str,
    ) -> Result<(i32, i64), crate::kafka::producer::ProduceError> {
        self.wire.send(producer, topic).await
    }
}

/// A record's Kafka key and value. A caller that only produces a record keeps this part alone,
/// so the message it was encoded from (for an occurrence, its whole event tree) is freed where
/// it was encoded, not where it is produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Wire {
    pub key: Option<String>,
    pub value: Vec<u8>,
}

impl Wire {
    /// Produces the record to `topic` under its key; resolves once the broker acknowledged it.
    pub async fn send(
        &self,
        producer: &crate::kafka::producer::Producer,
        topic: &str,
    ) -> Result<(i32, i64), crate::kafka::producer::ProduceError> {
        producer
            .send(
                topic,
                self.key.as_deref().map(str::as_bytes),
                &self.value,
                &[],
            )
            .await
    }
}

fn normalised(id: &str) -> String {
    crate::ids::uuid_hex(id).unwrap_or_else(|_| id.to_owned())
}

/// Builds the payload for `payload_type` (`"occurrence"` or `"status_change"`).
pub fn build(
    payload_type: &str,
    occurrence: Option<OccurrenceMessage>,
    status_change: Option<StatusChangeMessage>,
    event_data: Option<EmbeddedEvent>,
) -> Result<Record, PayloadError> {
    let message = match payload_type {
        crate::messages::issue_platform::PAYLOAD_OCCURRENCE => {
            let mut occ = occurrence.ok_or(PayloadError::OccurrenceMissing)?;
            if let Some(event) = event_data {
                if occ.event_id.as_deref().map(normalised) != Some(normalised(&event.event_id)) {
                    return Err(PayloadError::EventIdMismatch);
                }
                occ.event = Some(event);
            }
            IssuePlatformMessage::Occurrence(Box::new(occ))
        }
        crate::messages::issue_platform::PAYLOAD_STATUS_CHANGE => {
            let mut sc = status_change.ok_or(PayloadError::StatusChangeMissing)?;
            if sc.fingerprint.is_empty() {
                return Err(PayloadError::EmptyFingerprint);
            }
            if sc.id.is_empty() {
                sc.id = uuid::Uuid::new_v4().simple().to_string();
            }
            IssuePlatformMessage::StatusChange(sc)
        }
        other => return Err(PayloadError::UnknownPayloadType(other.to_owned())),
    };
    Ok(record(message))
}

/// The Kafka key and value of a message.
pub fn record(message: IssuePlatformMessage) -> Record {
    Record {
        wire: Wire {
            key: message.partition_key(),
            value: message.encode(),
        },
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Timestamp;

    fn occ(event_id: Option<&str>, fingerprint: Vec<&str>) -> OccurrenceMessage {
        OccurrenceMessage {
            id: "55f1e8a08d9c4b6b9a440f4d7c5b0d11".into(),
            project_id: 42,
            event_id: event_id.map(str::to_owned),
            fingerprint: fingerprint.into_iter().map(str::to_owned).collect(),
            issue_title: "t".into(),
            subtitle: "s".into(),
            resource_id: None,
            evidence_data: None,
            evidence_display: None,
            group_type: 6001,
            detection_time: Timestamp::now(),
            level: Some("info".into()),
            culprit: None,
            initial_issue_priority: None,
            assignee: None,
            event: None,
            is_buffered_spans: false,
        }
    }

    fn event(id: &str) -> EmbeddedEvent {
        serde_json::from_value(
            serde_json::json!({"event_id": id, "project_id": 42, "platform": "other"}),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sentry_producer_errors() {
        assert_eq!(
            build("occurrence", None, None, None),
            Err(PayloadError::OccurrenceMissing)
        );
        assert_eq!(
            build("status_change", None, None, None),
            Err(PayloadError::StatusChangeMissing)
        );
        assert_eq!(
            build("bogus", None, None, None).map_err(|e| e.to_string()),
            Err("Unknown payload type: bogus".to_owned())
        );
        let e = build(
            "occurrence",
            Some(occ(Some("aa".repeat(16).as_str()), vec!["f"])),
            None,
            Some(event(&"bb".repeat(16))),
        );
        assert_eq!(
            e.map_err(|e| e.to_string()),
            Err("Event id on occurrence and event_data must be the same".into())
        );
        let sc = StatusChangeMessage {
            id: String::new(),
            project_id: 1,
            fingerprint: vec![],
            new_status: 1,
            new_substatus: None,
        };
        assert_eq!(
            build("status_change", None, Some(sc), None),
            Err(PayloadError::EmptyFingerprint)
        );
    }

    #[test]
    fn keys_values_and_ids() {
        let id = "aa".repeat(16);
        let r = build(
            "occurrence",
            Some(occ(Some(&id), vec!["fp", "x"])),
            None,
            Some(event(&id)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.wire.key.as_deref(), Some("fp-42"));
        let v: serde_json::Value = serde_json::from_slice(&r.wire.value).unwrap_or_default();
        assert_eq!(v["payload_type"], "occurrence");
        assert_eq!(v["event"]["event_id"], id.as_str());
        let none =
            build("occurrence", Some(occ(Some(&id), vec![])), None, None).map(|r| r.wire.key);
        assert_eq!(none, Ok(None), "no key without a fingerprint");

        let sc = |fp: &str| StatusChangeMessage {
            id: String::new(),
            project_id: 7,
            fingerprint: vec![fp.into()],
            new_status: 1,
            new_substatus: None,
        };
        let (a, b) = (
            build("status_change", None, Some(sc("g")), None),
            build("status_change", None, Some(sc("g")), None),
        );
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("{e}")),
            b.unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(a.wire.key.as_deref(), Some("g-7"));
        let id_of = |r: &Record| match &r.message {
            IssuePlatformMessage::StatusChange(s) => s.id.clone(),
            _ => String::new(),
        };
        assert_eq!(id_of(&a).len(), 32);
        assert_ne!(id_of(&a), id_of(&b), "each status change gets its own id");
    }
}
