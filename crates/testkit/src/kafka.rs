//! Kafka facts tests check against.

/// The partition the Java client (and librdkafka's `murmur2_random`) picks for a non-empty key:
/// Kafka's murmur2, made positive, modulo the partition count.
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
    ((h & 0x7fff_ffff) % partitions) as i32
}
