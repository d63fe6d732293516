//! Attachment chunks: Relay sends an attachment body as chunk messages ahead of the event or
//! attachment that lists it. Chunks of one batch are kept in memory ([`InBatch`]); the others
//! wait in Postgres (`storage::chunks`, shared by every replica) until that message consumes
//! them, or until they expire and the sweeper removes them. Storing a chunk again is a no-op,
//! so replays are harmless.

use bytes::Bytes;
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

    /// Removes the chunks of the attachments `keep` does not hold, ready to be stored.
    pub fn split_off_others(&mut self, keep: &HashSet<Key>) -> Vec<Chunk> {
        let others: Vec<Key> = self
            .by_key
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        self.take(&others).into_iter().map(|(_, c)| c).collect()
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

/// Stores `chunks` (one statement), expiring after `ttl`.
pub async fn store(db: &Db, chunks: Vec<Chunk>, ttl: Duration) -> Result<(), DbError> {
    if chunks.is_empty() {
        return Ok(());
    }
    let ttl_secs = ttl.as_secs() as i64;
    db.run(move |c| Ok(chunks::store(c, &chunks, ttl_secs)?))
        .await
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
