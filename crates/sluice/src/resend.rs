//! A bulk producer for `sluice dlq replay`: the pipeline's producer settings
//! (`kafka::producer::client_config`), sends that never wait for their acknowledgement one by
//! one, and a count of what the broker acknowledged, per topic, once everything is flushed.
//! librdkafka's queue bounds what is in flight (64 MiB, 100,000 messages): a full queue makes
//! the sender wait.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientContext;
use sluice_core::kafka::producer::{client_config, owned_headers, ProducerConfig};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Counts {
    delivered: BTreeMap<String, usize>,
    failed: usize,
    first_error: Option<String>,
}

#[derive(Default)]
struct Counting(Mutex<Counts>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Ok(mut counts) = self.0.lock() else {
            return;
        };
        match result {
            Ok(m) => *counts.delivered.entry(m.topic().to_owned()).or_default() += 1,
            Err((e, m)) => {
                counts.failed += 1;
                if counts.first_error.is_none() {
                    counts.first_error = Some(format!("{}: {e}", m.topic()));
                }
            }
        }
    }
}

/// What the broker acknowledged.
pub struct Delivered {
    pub per_topic: BTreeMap<String, usize>,
    pub failed: usize,
    pub first_error: Option<String>,
}

#[derive(Clone)]
pub struct Resender {
    producer: Arc<ThreadedProducer<Counting>>,
}

impl Resender {
    pub fn new(brokers: &str) -> anyhow::Result<Resender> {
        let mut config = client_config(&ProducerConfig {
            brokers: brokers.to_owned(),
            client_id: "sluice-dlq-replay".into(),
            message_timeout: Duration::from_secs(60),
        });
        config
            .set("linger.ms", "20")
            .set("queue.buffering.max.kbytes", "65536")
            .set("queue.buffering.max.messages", "100000");
        Ok(Resender {
            producer: Arc::new(config.create_with_context(Counting::default())?),
        })
    }

    /// Queues one message; waits while librdkafka's queue is full.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> anyhow::Result<()> {
        let mut record = BaseRecord::to(topic)
            .payload(value)
            .headers(owned_headers(headers));
        if let Some(k) = key {
            record = record.key(k);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => anyhow::bail!("{topic}: {e}"),
            }
        }
    }

    /// Waits until everything queued was acknowledged or failed; returns the counts.
    pub fn finish(self, timeout: Duration) -> anyhow::Result<Delivered> {
        self.producer.flush(timeout)?;
        let counts = std::mem::take(
            &mut *self
                .producer
                .context()
                .0
                .lock()
                .map_err(|_| anyhow::anyhow!("delivery counts poisoned"))?,
        );
        Ok(Delivered {
            per_topic: counts.delivered,
            failed: counts.failed,
            first_error: counts.first_error,
        })
    }
}
