//! The producer every stage uses: a send resolves only when the broker acknowledged the message
//! (never "enqueued = delivered"); keys are partitioned with `murmur2_random` (the Java client's
//! partitioner) so other services' producers agree; lz4; flushed on shutdown.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub brokers: String,
    pub client_id: String,
    /// How long librdkafka keeps trying to deliver before the send fails.
    pub message_timeout: Duration,
}

/// The settings of every producer of sluice (this one and the bulk producers of the operator
/// command): Java's partitioner, lz4, acknowledged by all replicas, idempotent.
pub fn client_config(config: &ProducerConfig) -> rdkafka::ClientConfig {
    let mut c = super::base_config(&config.brokers, &config.client_id);
    c.set("partitioner", "murmur2_random")
        .set("compression.type", "lz4")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.max.bytes", super::MAX_MESSAGE_BYTES.to_string())
        .set(
            "message.timeout.ms",
            config.message_timeout.as_millis().to_string(),
        )
        // A stage hands its records over all at once and then waits for their acknowledgements:
        // lingering would only add to every batch's time (records queued while a request is in
        // flight still go out together).
        .set("linger.ms", "0");
    super::options::apply(&mut c);
    c
}

/// `headers` as librdkafka's owned headers (every value present).
pub fn owned_headers(headers: &[(&str, &[u8])]) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(*v),
            })
        },
    )
}

/// A failed send.
#[derive(Debug, thiserror::Error)]
#[error("produce to {topic} failed: {}", detail.as_deref().map_or_else(|| error.to_string(), |d| format!("the embedded transport: {d}")))]
pub struct ProduceError {
    pub topic: String,
    pub error: KafkaError,
    /// What failed, when it was not the Kafka client (the embedded transport's database).
    pub detail: Option<String>,
}

struct ProducerMetrics {
    sent: IntCounterVec,
    latency: HistogramVec,
}

fn metrics() -> &'static ProducerMetrics {
    static M: OnceLock<ProducerMetrics> = OnceLock::new();
    M.get_or_init(|| ProducerMetrics {
        sent: crate::metrics::counter_vec(
            Opts::new(
                "sluice_produced_messages_total",
                "Messages produced, by topic and result (ok, error).",
            ),
            &["topic", "result"],
        ),
        latency: crate::metrics::histogram_vec(
            HistogramOpts::new(
                "sluice_produce_latency_seconds",
                "Time from send to broker acknowledgement.",
            ),
            &["topic"],
        ),
    })
}

/// A producer: to Kafka, or to the embedded transport in PostgreSQL ([`crate::queue`]).
#[derive(Clone)]
pub struct Producer {
    inner: Backend,
}

#[derive(Clone)]
enum Backend {
    Kafka(FutureProducer),
    Queue(crate::queue::Publisher),
}

impl Producer {
    /// Creates a Kafka producer (no network I/O yet).
    pub fn new(config: &ProducerConfig) -> Result<Producer, KafkaError> {
        Ok(Producer {
            inner: Backend::Kafka(client_config(config).create()?),
        })
    }

    /// A producer to the embedded transport.
    pub fn queue(publisher: crate::queue::Publisher) -> Producer {
        Producer {
            inner: Backend::Queue(publisher),
        }
    }

    /// Sends one message and waits for the broker's acknowledgement; returns (partition, offset).
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(i32, i64), ProduceError> {
        let kafka = match &self.inner {
            Backend::Kafka(k) => k,
            Backend::Queue(q) => return send_queued(q, topic, key, payload, headers).await,
        };
        let record = kafka_record(topic, key, payload, headers);
        let started = Instant::now();
        // Timeout::Never for the local queue: back-pressure waits instead of failing the send;
        // message.timeout.ms still bounds delivery.
        let result = kafka.send(record, Timeout::Never).await;
        observed(topic, started, result.map_err(|(e, _)| e))
            .map_err(|e| ProduceError::kafka(topic, e))
    }

    /// Hands one message to the producer now and returns what resolves with the broker's
    /// acknowledgement, as [`Producer::send`] does. A message refused at once (over the size
    /// limit, an unknown topic) fails here, so a caller can tell it apart before it waits or
    /// does anything that depends on the message being accepted. When librdkafka's local queue
    /// is full the message waits for room inside the returned future instead.
    pub fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<Pending, Box<ProduceError>> {
        let kafka = match &self.inner {
            Backend::Kafka(k) => k,
            Backend::Queue(_) => {
                if let Some(e) = over_limit(topic, payload.len()) {
                    return Err(Box::new(e));
                }
                return Ok(self.send_owned(topic, key, payload, headers));
            }
        };
        let record = kafka_record(topic, key, payload, headers);
        let started = Instant::now();
        match kafka.send_result(record) {
            Ok(delivery) => {
                let topic = topic.to_owned();
                Ok(Box::pin(async move {
                    // A dropped sender means the producer went away with the message unsent.
                    let result = match delivery.await {
                        Ok(r) => r.map_err(|(e, _)| e),
                        Err(_) => Err(KafkaError::Canceled),
                    };
                    observed(&topic, started, result).map_err(|e| ProduceError::kafka(&topic, e))
                }))
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Ok(self.send_owned(topic, key, payload, headers))
            }
            Err((error, _)) => {
                observe(topic, started, false);
                Err(Box::new(ProduceError::kafka(topic, error)))
            }
        }
    }

    /// [`Producer::send`] on owned copies, for a future that outlives the caller's borrows.
    fn send_owned(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Pending {
        let (this, topic, key, payload) = (
            self.clone(),
            topic.to_owned(),
            key.map(<[u8]>::to_vec),
            payload.to_vec(),
        );
        let headers: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect();
        Box::pin(async move {
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            this.send(&topic, key.as_deref(), &payload, &headers).await
        })
    }

    /// Waits up to `timeout` for queued messages to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        match &self.inner {
            Backend::Kafka(k) => k.flush(timeout),
            // Sends resolve only once committed: nothing is ever queued.
            Backend::Queue(_) => Ok(()),
        }
    }
}

/// A message handed to the producer, resolving with its (partition, offset) once acknowledged.
pub type Pending = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(i32, i64), ProduceError>> + Send + 'static>,
>;

/// A Kafka record of `payload`, with its key and headers.
fn kafka_record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    headers: &[(&str, &[u8])],
) -> FutureRecord<'a, [u8], [u8]> {
    let mut record: FutureRecord<'a, [u8], [u8]> = FutureRecord::to(topic).payload(payload);
    if let Some(k) = key {
        record = record.key(k);
    }
    if !headers.is_empty() {
        record = record.headers(owned_headers(headers));
    }
    record
}

/// Counts one delivery's result.
fn observe(topic: &str, started: Instant, ok: bool) {
    let m = metrics();
    if ok {
        m.sent.with_label_values(&[topic, "ok"]).inc();
        m.latency
            .with_label_values(&[topic])
            .observe(started.elapsed().as_secs_f64());
    } else {
        m.sent.with_label_values(&[topic, "error"]).inc();
    }
}

/// A Kafka delivery's result, counted, as (partition, offset).
fn observed(
    topic: &str,
    started: Instant,
    result: Result<rdkafka::producer::future_producer::Delivery, KafkaError>,
) -> Result<(i32, i64), KafkaError> {
    observe(topic, started, result.is_ok());
    result.map(|d| (d.partition, d.offset))
}

impl ProduceError {
    fn kafka(topic: &str, error: KafkaError) -> ProduceError {
        ProduceError {
            topic: topic.to_owned(),
            error,
            detail: None,
        }
    }
}

/// The embedded transport's size check, made before anything is written.
fn over_limit(topic: &str, len: usize) -> Option<ProduceError> {
    if len <= super::MAX_MESSAGE_BYTES {
        return None;
    }
    metrics().sent.with_label_values(&[topic, "error"]).inc();
    Some(ProduceError {
        topic: topic.to_owned(),
        error: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        detail: Some(format!("{len} bytes is over the message size limit")),
    })
}

async fn send_queued(
    q: &crate::queue::Publisher,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: &[(&str, &[u8])],
) -> Result<(i32, i64), ProduceError> {
    let m = metrics();
    if let Some(e) = over_limit(topic, payload.len()) {
        return Err(e);
    }
    let started = Instant::now();
    match q.send(topic, key, payload, headers).await {
        Ok(partition) => {
            m.sent.with_label_values(&[topic, "ok"]).inc();
            m.latency
                .with_label_values(&[topic])
                .observe(started.elapsed().as_secs_f64());
            Ok((partition, -1))
        }
        Err(e) => {
            m.sent.with_label_values(&[topic, "error"]).inc();
            Err(ProduceError {
                topic: topic.to_owned(),
                error: KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown),
                detail: Some(e),
            })
        }
    }
}
