//! Kafka: client configuration, the start-up topic check, the producer, the DLQ and the consumer
//! runtime.

pub mod consumer;
pub mod dlq;
pub mod options;
pub mod producer;
pub mod topics;

use rdkafka::ClientConfig;

/// Largest message accepted or produced (Relay's deployments use 50 MB; chunks are ≤ 1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 50_000_000;

/// Base configuration for any client of `brokers`.
pub fn base_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("allow.auto.create.topics", "false")
        .set("log_level", "4");
    c
}
