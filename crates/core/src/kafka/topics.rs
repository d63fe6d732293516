//! Start-up check that every topic a binary reads or writes exists (production clusters disable
//! auto-create, and a typo must not turn into a silent stall).

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;
use std::sync::Mutex;
use std::time::Duration;

/// Keeps the first distinct errors librdkafka reported, which say why a connection failed.
#[derive(Default)]
struct LastError(Mutex<Vec<String>>);

impl ClientContext for LastError {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut seen) = self.0.lock() {
            let text = format!("{error}: {reason}");
            if seen.len() < 8 && !seen.contains(&text) {
                seen.push(text);
            }
        }
    }
}

impl ConsumerContext for LastError {}

/// Whether a connection failure comes from the security settings (TLS, SASL, a protocol the
/// listener does not speak), which retrying cannot fix.
fn is_security_failure(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "ssl",
        "sasl",
        "authentication",
        "handshake",
        "certificate",
        "security.protocol",
    ]
    .iter()
    .any(|w| r.contains(w))
}

/// A topic check that could not be completed or found topics missing.
#[derive(Debug, thiserror::Error)]
pub enum TopicCheckError {
    #[error("missing Kafka topics: {} (create them, or override the names with the --*-topic flags)", .0.join(", "))]
    Missing(Vec<String>),
    #[error("cannot read Kafka metadata from {brokers}: {error}")]
    Unreachable { brokers: String, error: String },
    #[error("invalid Kafka client configuration: {0}")]
    Config(String),
    #[error("Kafka at {brokers} refused the connection's security settings (check security.protocol, ssl.* and sasl.* in the Kafka options): {error}")]
    Refused { brokers: String, error: String },
}

/// The subset of `required` that the cluster does not have. Blocking: call from a blocking thread.
pub fn missing_topics(
    brokers: &str,
    required: &[String],
    timeout: Duration,
) -> Result<Vec<String>, TopicCheckError> {
    let mut config = super::base_config(brokers, "sluice-topic-check");
    super::options::apply(&mut config);
    let consumer: BaseConsumer<LastError> = config
        .create_with_context(LastError::default())
        .map_err(|e| TopicCheckError::Config(e.to_string()))?;
    let md = consumer.fetch_metadata(None, timeout).map_err(|e| {
        // Errors reach the context when the client's queue is served.
        for _ in 0..5 {
            let _ = consumer.poll(Duration::from_millis(20));
        }
        let seen = consumer
            .context()
            .0
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        match seen.iter().find(|r| is_security_failure(r)) {
            Some(reason) => TopicCheckError::Refused {
                brokers: brokers.to_owned(),
                error: reason.clone(),
            },
            None => TopicCheckError::Unreachable {
                brokers: brokers.to_owned(),
                error: match seen.last() {
                    Some(reason) => format!("{e} ({reason})"),
                    None => e.to_string(),
                },
            },
        }
    })?;
    let mut missing: Vec<String> = required
        .iter()
        .filter(|t| {
            !md.topics()
                .iter()
                .any(|mt| mt.name() == t.as_str() && mt.error().is_none())
        })
        .cloned()
        .collect();
    missing.sort();
    missing.dedup();
    Ok(missing)
}

/// Fails with [`TopicCheckError::Missing`] naming every absent topic.
pub async fn ensure_topics_exist(
    brokers: &str,
    required: Vec<String>,
    timeout: Duration,
) -> Result<(), TopicCheckError> {
    let brokers = brokers.to_owned();
    let b = brokers.clone();
    let missing = tokio::task::spawn_blocking(move || missing_topics(&b, &required, timeout))
        .await
        .map_err(|e| TopicCheckError::Unreachable {
            brokers,
            error: e.to_string(),
        })??;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TopicCheckError::Missing(missing))
    }
}
