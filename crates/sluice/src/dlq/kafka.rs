//! Reading a DLQ on Kafka: from each partition's low watermark to its high watermark as they
//! are when the command starts.

use super::{reading_bar, Letter, Selection, CHUNK_BYTES, CHUNK_LETTERS};
use anyhow::Context as _;
use chrono::{TimeZone, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// Reads the DLQ from the start to its end at the time of the call and sends the letters that
/// match to `out`, one at a time (memory stays bounded whatever the DLQ holds); returns how many
/// letters it read. Blocking: runs on a blocking thread.
pub(super) fn read(
    sel: &Selection,
    brokers: &str,
    out: &mpsc::Sender<Vec<Letter>>,
) -> anyhow::Result<u64> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let topic = sel.dlq_topic();
    let mut config = sluice_core::kafka::base_config(brokers, "sluice-dlq");
    config
        .set("group.id", "sluice-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    sluice_core::kafka::options::apply(&mut config);
    let consumer: BaseConsumer = config.create().context("Kafka client")?;
    let md = consumer
        .fetch_metadata(Some(&topic), TIMEOUT)
        .with_context(|| format!("cannot read Kafka metadata from {}", brokers))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        anyhow::bail!("no topic {topic} on {}", brokers);
    }
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&topic, *p, TIMEOUT)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        if high > low {
            ends.insert(*p, high);
            assignment.add_partition_offset(&topic, *p, Offset::Offset(low))?;
        }
    }
    let total: i64 = ends.values().sum::<i64>();
    let mut selected = 0usize;
    let mut scanned = 0u64;
    let (mut chunk, mut chunk_bytes) = (Vec::new(), 0usize);
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&assignment)?;
    let bar = reading_bar(&topic, total);
    let mut idle = 0;
    while !ends.is_empty() {
        let Some(res) = consumer.poll(Duration::from_millis(500)) else {
            // Offsets may have gaps (compaction, transaction markers): a partition whose
            // position reached its end is done even if its last offset never arrives.
            if let Ok(positions) = consumer.position() {
                for e in positions.elements_for_topic(&topic) {
                    if let (Offset::Offset(o), Some(end)) = (e.offset(), ends.get(&e.partition())) {
                        if o >= *end {
                            ends.remove(&e.partition());
                        }
                    }
                }
            }
            idle += 1;
            if idle > 60 {
                anyhow::bail!("no progress reading {topic} for 30 s");
            }
            continue;
        };
        idle = 0;
        let m = res.with_context(|| format!("reading {topic}"))?;
        let (p, o) = (m.partition(), m.offset());
        let Some(end) = ends.get(&p).copied() else {
            continue;
        };
        if o >= end - 1 {
            ends.remove(&p);
        }
        if o >= end {
            continue;
        }
        scanned += 1;
        bar.inc(1);
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let letter = Letter {
            partition: p,
            offset: o,
            timestamp: m
                .timestamp()
                .to_millis()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        };
        if sel.matches(&letter) {
            chunk_bytes += letter.value.len();
            chunk.push(letter);
            selected += 1;
            if chunk.len() >= CHUNK_LETTERS || chunk_bytes >= CHUNK_BYTES {
                chunk_bytes = 0;
                out.blocking_send(std::mem::take(&mut chunk))
                    .map_err(|_| anyhow::anyhow!("the reader's consumer stopped"))?;
            }
            if sel.limit.is_some_and(|n| selected >= n) {
                break;
            }
        }
    }
    if !chunk.is_empty() {
        out.blocking_send(chunk)
            .map_err(|_| anyhow::anyhow!("the reader's consumer stopped"))?;
    }
    bar.finish_and_clear();
    Ok(scanned)
}
