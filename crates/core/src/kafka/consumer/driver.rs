//! The driver thread: owns the Kafka consumer, polls it continuously (so the process stays in
//! the group while work is paused), cuts batches, hands them to the worker, applies their
//! completions to the commit positions, and serves rebalances inside `poll`.

use super::breaker::Breaker;
use super::decide;
use super::members::{self, Combine};
use super::metrics;
use super::offsets::{Offsets, Tp};
use super::worker::{Batch, Completion, Worker};
use super::{Msg, RuntimeConfig, RuntimeError, Stage};
use crate::health::Health;
use crate::kafka::producer::{Producer, ProducerConfig};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Runs `stage` on the configured topics until `shutdown` is cancelled (then drains, commits and
/// returns `Ok`), or until a fatal error (breaker, `--auto-offset-reset=error`).
pub async fn run<S: Stage>(
    stage: S,
    config: RuntimeConfig,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let producer = Producer::new(&ProducerConfig {
        brokers: config.brokers.clone(),
        client_id: format!("{}-dlq", config.group),
        message_timeout: config.produce_timeout,
    })?;
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<Batch>(1);
    let (prepare_tx, prepare_rx) = tokio::sync::mpsc::channel::<Vec<Arc<Msg>>>(1);
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<Completion>(4);
    let dependency_down = Arc::new(AtomicBool::new(false));
    let worker = Worker {
        stage: Arc::new(stage),
        producer: producer.clone(),
        config: config.clone(),
        shutdown: shutdown.clone(),
        dependency_down: dependency_down.clone(),
        breaker: Breaker::new(config.breaker),
    };
    let worker = tokio::spawn(worker.run(batch_rx, prepare_rx, done_tx));

    let consumer = create_consumer(&config, done_rx)?;
    consumer.subscribe(&config.topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    let driver = Driver {
        consumer,
        config: config.clone(),
        progress: health.watch(),
        health,
        shutdown,
        dependency_down,
        batch_tx,
        prepare_tx,
    };
    let thread = std::thread::Builder::new()
        .name("kafka-driver".into())
        .spawn(move || driver.run())
        .map_err(|e| RuntimeError::Internal(format!("cannot start the driver thread: {e}")))?;
    let result = tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))?
        .map_err(|_| RuntimeError::Internal("driver thread panicked".into()))?;
    let _ = worker.await;
    if let Err(e) = producer.flush(Duration::from_secs(10)) {
        tracing::warn!(error = %e, "producer flush incomplete at shutdown");
    }
    result
}

fn create_consumer(
    config: &RuntimeConfig,
    done_rx: Receiver<Completion>,
) -> KafkaResult<BaseConsumer<Ctx>> {
    let mut c = crate::kafka::base_config(&config.brokers, &config.group);
    c.set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", config.auto_offset_reset.as_kafka())
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            config.heartbeat_interval.as_millis().to_string(),
        )
        .set(
            "max.poll.interval.ms",
            config.max_poll_interval.as_millis().to_string(),
        )
        .set(
            "queued.max.messages.kbytes",
            config.prefetch_kbytes.to_string(),
        )
        .set("statistics.interval.ms", "5000")
        // Prefetch is bounded by `queued.max.messages.kbytes`, overshot by at most one fetch
        // response. Fetch sizes count compressed bytes, so they are kept small: a response of
        // highly compressible batches decompresses to many times its size. A message larger
        // than these is still fetched (alone).
        .set("fetch.message.max.bytes", (512 * 1024).to_string())
        .set("fetch.max.bytes", (1024 * 1024).to_string())
        // A fetch that finds nothing new waits at most this long. A broker answers as soon as
        // data arrives, but some (librdkafka's mock cluster among them) only at the deadline:
        // librdkafka's 500 ms would then be added to a lightly loaded stage's latency. Idle
        // consumers send a few more empty fetches in exchange (`KAFKA_OPTIONS` can change it).
        .set("fetch.wait.max.ms", "100")
        // When the prefetch queue is full, librdkafka checks again only after this long (1 s by
        // default). A stage drains its 8 MiB in a fraction of that and then waited idle for the
        // rest: error events ran at 2.7k/s, idle 40% of the time; 4.3-4.6k/s with 10-50 ms.
        .set("fetch.queue.backoff.ms", "20");
    crate::kafka::options::apply(&mut c);
    if config.members > 1 {
        // A static member id set through the passthrough must differ between the members of
        // one process, or the broker fences all but one.
        if let Some(id) = c.get("group.instance.id").map(str::to_owned) {
            c.set("group.instance.id", format!("{id}-{}", config.member));
        }
    }
    let ctx = Ctx {
        state: Mutex::new(State {
            done_rx,
            offsets: Offsets::default(),
            in_flight: None,
            current: Vec::new(),
            current_bytes: 0,
            current_started: Instant::now(),
            pending: None,
            epoch: 0,
            next_batch_id: 0,
            assigned: HashSet::new(),
            needs_repause: false,
            fatal: None,
            commit_failed_at: None,
        }),
        drain_timeout: config.drain_timeout,
        group: config.group.clone(),
        member: config.member,
    };
    c.create_with_context(ctx)
}

/// The in-flight batch.
struct InFlight {
    id: u64,
    tps: HashSet<Tp>,
}

/// Everything the driver loop and the rebalance callbacks share (same thread; the lock is
/// never held across `poll`).
struct State {
    done_rx: Receiver<Completion>,
    offsets: Offsets,
    in_flight: Option<InFlight>,
    current: Vec<Arc<Msg>>,
    /// Key and payload bytes of `current`.
    current_bytes: usize,
    current_started: Instant,
    pending: Option<Vec<Arc<Msg>>>,
    /// Incremented on every revoke; completions of older epochs are not committed.
    epoch: u64,
    next_batch_id: u64,
    assigned: HashSet<Tp>,
    needs_repause: bool,
    fatal: Option<RuntimeError>,
    /// When a commit last failed: commits are then retried once a second, not at every tick.
    commit_failed_at: Option<Instant>,
}

impl State {
    fn apply(&mut self, c: Completion) {
        if self.in_flight.as_ref().is_some_and(|f| f.id == c.id) {
            self.in_flight = None;
        }
        if let Some(f) = c.fatal {
            self.fatal.get_or_insert(f);
        }
        if c.epoch != self.epoch {
            tracing::debug!(
                batch = c.id,
                "completion from before a rebalance; its messages will be re-read"
            );
            return;
        }
        let keep = |(tp, _): &(Tp, i64)| self.assigned.contains(tp);
        let done: Vec<_> = c.done.into_iter().filter(keep).collect();
        let unfinished: Vec<_> = c.unfinished.into_iter().filter(keep).collect();
        self.offsets.record(&done, &unfinished);
    }

    fn drain_completions(&mut self) {
        while let Ok(c) = self.done_rx.try_recv() {
            self.apply(c);
        }
    }

    /// Waits up to `timeout` for the in-flight batch (if any) to complete.
    fn wait_in_flight(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.in_flight.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done_rx.recv_timeout(left) {
                Ok(c) => self.apply(c),
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => {
                    self.in_flight = None;
                    return false;
                }
            }
        }
        true
    }

    /// Drops buffered (not yet dispatched) messages of `tps`: they are re-read by the next owner.
    fn drop_buffered(&mut self, tps: &HashSet<Tp>) {
        let keep = |m: &Arc<Msg>| !tps.contains(&(m.topic.to_string(), m.partition));
        self.current.retain(keep);
        self.current_bytes = self.current.iter().map(|m| size_of_msg(m)).sum();
        if let Some(p) = &mut self.pending {
            p.retain(keep);
        }
    }
}

/// Consumer context: rebalance and commit callbacks.
struct Ctx {
    state: Mutex<State>,
    drain_timeout: Duration,
    group: String,
    /// Which member of the group in this process (see `members`).
    member: usize,
}

impl Ctx {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

fn commit_positions(
    consumer: &BaseConsumer<Ctx>,
    positions: &[(Tp, i64)],
    mode: CommitMode,
) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in positions {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&tpl, mode)
}

impl ClientContext for Ctx {
    /// librdkafka's logs, into `tracing`. An offset reset caused by an error (out of range) is
    /// only reported here (facility `OFFSET`): it is counted and logged loudly.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if fac == "OFFSET" && log_message.contains("offset reset") {
            let topic = log_message.split(" [").next().unwrap_or("unknown");
            metrics::get()
                .offset_resets
                .with_label_values(&[topic])
                .inc();
            tracing::error!(
                message = log_message,
                "offset out of range: position reset per --auto-offset-reset"
            );
            return;
        }
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(facility = fac, "{log_message}")
            }
            L::Warning => tracing::warn!(facility = fac, "{log_message}"),
            L::Notice | L::Info => tracing::info!(facility = fac, "{log_message}"),
            L::Debug => tracing::debug!(facility = fac, "{log_message}"),
        }
    }

    /// librdkafka's statistics (every 5 s): per-partition lag without extra requests.
    fn stats(&self, stats: rdkafka::Statistics) {
        let lag = &metrics::get().lag;
        for (name, topic) in &stats.topics {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    lag.with_label_values(&[name, &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let m = metrics::get();
        m.rebalances.with_label_values(&["revoke"]).inc();
        let revoked: Vec<Tp> = tps_of(tpl);
        let revoked_set: HashSet<Tp> = revoked.iter().cloned().collect();
        let mut st = self.lock();
        st.drop_buffered(&revoked_set);
        let touches = st
            .in_flight
            .as_ref()
            .is_some_and(|f| f.tps.iter().any(|tp| revoked_set.contains(tp)));
        if touches && !st.wait_in_flight(self.drain_timeout) {
            tracing::warn!("in-flight batch did not finish before the revoke deadline; its messages will be re-read");
        }
        st.drain_completions();
        let positions = st.offsets.positions_of(&revoked);
        if !positions.is_empty() {
            match commit_positions(consumer, &positions, CommitMode::Sync) {
                Ok(()) => m.commits.with_label_values(&["revoke", "ok"]).inc(),
                Err(e) => {
                    // Expected when the group moved on (old generation); the next owner re-reads.
                    m.commits.with_label_values(&["revoke", "error"]).inc();
                    tracing::info!(error = %e, "commit on revoke failed");
                }
            }
        }
        st.offsets.forget(&revoked);
        for tp in &revoked {
            st.assigned.remove(tp);
            metrics::get()
                .lag
                .remove_label_values(&[&tp.0, &tp.1.to_string()])
                .ok();
        }
        st.epoch += 1;
        members::report_assigned(&self.group, self.member, st.assigned.len());
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let m = metrics::get();
        match rebalance {
            Rebalance::Assign(tpl) => {
                m.rebalances.with_label_values(&["assign"]).inc();
                let mut st = self.lock();
                st.assigned.extend(tps_of(tpl));
                st.needs_repause = true;
                members::report_assigned(&self.group, self.member, st.assigned.len());
                tracing::info!(
                    member = self.member,
                    partitions = tpl.count(),
                    "partitions assigned"
                );
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                m.errors.with_label_values(&["rebalance"]).inc();
                tracing::warn!(error = %e, "rebalance error");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            metrics::get()
                .commits
                .with_label_values(&["async", "error"])
                .inc();
            tracing::info!(error = %e, "offset commit failed; will retry");
            if let Ok(mut st) = self.state.try_lock() {
                st.offsets.unmark_all();
                st.commit_failed_at = Some(Instant::now());
            }
        }
    }
}

struct Driver {
    consumer: BaseConsumer<Ctx>,
    config: RuntimeConfig,
    health: Arc<Health>,
    /// This consumer's own progress, watched for liveness.
    progress: crate::health::Watch,
    /// Cancelled by the process's shutdown, or by this consumer when it stops on an error (so
    /// the other members of its group in this process stop too).
    shutdown: CancellationToken,
    dependency_down: Arc<AtomicBool>,
    batch_tx: tokio::sync::mpsc::Sender<Batch>,
    /// The batch cut while another is in flight, for the stage to prepare meanwhile.
    prepare_tx: tokio::sync::mpsc::Sender<Vec<Arc<Msg>>>,
}

impl Driver {
    fn run(self) -> Result<(), RuntimeError> {
        let m = metrics::get();
        let group = self.config.group.clone();
        let mut topics: HashMap<String, Arc<str>> = HashMap::new();
        // `None` = unknown (after an assignment): pause or resume is applied explicitly, because
        // librdkafka keeps an application pause across reassignment of the same partition.
        let mut paused: Option<bool> = Some(false);
        let (mut last_commit, mut last_touch) = (Instant::now(), None::<Instant>);
        let cut_rule = decide::CutRule {
            max_size: self.config.max_batch_size,
            max_time: self.config.max_batch_time,
            linger: self.config.batch_linger.min(self.config.max_batch_time),
        };
        // Polls wait at most this long when nothing is buffered (see `decide::poll_timeout`).
        let idle_poll = Duration::from_millis(50).min(self.config.max_batch_time);
        // Since when a full buffer has been held (hold versus pause, see `decide::Hold`).
        let mut hold_timer = decide::Hold::default();
        let (mut held_since, mut reported_stuck, mut reported_held) = (None, false, None);

        let result = loop {
            // Progress-aware liveness: idle, waiting out a known outage, or a batch just
            // completed. A batch stuck beyond the stall deadline makes the process not live.
            let (progressing, in_flight) = {
                let mut st = self.consumer.context().lock();
                let before = st.in_flight.as_ref().map(|f| f.id);
                st.drain_completions();
                let after = st.in_flight.as_ref().map(|f| f.id);
                (
                    decide::progressing(
                        before,
                        after,
                        self.dependency_down.load(Ordering::Relaxed),
                    ),
                    after,
                )
            };
            if progressing {
                self.progress.tick();
            }
            // Stuck: the same batch held while the dependency checks pass (a message the stage
            // cannot get past). Reported as a gauge and, after `stuck_after`, by liveness.
            let held = decide::held_for(
                &mut held_since,
                in_flight,
                self.health.dependencies_ok(),
                Instant::now(),
            );
            if reported_held != Some(held.as_secs()) {
                reported_held = Some(held.as_secs());
                members::report(
                    stuck_seconds(),
                    Combine::Max,
                    &self.config.group,
                    self.config.member,
                    held.as_secs() as i64,
                );
            }
            let stuck = self.config.stuck_after.is_some_and(|after| held >= after);
            if stuck != reported_stuck {
                if stuck {
                    tracing::error!(held_secs = held.as_secs(), "stuck: the same batch has been held while every dependency answers; reporting not live");
                } else {
                    tracing::info!("no longer stuck");
                }
                self.health.set_stuck(stuck);
                reported_stuck = stuck;
            }
            if let Some(path) = self
                .config
                .healthcheck_file
                .as_ref()
                .filter(|_| self.health.is_live())
            {
                // The health-check file is touched once a second while live.
                if decide::touch_due(last_touch, Instant::now()) {
                    crate::app::touch(path);
                    last_touch = Some(Instant::now());
                }
            }
            if self.shutdown.is_cancelled() {
                break Ok(());
            }

            let (want_pause, hold, poll_timeout) = {
                let mut st = self.consumer.context().lock();
                st.drain_completions();
                if let Some(f) = st.fatal.take() {
                    break Err(f);
                }
                // Cut the buffer into the pending batch (only when none is pending) once it is
                // full, or its first message is `--max-batch-time-ms` old, or nothing is in
                // flight and it is `--batch-linger-ms` old.
                // A buffer holding `--max-batch-bytes` counts as full, whatever its length.
                let fill = decide::fill(
                    st.current.len(),
                    st.current_bytes,
                    self.config.max_batch_size,
                    self.config.max_batch_bytes,
                );
                if decide::cut_batch(
                    fill,
                    st.pending.is_some(),
                    st.in_flight.is_some(),
                    st.current_started,
                    Instant::now(),
                    cut_rule,
                ) {
                    st.pending = Some(std::mem::take(&mut st.current));
                    st.current_bytes = 0;
                    // It waits for the batch in flight: the stage may prepare it meanwhile
                    // (skipped when the previous one is still being prepared).
                    if st.in_flight.is_some() {
                        if let Some(next) = &st.pending {
                            let _ = self.prepare_tx.try_send(next.clone());
                        }
                    }
                }
                if st.in_flight.is_none() {
                    if let Some(msgs) = st.pending.take() {
                        let id = st.next_batch_id;
                        st.next_batch_id += 1;
                        let tps = msgs
                            .iter()
                            .map(|m| (m.topic.to_string(), m.partition))
                            .collect();
                        let batch = Batch {
                            id,
                            epoch: st.epoch,
                            msgs,
                        };
                        match self.batch_tx.try_send(batch) {
                            Ok(()) => st.in_flight = Some(InFlight { id, tps }),
                            Err(tokio::sync::mpsc::error::TrySendError::Full(b)) => {
                                st.pending = Some(b.msgs)
                            }
                            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                                break Err(RuntimeError::Internal("worker stopped".into()));
                            }
                        }
                    }
                }
                if std::mem::take(&mut st.needs_repause) {
                    paused = None;
                }
                let backpressure = decide::backpressure(
                    st.pending.is_some(),
                    decide::fill(
                        st.current.len(),
                        st.current_bytes,
                        self.config.max_batch_size,
                        self.config.max_batch_bytes,
                    ),
                    self.config.max_batch_size,
                );
                let dependency = self.dependency_down.load(Ordering::Relaxed);
                // A full buffer first just waits for the batch in flight without polling: pausing
                // would make librdkafka drop its prefetched messages and fetch them again. Only
                // a batch that keeps the buffer full for long pauses the partitions, so polling
                // (rebalances, liveness) goes on. A dependency outage pauses at once.
                let flow = hold_timer.decide(backpressure, dependency, paused, Instant::now());
                if let Some(reason) = flow.count_pause {
                    m.pauses.with_label_values(&[reason.label()]).inc();
                }
                let poll_timeout = decide::poll_timeout(
                    idle_poll,
                    cut_rule.linger,
                    !st.current.is_empty(),
                    st.in_flight.is_some(),
                );
                (flow.pause, flow.hold, poll_timeout)
            };
            // Pause or resume is applied when the wanted state is not the one known in effect.
            if decide::must_apply_pause(paused, want_pause) {
                if let Ok(assignment) = self.consumer.assignment() {
                    let r = if want_pause {
                        self.consumer.pause(&assignment)
                    } else {
                        self.consumer.resume(&assignment)
                    };
                    match r {
                        Ok(()) => {
                            paused = Some(want_pause);
                            members::report(
                                &m.paused,
                                Combine::Max,
                                &group,
                                self.config.member,
                                i64::from(want_pause),
                            );
                        }
                        Err(e) => tracing::warn!(error = %e, "pause/resume failed"),
                    }
                }
            }

            if hold {
                self.consumer.context().lock().wait_in_flight(poll_timeout);
                if self.commit_due(last_commit) {
                    self.commit("timer", CommitMode::Async);
                    last_commit = Instant::now();
                }
                continue;
            }
            let received = match self.consumer.poll(poll_timeout) {
                Some(Ok(msg)) => {
                    let owned = Arc::new(to_msg(&msg, &mut topics));
                    let mut st = self.consumer.context().lock();
                    if st.current.is_empty() {
                        st.current_started = Instant::now();
                    }
                    st.current_bytes += size_of_msg(&owned);
                    st.current.push(owned);
                    true
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    // Only emitted with --auto-offset-reset=error.
                    m.offset_resets.with_label_values(&["*"]).inc();
                    break Err(RuntimeError::OffsetOutOfRange);
                }
                Some(Err(e)) => {
                    m.errors.with_label_values(&[error_kind(&e)]).inc();
                    tracing::debug!(error = %e, "consumer error");
                    false
                }
                None => false,
            };

            // An idle consumer commits its finished batches at once; a busy one on the timer.
            // One that just received a message is not idle.
            let idle = !received && {
                let mut st = self.consumer.context().lock();
                st.drain_completions();
                st.in_flight.is_none() && st.pending.is_none() && st.current.is_empty()
            };
            let (trigger, interval) = if idle {
                ("idle", decide::IDLE_COMMIT_AFTER)
            } else {
                ("timer", self.config.commit_interval)
            };
            if self.commit_due_after(last_commit, interval) {
                self.commit(trigger, CommitMode::Async);
                last_commit = Instant::now();
            }
        };
        if result.is_err() {
            // The other members of the group in this process stop as well, now rather than
            // after this one's drain: they would otherwise take over its partitions.
            self.shutdown.cancel();
        }
        // This consumer no longer counts as stuck or paused.
        if reported_stuck {
            self.health.set_stuck(false);
        }
        for gauge in [stuck_seconds(), &m.paused] {
            members::report(gauge, Combine::Max, &group, self.config.member, 0);
        }
        self.drain();
        result
    }

    /// Whether a timed commit is due `since` the last one: at the configured interval, or once
    /// a second while commits fail.
    fn commit_due(&self, since: Instant) -> bool {
        self.commit_due_after(since, self.config.commit_interval)
    }

    /// [`Driver::commit_due`] with another interval.
    fn commit_due_after(&self, since: Instant, interval: Duration) -> bool {
        decide::commit_due(
            since,
            || self.consumer.context().lock().commit_failed_at,
            interval,
            Instant::now(),
        )
    }

    fn commit(&self, trigger: &str, mode: CommitMode) {
        let mut st = self.consumer.context().lock();
        let positions = st.offsets.pending();
        if positions.is_empty() {
            return;
        }
        st.offsets.mark_committed(&positions);
        drop(st);
        let m = metrics::get();
        match commit_positions(&self.consumer, &positions, mode) {
            Ok(()) => m.commits.with_label_values(&[trigger, "ok"]).inc(),
            Err(e) => {
                m.commits.with_label_values(&[trigger, "error"]).inc();
                tracing::info!(error = %e, trigger, "offset commit failed; will retry");
                let mut st = self.consumer.context().lock();
                st.offsets.unmark(&positions);
                st.commit_failed_at = Some(Instant::now());
            }
        }
    }

    /// Shutdown: stop fetching, let the in-flight batch finish (bounded), commit, leave the group.
    fn drain(&self) {
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        {
            let mut st = self.consumer.context().lock();
            if !st.wait_in_flight(self.config.drain_timeout) {
                tracing::warn!(
                    "in-flight batch unfinished at the drain deadline; it will be re-read"
                );
            }
            st.drain_completions();
        }
        self.commit("shutdown", CommitMode::Sync);
        self.consumer.unsubscribe();
        tracing::info!("consumer drained and committed");
    }
}

fn error_kind(e: &KafkaError) -> &'static str {
    match e {
        KafkaError::MessageConsumption(_) => "consume",
        KafkaError::Global(_) => "global",
        _ => "other",
    }
}

fn to_msg(m: &BorrowedMessage<'_>, topics: &mut HashMap<String, Arc<str>>) -> Msg {
    let topic = match topics.get(m.topic()) {
        Some(t) => t.clone(),
        None => {
            let t: Arc<str> = Arc::from(m.topic());
            topics.insert(m.topic().to_owned(), t.clone());
            t
        }
    };
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Msg {
        topic,
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: m.timestamp().to_millis(),
    }
}

crate::gauge_vec!(
    /// Seconds the batch in flight has been held while the dependency checks pass.
    fn stuck_seconds = "sluice_consumer_stuck_seconds",
    "Seconds the consumer has held the same batch while its dependencies answer (0 when idle, progressing or waiting out an outage), by consumer group.",
    ["group"]
);

/// The bytes a buffered message holds (key and payload).
fn size_of_msg(m: &Msg) -> usize {
    m.payload().len() + m.key.as_ref().map_or(0, Vec::len)
}
