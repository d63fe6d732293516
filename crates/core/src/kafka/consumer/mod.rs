//! The consumer runtime every stage reuses.
//!
//! A stage implements [`Stage::process`]: "process this batch and return when its effects are
//! durable", with one [`Verdict`] per message. The runtime owns the rest:
//! - polling on a dedicated driver thread (rebalance callbacks run inside `poll`, so they can
//!   block on in-flight work without touching the async runtime);
//! - batching (`--max-batch-size`, `--max-batch-time-ms`) with one batch in flight and one being
//!   filled, and a bounded librdkafka prefetch, so memory stays bounded under any backlog; when
//!   nothing is in flight the buffer is handed over at once (`--batch-linger-ms`, 0), so batches
//!   grow only while the stage is busy and a lightly loaded stage does not wait out the batch time;
//! - the batch cut while another is in flight handed to [`Stage::prepare`], so its effect-free
//!   work overlaps the batch in flight;
//! - per-partition `offset+1` commits after effects, on a timer (within 10 ms once idle), on
//!   revoke and on shutdown;
//!   commits failing after a revoke are logged and counted, never fatal;
//! - error classes: bad input → DLQ with reason, original key/headers, offset advances;
//!   dependency-wide → pause the partitions, keep polling (stay in the group), back off, resume;
//!   per-message → up to 5 attempts within 10 s of the message's first failure, then DLQ;
//! - the circuit breaker (flush DLQ, commit, exit non-zero), out-of-range resets with a metric,
//!   progress-aware liveness and the health-check file, and SIGTERM drain → commit → exit.

pub(crate) mod breaker;
mod decide;
mod driver;
mod members;
pub(crate) mod metrics;
pub(crate) mod offsets;
mod prepared;
pub(crate) mod worker;

pub use breaker::BreakerConfig;
pub use members::run;
pub use prepared::Prepared;

use crate::messages::{DlqReason, Rejection};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// One consumed message, owned.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Broker or producer timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
}

impl Msg {
    /// The payload, or an empty slice for a tombstone.
    pub fn payload(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }
    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Effects are durable (or there were none to make: a drop counted in the stage's metrics).
    Done,
    /// Bad input: goes to the DLQ with this reason; the offset advances.
    Reject(Rejection),
    /// A failure scoped to this message (event not found yet, serialization conflict): retried
    /// up to 5 times within 10 s, then dead-lettered with `reason` (e.g. `event_not_found`,
    /// `retry_exhausted`).
    Retry { reason: DlqReason, detail: String },
    /// Like `Retry`, but once the attempts are exhausted the message is dropped (counted as
    /// `dropped_after_retry`), not dead-lettered: e.g. a status change for a group that never
    /// appeared.
    RetryThenDrop(String),
    /// Not processed because an earlier message it must follow (same ordering key) has not
    /// succeeded yet: tried again with it, without spending an attempt.
    Defer,
    /// A dependency every message needs is down (database, object store, broker): the runtime
    /// pauses the partitions and retries with backoff, indefinitely; never dead-lettered.
    Unavailable(String),
}

/// A pipeline stage.
pub trait Stage: Send + Sync + 'static {
    /// Processes `batch` and returns once every effect is durable, with one outcome per message
    /// in input order. Messages of one partition arrive in offset order.
    fn process(&self, batch: Vec<Arc<Msg>>) -> impl Future<Output = Vec<Verdict>> + Send;

    /// Called with the next batch while the batch before it is still in flight, so work that
    /// has no effect (decoding, planning) overlaps the previous batch's writes and waits. An
    /// effect started here must be one that the batch's own processing would make identically
    /// and that is harmless made twice (an object rewritten with the same bytes under the same
    /// key), since the batch may be processed without this work.
    /// `process` may then find that work done (see [`Prepared`]); it must never depend on it:
    /// the runtime calls this at most once per batch, and not at all for a batch dispatched at
    /// once, a retry or a part of a batch. The default does nothing.
    fn prepare(&self, _batch: &[Arc<Msg>]) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The project a message belongs to, when it can be read (asked only for rejected
    /// messages): the circuit breaker never trips on one project's bad traffic.
    fn tenant(&self, _msg: &Msg) -> Option<u64> {
        None
    }
}

/// A stage shared by the members of a group in one process.
impl<S: Stage> Stage for Arc<S> {
    fn process(&self, batch: Vec<Arc<Msg>>) -> impl Future<Output = Vec<Verdict>> + Send {
        (**self).process(batch)
    }

    fn prepare(&self, batch: &[Arc<Msg>]) -> impl Future<Output = ()> + Send {
        (**self).prepare(batch)
    }

    fn tenant(&self, msg: &Msg) -> Option<u64> {
        (**self).tenant(msg)
    }
}

/// Runtime settings (from the common flags, with test overrides).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub brokers: String,
    pub group: String,
    /// Members of the group this process runs (`--consumers`).
    pub members: usize,
    /// Which member these settings are for (0 for the first).
    pub member: usize,
    pub topics: Vec<String>,
    pub auto_offset_reset: crate::cli::OffsetReset,
    pub max_batch_size: usize,
    /// Payload bytes at which a batch is cut.
    pub max_batch_bytes: usize,
    pub max_batch_time: Duration,
    /// How long a buffer waits for more when no batch is in flight (at most `max_batch_time`).
    pub batch_linger: Duration,
    pub max_poll_interval: Duration,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// How often durable offsets are committed (only when a batch has completed since).
    pub commit_interval: Duration,
    /// Longest wait for in-flight work on revoke and on shutdown.
    pub drain_timeout: Duration,
    /// librdkafka's `queued.max.messages.kbytes` (prefetch bound per consumer).
    pub prefetch_kbytes: usize,
    pub per_message_attempts: u32,
    pub per_message_budget: Duration,
    pub max_backoff: Duration,
    pub breaker: BreakerConfig,
    pub healthcheck_file: Option<std::path::PathBuf>,
    /// How long the same batch may be held while dependencies answer before the stage reports
    /// itself stuck (not live); `None` = never.
    pub stuck_after: Option<Duration>,
    /// Producer delivery timeout for the DLQ.
    pub produce_timeout: Duration,
}

impl RuntimeConfig {
    /// Settings from the common flags.
    pub fn from_args(
        common: &crate::cli::CommonArgs,
        brokers: &str,
        topics: Vec<String>,
    ) -> RuntimeConfig {
        RuntimeConfig {
            brokers: brokers.to_owned(),
            group: common.consumer_group().to_owned(),
            members: usize::from(common.consumers.max(1)),
            member: 0,
            topics,
            auto_offset_reset: common.auto_offset_reset,
            max_batch_size: common.max_batch_size.max(1),
            max_batch_bytes: common.max_batch_bytes.max(1),
            max_batch_time: Duration::from_millis(common.max_batch_time_ms.max(1)),
            batch_linger: Duration::from_millis(common.batch_linger_ms),
            max_poll_interval: Duration::from_millis(common.max_poll_interval_ms),
            session_timeout: Duration::from_millis(common.session_timeout_ms),
            heartbeat_interval: Duration::from_millis(common.heartbeat_interval_ms),
            commit_interval: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(30),
            prefetch_kbytes: 8 * 1024,
            per_message_attempts: 5,
            per_message_budget: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10),
            breaker: BreakerConfig::default(),
            healthcheck_file: common.healthcheck_file_path.clone(),
            stuck_after: (common.stuck_after_secs > 0)
                .then(|| Duration::from_secs(common.stuck_after_secs)),
            produce_timeout: Duration::from_secs(30),
        }
    }

    /// The settings of member `member` of `self.members`: the batch byte budget and the prefetch
    /// divided between the members, so the process buffers what one consumer would.
    pub fn for_member(&self, member: usize) -> RuntimeConfig {
        let n = self.members.max(1);
        RuntimeConfig {
            member,
            max_batch_bytes: (self.max_batch_bytes / n).max(1),
            prefetch_kbytes: (self.prefetch_kbytes / n).max(1),
            ..self.clone()
        }
    }
}

/// Why the runtime stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("Kafka client error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("circuit breaker tripped: {0} consecutive messages rejected; DLQ flushed and offsets committed")]
    BreakerTripped(u64),
    #[error("offset out of range and --auto-offset-reset=error")]
    OffsetOutOfRange,
    #[error("runtime failure: {0}")]
    Internal(String),
}
