//! Issue groups in memory: the state a group gets from its first occurrence, and the one update
//! rule every later occurrence applies to it. The storage layer reads groups locked and writes
//! back the state computed here (`storage::groups`), for one occurrence or a run of them alike.
//!
//! The update rule: times seen +1; first/last seen widen; title, culprit, level, message and data
//! follow only the newest occurrence by detection time (ties: the larger occurrence id), so the
//! result does not depend on arrival order; a RESOLVED group regresses (unresolved, substatus
//! REGRESSED, active from the occurrence's time); a group still NEW stays active since its
//! earliest occurrence.

use super::grouptype;
use super::parse::Occurrence;
use crate::messages::enums::{group_status, group_substatus, priority};
use crate::storage::groups::{GroupRow, Locked, Write};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Name of a priority value in activity data.
pub fn priority_name(p: i32) -> &'static str {
    match p {
        priority::LOW => "low",
        priority::HIGH => "high",
        _ => "medium",
    }
}

/// Sentry's search message of the group: the event's message, then title, subtitle and culprit,
/// each appended when non-empty and not already contained.
pub(crate) fn search_message(event: &Value, occ: &Occurrence) -> String {
    let base = event
        .get("logentry")
        .and_then(|l| l.get("formatted"))
        .or_else(|| event.get("message"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut msg = base.to_owned();
    for part in [&occ.issue_title, &occ.subtitle, &occ.culprit] {
        if !part.is_empty() && !msg.contains(part.as_str()) {
            if !msg.is_empty() {
                msg.push(' ');
            }
            msg.push_str(part);
        }
    }
    msg
}

/// `groups.data`: event type, title, culprit, and metadata (title, value = subtitle, initial
/// priority; feedback fields for feedback issues; for error issues the grouping's `type`,
/// `value`, `filename`, `function` and `in_app_frame_mix`), keeping the event's own metadata.
pub(crate) fn materialized_data(event: &Value, occ: &Occurrence) -> Value {
    let mut metadata = event
        .get("metadata")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if let Value::Object(m) = &mut metadata {
        m.insert("title".into(), json!(occ.issue_title));
        m.insert("value".into(), json!(occ.subtitle));
        m.insert("initial_priority".into(), json!(occ.priority));
        // Error issues: what the grouping found (exception type, crashing frame, frame mix).
        if occ.group_type.id == 1 {
            if let Some(found) = occ.evidence_data.get("metadata").and_then(Value::as_object) {
                for key in ["type", "value", "filename", "function", "in_app_frame_mix"] {
                    if let Some(v) = found.get(key) {
                        m.insert(key.into(), v.clone());
                    }
                }
            }
        }
        if occ.group_type.category == crate::messages::enums::group_category::FEEDBACK {
            for key in ["contact_email", "message", "name", "source"] {
                m.insert(
                    key.into(),
                    occ.evidence_data.get(key).cloned().unwrap_or(Value::Null),
                );
            }
        }
    }
    json!({
        "type": if occ.group_type.id == 1 { "error" } else { "generic" },
        "title": occ.issue_title,
        "culprit": occ.culprit,
        "location": event.get("location").cloned().unwrap_or(Value::Null),
        "last_received": occ.detection_time.0.to_rfc3339(),
        "metadata": metadata,
    })
}

/// The group's data with the newest occurrence's fields overlaid; metadata merged key by key.
pub(crate) fn merged_data(existing: &Value, event: &Value, occ: &Occurrence) -> Value {
    let mut incoming = materialized_data(event, occ);
    if let (Some(old), Some(Value::Object(new_meta))) = (
        existing.get("metadata").and_then(Value::as_object),
        incoming.get_mut("metadata"),
    ) {
        for (k, v) in old {
            // The priority a group started with stays what it was.
            if k == "initial_priority" || !new_meta.contains_key(k) {
                new_meta.insert(k.clone(), v.clone());
            }
        }
    }
    incoming
}

/// PostgreSQL's `jsonb || jsonb`: top-level keys of `b` replace those of `a` (objects), else `b`.
fn concat(a: &Value, b: Value) -> Value {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let mut m = a.clone();
            m.extend(b);
            Value::Object(m)
        }
        (_, b) => b,
    }
}

/// Whether a group of type `group_type` may take occurrences of `occ`'s type (same category).
pub fn same_category(group_type: i32, occ: &Occurrence) -> bool {
    grouptype::get(group_type).map(|g| g.category) == Some(occ.group_type.category)
}

/// A group as processing leaves it.
#[derive(Debug, Clone)]
pub struct State {
    pub row: GroupRow,
    /// `fingerprint[0]` as stored in `group_hashes`.
    pub hash: String,
    /// Created here (written with INSERT, not UPDATE).
    pub new: bool,
    pub times_seen: i64,
    pub first_seen: DateTime<Utc>,
    pub active_at: Option<DateTime<Utc>>,
    pub level: i32,
    pub title: String,
    pub culprit: String,
    pub message: String,
    /// Whether title, culprit, level and message changed (existing groups).
    pub newest_applied: bool,
    /// The occurrence (index, event id) that regressed the group, if one did.
    pub regressed_by: Option<(usize, String)>,
}

impl State {
    /// An existing group as read (locked) from storage.
    pub fn existing(l: Locked) -> State {
        State {
            hash: l.hash,
            new: false,
            times_seen: l.times_seen,
            first_seen: l.first_seen,
            active_at: l.active_at,
            level: l.level,
            title: String::new(),
            culprit: String::new(),
            message: String::new(),
            newest_applied: false,
            regressed_by: None,
            row: l.group,
        }
    }

    /// The new group of `occ` (its id is assigned when written).
    pub fn created(occ: &Occurrence, event: &Value) -> State {
        let seen = occ.detection_time.0;
        State {
            row: GroupRow {
                id: 0,
                project_id: occ.project_id as i64,
                group_type: occ.group_type.id,
                status: group_status::UNRESOLVED,
                substatus: Some(group_substatus::NEW),
                priority: occ.priority,
                last_seen: seen,
                last_occurrence_id: Some(occ.id.clone()),
                data: materialized_data(event, occ),
            },
            hash: occ.fingerprint[0].clone(),
            new: true,
            times_seen: 1,
            first_seen: seen,
            active_at: Some(seen),
            level: occ.level_num,
            title: occ.issue_title.clone(),
            culprit: occ.culprit.clone(),
            message: search_message(event, occ),
            newest_applied: true,
            regressed_by: None,
        }
    }

    /// Applies occurrence `i` (`occ`, with its `event`) by the update rule.
    pub fn apply(&mut self, i: usize, occ: &Occurrence, event: &Value) {
        let seen = occ.detection_time.0;
        let row = &mut self.row;
        let newest = (seen, occ.id.as_str())
            >= (
                row.last_seen,
                row.last_occurrence_id.as_deref().unwrap_or(""),
            );
        self.times_seen += 1;
        self.first_seen = self.first_seen.min(seen);
        row.last_seen = row.last_seen.max(seen);
        if newest {
            let incoming = merged_data(&row.data, event, occ);
            row.data = concat(&row.data, incoming);
            row.last_occurrence_id = Some(occ.id.clone());
            self.title = occ.issue_title.clone();
            self.culprit = occ.culprit.clone();
            self.level = occ.level_num;
            self.message = search_message(event, occ);
            self.newest_applied = true;
        }
        if row.substatus == Some(group_substatus::NEW) {
            self.active_at = self.active_at.map(|a| a.min(seen)).or(Some(seen));
        }
        if row.status == group_status::RESOLVED {
            row.status = group_status::UNRESOLVED;
            row.substatus = Some(group_substatus::REGRESSED);
            self.active_at = Some(seen);
            self.regressed_by = Some((i, occ.event_id.clone()));
        }
    }

    /// The state to write.
    pub fn write(&self) -> Write<'_> {
        Write {
            id: self.row.id,
            project_id: self.row.project_id,
            hash: &self.hash,
            group_type: self.row.group_type,
            status: self.row.status,
            substatus: self.row.substatus,
            priority: self.row.priority,
            level: self.level,
            title: &self.title,
            culprit: &self.culprit,
            message: &self.message,
            times_seen: self.times_seen,
            first_seen: self.first_seen,
            last_seen: self.row.last_seen,
            active_at: self.active_at,
            last_occurrence_id: self.row.last_occurrence_id.as_deref(),
            data: &self.row.data,
            newest: self.newest_applied,
            regressed: self.regressed_by.is_some(),
        }
    }
}
