//! The embedded transport: Kafka's topics, partitions, ordering per key, consumer groups and
//! offsets, kept in PostgreSQL, for installations that run without Kafka (`sluice run` when
//! `KAFKA_BROKERS` is not set). Stages run on it unchanged: producing goes through
//! [`crate::kafka::producer::Producer`] and consuming through the same consumer runtime (the
//! worker, its error classes, DLQs and the breaker), with a driver that reads the queue tables
//! instead of a broker.
//!
//! - Topics are created on first use with [`DEFAULT_PARTITIONS`] partitions; keyed messages go
//!   to the partition Kafka's Java client would pick, so a key's messages stay in order.
//! - A consumer group's reader of a partition holds a PostgreSQL advisory lock for it, so two
//!   processes never read the same partition for one group; when a process dies its locks go
//!   with its connection and another process takes the partitions over.
//! - Offsets are committed after effects (the same rule as on Kafka), in `queue_offsets`.
//! - Messages are kept for the retention `sluice cleanup` applies, so a topic can be re-read.

mod driver;
mod publisher;

pub use driver::run;
pub use publisher::{decode_headers, Outgoing, Publisher};

/// Partitions of a topic created by the embedded transport.
pub const DEFAULT_PARTITIONS: i32 = 4;
