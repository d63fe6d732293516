//! Attachment chunks: Relay sends an attachment body as chunk messages ahead of the event or
//! attachment that lists it. Chunks of one batch are kept in memory ([`InBatch`]); the others
//! wait in Postgres (`storage::chunks`, shared by every replica) until that message consumes
//! them, or until they expire and the sweeper removes them. Storing a chunk again is a no-op,
//! so replays are harmless.

use bytes::Bytes;
use sluice_core::failure::Classify;
use sluice_core::messages::AttachmentChunk;
use sluice_core::storage::chunks::{self, Chunk};
use sluice_core::storage::{Db, DbError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

pub use sluice_core::storage::chunks::Key;

/// The chunks of one batch by attachment. An attachment whose chunks all arrived in the same
/// batch can be saved from memory: its chunks are then written to Postgres only if that
/// attachment does not finish in this batch (it is retried without them).
#[derive(Default)]
pub struct InBatch {
    by_key: HashMap<Key, BTreeMap<u32, (usize, Bytes)>>,
}

impl InBatch {
    /// Adds the chunk at batch position `index`; a repeated chunk keeps the first copy.
    pub fn add(&mut self, index: usize, c: AttachmentChunk) {
        self.by_key
            .entry((c.project_id, c.event_id, c.id))
            .or_default()
            .entry(c.chunk_index)
            .or_insert((index, Bytes::from(c.payload)));
    }

    /// Chunks `0..count` of `key` in order, when every one of them is here.
    pub fn complete(&self, key: &Key, count: u32) -> Option<Vec<Bytes>> {
        let chunks = self.by_key.get(key)?;
        (0..count)
            .map(|i| chunks.get(&i).map(|(_, b)| b.clone()))
            .collect()
    }

    /// Removes the chunks of the attachments `keep` does not hold, ready to be stored, with
    /// their batch positions.
    pub fn split_off_others(&mut self, keep: &HashSet<Key>) -> Vec<(usize, Chunk)> {
        let others: Vec<Key> = self
            .by_key
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        self.take(&others)
    }

    /// Removes the chunks of `keys`, with their batch positions.
    pub fn take(&mut self, keys: &[Key]) -> Vec<(usize, Chunk)> {
        let mut out = Vec::new();
        for key in keys {
            let Some(chunks) = self.by_key.remove(key) else {
                continue;
            };
            for (index, (position, data)) in chunks {
                out.push((
                    position,
                    Chunk {
                        key: key.clone(),
                        index,
                        data,
                    },
                ));
            }
        }
        out
    }
}

/// Stores `chunks` (one statement), expiring after `ttl`. `Err` is an outage (nothing else may
/// run without its chunks); when the statement fails otherwise, the chunks are stored one by one
/// and those that fail are returned with their batch positions and errors.
pub async fn store(
    db: &Db,
    chunks: Vec<(usize, Chunk)>,
    ttl: Duration,
) -> Result<Vec<(usize, DbError)>, DbError> {
    if chunks.is_empty() {
        return Ok(Vec::new());
    }
    let ttl_secs = ttl.as_secs() as i64;
    let (positions, chunks): (Vec<usize>, Vec<Chunk>) = chunks.into_iter().unzip();
    let all = chunks.clone();
    let stored: Result<(), DbError> = db.run(move |c| Ok(chunks::store(c, &all, ttl_secs)?)).await;
    let e = match stored {
        Ok(()) => return Ok(Vec::new()),
        Err(e) if e.failure().is_outage() => return Err(e),
        Err(e) => e,
    };
    tracing::warn!(error = %e, chunks = chunks.len(), "batched chunk insert failed; storing one by one");
    let mut failed = Vec::new();
    for (position, chunk) in positions.into_iter().zip(chunks) {
        let one = vec![chunk];
        let stored: Result<(), DbError> =
            db.run(move |c| Ok(chunks::store(c, &one, ttl_secs)?)).await;
        match stored {
            Ok(()) => {}
            Err(e) if e.failure().is_outage() => return Err(e),
            Err(e) => failed.push((position, e)),
        }
    }
    Ok(failed)
}

/// Chunks `0..count` of one attachment in order, or `None` when any is missing.
pub async fn load(db: &Db, key: Key, count: u32) -> Result<Option<Vec<Bytes>>, DbError> {
    db.run(move |c| Ok(chunks::load(c, &key, count)?)).await
}

/// Removes the chunks of many attachments (one statement).
pub async fn delete(db: &Db, keys: Vec<Key>) -> Result<(), DbError> {
    if keys.is_empty() {
        return Ok(());
    }
    db.run(move |c| Ok(chunks::delete(c, &keys)?)).await
}

/// Deletes expired chunks; returns how many.
pub async fn sweep(db: &Db) -> Result<usize, DbError> {
    db.run(|c| Ok(chunks::sweep(c)?)).await
}
