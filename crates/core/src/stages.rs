//! The four binaries' names, default ports and consumer groups, and the topics each one needs.

use crate::cli::{dlq_topic, CommonArgs, StageDefaults};

/// `ingest-consumer`: Relay's events and attachments → events, attachments, user reports.
pub const INGEST: StageDefaults = StageDefaults::new(
    "ingest-consumer",
    "127.0.0.1:9101",
    "Turns Relay's events, attachments and user reports into stored events, attachments and user reports, error occurrences and shimmed feedback.",
);
/// `feedback-worker`: feedback events → feedback issues.
pub const FEEDBACK: StageDefaults = StageDefaults::new(
    "feedback-worker",
    "127.0.0.1:9102",
    "Turns feedback events into feedback issues, with optional spam detection.",
);
/// `occurrence-consumer`: occurrences and status changes → groups.
pub const OCCURRENCE: StageDefaults = StageDefaults::new(
    "occurrence-consumer",
    "127.0.0.1:9103",
    "Turns issue occurrences and status changes into issue groups.",
);
/// `producer-shim`: HTTP/CLI → occurrences topic (or direct processing).
pub const SHIM: StageDefaults = StageDefaults::new(
    "producer-shim",
    "127.0.0.1:9104",
    "Accepts occurrences and status changes and produces them to the occurrences topic, or processes them directly when Kafka is not configured or unavailable.",
);

fn outcomes(c: &CommonArgs) -> Vec<String> {
    let mut v = vec![c.topics.outcomes_topic.clone()];
    v.extend(c.topics.outcomes_billing_topic.clone());
    v
}

/// Inputs, DLQs and outputs of `ingest-consumer` reading `inputs`.
pub fn ingest_topics(c: &CommonArgs, inputs: &[String]) -> Vec<String> {
    let mut v: Vec<String> = inputs
        .iter()
        .flat_map(|t| [t.clone(), dlq_topic(t)])
        .collect();
    v.push(c.topics.feedback_topic.clone());
    v.push(c.topics.occurrences_topic.clone());
    v.extend(outcomes(c));
    v
}

/// Inputs, DLQ and outputs of `feedback-worker`.
pub fn feedback_topics(c: &CommonArgs) -> Vec<String> {
    let t = &c.topics;
    let mut v = vec![
        t.feedback_topic.clone(),
        dlq_topic(&t.feedback_topic),
        t.occurrences_topic.clone(),
    ];
    v.extend(outcomes(c));
    v
}

/// Input, DLQ and outputs of `occurrence-consumer`.
pub fn occurrence_topics(c: &CommonArgs) -> Vec<String> {
    let t = &c.topics;
    let mut v = vec![t.occurrences_topic.clone(), dlq_topic(&t.occurrences_topic)];
    v.extend(outcomes(c));
    v
}

/// Output of `producer-shim`.
pub fn shim_topics(c: &CommonArgs) -> Vec<String> {
    vec![c.topics.occurrences_topic.clone()]
}
