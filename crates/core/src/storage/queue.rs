//! The embedded transport's tables: `queue_partitions` (a topic's partitions and their next
//! offset), `queue_messages` and `queue_offsets` (consumer groups' positions).
//!
//! Publishing takes each partition's row lock to assign offsets (partitions in a fixed order,
//! so concurrent publishers cannot deadlock), so offsets become visible in commit order: a
//! reader at offset N never misses a message that commits later with a smaller offset.

use super::prepared::prepared;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Integer, Nullable, Text, Timestamptz};

/// A message to publish.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub topic: String,
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// msgpack of the headers, `None` when there are none.
    pub headers: Option<Vec<u8>>,
}

/// A stored message.
#[derive(Debug, Clone, QueryableByName)]
pub struct Stored {
    #[diesel(sql_type = Text)]
    pub topic: String,
    #[diesel(sql_type = Integer)]
    pub partition: i32,
    #[diesel(sql_type = BigInt)]
    pub offset: i64,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub key: Option<Vec<u8>>,
    #[diesel(sql_type = Bytea)]
    pub payload: Vec<u8>,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub headers: Option<Vec<u8>>,
    #[diesel(sql_type = Timestamptz)]
    pub produced_at: DateTime<Utc>,
}

/// A partition and an offset in it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Position {
    #[diesel(sql_type = Text)]
    pub topic: String,
    #[diesel(sql_type = Integer)]
    pub partition: i32,
    #[diesel(sql_type = BigInt)]
    pub offset: i64,
}

fn unzip(positions: &[Position]) -> (Vec<String>, Vec<i32>, Vec<i64>) {
    let mut t = Vec::with_capacity(positions.len());
    let mut p = Vec::with_capacity(positions.len());
    let mut o = Vec::with_capacity(positions.len());
    for x in positions {
        t.push(x.topic.clone());
        p.push(x.partition);
        o.push(x.offset);
    }
    (t, p, o)
}

/// Creates `topic` with `partitions` partitions unless it exists (an existing topic keeps its
/// count); returns its partition count.
pub fn ensure_topic(conn: &mut PgConnection, topic: &str, partitions: i32) -> QueryResult<i32> {
    prepared(
        "INSERT INTO queue_partitions (topic, partition) \
         SELECT $1, p FROM generate_series(0, $2 - 1) AS p \
         WHERE NOT EXISTS (SELECT 1 FROM queue_partitions WHERE topic = $1) \
         ON CONFLICT DO NOTHING",
    )
    .bind::<Text, _>(topic)
    .bind::<Integer, _>(partitions.max(1))
    .execute(conn)?;
    Ok(partition_counts(conn, &[topic.to_owned()])?
        .first()
        .map_or(0, |(_, n)| *n))
}

/// The partition counts of the topics among `topics` that exist.
pub fn partition_counts(
    conn: &mut PgConnection,
    topics: &[String],
) -> QueryResult<Vec<(String, i32)>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        topic: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let rows: Vec<Row> = prepared(
        "SELECT topic, count(*) AS n FROM queue_partitions WHERE topic = ANY($1) GROUP BY topic",
    )
    .bind::<Array<Text>, _>(topics)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.topic, r.n as i32)).collect())
}

/// Publishes `messages` in one statement (one round trip, its own transaction); a partition's
/// messages get consecutive offsets in the order given. Fails, publishing nothing, when a
/// partition does not exist (its messages would get no offset, which the table refuses).
///
/// The partitions' rows are locked in (topic, partition) order before any is updated, so
/// publishers touching the same partitions in any order cannot deadlock; the aggregate over
/// `locked` is complete before the update's join yields a row (`l.c >= 0` is what keeps `l`,
/// and with it `locked`, in the statement: without it the locks would not be taken at all).
pub fn publish(conn: &mut PgConnection, messages: &[NewMessage]) -> QueryResult<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
    let partitions: Vec<i32> = messages.iter().map(|m| m.partition).collect();
    let keys: Vec<Option<&[u8]>> = messages.iter().map(|m| m.key.as_deref()).collect();
    let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
    let headers: Vec<Option<&[u8]>> = messages.iter().map(|m| m.headers.as_deref()).collect();
    prepared(
        "WITH m AS (SELECT * FROM unnest($1::text[], $2::int[], $3::bytea[], $4::bytea[], $5::bytea[]) \
                    WITH ORDINALITY AS m(topic, partition, key, payload, headers, i)), \
              n AS (SELECT topic, partition, count(*) AS n FROM m GROUP BY topic, partition), \
              locked AS (SELECT q.topic FROM queue_partitions q JOIN n USING (topic, partition) \
                         ORDER BY q.topic, q.partition FOR UPDATE OF q), \
              bumped AS (UPDATE queue_partitions q SET next_offset = q.next_offset + n.n \
                         FROM n, (SELECT count(*) AS c FROM locked) l \
                         WHERE q.topic = n.topic AND q.partition = n.partition AND l.c >= 0 \
                         RETURNING q.topic, q.partition, q.next_offset - n.n AS first) \
         INSERT INTO queue_messages (topic, partition, \"offset\", key, payload, headers) \
         SELECT m.topic, m.partition, \
                b.first + row_number() OVER (PARTITION BY m.topic, m.partition ORDER BY m.i) - 1, \
                m.key, m.payload, m.headers \
         FROM m LEFT JOIN bumped b ON b.topic = m.topic AND b.partition = m.partition",
    )
    .bind::<Array<Text>, _>(topics)
    .bind::<Array<Integer>, _>(partitions)
    .bind::<Array<Nullable<Bytea>>, _>(keys)
    .bind::<Array<Bytea>, _>(payloads)
    .bind::<Array<Nullable<Bytea>>, _>(headers)
    .execute(conn)
    .map(|_| ())
}

/// From each position, up to `limit` messages of that partition in offset order, stopping once
/// their payloads reach `max_bytes` (the first message is always included, whatever its size),
/// so a backlog of large messages is never loaded whole.
pub fn fetch(
    conn: &mut PgConnection,
    from: &[Position],
    limit: i64,
    max_bytes: i64,
) -> QueryResult<Vec<Stored>> {
    if from.is_empty() {
        return Ok(Vec::new());
    }
    let (t, p, o) = unzip(from);
    prepared(
        "SELECT m.topic, m.partition, m.\"offset\", m.key, m.payload, m.headers, m.produced_at \
         FROM unnest($1::text[], $2::int[], $3::bigint[]) AS f(topic, partition, pos) \
         CROSS JOIN LATERAL ( \
             SELECT w.* FROM ( \
                 SELECT q.*, sum(octet_length(q.payload)) OVER (ORDER BY q.\"offset\") AS upto \
                 FROM (SELECT * FROM queue_messages q \
                       WHERE q.topic = f.topic AND q.partition = f.partition AND q.\"offset\" >= f.pos \
                       ORDER BY q.\"offset\" LIMIT $4) q) w \
             WHERE w.upto - octet_length(w.payload) < $5) m \
         ORDER BY m.topic, m.partition, m.\"offset\"",
    )
    .bind::<Array<Text>, _>(t)
    .bind::<Array<Integer>, _>(p)
    .bind::<Array<BigInt>, _>(o)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(max_bytes)
    .load(conn)
}

/// The next offset of each partition of `topics` (where a reader starting "latest" begins).
pub fn end_offsets(conn: &mut PgConnection, topics: &[String]) -> QueryResult<Vec<Position>> {
    prepared(
        "SELECT topic, partition, next_offset AS offset FROM queue_partitions \
         WHERE topic = ANY($1) ORDER BY topic, partition",
    )
    .bind::<Array<Text>, _>(topics)
    .load(conn)
}

/// The committed positions of `group` on `topics`.
pub fn committed(
    conn: &mut PgConnection,
    group: &str,
    topics: &[String],
) -> QueryResult<Vec<Position>> {
    prepared(
        "SELECT topic, partition, next_offset AS offset FROM queue_offsets \
         WHERE consumer_group = $1 AND topic = ANY($2)",
    )
    .bind::<Text, _>(group)
    .bind::<Array<Text>, _>(topics)
    .load(conn)
}

/// Records `positions` as `group`'s next offsets.
pub fn commit(conn: &mut PgConnection, group: &str, positions: &[Position]) -> QueryResult<()> {
    if positions.is_empty() {
        return Ok(());
    }
    let (t, p, o) = unzip(positions);
    prepared(
        "INSERT INTO queue_offsets (consumer_group, topic, partition, next_offset) \
         SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[]) \
         ON CONFLICT (consumer_group, topic, partition) \
         DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
    )
    .bind::<Text, _>(group)
    .bind::<Array<Text>, _>(t)
    .bind::<Array<Integer>, _>(p)
    .bind::<Array<BigInt>, _>(o)
    .execute(conn)
    .map(|_| ())
}

/// Takes the session-level lock that makes this connection the owner of `group`'s reading of a
/// partition; `false` when another connection holds it.
pub fn try_own(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partition: i32,
) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Got {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        got: bool,
    }
    let r: Got = prepared(
        "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2 || '/' || $3::text)) AS got",
    )
    .bind::<Text, _>(group)
    .bind::<Text, _>(topic)
    .bind::<Integer, _>(partition)
    .get_result(conn)?;
    Ok(r.got)
}
