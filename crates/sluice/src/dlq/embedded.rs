//! Reading a DLQ on the embedded transport (`sluice run` without Kafka): the DLQ topic's rows
//! in `queue_messages`, page by page in offset order, up to each partition's next offset as it
//! is when the command starts. A letter's timestamp is when it was dead-lettered (published to
//! the DLQ). Letters removed by retention are simply not there: offsets may have gaps.

use super::{reading_bar, Letter, Selection, CHUNK_BYTES, CHUNK_LETTERS};
use sluice_core::queue::decode_headers;
use sluice_core::storage::queue::{self, Position};
use sluice_core::storage::{Db, DbError};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

pub(super) async fn read(
    sel: &Selection,
    db: &Db,
    out: &mpsc::Sender<Vec<Letter>>,
) -> anyhow::Result<u64> {
    let topic = sel.dlq_topic();
    let served = topic.strip_suffix("-dlq").unwrap_or(&topic).to_owned();
    let topics = vec![topic.clone(), served.clone()];
    let ends = db
        .run(move |c| Ok::<_, DbError>(queue::end_offsets(c, &topics)?))
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the embedded transport's topics: {e}"))?;
    if ends.is_empty() {
        anyhow::bail!(
            "no topic {topic} nor {served} in this database's embedded transport (for Kafka, \
             set KAFKA_BROKERS)"
        );
    }
    // Each partition of the DLQ that holds anything, read from its start to its end.
    let end: BTreeMap<i32, i64> = ends
        .iter()
        .filter(|p| p.topic == topic && p.offset > 0)
        .map(|p| (p.partition, p.offset))
        .collect();
    let mut from: Vec<Position> = end
        .keys()
        .map(|p| Position {
            topic: topic.clone(),
            partition: *p,
            offset: 0,
        })
        .collect();
    let bar = reading_bar(&topic, end.values().sum());
    let (mut scanned, mut selected) = (0u64, 0usize);
    while !from.is_empty() {
        let positions = from.clone();
        // A page is one chunk: the byte budget is shared by the partitions still being read.
        let (letters, bytes) = (
            (CHUNK_LETTERS / from.len()).max(1) as i64,
            (CHUNK_BYTES / from.len()).max(1) as i64,
        );
        let page = db
            .run(move |c| Ok::<_, DbError>(queue::fetch(c, &positions, letters, bytes)?))
            .await
            .map_err(|e| anyhow::anyhow!("reading {topic}: {e}"))?;
        // A partition is done when a page brings nothing more of it before its end.
        let mut next = Vec::with_capacity(from.len());
        for pos in from {
            let last = page
                .iter()
                .filter(|m| m.partition == pos.partition)
                .map(|m| m.offset)
                .max();
            let stop = end.get(&pos.partition).copied().unwrap_or(0);
            if let Some(last) = last.filter(|l| l + 1 < stop) {
                next.push(Position {
                    offset: last + 1,
                    ..pos
                });
            }
        }
        from = next;
        let mut chunk = Vec::new();
        for m in page {
            if end.get(&m.partition).is_none_or(|e| m.offset >= *e) {
                continue;
            }
            scanned += 1;
            bar.inc(1);
            let letter = Letter {
                partition: m.partition,
                offset: m.offset,
                timestamp: Some(m.produced_at),
                key: m.key,
                value: m.payload,
                headers: m.headers.as_deref().map(decode_headers).unwrap_or_default(),
            };
            if sel.matches(&letter) {
                chunk.push(letter);
                selected += 1;
                if sel.limit.is_some_and(|n| selected >= n) {
                    from.clear();
                    break;
                }
            }
        }
        if !chunk.is_empty() {
            out.send(chunk)
                .await
                .map_err(|_| anyhow::anyhow!("the reader's consumer stopped"))?;
        }
    }
    bar.finish_and_clear();
    Ok(scanned)
}
