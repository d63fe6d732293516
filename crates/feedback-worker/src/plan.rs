//! What each feedback message of a batch needs, worked out before anything is written.
//!
//! Three passes over the batch: `decode` (msgpack, the event JSON, the filters; CPU only, so it
//! runs on two threads), then the waits (each project of the batch looked up once, and the HTTP
//! spam classifier for the projects that ask for it, all at once), then `build` (the occurrence
//! with its event, CPU only, on two threads again).

use crate::create_feedback::{self, Filtered};
use crate::spam::{self, Mode};
use serde_json::Value;
use sluice_core::ids;
use sluice_core::issues::payload::{self, Wire};
use sluice_core::issues::project::Project;
use sluice_core::json;
use sluice_core::kafka::consumer::{Msg, Verdict};
use sluice_core::messages::enums::{
    data_category, group_status, group_substatus, FeedbackSource, Outcome,
};
use sluice_core::messages::{
    DlqReason, EventMessage, IngestMessage, OutcomeMessage, Rejection, StatusChangeMessage,
    Timestamp,
};
use sluice_core::storage::user_reports::FeedbackReport;

/// Threads for the CPU passes, and the fewest messages worth a thread of their own.
pub const THREADS: usize = 2;
pub const MIN_PER_THREAD: usize = 64;

/// What one feedback message needs.
pub enum Plan {
    /// Nothing more to do: refused, or its project could not be looked up.
    Settled(Verdict),
    /// Its project is not provisioned: done, counted as `unknown_project`.
    UnknownProject,
    /// Filtered out: only its INVALID outcome, emitted once under `key`.
    Filtered {
        label: &'static str,
        key: String,
        outcome: OutcomeMessage,
    },
    /// A feedback issue: the issue-platform records to produce (the occurrence, and the status
    /// change of a spam), the user report when it names an event, and the ACCEPTED outcome.
    /// The records are kept encoded only: the messages they came from (an occurrence holds the
    /// whole event) are freed in the build pass, on its threads, not on the batch's path.
    Issue {
        records: Vec<Wire>,
        report: Option<FeedbackReport>,
        key: String,
        outcome: OutcomeMessage,
        spam: bool,
    },
}

/// A feedback message decoded, before its project is known.
pub struct Decoded {
    event: EventMessage,
    body: Value,
    source: FeedbackSource,
    event_id: String,
    /// The feedback's text, or why it is filtered.
    message: Result<String, Filtered>,
}

impl Decoded {
    pub fn project_id(&self) -> u64 {
        self.event.project_id
    }
    /// The text the HTTP classifier is asked about (none for a filtered feedback).
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref().ok()
    }
}

/// How the spam question is answered for one feedback.
pub enum Spam {
    /// Decided before the build: not checked, too long, or the classifier's answer.
    Decided(Option<String>),
    /// The heuristic, run in the build pass.
    Heuristic,
    /// The HTTP classifier, asked in the waiting pass.
    Ask,
}

/// A feedback once its project is known: ready for the build, or already planned (refused,
/// unknown project, filtered).
pub enum Staged {
    Ready(Ready),
    Planned(Plan),
}

/// A feedback whose project is known and that passed the filters.
pub struct Ready {
    pub decoded: Decoded,
    pub organization_id: i64,
    pub spam: Spam,
}

fn reject(reason: DlqReason, detail: impl Into<String>) -> Verdict {
    Verdict::Reject(Rejection::new(reason, detail))
}

/// First pass: the message decoded and checked.
pub fn decode(msg: &Msg) -> Result<Decoded, Verdict> {
    let event = match IngestMessage::decode(msg.payload()) {
        Ok(IngestMessage::Event(e)) => e,
        Ok(other) => {
            let detail = format!(
                "{} messages do not belong on the feedback topic",
                other.type_name()
            );
            return Err(reject(DlqReason::UnsupportedType, detail));
        }
        Err(r) => return Err(Verdict::Reject(r)),
    };
    // Only the fields read are built.
    let body = match json::object_fields(&event.payload, |k| create_feedback::FIELDS.contains(&k)) {
        Ok(fields) => Value::Object(fields),
        Err(json::Refused::NotAnObject) => {
            return Err(reject(
                DlqReason::InvalidEvent,
                "payload is not a JSON object",
            ))
        }
        Err(json::Refused::Invalid(e)) => {
            return Err(reject(DlqReason::InvalidEvent, e.to_string()))
        }
    };
    let source = msg
        .header("source")
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(FeedbackSource::parse)
        .unwrap_or(FeedbackSource::NewFeedbackEnvelope);
    let event_id = create_feedback::event_id(&body, &event.payload);
    let message = create_feedback::feedback_message(&body).map(str::to_owned);
    Ok(Decoded {
        event,
        body,
        source,
        event_id,
        message,
    })
}

fn outcome_of(d: &Decoded, organization_id: i64, o: Outcome) -> OutcomeMessage {
    let mut m = OutcomeMessage::new(
        organization_id as u64,
        d.event.project_id,
        o,
        data_category::USER_REPORT_V2,
    );
    m.event_id = Some(d.event_id.clone());
    m
}

/// Second pass, once the project is known: a filtered feedback settles here with its INVALID
/// outcome; the others are ready, with how their spam question is answered.
pub fn resolve(d: Decoded, project: &Project, max_size: usize) -> Staged {
    let message = match &d.message {
        Ok(m) => m,
        Err(f) => {
            let mut outcome = outcome_of(&d, project.organization_id, Outcome::Invalid);
            outcome.reason = Some(f.reason().to_owned());
            outcome.timestamp = Timestamp::now();
            return Staged::Planned(Plan::Filtered {
                label: f.label(),
                key: format!("feedback-invalid:{}:{}", d.event.project_id, d.event_id),
                outcome,
            });
        }
    };
    let mode = Mode::from_option(
        project
            .options
            .get("feedback.spam_detection")
            .and_then(Value::as_str),
    );
    let spam = match mode {
        Mode::Off => Spam::Decided(None),
        _ if message.chars().count() > max_size => {
            Spam::Decided(Some(format!("message longer than {max_size} characters")))
        }
        Mode::Heuristic => Spam::Heuristic,
        Mode::Http => Spam::Ask,
    };
    Staged::Ready(Ready {
        decoded: d,
        organization_id: project.organization_id,
        spam,
    })
}

/// Last pass: the issue-platform records, the user report and the outcome of a ready feedback.
pub fn build(r: Ready, max_size: usize) -> Plan {
    let Ready {
        decoded: d,
        organization_id,
        spam,
    } = r;
    let message = d.message.as_deref().unwrap_or_default();
    let spam_reason = match spam {
        Spam::Decided(reason) => reason,
        Spam::Heuristic => spam::heuristic(message),
        // Not asked (no classifier configured): not spam.
        Spam::Ask => None,
    };
    let pid = d.event.project_id;
    let report = report_of(&d.body, pid, message, d.event.start_time.epoch_secs());
    let mut outcome = outcome_of(&d, organization_id, Outcome::Accepted);
    let built = match create_feedback::build(
        d.body,
        &d.event_id,
        pid,
        d.source,
        max_size,
        spam_reason.as_deref(),
        d.event.start_time,
    ) {
        Ok(b) => b,
        Err(r) => return Plan::Settled(Verdict::Reject(r)),
    };
    let occurrence_id = built.occurrence_id.clone();
    let mut records = Vec::with_capacity(2);
    match payload::build("occurrence", Some(built.occurrence), None, None) {
        Ok(r) => records.push(r.wire),
        Err(e) => return Plan::Settled(reject(DlqReason::InvalidEvent, e.to_string())),
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
            Ok(r) => records.push(r.wire),
            Err(e) => return Plan::Settled(reject(DlqReason::InvalidEvent, e.to_string())),
        }
    }
    outcome.timestamp = built.detection_time;
    Plan::Issue {
        records,
        report,
        key: format!("feedback:{occurrence_id}"),
        outcome,
        spam: spam_reason.is_some(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &str) -> Msg {
        let value = IngestMessage::Event(EventMessage {
            payload: payload.as_bytes().to_vec(),
            start_time: Timestamp::now(),
            event_id: "5cda143e3ab246d98901ac1babb95373".into(),
            project_id: 42,
            remote_addr: None,
            attachments: vec![],
        })
        .encode();
        Msg {
            topic: "ingest-feedback-events".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(value),
            headers: vec![],
            timestamp_ms: None,
        }
    }

    fn rejected(payload: &str) -> Option<DlqReason> {
        match decode(&msg(payload)) {
            Err(Verdict::Reject(r)) => Some(r.reason),
            _ => None,
        }
    }

    #[test]
    fn only_the_fields_read_are_built() {
        let d = decode(&msg(
            r#"{"event_id":"5cda143e3ab246d98901ac1babb95373","breadcrumbs":{"values":[{"message":"x"}]},
                "contexts":{"feedback":{"message":"first"}},"extra":{"a":[1,2]},"level":"info",
                "contexts":{"feedback":{"message":"Hello"}},"type":"feedback"}"#,
        ));
        let Ok(d) = d else {
            panic!("a valid feedback was refused");
        };
        let mut keys: Vec<&str> = d
            .body
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        assert_eq!(keys, ["contexts", "event_id", "level"]);
        assert_eq!(d.message(), Some("Hello"));
        assert_eq!(d.event_id, "5cda143e3ab246d98901ac1babb95373");
    }

    /// What a feedback plans into, with its body as decoded or as `body`.
    fn planned(m: &Msg, body: Option<Value>) -> String {
        let Ok(mut decoded) = decode(m) else {
            panic!("a valid feedback was refused");
        };
        if let Some(body) = body {
            decoded.body = body;
        }
        let ready = Ready {
            decoded,
            organization_id: 1,
            spam: Spam::Decided(Some("looks like spam".into())),
        };
        match build(ready, 4096) {
            Plan::Issue {
                records,
                report,
                key,
                outcome,
                spam,
            } => {
                let records: Vec<_> = records
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.value).into_owned())
                    .collect();
                format!("{records:?} {report:?} {key} {outcome:?} {spam}")
            }
            _ => panic!("a valid feedback did not plan an issue"),
        }
    }

    #[test]
    fn the_fields_built_are_every_field_the_plan_reads() {
        // Every top-level key a feedback event may carry, each with a value that would show in
        // the plan if it were read: the plan made from the fields built must equal the plan
        // made from the whole event.
        let payload = r#"{"event_id":"5cda143e3ab246d98901ac1babb95373","type":"feedback",
            "timestamp":1795432200.02,"received":1795432200.04,"platform":"javascript","level":"warning",
            "environment":"staging","release":"web@1.2.3","dist":"7","server_name":"web-1","logger":"l",
            "transaction":"/checkout","modules":{"react":"18"},"extra":{"cart":3},
            "contexts":{"feedback":{"message":"Checkout hangs","contact_email":"a@example.com","name":"A",
                        "associated_event_id":"d0e204294e8e4833ad83cea44088c3c8","replay_id":"0123456789abcdef0123456789abcdef",
                        "url":"https://shop.example/checkout"},
                        "trace":{"trace_id":"5cda143e3ab246d98901ac1babb95373"},"browser":{"name":"Firefox"}},
            "user":{"id":7,"ip_address":"10.0.0.1","name":"A"},"tags":{"plan":"pro"},
            "request":{"url":"https://shop.example/checkout","headers":{"User-Agent":"x"}},
            "sdk":{"name":"sentry.javascript.react","version":"10.0.0"},"breadcrumbs":{"values":[{"message":"click"}]},
            "exception":{"values":[]},"stacktrace":{"frames":[]},"fingerprint":["x"],"key_id":"3",
            "debug_meta":{"images":[]},"spans":[],"measurements":{"lcp":{"value":1.0}},"threads":{"values":[]}}"#;
        let whole: Value = serde_json::from_str(payload).unwrap_or_default();
        let m = msg(payload);
        assert_eq!(planned(&m, None), planned(&m, Some(whole)));
    }

    #[test]
    fn a_payload_a_full_parse_refuses_is_refused_even_where_it_is_not_read() {
        let ok = r#""contexts":{"feedback":{"message":"Hello"}}"#;
        for bad in [
            format!(r#"{{{ok},"breadcrumbs":{{"values":[{{"message":"\ud800"}}]}}}}"#),
            format!(r#"{{{ok},"extra":{{"n":1e999}}}}"#),
            format!(r#"{{{ok},"extra":{{"n":[1,]}}}}"#),
            "[1]".to_owned(),
            "nope".to_owned(),
        ] {
            assert_eq!(rejected(&bad), Some(DlqReason::InvalidEvent), "{bad}");
        }
    }
}
