//! User reports: filtered and refused reports get their
//! outcome; a saved report takes its event's group; the 30-minute rule (event older than the
//! report) and the 5-minute rule (a duplicate may update the report only within 5 minutes) are
//! measured against the message's `start_time`, so replays decide the same way. Once the report
//! and its event both exist, the report is shimmed: a feedback event (id uuid5 `ur:`) goes to the
//! feedback topic with header `source=user_report_envelope`, and `feedback_event_id` is set, so it
//! is shimmed once, whichever of report and event came first.

use crate::context::{emit, reject, Deps, Step};
use crate::metrics;
use diesel::PgConnection;
use serde_json::{json, Map, Value};
use sluice_core::failure::Classify;
use sluice_core::ids;
use sluice_core::issues::project::Project;
use sluice_core::messages::enums::{data_category, FeedbackSource, Outcome};
use sluice_core::messages::DlqReason;
use sluice_core::messages::{
    event_time, EventMessage, IngestMessage, OutcomeMessage, Timestamp, UserReportMessage,
};
use sluice_core::storage::linking::{self, Linked};
use sluice_core::storage::{events, user_reports, DbError, EventKey};

/// Longest accepted comments (the model's column size in Sentry).
pub const MAX_COMMENTS: usize = 4096;
const MAX_NAME: usize = 128;
const MAX_EMAIL: usize = 75;
const UNREAL_UNATTENDED: &str = "Sent in the unattended mode";

/// The report's event id, when the payload has a usable one (used to order messages per event).
pub fn event_id_hint(m: &UserReportMessage) -> Option<String> {
    let v: Value = serde_json::from_slice(&m.payload).ok()?;
    ids::uuid_hex(v.get("event_id")?.as_str()?).ok()
}

/// A valid report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub event_id: String,
    pub name: String,
    pub email: String,
    pub comments: String,
}

/// Why a report is refused: the outcome reason (Sentry's strings) and a metric label.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub reason: &'static str,
    pub label: &'static str,
}

fn refused(reason: &'static str, label: &'static str) -> Refused {
    Refused { reason, label }
}

/// Validates and filters a report payload (`filter_garbage` = `feedback.filter_garbage_messages`).
pub fn validate(payload: &[u8], filter_garbage: bool) -> Result<Report, Refused> {
    let map: Map<String, Value> = match serde_json::from_slice(payload) {
        Ok(Value::Object(m)) => m,
        _ => return Err(refused("Invalid Payload", "invalid_payload")),
    };
    let text = |k: &str| match map.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let comments = text("comments")
        .ok_or_else(|| refused("Missing comments", "missing_comments"))?
        .trim()
        .to_owned();
    let raw_id = text("event_id").ok_or_else(|| refused("Missing event_id", "missing_event_id"))?;
    if filter_garbage && comments.is_empty() {
        return Err(refused("Empty Feedback Messsage", "empty"));
    }
    if filter_garbage && comments == UNREAL_UNATTENDED {
        return Err(refused(
            "Sent in Unreal Unattended Mode",
            "unreal.unattended",
        ));
    }
    if comments.chars().count() > MAX_COMMENTS {
        return Err(refused("Too Large", "too_large"));
    }
    let name = text("name").unwrap_or_default();
    if name.chars().count() > MAX_NAME {
        return Err(refused("Name Too Large", "name_too_large"));
    }
    let email = text("email").unwrap_or_default();
    if email.chars().count() > MAX_EMAIL {
        return Err(refused("Email Too Large", "email_too_large"));
    }
    let event_id =
        ids::uuid_hex(&raw_id).map_err(|_| refused("Invalid Event ID", "invalid_event_id"))?;
    Ok(Report {
        event_id,
        name,
        email,
        comments,
    })
}

fn outcome(project: &Project, o: Outcome, reason: &str, start_time: Timestamp) -> OutcomeMessage {
    let mut m = OutcomeMessage::new(
        project.organization_id as u64,
        project.id as u64,
        o,
        data_category::USER_REPORT_V2,
    );
    m.reason = Some(reason.to_owned());
    m.timestamp = start_time;
    m
}

/// What the database said about a report.
struct Saved {
    /// The event, if it exists (now).
    event: Option<Value>,
    /// When the stored report was first received (`date_added`): the shimmed feedback event's
    /// `received` whichever path shims it, so the feedback does not depend on arrival order.
    received: Timestamp,
    /// `None` when the report was refused by the 30- or 5-minute rule.
    feedback_event_id: Option<Option<String>>,
}

/// Handles one `type: user_report` message.
pub async fn process(deps: &Deps, m: &UserReportMessage, project: &Project) -> Step<()> {
    let feedback = &deps.settings.feedback;
    let pid = project.id;
    let natural = |r: &str| format!("userreport:{pid}:{}:{r}", ids::md5_hex_bytes(&m.payload));
    if feedback.slug_denylist.contains(&project.organization_slug) {
        metrics::count("user_report", "org.denylist");
        let o = outcome(
            project,
            Outcome::RateLimited,
            "feedback_denylist",
            m.start_time,
        );
        return emit(deps, &natural("denylist"), &o).await;
    }
    let report = match validate(&m.payload, feedback.filter_garbage_messages) {
        Ok(r) => r,
        Err(why) => {
            tracing::info!(project_id = pid, reason = why.reason, "Invalid userreport");
            metrics::count("user_report", why.label);
            let o = outcome(project, Outcome::Invalid, why.reason, m.start_time);
            return emit(deps, &natural(why.label), &o).await;
        }
    };
    let saved = {
        let (r, start) = (report.clone(), m.start_time);
        deps.db
            .run(move |c| save(c, pid, &r, start))
            .await
            .map_err(|e| e.verdict())?
    };
    let Some(feedback_event_id) = saved.feedback_event_id else {
        tracing::info!(
            project_id = pid,
            event_id = %report.event_id,
            "Invalid userreport: Feedback for this event cannot be modified."
        );
        metrics::count("user_report", "conflict");
        return Ok(());
    };
    metrics::count(
        "user_report",
        if saved.event.is_some() {
            "saved_with_event"
        } else {
            "saved"
        },
    );
    match (saved.event, feedback_event_id) {
        (Some(event), None) => shim(deps, project, &report, &event, saved.received).await,
        _ => Ok(()),
    }
}

/// Inserts or (within 5 minutes) updates the report, then reads the event again if it was not
/// there before: the report is committed first, so an event stored concurrently either sees the
/// report or is seen here.
fn save(
    c: &mut PgConnection,
    project_id: i64,
    r: &Report,
    start_time: Timestamp,
) -> Result<Saved, DbError> {
    let event = events::load(c, project_id, &r.event_id)?;
    if let Some(e) = &event {
        let happened = event_time(e, start_time);
        if happened.epoch_secs() < start_time.epoch_secs() - 30.0 * 60.0 {
            return Ok(Saved {
                event,
                received: start_time,
                feedback_event_id: None,
            });
        }
    }
    let environment = event
        .as_ref()
        .and_then(|e| e.get("environment"))
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty());
    let stored = user_reports::Report {
        project_id,
        event_id: &r.event_id,
        name: &r.name,
        email: &r.email,
        comments: &r.comments,
        environment,
    };
    let row = user_reports::upsert(c, &stored, start_time.epoch_secs())?;
    let Some(row) = row else {
        return Ok(Saved {
            event,
            received: start_time,
            feedback_event_id: None,
        });
    };
    if row.group_id.is_none() {
        linking::fill_groups(c, Linked::Reports, &[(project_id, r.event_id.clone())])?;
    }
    let event = match event {
        Some(e) => Some(e),
        None => events::load(c, project_id, &r.event_id)?,
    };
    Ok(Saved {
        event,
        received: Timestamp::from_epoch_secs(row.received).unwrap_or(start_time),
        feedback_event_id: Some(row.feedback_event_id),
    })
}

/// Which of the given events have reports waiting to be shimmed.
pub async fn waiting_for(deps: &Deps, keys: Vec<EventKey>) -> Step<Vec<EventKey>> {
    deps.db
        .run(move |c| Ok(user_reports::with_waiting(c, &keys)?))
        .await
        .map_err(|e: DbError| e.verdict())
}

/// Shims the reports of an event that arrived after them.
pub async fn shim_waiting(
    deps: &Deps,
    project: &Project,
    event_id: &str,
    event: &Value,
) -> Step<()> {
    let (pid, eid) = (project.id, event_id.to_owned());
    let environment = event
        .get("environment")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .map(str::to_owned);
    let waiting = deps
        .db
        .run(move |c| {
            if let Some(env) = &environment {
                user_reports::set_environment(c, pid, &eid, env)?;
            }
            Ok(user_reports::waiting(c, pid, &eid)?)
        })
        .await
        .map_err(|e: DbError| e.verdict())?;
    for w in waiting {
        let report = Report {
            event_id: event_id.to_owned(),
            name: w.name,
            email: w.email,
            comments: w.comments,
        };
        let received = Timestamp::from_epoch_secs(w.received).unwrap_or_else(|_| Timestamp::now());
        shim(deps, project, &report, event, received).await?;
    }
    Ok(())
}

/// The feedback event for a report on `event`, with the `ur:` uuid5 id.
pub fn feedback_event(
    project_id: u64,
    report: &Report,
    event: &Value,
    start_time: Timestamp,
) -> Value {
    let id = ids::shimmed_feedback_event_id(project_id, &report.event_id);
    let mut feedback = json!({
        "name": report.name,
        "contact_email": report.email,
        "message": report.comments,
        "associated_event_id": report.event_id,
    });
    let mut contexts = Map::new();
    let ctx = event.get("contexts");
    if let Some(replay) = ctx.and_then(|c| c.get("replay")) {
        if let Some(rid) = replay.get("replay_id").filter(|r| !r.is_null()) {
            feedback["replay_id"] = rid.clone();
            contexts.insert("replay".into(), replay.clone());
        }
    }
    if let Some(trace) = ctx.and_then(|c| c.get("trace")) {
        if trace.get("trace_id").is_some_and(|t| !t.is_null()) {
            contexts.insert("trace".into(), trace.clone());
        }
    }
    contexts.insert("feedback".into(), feedback);
    let tags: Vec<Value> = match event.get("tags") {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| json!([k, v])).collect(),
        Some(Value::Array(a)) => a.iter().filter(|p| p.is_array()).cloned().collect(),
        _ => Vec::new(),
    };
    let mut out = json!({
        "event_id": id,
        "type": "feedback",
        "timestamp": event_time(event, start_time).epoch_secs(),
        "contexts": contexts,
        "tags": tags,
    });
    for k in ["platform", "level", "environment", "release"] {
        if let Some(v) = event.get(k).filter(|v| !v.is_null()) {
            out[k] = v.clone();
        }
    }
    out
}

/// Produces the feedback event for `report` and records it on the report.
async fn shim(
    deps: &Deps,
    project: &Project,
    report: &Report,
    event: &Value,
    start_time: Timestamp,
) -> Step<()> {
    if deps
        .settings
        .feedback
        .slug_denylist
        .contains(&project.organization_slug)
    {
        return Ok(());
    }
    let pid = project.id as u64;
    let body = feedback_event(pid, report, event, start_time);
    let id = ids::shimmed_feedback_event_id(pid, &report.event_id);
    let message = IngestMessage::Event(EventMessage {
        payload: serde_json::to_vec(&body)
            .map_err(|e| reject(DlqReason::InvalidEvent, e.to_string()))?,
        start_time,
        event_id: id.clone(),
        project_id: pid,
        remote_addr: None,
        attachments: Vec::new(),
    });
    let key = hex::decode(&id).unwrap_or_default();
    let source = FeedbackSource::UserReportEnvelope.as_str().as_bytes();
    deps.producer
        .send(
            &deps.feedback_topic,
            Some(&key),
            &message.encode(),
            &[("source", source)],
        )
        .await
        .map_err(|e| e.verdict())?;
    let (eid, fid) = (report.event_id.clone(), id);
    deps.db
        .run(move |c| Ok(user_reports::mark_shimmed(c, pid as i64, &eid, &fid)?))
        .await
        .map_err(|e: DbError| e.verdict())?;
    metrics::count("user_report", "shimmed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(payload: Value, garbage: bool) -> Result<Report, &'static str> {
        validate(payload.to_string().as_bytes(), garbage).map_err(|r| r.reason)
    }

    #[test]
    fn filters_and_validation() {
        let id = "D0E20429-4E8E-4833-AD83-CEA44088C3C8";
        let ok = v(
            json!({"event_id": id, "comments": "  hello world ", "email": "a@b.c"}),
            true,
        );
        assert_eq!(
            ok.as_ref()
                .map(|r| (r.event_id.as_str(), r.comments.as_str(), r.name.as_str())),
            Ok(("d0e204294e8e4833ad83cea44088c3c8", "hello world", ""))
        );
        assert_eq!(
            v(json!({"event_id": id, "comments": "   "}), true).err(),
            Some("Empty Feedback Messsage")
        );
        assert!(v(json!({"event_id": id, "comments": "   "}), false).is_ok());
        assert_eq!(
            v(json!({"event_id": id, "comments": UNREAL_UNATTENDED}), true).err(),
            Some("Sent in Unreal Unattended Mode")
        );
        assert!(v(
            json!({"event_id": id, "comments": UNREAL_UNATTENDED}),
            false
        )
        .is_ok());
        assert_eq!(
            v(json!({"event_id": id, "comments": "x".repeat(4097)}), false).err(),
            Some("Too Large")
        );
        assert_eq!(
            v(json!({"event_id": id}), false).err(),
            Some("Missing comments")
        );
        assert_eq!(
            v(json!({"comments": "a"}), false).err(),
            Some("Missing event_id")
        );
        assert_eq!(
            v(json!({"event_id": "nope", "comments": "a"}), false).err(),
            Some("Invalid Event ID")
        );
        assert_eq!(
            validate(b"{}}", false).err().map(|r| r.reason),
            Some("Invalid Payload")
        );
    }

    #[test]
    fn feedback_event_copies_context_and_tags() {
        let report = Report {
            event_id: "d0e204294e8e4833ad83cea44088c3c8".into(),
            name: "Jane".into(),
            email: "jane@example.com".into(),
            comments: "It broke".into(),
        };
        let event = json!({
            "timestamp": 1795432199.5, "platform": "python", "level": "error", "environment": "prod",
            "tags": [["browser", "Firefox"]],
            "contexts": {"trace": {"trace_id": "858a"}, "replay": {"replay_id": "r1"}, "os": {}}
        });
        let fb = feedback_event(42, &report, &event, Timestamp::now());
        assert_eq!(
            fb["event_id"],
            json!(ids::shimmed_feedback_event_id(42, &report.event_id))
        );
        assert_ne!(fb["event_id"], json!(report.event_id));
        assert_eq!(fb["contexts"]["feedback"]["message"], "It broke");
        assert_eq!(
            fb["contexts"]["feedback"]["contact_email"],
            "jane@example.com"
        );
        assert_eq!(
            fb["contexts"]["feedback"]["associated_event_id"],
            json!(report.event_id)
        );
        assert_eq!(fb["contexts"]["feedback"]["replay_id"], "r1");
        assert_eq!(fb["contexts"]["trace"]["trace_id"], "858a");
        assert!(fb["contexts"].get("os").is_none());
        assert_eq!(fb["tags"], json!([["browser", "Firefox"]]));
        assert_eq!(fb["timestamp"], json!(1795432199.5));
        assert_eq!(fb["platform"], "python");
    }
}
