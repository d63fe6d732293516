//! Start-up check that every topic a binary reads or writes exists (production clusters disable
//! auto-create, and a typo must not turn into a silent stall).

use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;

/// A topic check that could not be completed or found topics missing.
#[derive(Debug, thiserror::Error)]
pub enum TopicCheckError {
    #[error("missing Kafka topics: {} (create them, or override the names with the --*-topic flags)", .0.join(", "))]
    Missing(Vec<String>),
    #[error("cannot read Kafka metadata from {brokers}: {error}")]
    Unreachable { brokers: String, error: String },
}

/// The subset of `required` that the cluster does not have. Blocking: call from a blocking thread.
pub fn missing_topics(
    brokers: &str,
    required: &[String],
    timeout: Duration,
) -> Result<Vec<String>, TopicCheckError> {
    let consumer: BaseConsumer = super::base_config(brokers, "sluice-topic-check")
        .create()
        .map_err(|e| TopicCheckError::Unreachable {
            brokers: brokers.to_owned(),
            error: e.to_string(),
        })?;
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| TopicCheckError::Unreachable {
            brokers: brokers.to_owned(),
            error: e.to_string(),
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
