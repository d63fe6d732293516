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

/// The partition Kafka's Java client (and librdkafka's `murmur2_random`) picks for a non-empty
/// key: Kafka's murmur2, made positive, modulo the partition count. The embedded transport
/// partitions with it too, so a key lands on the same partition number on both transports.
pub fn java_partition(key: &[u8], partitions: u32) -> i32 {
    let (m, r): (u32, u32) = (0x5bd1_e995, 24);
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let chunks = key.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= k >> r;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m) ^ k;
    }
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(m);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions.max(1)) as i32
}
