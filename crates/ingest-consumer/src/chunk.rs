//! Attachment chunks (reference §2.4): Relay sends an attachment body as chunk messages ahead of
//! the event or attachment that lists it. Chunks wait in Postgres (`attachment_chunks`, shared by
//! every replica) until that message consumes them, or until they expire and the sweeper removes
//! them. Storing a chunk again is a no-op, so replays are harmless.

use bytes::Bytes;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Binary, Integer, Text};
use sluice_core::messages::AttachmentChunk;
use sluice_core::storage::{Db, DbError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// Which attachment a chunk belongs to: (project, event id, attachment id).
pub type Key = (u64, String, String);

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
    pub fn split_off_others(&mut self, keep: &HashSet<Key>) -> Vec<AttachmentChunk> {
        let others: Vec<Key> = self
            .by_key
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        self.take(&others).into_iter().map(|(_, c)| c).collect()
    }

    /// Removes the chunks of `keys`, with their batch positions.
    pub fn take(&mut self, keys: &[Key]) -> Vec<(usize, AttachmentChunk)> {
        let mut out = Vec::new();
        for key in keys {
            let Some(chunks) = self.by_key.remove(key) else {
                continue;
            };
            for (chunk_index, (index, data)) in chunks {
                out.push((
                    index,
                    AttachmentChunk {
                        payload: data.to_vec(),
                        project_id: key.0,
                        event_id: key.1.clone(),
                        id: key.2.clone(),
                        chunk_index,
                    },
                ));
            }
        }
        out
    }
}

/// Stores `chunks` (one statement), expiring after `ttl`.
pub async fn store(db: &Db, chunks: Vec<AttachmentChunk>, ttl: Duration) -> Result<(), DbError> {
    if chunks.is_empty() {
        return Ok(());
    }
    let mut projects = Vec::with_capacity(chunks.len());
    let mut events = Vec::with_capacity(chunks.len());
    let mut ids = Vec::with_capacity(chunks.len());
    let mut indexes = Vec::with_capacity(chunks.len());
    let mut data = Vec::with_capacity(chunks.len());
    for c in chunks {
        projects.push(c.project_id as i64);
        events.push(c.event_id);
        ids.push(c.id);
        indexes.push(c.chunk_index as i32);
        data.push(c.payload);
    }
    let ttl_secs = ttl.as_secs() as i64;
    db.run(move |c| {
        diesel::sql_query(
            "INSERT INTO attachment_chunks (project_id, event_id, attachment_id, chunk_index, data, expires_at) \
             SELECT p, e::bpchar, a, i, d, now() + make_interval(secs => $6) \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::bytea[]) AS t(p, e, a, i, d) \
             ON CONFLICT DO NOTHING",
        )
        .bind::<Array<BigInt>, _>(projects)
        .bind::<Array<Text>, _>(events)
        .bind::<Array<Text>, _>(ids)
        .bind::<Array<Integer>, _>(indexes)
        .bind::<Array<Binary>, _>(data)
        .bind::<BigInt, _>(ttl_secs)
        .execute(c)?;
        Ok(())
    })
    .await
}

#[derive(QueryableByName)]
struct ChunkRow {
    #[diesel(sql_type = Integer)]
    chunk_index: i32,
    #[diesel(sql_type = Binary)]
    data: Vec<u8>,
}

/// Chunks `0..count` of one attachment in order, or `None` when any is missing.
pub fn load(
    conn: &mut PgConnection,
    project_id: u64,
    event_id: &str,
    attachment_id: &str,
    count: u32,
) -> QueryResult<Option<Vec<Bytes>>> {
    let rows: Vec<ChunkRow> = diesel::sql_query(
        "SELECT chunk_index, data FROM attachment_chunks \
         WHERE project_id = $1 AND event_id = $2::bpchar AND attachment_id = $3 AND chunk_index < $4 \
         ORDER BY chunk_index",
    )
    .bind::<BigInt, _>(project_id as i64)
    .bind::<Text, _>(event_id)
    .bind::<Text, _>(attachment_id)
    .bind::<Integer, _>(count as i32)
    .load(conn)?;
    let complete = rows.len() == count as usize
        && rows
            .iter()
            .enumerate()
            .all(|(i, r)| r.chunk_index == i as i32);
    Ok(complete.then(|| rows.into_iter().map(|r| Bytes::from(r.data)).collect()))
}

/// Removes the chunks of one attachment (consumed or no longer wanted).
pub async fn delete(
    db: &Db,
    project_id: u64,
    event_id: &str,
    attachment_id: &str,
) -> Result<(), DbError> {
    delete_many(
        db,
        vec![(project_id, event_id.to_owned(), attachment_id.to_owned())],
    )
    .await
}

/// Removes the chunks of many attachments (one statement).
pub async fn delete_many(db: &Db, keys: Vec<Key>) -> Result<(), DbError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut projects = Vec::with_capacity(keys.len());
    let mut events = Vec::with_capacity(keys.len());
    let mut ids = Vec::with_capacity(keys.len());
    for (p, e, a) in keys {
        projects.push(p as i64);
        events.push(e);
        ids.push(a);
    }
    db.run(move |c| {
        diesel::sql_query(
            "DELETE FROM attachment_chunks c USING unnest($1::bigint[], $2::text[], $3::text[]) AS t(p, e, a) \
             WHERE c.project_id = t.p AND c.event_id = t.e::bpchar AND c.attachment_id = t.a",
        )
        .bind::<Array<BigInt>, _>(projects)
        .bind::<Array<Text>, _>(events)
        .bind::<Array<Text>, _>(ids)
        .execute(c)?;
        Ok(())
    })
    .await
}

/// Deletes expired chunks; returns how many.
pub async fn sweep(db: &Db) -> Result<usize, DbError> {
    db.run(|c| {
        Ok(
            diesel::sql_query("DELETE FROM attachment_chunks WHERE expires_at < now()")
                .execute(c)?,
        )
    })
    .await
}
