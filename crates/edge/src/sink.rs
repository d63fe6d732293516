//! Where accepted envelopes go: the ingest topics, on Kafka or on the embedded transport. A
//! sink answers only once every message is durable, sending waves in order (a wave's messages
//! are acknowledged before the next wave goes), so an event never overtakes its attachment
//! chunks.

use crate::translate::Outgoing;
use futures::future::BoxFuture;
use sluice_core::kafka::producer::Producer;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// A failed send; the client is answered 503 and retries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// The ingest topics' transport.
pub trait Sink: Send + Sync + 'static {
    /// Sends `waves` in order; resolves when all are durable.
    fn send(&self, waves: Vec<Vec<Outgoing>>) -> BoxFuture<'_, Result<(), SinkError>>;
    /// Sends messages without waiting (outcomes); failures are logged and counted.
    fn send_detached(&self, messages: Vec<Outgoing>);
}

/// Kafka through the shared producer.
pub struct KafkaSink {
    producer: Producer,
    /// Detached sends in flight at once; beyond, outcomes are dropped (and counted).
    detached: Arc<Semaphore>,
}

impl KafkaSink {
    pub fn new(producer: Producer) -> KafkaSink {
        KafkaSink {
            producer,
            detached: Arc::new(Semaphore::new(1024)),
        }
    }
}

impl Sink for KafkaSink {
    fn send(&self, waves: Vec<Vec<Outgoing>>) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            for wave in waves {
                let sends = wave.iter().map(|m| {
                    self.producer
                        .send(&m.topic, Some(&m.key[..]), &m.payload, &[])
                });
                for result in futures::future::join_all(sends).await {
                    result.map_err(|e| SinkError(e.to_string()))?;
                }
            }
            Ok(())
        })
    }

    fn send_detached(&self, messages: Vec<Outgoing>) {
        let Ok(permit) = Arc::clone(&self.detached).try_acquire_owned() else {
            crate::metrics::outcomes_dropped(messages.len());
            return;
        };
        let producer = self.producer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            for m in messages {
                if let Err(e) = producer.send(&m.topic, None, &m.payload, &[]).await {
                    tracing::warn!(error = %e, topic = %m.topic, "outcome not produced");
                }
            }
        });
    }
}

/// The embedded transport: an envelope's messages are published in one transaction, in order,
/// so an envelope is on the topics entirely or not at all.
pub struct QueueSink {
    publisher: sluice_core::queue::Publisher,
    detached: Arc<Semaphore>,
}

impl QueueSink {
    pub fn new(publisher: sluice_core::queue::Publisher) -> QueueSink {
        QueueSink {
            publisher,
            detached: Arc::new(Semaphore::new(1024)),
        }
    }
}

impl Sink for QueueSink {
    fn send(&self, waves: Vec<Vec<Outgoing>>) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let all = waves
                .into_iter()
                .flatten()
                .map(|m| (m.topic, Some(m.key.to_vec()), m.payload))
                .collect();
            self.publisher.send_all(all).await.map_err(SinkError)
        })
    }

    fn send_detached(&self, messages: Vec<Outgoing>) {
        let Ok(permit) = Arc::clone(&self.detached).try_acquire_owned() else {
            crate::metrics::outcomes_dropped(messages.len());
            return;
        };
        let publisher = self.publisher.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let all = messages
                .into_iter()
                .map(|m| (m.topic, None, m.payload))
                .collect();
            if let Err(e) = publisher.send_all(all).await {
                tracing::warn!(error = %e, "outcomes not published");
            }
        });
    }
}
