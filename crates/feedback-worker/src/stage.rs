//! The feedback worker's stage: each `type: event` message on the feedback topic becomes a
//! feedback issue (an occurrence with its event), spam is ignored forever, the linked user report
//! is recorded, and the outcome is emitted once per feedback. A batch goes through these steps
//! together: every produce at once, the reports in one statement, the outcomes in one lookup and
//! one insert, so the database sees a few round trips per batch instead of several per message.

use crate::create_feedback;
use crate::spam::{self, Mode};
use futures::future::join_all;
use serde_json::Value;
use sluice_core::config::Settings;
use sluice_core::failure::Classify;
use sluice_core::ids;
use sluice_core::issues::payload::{self, Record};
use sluice_core::issues::project;
use sluice_core::kafka::consumer::{Msg, Stage, Verdict};
use sluice_core::kafka::producer::Producer;
use sluice_core::messages::enums::{
    data_category, group_status, group_substatus, FeedbackSource, Outcome,
};
use sluice_core::messages::{
    DlqReason, IngestMessage, OutcomeMessage, Rejection, StatusChangeMessage, Timestamp,
};
use sluice_core::outcomes::Outcomes;
use sluice_core::storage::user_reports::{self, FeedbackReport};
use sluice_core::storage::{Db, DbError};
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

/// What one feedback message needs, once decoded and checked.
enum Plan {
    /// Nothing more to do: done (an unknown project) or refused.
    Settled(Verdict),
    /// Filtered out: only its INVALID outcome, emitted once under `key`.
    Filtered {
        label: &'static str,
        key: String,
        outcome: OutcomeMessage,
    },
    /// A feedback issue: the issue-platform records to produce (the occurrence, and the status
    /// change of a spam), the user report when it names an event, and the ACCEPTED outcome.
    Issue {
        records: Vec<Record>,
        report: Option<FeedbackReport>,
        key: String,
        outcome: OutcomeMessage,
        spam: bool,
    },
}

impl FeedbackStage {
    /// Decodes and checks one message and builds what it needs; nothing is written yet.
    async fn plan(&self, msg: &Msg) -> Plan {
        let event = match IngestMessage::decode(msg.payload()) {
            Ok(IngestMessage::Event(e)) => e,
            Ok(other) => {
                let detail = format!(
                    "{} messages do not belong on the feedback topic",
                    other.type_name()
                );
                return Plan::Settled(Verdict::Reject(Rejection::new(
                    DlqReason::UnsupportedType,
                    detail,
                )));
            }
            Err(r) => return Plan::Settled(Verdict::Reject(r)),
        };
        let body: Value = match serde_json::from_slice(&event.payload) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return Plan::Settled(Verdict::Reject(Rejection::new(
                    DlqReason::InvalidEvent,
                    "payload is not a JSON object",
                )))
            }
            Err(e) => {
                return Plan::Settled(Verdict::Reject(Rejection::new(
                    DlqReason::InvalidEvent,
                    e.to_string(),
                )))
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
                return Plan::Settled(Verdict::Done);
            }
            Err(e) => return Plan::Settled(e.verdict()),
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
                let mut outcome = outcome_base(Outcome::Invalid);
                outcome.reason = Some(f.reason().to_owned());
                outcome.timestamp = Timestamp::now();
                return Plan::Filtered {
                    label: f.label(),
                    key: format!("feedback-invalid:{pid}:{event_id}"),
                    outcome,
                };
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
            Err(r) => return Plan::Settled(Verdict::Reject(r)),
        };
        let occurrence_id = built.occurrence_id.clone();
        let mut records = Vec::with_capacity(2);
        match payload::build("occurrence", Some(built.occurrence), None, None) {
            Ok(r) => records.push(r),
            Err(e) => {
                return Plan::Settled(Verdict::Reject(Rejection::new(
                    DlqReason::InvalidEvent,
                    e.to_string(),
                )))
            }
        }
        if spam_reason.is_some() {
            let change = StatusChangeMessage {
                id: ids::spam_status_change_id(&occurrence_id),
                project_id: pid,
                fingerprint: vec![occurrence_id.clone()],
                new_status: group_status::IGNORED,
                new_substatus: Some(group_substatus::FOREVER),
            };
            match payload::build("status_change", None, Some(change), None) {
                Ok(r) => records.push(r),
                Err(e) => {
                    return Plan::Settled(Verdict::Reject(Rejection::new(
                        DlqReason::InvalidEvent,
                        e.to_string(),
                    )))
                }
            }
        }
        let mut outcome = outcome_base(Outcome::Accepted);
        outcome.timestamp = built.detection_time;
        Plan::Issue {
            records,
            report: report_of(&body, pid, &message, event.start_time.epoch_secs()),
            key: format!("feedback:{occurrence_id}"),
            outcome,
            spam: spam_reason.is_some(),
        }
    }

    /// Produces each issue's records, in order per message, all messages concurrently; the
    /// verdict of each message whose produce failed.
    async fn produce(&self, plans: &[Plan], verdicts: &mut [Option<Verdict>]) {
        let sends = plans.iter().enumerate().map(|(i, plan)| async move {
            let Plan::Issue { records, .. } = plan else {
                return (i, None);
            };
            for r in records {
                if let Err(e) = r.send(&self.producer, &self.occurrences_topic).await {
                    return (i, Some(e.verdict()));
                }
            }
            (i, None)
        });
        for (i, failed) in join_all(sends).await {
            if failed.is_some() {
                verdicts[i] = failed;
            }
        }
    }

    /// Records the user reports of the planned issues in one statement. A failure of
    /// the whole statement caused by one report (not an outage) is narrowed down by writing the
    /// reports one by one, so only that message fails.
    async fn record_reports(&self, plans: &[Plan], verdicts: &mut [Option<Verdict>]) {
        let wanted: Vec<(usize, FeedbackReport)> = plans
            .iter()
            .enumerate()
            .filter(|(i, _)| verdicts[*i].is_none())
            .filter_map(|(i, p)| match p {
                Plan::Issue {
                    report: Some(r), ..
                } => Some((i, r.clone())),
                _ => None,
            })
            .collect();
        if wanted.is_empty() {
            return;
        }
        let all: Vec<FeedbackReport> = wanted.iter().map(|(_, r)| r.clone()).collect();
        let failure = match self
            .db
            .run(move |c| Ok::<_, DbError>(user_reports::insert_for_feedback(c, &all)?))
            .await
        {
            Ok(()) => return,
            Err(e) => e.verdict(),
        };
        if matches!(failure, Verdict::Unavailable(_)) || wanted.len() == 1 {
            for (i, _) in &wanted {
                verdicts[*i] = Some(failure.clone());
            }
            return;
        }
        for (i, report) in wanted {
            if let Err(e) = self
                .db
                .run(move |c| {
                    Ok::<_, DbError>(user_reports::insert_for_feedback(
                        c,
                        std::slice::from_ref(&report),
                    )?)
                })
                .await
            {
                verdicts[i] = Some(e.verdict());
            }
        }
    }

    /// Emits the outcomes of the messages that got this far, once each, in one lookup and one
    /// record of the keys; counts the results.
    async fn emit_outcomes(&self, plans: &[Plan], verdicts: &mut [Option<Verdict>]) {
        let mut items = Vec::new();
        let mut who = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            if verdicts[i].is_some() {
                continue;
            }
            match plan {
                Plan::Filtered { key, outcome, .. } | Plan::Issue { key, outcome, .. } => {
                    items.push((key.clone(), outcome.clone()));
                    who.push(i);
                }
                Plan::Settled(_) => {}
            }
        }
        if items.is_empty() {
            return;
        }
        if let Err(e) = self.outcomes.emit_once_many(items).await {
            // Keys already acknowledged were recorded: a retry emits only the missing ones.
            let v = e.verdict();
            for i in who {
                verdicts[i] = Some(v.clone());
            }
            return;
        }
        for i in who {
            let label = match &plans[i] {
                Plan::Filtered { label, .. } => format!("filtered_{label}"),
                Plan::Issue { spam: true, .. } => "spam".to_owned(),
                _ => "produced".to_owned(),
            };
            results().with_label_values(&[&label]).inc();
        }
    }
}

/// The user report a feedback naming `associated_event_id` makes (if none exists yet, with the
/// event's group); it is not a legacy report, so the ingest stage never shims it (a legacy
/// report for the same event still is, and becomes a second feedback issue).
fn report_of(
    body: &Value,
    project_id: u64,
    message: &str,
    received: f64,
) -> Option<FeedbackReport> {
    let feedback = body.get("contexts").and_then(|c| c.get("feedback"))?;
    let associated = feedback
        .get("associated_event_id")
        .and_then(Value::as_str)
        .and_then(|e| ids::uuid_hex(e).ok())?;
    let s = |k: &str| {
        feedback
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some(FeedbackReport {
        project_id: project_id as i64,
        event_id: associated,
        name: s("name"),
        email: s("contact_email"),
        comments: message.to_owned(),
        environment: body
            .get("environment")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(str::to_owned),
        received,
    })
}

impl Stage for FeedbackStage {
    fn tenant(&self, msg: &Msg) -> Option<u64> {
        IngestMessage::project_of(msg.payload())
    }

    /// The batch in steps, each step for every message at once: plan (decode, filters, spam),
    /// produce the issues and record the user reports (side by side), emit the outcomes. A message leaves the
    /// steps at its first failure with its own verdict; the others go on.
    async fn process(&self, batch: Vec<Arc<Msg>>) -> Vec<Verdict> {
        let plans: Vec<Plan> = join_all(batch.iter().map(|m| self.plan(m))).await;
        let mut verdicts: Vec<Option<Verdict>> = plans
            .iter()
            .map(|p| match p {
                Plan::Settled(v) => Some(v.clone()),
                _ => None,
            })
            .collect();
        // The issues are produced while the reports are written: neither needs the other, and
        // both are idempotent when a message is tried again. A message failed by either keeps
        // the first failure (the produce's) as its verdict. So a feedback whose issue cannot be
        // produced (refused as too large, say) still leaves its user report: the report is the
        // user's words about their event, kept like a report sent without feedback.
        let mut reported = verdicts.clone();
        futures::join!(
            self.produce(&plans, &mut verdicts),
            self.record_reports(&plans, &mut reported)
        );
        for (v, r) in verdicts.iter_mut().zip(reported) {
            if v.is_none() {
                *v = r;
            }
        }
        self.emit_outcomes(&plans, &mut verdicts).await;
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or(Verdict::Done))
            .collect()
    }
}
