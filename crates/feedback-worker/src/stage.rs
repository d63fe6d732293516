//! The feedback worker's stage: each `type: event` message on the feedback topic becomes a
//! feedback issue (an occurrence with its event), spam is ignored forever, the linked user report
//! is recorded, and the outcome is emitted once per feedback.

use crate::create_feedback::{self, Filtered};
use crate::spam::{self, Mode};
use futures::future::join_all;
use serde_json::Value;
use sluice_core::config::Settings;
use sluice_core::failure::Classify;
use sluice_core::ids;
use sluice_core::issues::{payload, project};
use sluice_core::kafka::consumer::{Msg, Stage, Verdict};
use sluice_core::kafka::producer::Producer;
use sluice_core::messages::enums::{
    data_category, group_status, group_substatus, FeedbackSource, Outcome,
};
use sluice_core::messages::{
    DlqReason, IngestMessage, OutcomeMessage, Rejection, StatusChangeMessage, Timestamp,
};
use sluice_core::outcomes::Outcomes;
use sluice_core::storage::{linking, user_reports, Db, DbError};
use std::sync::Arc;
use std::time::Duration;

sluice_core::counter_vec!(
    fn results = "sluice_feedback_total",
    "Feedback handled, by result (produced, spam, filtered_*, unknown_project).",
    ["result"]
);

/// The stage.
pub struct FeedbackStage {
    pub db: Db,
    pub producer: Producer,
    pub occurrences_topic: String,
    pub outcomes: Outcomes,
    pub settings: Arc<Settings>,
    pub http: reqwest::Client,
    pub projects: project::Shared,
}

impl FeedbackStage {
    async fn one(&self, msg: &Msg) -> Verdict {
        let event = match IngestMessage::decode(msg.payload()) {
            Ok(IngestMessage::Event(e)) => e,
            Ok(other) => {
                let detail = format!(
                    "{} messages do not belong on the feedback topic",
                    other.type_name()
                );
                return Verdict::Reject(Rejection::new(DlqReason::UnsupportedType, detail));
            }
            Err(r) => return Verdict::Reject(r),
        };
        let body: Value = match serde_json::from_slice(&event.payload) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return Verdict::Reject(Rejection::new(
                    DlqReason::InvalidEvent,
                    "payload is not a JSON object",
                ))
            }
            Err(e) => {
                return Verdict::Reject(Rejection::new(DlqReason::InvalidEvent, e.to_string()))
            }
        };
        let source = msg
            .header("source")
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(FeedbackSource::parse)
            .unwrap_or(FeedbackSource::NewFeedbackEnvelope);
        let pid = event.project_id;
        let proj = match self.projects.get(pid).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                results().with_label_values(&["unknown_project"]).inc();
                return Verdict::Done;
            }
            Err(e) => return e.verdict(),
        };
        let event_id = create_feedback::event_id(&body, &event.payload);
        let outcome_base = |o: Outcome| {
            let mut m = OutcomeMessage::new(
                proj.organization_id as u64,
                pid,
                o,
                data_category::USER_REPORT_V2,
            );
            m.event_id = Some(event_id.clone());
            m
        };

        let message = match create_feedback::feedback_message(&body) {
            Ok(m) => m.to_owned(),
            Err(f) => {
                return self
                    .filtered(f, outcome_base(Outcome::Invalid), pid, &event_id)
                    .await
            }
        };
        let max = self.settings.feedback.message_max_size;
        let mode = Mode::from_option(
            proj.options
                .get("feedback.spam_detection")
                .and_then(Value::as_str),
        );
        let spam_reason = match mode {
            Mode::Off => None,
            _ if message.chars().count() > max => {
                Some(format!("message longer than {max} characters"))
            }
            Mode::Heuristic => spam::heuristic(&message),
            Mode::Http => match &self.settings.feedback.spam_classifier_url {
                Some(url) => {
                    let timeout =
                        Duration::from_millis(self.settings.feedback.spam_classifier_timeout_ms);
                    spam::classify(&self.http, url, timeout, &message).await
                }
                None => None,
            },
        };
        let built = match create_feedback::build(
            &body,
            &event.payload,
            pid,
            source,
            max,
            spam_reason.as_deref(),
            event.start_time,
        ) {
            Ok(b) => b,
            Err(r) => return Verdict::Reject(r),
        };
        let occurrence_id = built.occurrence_id.clone();
        if let Some(o) = self
            .produce("occurrence", Some(built.occurrence.clone()), None)
            .await
        {
            return o;
        }
        if spam_reason.is_some() {
            let change = StatusChangeMessage {
                id: ids::spam_status_change_id(&occurrence_id),
                project_id: pid,
                fingerprint: vec![occurrence_id.clone()],
                new_status: group_status::IGNORED,
                new_substatus: Some(group_substatus::FOREVER),
            };
            if let Some(o) = self.produce("status_change", None, Some(change)).await {
                return o;
            }
        }
        if let Err(e) = self
            .record_user_report(&body, pid, &message, event.start_time.epoch_secs())
            .await
        {
            return e.verdict();
        }
        let mut accepted = outcome_base(Outcome::Accepted);
        accepted.timestamp = built.detection_time;
        if let Err(e) = self
            .outcomes
            .emit_once(&format!("feedback:{occurrence_id}"), &accepted)
            .await
        {
            return e.verdict();
        }
        results()
            .with_label_values(&[if spam_reason.is_some() {
                "spam"
            } else {
                "produced"
            }])
            .inc();
        Verdict::Done
    }

    /// Builds and produces one issue-platform message; `Some(outcome)` when that failed.
    async fn produce(
        &self,
        payload_type: &str,
        occurrence: Option<sluice_core::messages::OccurrenceMessage>,
        status_change: Option<StatusChangeMessage>,
    ) -> Option<Verdict> {
        let record = match payload::build(payload_type, occurrence, status_change, None) {
            Ok(r) => r,
            Err(e) => {
                return Some(Verdict::Reject(Rejection::new(
                    DlqReason::InvalidEvent,
                    e.to_string(),
                )))
            }
        };
        record
            .send(&self.producer, &self.occurrences_topic)
            .await
            .err()
            .map(|e| e.verdict())
    }

    async fn filtered(
        &self,
        f: Filtered,
        mut outcome: OutcomeMessage,
        project_id: u64,
        event_id: &str,
    ) -> Verdict {
        results()
            .with_label_values(&[&format!("filtered_{}", f.label())])
            .inc();
        outcome.reason = Some(f.reason().to_owned());
        outcome.timestamp = Timestamp::now();
        match self
            .outcomes
            .emit_once(
                &format!("feedback-invalid:{project_id}:{event_id}"),
                &outcome,
            )
            .await
        {
            Ok(_) => Verdict::Done,
            Err(e) => e.verdict(),
        }
    }

    /// A feedback naming `associated_event_id` gets a user report row if none exists, with the
    /// event's group; the row is not a legacy report, so the ingest stage never shims it (a
    /// legacy report for the same event still is, and becomes a second feedback issue).
    async fn record_user_report(
        &self,
        body: &Value,
        project_id: u64,
        message: &str,
        received: f64,
    ) -> Result<(), DbError> {
        let feedback = body
            .get("contexts")
            .and_then(|c| c.get("feedback"))
            .cloned()
            .unwrap_or(Value::Null);
        let Some(associated) = feedback
            .get("associated_event_id")
            .and_then(Value::as_str)
            .and_then(|e| ids::uuid_hex(e).ok())
        else {
            return Ok(());
        };
        let s = |k: &str| {
            feedback
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (name, email, comments) = (s("name"), s("contact_email"), message.to_owned());
        let environment = body
            .get("environment")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(str::to_owned);
        self.db
            .run(move |c| {
                let report = user_reports::Report {
                    project_id: project_id as i64,
                    event_id: &associated,
                    name: &name,
                    email: &email,
                    comments: &comments,
                    environment: environment.as_deref(),
                };
                user_reports::insert_for_feedback(c, &report, received)?;
                // The event may have been grouped while the row was written.
                let key = (report.project_id, report.event_id.to_owned());
                Ok(linking::fill_groups(c, linking::Linked::Reports, &[key])?)
            })
            .await
    }
}

impl Stage for FeedbackStage {
    fn tenant(&self, msg: &Msg) -> Option<u64> {
        IngestMessage::project_of(msg.payload())
    }

    async fn process(&self, batch: Vec<Arc<Msg>>) -> Vec<Verdict> {
        join_all(batch.iter().map(|m| self.one(m))).await
    }
}
