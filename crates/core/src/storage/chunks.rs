//! `attachment_chunks`: attachment bodies sent ahead of the message that lists them wait here
//! (shared by every replica) until consumed or expired. Storing a chunk again is a no-op.

use super::prepared::prepared;
use bytes::Bytes;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Binary, Integer, Text};

/// Which attachment a chunk belongs to: (project, event id, attachment id).
pub type Key = (u64, String, String);

/// One chunk to store.
#[derive(Clone)]
pub struct Chunk {
    pub key: Key,
    pub index: u32,
    pub data: Bytes,
}

/// Stores `chunks` (one statement), expiring `ttl_secs` from now.
pub fn store(conn: &mut PgConnection, chunks: &[Chunk], ttl_secs: i64) -> QueryResult<()> {
    // Statements of at most about STATEMENT_BYTES: libpq keeps each connection's buffers at the
    // size of the largest message it sent or received.
    let mut start = 0;
    while start < chunks.len() {
        let mut end = start + 1;
        let mut bytes = chunks[start].data.len();
        while end < chunks.len() && bytes + chunks[end].data.len() <= STATEMENT_BYTES {
            bytes += chunks[end].data.len();
            end += 1;
        }
        store_one_statement(conn, &chunks[start..end], ttl_secs)?;
        start = end;
    }
    Ok(())
}

/// Chunk bytes written per statement, at most (a larger chunk goes alone).
const STATEMENT_BYTES: usize = 2 << 20;

fn store_one_statement(
    conn: &mut PgConnection,
    chunks: &[Chunk],
    ttl_secs: i64,
) -> QueryResult<()> {
    let projects: Vec<i64> = chunks.iter().map(|c| c.key.0 as i64).collect();
    let events: Vec<&str> = chunks.iter().map(|c| c.key.1.as_str()).collect();
    let ids: Vec<&str> = chunks.iter().map(|c| c.key.2.as_str()).collect();
    let indexes: Vec<i32> = chunks.iter().map(|c| c.index as i32).collect();
    let data: Vec<&[u8]> = chunks.iter().map(|c| c.data.as_ref()).collect();
    prepared(
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
    .execute(conn)?;
    Ok(())
}

/// Chunks `0..count` of one attachment in order, or `None` when any is missing.
pub fn load(conn: &mut PgConnection, key: &Key, count: u32) -> QueryResult<Option<Vec<Bytes>>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        chunk_index: i32,
        #[diesel(sql_type = Binary)]
        data: Vec<u8>,
    }
    let rows: Vec<Row> = prepared(
        "SELECT chunk_index, data FROM attachment_chunks \
         WHERE project_id = $1 AND event_id = $2::bpchar AND attachment_id = $3 AND chunk_index < $4 \
         ORDER BY chunk_index",
    )
    .bind::<BigInt, _>(key.0 as i64)
    .bind::<Text, _>(&key.1)
    .bind::<Text, _>(&key.2)
    .bind::<Integer, _>(count as i32)
    .load(conn)?;
    let complete = rows.len() == count as usize
        && rows
            .iter()
            .enumerate()
            .all(|(i, r)| r.chunk_index == i as i32);
    Ok(complete.then(|| rows.into_iter().map(|r| Bytes::from(r.data)).collect()))
}

/// Removes the chunks of the attachments of `keys` (one statement).
pub fn delete(conn: &mut PgConnection, keys: &[Key]) -> QueryResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let projects: Vec<i64> = keys.iter().map(|k| k.0 as i64).collect();
    let events: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.2.as_str()).collect();
    prepared(
        "DELETE FROM attachment_chunks c USING unnest($1::bigint[], $2::text[], $3::text[]) AS t(p, e, a) \
         WHERE c.project_id = t.p AND c.event_id = t.e::bpchar AND c.attachment_id = t.a",
    )
    .bind::<Array<BigInt>, _>(projects)
    .bind::<Array<Text>, _>(events)
    .bind::<Array<Text>, _>(ids)
    .execute(conn)?;
    Ok(())
}

/// Deletes expired chunks; returns how many.
pub fn sweep(conn: &mut PgConnection) -> QueryResult<usize> {
    prepared("DELETE FROM attachment_chunks WHERE expires_at < now()").execute(conn)
}
