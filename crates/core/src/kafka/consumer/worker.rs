//! The async side: runs each batch through the stage until every message is done, dead-lettered
//! or (only at shutdown) left unfinished, applying the retry policy of each error class.

use super::breaker::Breaker;
use super::metrics;
use super::offsets::Tp;
use super::{Msg, RuntimeConfig, RuntimeError, Stage, Verdict};
use crate::kafka::producer::Producer;
use crate::messages::{DlqReason, Rejection};
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

fn tp(m: &Msg) -> Tp {
    (m.topic.to_string(), m.partition)
}

impl<S: Stage> Worker<S> {
    pub async fn run(
        mut self,
        mut batches: tokio::sync::mpsc::Receiver<Batch>,
        completions: std::sync::mpsc::SyncSender<Completion>,
    ) {
        while let Some(batch) = batches.recv().await {
            let completion = self.process(batch).await;
            if completions.send(completion).is_err() {
                break;
            }
        }
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
            let mut outcomes = self.stage.process(input).await;
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
                            tripped |= self.breaker.rejected(Instant::now());
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

    /// Sends to the DLQ, retrying while the broker is down; false only when shutdown interrupts.
    async fn dead_letter(&self, msg: &Msg, rejection: &Rejection) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match crate::kafka::dlq::send(&self.producer, msg, rejection).await {
                Ok(()) => {
                    metrics::get()
                        .rejected
                        .with_label_values(&[&msg.topic, rejection.reason.as_str()])
                        .inc();
                    tracing::debug!(topic = %msg.topic, partition = msg.partition, offset = msg.offset,
                        reason = rejection.reason.as_str(), detail = %rejection.detail, "dead-lettered");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DLQ produce failed; retrying");
                    self.dependency_down.store(true, Ordering::Relaxed);
                    if !self.sleep(backoff).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
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
