//! The consumer runtime's driver on the embedded transport: a thread with its own database
//! connection that owns partitions (advisory locks), reads them from the committed offsets,
//! hands batches to the same worker the Kafka driver uses (error classes, retries, DLQs, the
//! breaker), and commits `offset+1` once a batch's effects are durable. One batch is in flight
//! while the next is read.
//!
//! A lost connection loses the partition locks: the in-flight batch's completion is then not
//! committed (its messages are read again by whoever owns the partitions next), the driver
//! reconnects with backoff, claims what it can, and reads from the committed offsets.

use crate::cli::OffsetReset;
use crate::health::Health;
use crate::kafka::consumer::breaker::Breaker;
use crate::kafka::consumer::metrics;
use crate::kafka::consumer::offsets::{Offsets, Tp};
use crate::kafka::consumer::worker::{Batch, Completion, Worker};
use crate::kafka::consumer::{Msg, RuntimeConfig, RuntimeError, Stage};
use crate::kafka::producer::Producer;
use crate::storage::queue::{self, Position};
use diesel::{Connection, PgConnection};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often partitions owned by nobody (a stopped process's) are claimed.
const CLAIM_EVERY: Duration = Duration::from_secs(2);
/// How long an idle driver waits before reading again.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// Runs `stage` on `config.topics` of the embedded transport in database `url` until `shutdown`
/// (then drains and commits), or until a fatal error.
pub async fn run<S: Stage>(
    stage: S,
    config: RuntimeConfig,
    url: String,
    producer: Producer,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<Batch>(1);
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<Completion>(4);
    let dependency_down = Arc::new(AtomicBool::new(false));
    let worker = Worker {
        stage: Arc::new(stage),
        producer,
        config: config.clone(),
        shutdown: shutdown.clone(),
        dependency_down,
        breaker: Breaker::new(config.breaker),
    };
    // This transport reads one batch at a time and hands it over at once: nothing to prepare
    // ahead (the sender is dropped, so the worker's preparing loop ends at once).
    let (_, prepare_rx) = tokio::sync::mpsc::channel(1);
    let worker = tokio::spawn(worker.run(batch_rx, prepare_rx, done_tx));
    let driver = Driver {
        url,
        config,
        progress: health.watch(),
        health,
        shutdown,
        batch_tx,
        done_rx,
        conn: None,
        owned: HashSet::new(),
        read_from: HashMap::new(),
        offsets: Offsets::default(),
        in_flight: None,
        pending: None,
        epoch: 0,
        next_batch_id: 0,
        last_claim: None,
        fatal: None,
    };
    let thread = std::thread::Builder::new()
        .name("queue-driver".into())
        .spawn(move || driver.run())
        .map_err(|e| RuntimeError::Internal(format!("cannot start the driver thread: {e}")))?;
    let result = tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))?
        .map_err(|_| RuntimeError::Internal("driver thread panicked".into()))?;
    let _ = worker.await;
    result
}

struct Driver {
    url: String,
    config: RuntimeConfig,
    health: Arc<Health>,
    /// This consumer's own progress, watched for liveness.
    progress: crate::health::Watch,
    shutdown: CancellationToken,
    batch_tx: tokio::sync::mpsc::Sender<Batch>,
    done_rx: Receiver<Completion>,
    conn: Option<PgConnection>,
    owned: HashSet<Tp>,
    /// The next offset to read per owned partition (ahead of the committed one while batches
    /// are in flight or pending).
    read_from: HashMap<Tp, i64>,
    offsets: Offsets,
    in_flight: Option<u64>,
    pending: Option<Vec<Arc<Msg>>>,
    epoch: u64,
    next_batch_id: u64,
    last_claim: Option<Instant>,
    fatal: Option<RuntimeError>,
}

/// The driver's connection holds its partitions' locks: TCP keepalives make a connection that
/// died on the network end within about a minute on the server too, so its locks are released
/// (libpq's defaults leave that to the kernel, two hours).
fn with_keepalives(url: &str) -> String {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        || url.contains("keepalives")
    {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}keepalives=1&keepalives_idle=15&keepalives_interval=5&keepalives_count=4&application_name=sluice-queue")
}

fn to_msg(m: queue::Stored, topics: &mut HashMap<String, Arc<str>>) -> Msg {
    let topic = topics
        .entry(m.topic.clone())
        .or_insert_with(|| Arc::from(m.topic.as_str()))
        .clone();
    Msg {
        topic,
        partition: m.partition,
        offset: m.offset,
        key: m.key,
        payload: Some(m.payload),
        headers: m
            .headers
            .as_deref()
            .map(super::publisher::decode_headers)
            .unwrap_or_default(),
        timestamp_ms: Some(m.produced_at.timestamp_millis()),
    }
}

impl Driver {
    fn run(mut self) -> Result<(), RuntimeError> {
        let mut topics = HashMap::new();
        let mut backoff = Duration::from_millis(100);
        let mut last_commit = Instant::now();
        let result = loop {
            self.drain_completions();
            if let Some(f) = self.fatal.take() {
                break Err(f);
            }
            if self.shutdown.is_cancelled() {
                break Ok(());
            }
            if self.in_flight.is_none() {
                self.progress.tick();
            }
            if let Err(e) = self.step(&mut topics, &mut last_commit) {
                tracing::warn!(error = %e, group = %self.config.group, "embedded transport unavailable; reconnecting");
                self.health.set_dependencies_ok(false);
                self.lose_connection();
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(self.config.max_backoff);
                continue;
            }
            backoff = Duration::from_millis(100);
        };
        self.drain();
        result
    }

    /// Connects, claims, dispatches, reads and commits as due.
    fn step(
        &mut self,
        topics: &mut HashMap<String, Arc<str>>,
        last_commit: &mut Instant,
    ) -> Result<(), diesel::result::Error> {
        if self.conn.is_none() {
            let mut conn = PgConnection::establish(&with_keepalives(&self.url)).map_err(|e| {
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::ClosedConnection,
                    Box::new(e.to_string()),
                )
            })?;
            crate::storage::pool::configure(&mut conn)?;
            self.conn = Some(conn);
            self.last_claim = None;
            self.health.set_dependencies_ok(true);
        }
        if self.last_claim.is_none_or(|t| t.elapsed() >= CLAIM_EVERY) {
            self.claim()?;
            self.last_claim = Some(Instant::now());
        }
        self.dispatch();
        // The next batch is read once the one in flight completed, so it holds everything that
        // arrived meanwhile (as a Kafka consumer's buffer does): under load, batches grow
        // instead of the stage running back-to-back on a few messages each.
        if self.pending.is_none() && self.in_flight.is_none() {
            self.read(topics)?;
        }
        if last_commit.elapsed() >= self.config.commit_interval {
            self.commit()?;
            *last_commit = Instant::now();
        }
        if self.pending.is_some() && self.in_flight.is_some() {
            self.wait_completion(IDLE_POLL);
        } else if self.pending.is_none() {
            // Nothing new: wait a little (a completion wakes the loop early).
            self.wait_completion(IDLE_POLL);
        }
        Ok(())
    }

    fn conn(&mut self) -> Result<&mut PgConnection, diesel::result::Error> {
        self.conn
            .as_mut()
            .ok_or(diesel::result::Error::BrokenTransactionManager)
    }

    /// Creates the input topics if needed and takes every partition nobody else owns.
    fn claim(&mut self) -> Result<(), diesel::result::Error> {
        let group = self.config.group.clone();
        let inputs = self.config.topics.clone();
        let mut new = Vec::new();
        {
            let owned = &self.owned;
            let conn = self
                .conn
                .as_mut()
                .ok_or(diesel::result::Error::BrokenTransactionManager)?;
            for t in &inputs {
                queue::ensure_topic(conn, t, super::DEFAULT_PARTITIONS)?;
            }
            for (topic, n) in queue::partition_counts(conn, &inputs)? {
                for p in 0..n {
                    let tp = (topic.clone(), p);
                    if !owned.contains(&tp) && queue::try_own(conn, &group, &topic, p)? {
                        new.push(tp);
                    }
                }
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let committed = {
            let conn = self.conn()?;
            queue::committed(conn, &group, &inputs)?
        };
        let ends = match self.config.auto_offset_reset {
            OffsetReset::Latest => {
                let conn = self.conn()?;
                queue::end_offsets(conn, &inputs)?
            }
            OffsetReset::Error => {
                if let Some(tp) = new.iter().find(|tp| {
                    !committed
                        .iter()
                        .any(|c| c.topic == tp.0 && c.partition == tp.1)
                }) {
                    tracing::error!(topic = %tp.0, partition = tp.1, "no committed offset and --auto-offset-reset=error");
                    self.fatal = Some(RuntimeError::OffsetOutOfRange);
                    return Ok(());
                }
                Vec::new()
            }
            OffsetReset::Earliest => Vec::new(),
        };
        let m = metrics::get();
        for tp in new {
            let start = committed
                .iter()
                .chain(ends.iter())
                .find(|c| c.topic == tp.0 && c.partition == tp.1)
                .map_or(0, |c| c.offset);
            tracing::info!(group = %group, topic = %tp.0, partition = tp.1, offset = start, "partition claimed");
            m.rebalances.with_label_values(&["assign"]).inc();
            self.read_from.insert(tp.clone(), start);
            self.owned.insert(tp);
        }
        m.assigned
            .with_label_values(&[&group])
            .set(self.owned.len() as i64);
        Ok(())
    }

    /// Reads the next batch from the owned partitions.
    fn read(
        &mut self,
        topics: &mut HashMap<String, Arc<str>>,
    ) -> Result<(), diesel::result::Error> {
        if self.owned.is_empty() {
            return Ok(());
        }
        let from: Vec<Position> = self
            .owned
            .iter()
            .map(|tp| Position {
                topic: tp.0.clone(),
                partition: tp.1,
                offset: self.read_from.get(tp).copied().unwrap_or(0),
            })
            .collect();
        // Every owned partition gets an equal share of the batch, in messages and bytes (at
        // least one message each), so a backlog on one partition never starves the others and
        // a batch stays near `--max-batch-size` and `--max-batch-bytes`.
        let shares = from.len().max(1);
        let per_partition = (self.config.max_batch_size.max(1)).div_ceil(shares) as i64;
        let per_partition_bytes = (self.config.max_batch_bytes.max(1)).div_ceil(shares) as i64;
        let rows = {
            let conn = self.conn()?;
            queue::fetch(conn, &from, per_partition, per_partition_bytes)?
        };
        if rows.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            self.read_from
                .insert((row.topic.clone(), row.partition), row.offset + 1);
            batch.push(Arc::new(to_msg(row, topics)));
        }
        self.pending = Some(batch);
        self.dispatch();
        Ok(())
    }

    fn dispatch(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let Some(msgs) = self.pending.take() else {
            return;
        };
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        match self.batch_tx.try_send(Batch {
            id,
            epoch: self.epoch,
            msgs,
        }) {
            Ok(()) => self.in_flight = Some(id),
            Err(tokio::sync::mpsc::error::TrySendError::Full(b)) => self.pending = Some(b.msgs),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                self.fatal = Some(RuntimeError::Internal("worker stopped".into()));
            }
        }
    }

    fn apply(&mut self, c: Completion) {
        if self.in_flight == Some(c.id) {
            self.in_flight = None;
        }
        if let Some(f) = c.fatal {
            self.fatal.get_or_insert(f);
        }
        if c.epoch != self.epoch {
            return;
        }
        let keep = |(tp, _): &(Tp, i64)| self.owned.contains(tp);
        let done: Vec<_> = c.done.into_iter().filter(keep).collect();
        let unfinished: Vec<_> = c.unfinished.into_iter().filter(keep).collect();
        self.offsets.record(&done, &unfinished);
    }

    fn drain_completions(&mut self) {
        while let Ok(c) = self.done_rx.try_recv() {
            self.apply(c);
        }
        self.dispatch();
    }

    fn wait_completion(&mut self, timeout: Duration) -> bool {
        if self.in_flight.is_none() {
            std::thread::sleep(timeout);
            return true;
        }
        match self.done_rx.recv_timeout(timeout) {
            Ok(c) => {
                self.apply(c);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.in_flight = None;
                false
            }
        }
    }

    fn commit(&mut self) -> Result<(), diesel::result::Error> {
        let positions = self.offsets.pending();
        if positions.is_empty() {
            return Ok(());
        }
        let group = self.config.group.clone();
        let rows: Vec<Position> = positions
            .iter()
            .map(|((topic, partition), offset)| Position {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        let m = metrics::get();
        let conn = self.conn()?;
        match queue::commit(conn, &group, &rows) {
            Ok(()) => {
                self.offsets.mark_committed(&positions);
                m.commits.with_label_values(&["timer", "ok"]).inc();
                Ok(())
            }
            Err(e) => {
                m.commits.with_label_values(&["timer", "error"]).inc();
                Err(e)
            }
        }
    }

    /// The connection is gone, and with it the partition locks: forget what was owned, and
    /// ignore completions of what was dispatched before (it is read again).
    fn lose_connection(&mut self) {
        self.conn = None;
        let owned: Vec<Tp> = self.owned.drain().collect();
        self.offsets.forget(&owned);
        self.read_from.clear();
        self.pending = None;
        self.epoch += 1;
        metrics::get()
            .assigned
            .with_label_values(&[&self.config.group])
            .set(0);
    }

    /// Shutdown: let the in-flight batch finish (bounded), commit, release the partitions.
    fn drain(&mut self) {
        let deadline = Instant::now() + self.config.drain_timeout;
        while self.in_flight.is_some() && Instant::now() < deadline {
            self.wait_completion(Duration::from_millis(50));
        }
        if self.in_flight.is_some() {
            tracing::warn!("in-flight batch unfinished at the drain deadline; it will be re-read");
        }
        if let Err(e) = self.commit() {
            tracing::warn!(error = %e, "final commit failed; the last batch will be re-read");
        }
        // Closing the connection releases the advisory locks.
        self.conn = None;
        tracing::info!(group = %self.config.group, "embedded-transport consumer drained and committed");
    }
}
