//! Turning a decoded occurrence into what processing needs:
//! normalised ids, md5 of every fingerprint part, level and priority defaults, and the embedded
//! event in the shape stored in `events`. Every failure is a [`Rejection`] with a DLQ reason.

use super::grouptype::{self, GroupType};
use crate::ids::{md5_hex, uuid_hex};
use crate::messages::enums::log_level;
use crate::messages::{DlqReason, EmbeddedEvent, OccurrenceMessage, Rejection, Timestamp};
use chrono::SubsecRound;
use serde_json::{json, Map, Value};

/// An occurrence ready to be saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    /// 32 lowercase hex.
    pub id: String,
    pub project_id: u64,
    /// 32 lowercase hex.
    pub event_id: String,
    /// md5 of every raw part.
    pub fingerprint: Vec<String>,
    pub group_type: &'static GroupType,
    pub issue_title: String,
    pub subtitle: String,
    pub culprit: String,
    /// Level name (`info` when absent or null) and its number.
    pub level: String,
    pub level_num: i32,
    pub priority: i32,
    /// The priority the producer asked for (null when defaulted).
    pub initial_issue_priority: Option<i32>,
    pub detection_time: Timestamp,
    pub evidence_data: Map<String, Value>,
    /// The occurrence as stored in `occurrences.data` (normalised ids and hashes).
    pub data: Value,
    /// The event to store, when the message embeds one.
    pub event: Option<Value>,
}

fn invalid(reason: DlqReason, detail: impl Into<String>) -> Rejection {
    Rejection::new(reason, detail)
}

/// Validates and normalises `msg`.
pub fn parse(msg: &OccurrenceMessage) -> Result<Occurrence, Rejection> {
    let id = uuid_hex(&msg.id).map_err(|e| invalid(DlqReason::InvalidField, format!("id: {e}")))?;
    if msg.fingerprint.is_empty() {
        return Err(invalid(
            DlqReason::InvalidField,
            "fingerprint must be non-empty",
        ));
    }
    let fingerprint: Vec<String> = msg.fingerprint.iter().map(|p| md5_hex(p)).collect();
    let group_type = grouptype::get(msg.group_type).ok_or_else(|| {
        invalid(
            DlqReason::UnknownGroupType,
            format!("group type {} is not registered", msg.group_type),
        )
    })?;
    let level = msg
        .level
        .clone()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "info".to_owned());
    let level_num = log_level(&level)
        .ok_or_else(|| invalid(DlqReason::InvalidField, format!("unknown level {level:?}")))?;
    let priority = msg
        .initial_issue_priority
        .unwrap_or(group_type.default_priority);
    // PostgreSQL keeps microseconds: compare and store exactly what it will hold.
    let detection_time = Timestamp(msg.detection_time.0.trunc_subsecs(6));

    let top_event_id = msg.event_id.as_deref().filter(|e| !e.is_empty());
    let (event_id, event) = match &msg.event {
        Some(ev) => {
            if ev.project_id != msg.project_id {
                return Err(invalid(
                    DlqReason::IdMismatch,
                    format!(
                        "project_id in occurrence ({}) is different from project_id in event ({})",
                        msg.project_id, ev.project_id
                    ),
                ));
            }
            let ev_id = uuid_hex(&ev.event_id)
                .map_err(|e| invalid(DlqReason::InvalidField, format!("event.event_id: {e}")))?;
            let top = match top_event_id {
                Some(t) => uuid_hex(t)
                    .map_err(|e| invalid(DlqReason::InvalidField, format!("event_id: {e}")))?,
                None => ev_id.clone(),
            };
            if top != ev_id {
                return Err(invalid(
                    DlqReason::IdMismatch,
                    "Event id on occurrence and event_data must be the same".to_owned(),
                ));
            }
            (
                ev_id.clone(),
                Some(event_body(
                    ev,
                    &ev_id,
                    &level,
                    &msg.issue_title,
                    detection_time,
                )),
            )
        }
        None => {
            let raw = top_event_id.ok_or_else(|| {
                invalid(
                    DlqReason::MissingField,
                    "Payload must contain either event_id or event_data",
                )
            })?;
            (
                uuid_hex(raw)
                    .map_err(|e| invalid(DlqReason::InvalidField, format!("event_id: {e}")))?,
                None,
            )
        }
    };

    let culprit = msg.culprit.clone().unwrap_or_default();
    let evidence_data = msg.evidence_data.clone().unwrap_or_default();
    let data = json!({
        "id": id,
        "project_id": msg.project_id,
        "event_id": event_id,
        "fingerprint": fingerprint,
        "issue_title": msg.issue_title,
        "subtitle": msg.subtitle,
        "resource_id": msg.resource_id,
        "evidence_data": evidence_data,
        "evidence_display": msg.evidence_display.clone().unwrap_or_default(),
        "type": group_type.id,
        "detection_time": detection_time.epoch_secs(),
        "level": level,
        "culprit": culprit,
        "initial_issue_priority": priority,
        "assignee": msg.assignee,
    });
    Ok(Occurrence {
        id,
        project_id: msg.project_id,
        event_id,
        fingerprint,
        group_type,
        issue_title: msg.issue_title.clone(),
        subtitle: msg.subtitle.clone(),
        culprit,
        level,
        level_num,
        priority,
        initial_issue_priority: msg.initial_issue_priority,
        detection_time,
        evidence_data,
        data,
        event,
    })
}

/// The stored form of an embedded event: type `generic`, the occurrence's level, normalised id,
/// `metadata.title` = the issue title, epoch timestamps (`timestamp` and `received` default to the
/// detection time).
fn event_body(
    ev: &EmbeddedEvent,
    event_id: &str,
    level: &str,
    title: &str,
    detected: Timestamp,
) -> Value {
    let mut v = serde_json::to_value(ev).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("event_id".into(), json!(event_id));
        m.insert("type".into(), json!("generic"));
        m.insert("level".into(), json!(level));
        m.insert("metadata".into(), json!({ "title": title }));
        m.entry("timestamp")
            .or_insert_with(|| json!(detected.epoch_secs()));
        // Deterministic, so every replay and every consumer stores the same event.
        m.entry("received")
            .or_insert_with(|| json!(detected.epoch_secs()));
        m.entry("tags").or_insert_with(|| json!([]));
    }
    v
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
