//! The async side: runs each batch through the stage until every message is done, dead-lettered
//! or (only at shutdown) left unfinished, applying the retry policy of each error class.

use super::breaker::{Breaker, Trip};
use super::metrics;
use super::offsets::Tp;
use super::{Msg, RuntimeConfig, RuntimeError, Stage, Verdict};
use crate::failure::{Classify, Failure};
use crate::kafka::producer::Producer;
use crate::messages::{DlqReason, Rejection};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A batch handed from the driver to the worker.
pub(crate) struct Batch {
    pub id: u64,
    pub epoch: u64,
    pub msgs: Vec<Arc<Msg>>,
}

/// The result of a batch, handed back to the driver.
pub(crate) struct Completion {
    pub id: u64,
    pub epoch: u64,
    pub done: Vec<(Tp, i64)>,
    pub unfinished: Vec<(Tp, i64)>,
    pub fatal: Option<RuntimeError>,
}

pub(crate) struct Worker<S: Stage> {
    pub stage: Arc<S>,
    pub producer: Producer,
    pub config: RuntimeConfig,
    pub shutdown: CancellationToken,
    /// Set while a dependency is down: the driver pauses the partitions.
    pub dependency_down: Arc<AtomicBool>,
    pub breaker: Breaker,
}

/// Lets the stage prepare each batch handed over while another is in flight, one at a time,
/// beside the batch in flight. A panic while preparing is left to `process`, which meets it
/// again under its guard; this loop goes on.
async fn prepare_ahead<S: Stage>(
    stage: Arc<S>,
    mut batches: tokio::sync::mpsc::Receiver<Vec<Arc<Msg>>>,
) {
    while let Some(batch) = batches.recv().await {
        let _ = AssertUnwindSafe(stage.prepare(&batch)).catch_unwind().await;
    }
}

fn tp(m: &Msg) -> Tp {
    (m.topic.to_string(), m.partition)
}

impl<S: Stage> Worker<S> {
    pub async fn run(
        mut self,
        mut batches: tokio::sync::mpsc::Receiver<Batch>,
        prepare: tokio::sync::mpsc::Receiver<Vec<Arc<Msg>>>,
        completions: std::sync::mpsc::SyncSender<Completion>,
    ) {
        let preparing = tokio::spawn(prepare_ahead(self.stage.clone(), prepare));
        while let Some(batch) = batches.recv().await {
            let completion = self.process(batch).await;
            if completions.send(completion).is_err() {
                break;
            }
        }
        preparing.abort();
    }

    async fn process(&mut self, batch: Batch) -> Completion {
        let m = metrics::get();
        let group = self.config.group.clone();
        m.batch_size
            .with_label_values(&[&group])
            .observe(batch.msgs.len() as f64);
        let started = Instant::now();
        // (message, attempts used, time of its first failure): each message has its own budget.
        let mut pending: Vec<(Arc<Msg>, u32, Option<Instant>)> =
            batch.msgs.into_iter().map(|msg| (msg, 0, None)).collect();
        let (mut done, mut unfinished) = (Vec::new(), Vec::new());
        let mut tripped = false;
        let mut dependency_backoff = Duration::from_millis(100);

        while !pending.is_empty() {
            let input: Vec<Arc<Msg>> = pending.iter().map(|(msg, _, _)| msg.clone()).collect();
            let mut outcomes = self.process_guarded(input).await;
            if outcomes.len() != pending.len() {
                tracing::error!(
                    expected = pending.len(),
                    got = outcomes.len(),
                    "stage returned a wrong number of outcomes"
                );
                outcomes.resize(
                    pending.len(),
                    Verdict::Retry {
                        reason: DlqReason::RetryExhausted,
                        detail: "stage returned no outcome".into(),
                    },
                );
            }
            let mut next = Vec::new();
            let mut dependency_error = None;
            for ((msg, attempts, first_failure), outcome) in pending.into_iter().zip(outcomes) {
                let failed_at = first_failure.unwrap_or_else(Instant::now);
                let exhausted = attempts + 1 >= self.config.per_message_attempts
                    || failed_at.elapsed() >= self.config.per_message_budget;
                match outcome {
                    Verdict::Done => {
                        self.breaker.accepted(Instant::now());
                        m.messages.with_label_values(&[&msg.topic, "done"]).inc();
                        done.push((tp(&msg), msg.offset));
                    }
                    Verdict::Reject(rejection) => {
                        if self.dead_letter(&msg, &rejection).await {
                            let tenant = self.stage.tenant(&msg);
                            match self.breaker.rejected(Instant::now(), tenant) {
                                Trip::No => {}
                                Trip::Tripped => tripped = true,
                                Trip::HeldBy(project) => held_by(&msg.topic, project),
                            }
                            m.messages
                                .with_label_values(&[&msg.topic, "rejected"])
                                .inc();
                            done.push((tp(&msg), msg.offset));
                        } else {
                            unfinished.push((tp(&msg), msg.offset));
                        }
                    }
                    Verdict::Retry { reason, detail } => {
                        m.retries.with_label_values(&["message"]).inc();
                        if !exhausted {
                            next.push((msg, attempts + 1, Some(failed_at)));
                        } else if self
                            .dead_letter(&msg, &Rejection::new(reason, detail))
                            .await
                        {
                            // Retried-out messages are not bad input: they do not feed the breaker.
                            m.messages
                                .with_label_values(&[&msg.topic, "dead_lettered_retry"])
                                .inc();
                            done.push((tp(&msg), msg.offset));
                        } else {
                            unfinished.push((tp(&msg), msg.offset));
                        }
                    }
                    Verdict::RetryThenDrop(detail) => {
                        m.retries.with_label_values(&["message"]).inc();
                        if !exhausted {
                            next.push((msg, attempts + 1, Some(failed_at)));
                        } else {
                            tracing::info!(topic = %msg.topic, offset = msg.offset, detail = %detail, "dropped after retries");
                            m.messages
                                .with_label_values(&[&msg.topic, "dropped_after_retry"])
                                .inc();
                            done.push((tp(&msg), msg.offset));
                        }
                    }
                    Verdict::Unavailable(error) => {
                        dependency_error = Some(error);
                        next.push((msg, attempts, first_failure));
                    }
                    Verdict::Defer => next.push((msg, attempts, first_failure)),
                }
            }
            pending = next;
            if pending.is_empty() {
                break;
            }
            if let Some(error) = dependency_error {
                if !self.dependency_down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %error, "dependency unavailable; pausing partitions and retrying");
                } else if dependency_backoff >= self.config.max_backoff {
                    tracing::warn!(error = %error, "dependency still unavailable; retrying");
                }
                m.retries.with_label_values(&["dependency"]).inc();
                if !self.sleep(dependency_backoff).await {
                    unfinished.extend(pending.iter().map(|(msg, _, _)| (tp(msg), msg.offset)));
                    break;
                }
                dependency_backoff = (dependency_backoff * 2).min(self.config.max_backoff);
            } else {
                let attempt = pending.iter().map(|(_, a, _)| *a).max().unwrap_or(1);
                let delay = Duration::from_millis(200u64 << attempt.min(4).saturating_sub(1));
                tokio::time::sleep(delay).await;
            }
        }
        if self.dependency_down.swap(false, Ordering::Relaxed) {
            tracing::info!("dependency back; resuming");
        }
        m.batch_latency
            .with_label_values(&[&group])
            .observe(started.elapsed().as_secs_f64());
        Completion {
            id: batch.id,
            epoch: batch.epoch,
            done,
            unfinished,
            fatal: tripped
                .then(|| RuntimeError::BreakerTripped(self.config.breaker.max_consecutive)),
        }
    }

    /// Runs the stage on `input`. A panic is caught: the batch is run again one message at a
    /// time, so only the message that panics is retried (and in the end dead-lettered).
    async fn process_guarded(&self, input: Vec<Arc<Msg>>) -> Vec<Verdict> {
        let n = input.len();
        let first = AssertUnwindSafe(self.stage.process(input.clone()))
            .catch_unwind()
            .await;
        match first {
            Ok(outcomes) => return outcomes,
            Err(panic) if n == 1 => return vec![panicked(&input[0], panic.as_ref())],
            Err(_) => {}
        }
        let mut outcomes = Vec::with_capacity(n);
        for msg in input {
            let one = AssertUnwindSafe(self.stage.process(vec![msg.clone()]))
                .catch_unwind()
                .await;
            outcomes.push(match one {
                Ok(mut v) if v.len() == 1 => v.pop().unwrap_or(Verdict::Defer),
                Ok(_) => Verdict::Retry {
                    reason: DlqReason::RetryExhausted,
                    detail: "stage returned no outcome".into(),
                },
                Err(panic) => panicked(&msg, panic.as_ref()),
            });
        }
        outcomes
    }

    /// Sends to the DLQ, retrying while the broker is down; false only when shutdown interrupts.
    /// A message the broker refuses as too large (or invalid) is sent again truncated, with its
    /// provenance headers; if even that is refused, it is dropped with an error and a metric,
    /// so the partition still advances.
    async fn dead_letter(&self, msg: &Msg, rejection: &Rejection) -> bool {
        let mut backoff = Duration::from_millis(100);
        let mut truncated = false;
        loop {
            let sent = if truncated {
                crate::kafka::dlq::send_truncated(&self.producer, msg, rejection).await
            } else {
                crate::kafka::dlq::send(&self.producer, msg, rejection).await
            };
            match sent {
                Ok(()) => {
                    metrics::get()
                        .rejected
                        .with_label_values(&[&msg.topic, rejection.reason.as_str()])
                        .inc();
                    tracing::debug!(topic = %msg.topic, partition = msg.partition, offset = msg.offset,
                        reason = rejection.reason.as_str(), detail = %rejection.detail, "dead-lettered");
                    return true;
                }
                Err(e) => match e.failure() {
                    Failure::Outage(_) => {
                        tracing::warn!(error = %e, "DLQ produce failed; retrying");
                        self.dependency_down.store(true, Ordering::Relaxed);
                        if !self.sleep(backoff).await {
                            return false;
                        }
                        backoff = (backoff * 2).min(self.config.max_backoff);
                    }
                    _ if !truncated => {
                        tracing::warn!(error = %e, topic = %msg.topic, offset = msg.offset,
                            "DLQ refused the message; sending it truncated");
                        dlq_truncated().with_label_values(&[&msg.topic]).inc();
                        truncated = true;
                    }
                    _ => {
                        tracing::error!(error = %e, topic = %msg.topic, partition = msg.partition,
                            offset = msg.offset, reason = rejection.reason.as_str(),
                            "DLQ refused even the truncated message; dropped");
                        dlq_dropped().with_label_values(&[&msg.topic]).inc();
                        return true;
                    }
                },
            }
        }
    }

    /// Sleeps unless shutdown comes first; false on shutdown.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

crate::counter_vec!(
    /// DLQ messages the broker refused whole and that were sent truncated.
    fn dlq_truncated = "sluice_consumer_dlq_truncated_total",
    "Dead letters sent truncated (value cut, provenance headers kept) because the broker refused them whole, by input topic.",
    ["topic"]
);

crate::counter_vec!(
    /// DLQ messages refused even truncated: dropped so the partition advances.
    fn dlq_dropped = "sluice_consumer_dlq_dropped_total",
    "Dead letters the broker refused even truncated (dropped so the partition advances), by input topic.",
    ["topic"]
);

crate::counter_vec!(
    /// Rejections that met the breaker's thresholds but came from one project.
    fn breaker_held = "sluice_consumer_breaker_held_total",
    "Rejections that would have tripped the circuit breaker but came mostly from one project (the stage goes on; its messages are dead-lettered), by input topic and project.",
    ["topic", "project"]
);

crate::counter_vec!(
    /// Panics caught while processing a message.
    fn panics = "sluice_consumer_panics_total",
    "Panics caught while processing a message (the message is retried, then dead-lettered), by input topic.",
    ["topic"]
);

/// Counts a rejection the tenant rule kept from tripping the breaker; warns at most once a
/// minute per project.
fn held_by(topic: &str, project: u64) {
    breaker_held()
        .with_label_values(&[topic, &project.to_string()])
        .inc();
    static LAST: std::sync::Mutex<Option<(u64, Instant)>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let due = match *last {
        Some((p, at)) => p != project || at.elapsed() >= Duration::from_secs(60),
        None => true,
    };
    if due {
        *last = Some((project, Instant::now()));
        tracing::warn!(topic, project,
            "one project's messages are being rejected in bulk; dead-lettering them, the stage goes on");
    }
}

/// The verdict for a message whose processing panicked: retried, then dead-lettered.
fn panicked(msg: &Msg, panic: &(dyn std::any::Any + Send)) -> Verdict {
    panics().with_label_values(&[&msg.topic]).inc();
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(topic = %msg.topic, partition = msg.partition, offset = msg.offset,
        panic = %text, "processing panicked");
    Verdict::Retry {
        reason: DlqReason::RetryExhausted,
        detail: format!("processing panicked: {text}"),
    }
}
