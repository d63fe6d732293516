//! Publishing to the embedded transport. Sends from every task of the process are gathered into
//! one transaction at a time (up to [`MAX_BATCH`] messages), so a busy process pays one round
//! trip for many messages; a send resolves when its transaction committed.

use crate::storage::queue::{self, NewMessage};
use crate::storage::{Db, DbError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Messages published in one transaction at most.
const MAX_BATCH: usize = 1_000;
/// Payload bytes published in one transaction at most (a request larger than this goes alone).
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Sends waiting for their transaction at most; beyond, senders wait.
const QUEUE: usize = 4_096;

struct Request {
    /// Published together, in this order.
    messages: Vec<NewMessage>,
    done: oneshot::Sender<Result<(), String>>,
}

crate::histogram_vec!(
    fn transactions = "sluice_queue_publish_transaction_seconds",
    "Time of one publishing transaction on the embedded transport (its commit included), by publisher.",
    ["publisher"],
    vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]
);

crate::histogram_vec!(
    fn waits = "sluice_queue_publish_seconds",
    "Time from a send to its commit on the embedded transport (queueing for a transaction included), by publisher.",
    ["publisher"],
    vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]
);

/// A handle to the process's publisher task.
#[derive(Clone)]
pub struct Publisher {
    db: Db,
    tx: mpsc::Sender<Request>,
    partitions: Arc<Mutex<HashMap<String, i32>>>,
    name: &'static str,
}

impl Publisher {
    /// Starts the publisher task on the current runtime.
    pub fn start(db: Db) -> Publisher {
        Publisher::start_named(db, "stages")
    }

    /// Starts a publisher whose metrics carry `name` (one per publisher of a process).
    pub fn start_named(db: Db, name: &'static str) -> Publisher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(db.clone(), rx, name));
        Publisher {
            db,
            tx,
            partitions: Arc::new(Mutex::new(HashMap::new())),
            name,
        }
    }

    /// The partition count of `topic`, creating the topic when it does not exist.
    async fn partitions(&self, topic: &str) -> Result<i32, String> {
        if let Some(n) = self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return Ok(*n);
        }
        let t = topic.to_owned();
        let n = self
            .db
            .run(move |c| Ok::<_, DbError>(queue::ensure_topic(c, &t, super::DEFAULT_PARTITIONS)?))
            .await
            .map_err(|e| e.to_string())?;
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_owned(), n);
        Ok(n)
    }

    async fn partition(&self, topic: &str, key: Option<&[u8]>) -> Result<i32, String> {
        let n = self.partitions(topic).await?;
        Ok(match key {
            Some(k) if !k.is_empty() => crate::kafka::java_partition(k, n as u32),
            _ => (uuid::Uuid::new_v4().as_u128() % n.max(1) as u128) as i32,
        })
    }

    /// Publishes `messages` (topic, key, payload) in one transaction, in order; resolves once
    /// it committed. Either all are published or none.
    pub async fn send_all(
        &self,
        messages: Vec<(String, Option<Vec<u8>>, Vec<u8>)>,
    ) -> Result<(), String> {
        let mut out = Vec::with_capacity(messages.len());
        for (topic, key, payload) in messages {
            let partition = self.partition(&topic, key.as_deref()).await?;
            out.push(NewMessage {
                topic,
                partition,
                key,
                payload,
                headers: None,
            });
        }
        self.submit(out).await
    }

    async fn submit(&self, messages: Vec<NewMessage>) -> Result<(), String> {
        let started = Instant::now();
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request { messages, done })
            .await
            .map_err(|_| "the publisher has stopped".to_owned())?;
        let result = wait
            .await
            .map_err(|_| "the publisher has stopped".to_owned())?;
        waits()
            .with_label_values(&[self.name])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Publishes one message; returns its partition once it is committed.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<i32, String> {
        let partition = self.partition(topic, key).await?;
        self.submit(vec![NewMessage {
            topic: topic.to_owned(),
            partition,
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            headers: encode_headers(headers),
        }])
        .await?;
        Ok(partition)
    }

    /// Publishes `messages` with their headers in one transaction, in order; resolves once it
    /// committed. Either all are published or none.
    pub async fn send_many(&self, messages: Vec<Outgoing>) -> Result<(), String> {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            let partition = self.partition(&m.topic, m.key.as_deref()).await?;
            let headers: Vec<(&str, &[u8])> = m
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            let headers = encode_headers(&headers);
            out.push(NewMessage {
                topic: m.topic,
                partition,
                key: m.key,
                payload: m.payload,
                headers,
            });
        }
        self.submit(out).await
    }
}

/// A message for [`Publisher::send_many`].
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The stored form of `headers`: msgpack `[[name, bytes], …]`, `None` when there are none.
fn encode_headers(headers: &[(&str, &[u8])]) -> Option<Vec<u8>> {
    (!headers.is_empty()).then(|| {
        let owned: Vec<(&str, &serde_bytes::Bytes)> = headers
            .iter()
            .map(|(k, v)| (*k, serde_bytes::Bytes::new(v)))
            .collect();
        rmp_serde::to_vec(&owned).unwrap_or_default()
    })
}

/// Decodes the headers `send` stored.
pub fn decode_headers(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    rmp_serde::from_slice::<Vec<(String, serde_bytes::ByteBuf)>>(bytes)
        .map(|v| v.into_iter().map(|(k, v)| (k, v.into_vec())).collect())
        .unwrap_or_default()
}

fn size(r: &Request) -> usize {
    r.messages.iter().map(|m| m.payload.len()).sum()
}

async fn publish(db: &Db, messages: Vec<NewMessage>, name: &str) -> Result<(), String> {
    let started = Instant::now();
    let result = db
        .run(move |c| Ok::<_, DbError>(queue::publish(c, &messages)?))
        .await
        .map_err(|e| e.to_string());
    transactions()
        .with_label_values(&[name])
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Gathers waiting requests into transactions of at most [`MAX_BATCH`] messages and
/// [`MAX_BATCH_BYTES`]. When a shared transaction fails, each of its requests is tried again on
/// its own, so one request the database refuses fails only its own sender.
async fn run(db: Db, mut rx: mpsc::Receiver<Request>, name: &'static str) {
    let mut carry: Option<Request> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        let (mut count, mut bytes) = (first.messages.len(), size(&first));
        let mut batch = vec![first];
        while count < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(r)
                    if count + r.messages.len() <= MAX_BATCH
                        && bytes + size(&r) <= MAX_BATCH_BYTES =>
                {
                    count += r.messages.len();
                    bytes += size(&r);
                    batch.push(r);
                }
                Ok(r) => {
                    carry = Some(r);
                    break;
                }
                Err(_) => break,
            }
        }
        if batch.len() == 1 {
            let r = batch.remove(0);
            let result = publish(&db, r.messages, name).await;
            let _ = r.done.send(result);
            continue;
        }
        let all: Vec<NewMessage> = batch.iter().flat_map(|r| r.messages.clone()).collect();
        if publish(&db, all, name).await.is_ok() {
            for r in batch {
                let _ = r.done.send(Ok(()));
            }
            continue;
        }
        for r in batch {
            let result = publish(&db, r.messages, name).await;
            let _ = r.done.send(result);
        }
    }
}
