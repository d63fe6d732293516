//! Attachment chunks (reference §2.4): Relay sends an attachment body as chunk messages ahead of
//! the event or attachment that lists it. Chunks wait in Postgres (`attachment_chunks`, shared by
//! every replica) until that message consumes them, or until they expire and the sweeper removes
//! them. Storing a chunk again is a no-op, so replays are harmless.

use bytes::Bytes;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Binary, Integer, Text};
use sluice_core::messages::AttachmentChunk;
use sluice_core::storage::{Db, DbError};
use std::time::Duration;

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
    let (e, a) = (event_id.to_owned(), attachment_id.to_owned());
    db.run(move |c| {
        diesel::sql_query(
            "DELETE FROM attachment_chunks WHERE project_id = $1 AND event_id = $2::bpchar AND attachment_id = $3",
        )
        .bind::<BigInt, _>(project_id as i64)
        .bind::<Text, _>(e)
        .bind::<Text, _>(a)
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
