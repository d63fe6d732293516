//! Runtime metrics (labels: topic, partition, result, reason; never ids).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use std::sync::OnceLock;

pub(crate) struct RuntimeMetrics {
    pub messages: IntCounterVec,
    pub rejected: IntCounterVec,
    pub retries: IntCounterVec,
    pub commits: IntCounterVec,
    pub pauses: IntCounterVec,
    pub paused: IntGaugeVec,
    pub batch_latency: HistogramVec,
    pub batch_size: HistogramVec,
    pub lag: IntGaugeVec,
    pub offset_resets: IntCounterVec,
    pub rebalances: IntCounterVec,
    pub assigned: IntGaugeVec,
    pub members: IntGaugeVec,
    pub errors: IntCounterVec,
}

pub(crate) fn get() -> &'static RuntimeMetrics {
    use crate::metrics::{counter_vec, gauge_vec, histogram_vec};
    static M: OnceLock<RuntimeMetrics> = OnceLock::new();
    M.get_or_init(|| RuntimeMetrics {
        messages: counter_vec(
            Opts::new(
                "sluice_consumer_messages_total",
                "Messages handled, by topic and result (done, rejected, dead_lettered_retry).",
            ),
            &["topic", "result"],
        ),
        rejected: counter_vec(
            Opts::new(
                "sluice_consumer_rejected_total",
                "Messages sent to the DLQ, by topic and reason.",
            ),
            &["topic", "reason"],
        ),
        retries: counter_vec(
            Opts::new(
                "sluice_consumer_retries_total",
                "Retries, by kind (message, dependency).",
            ),
            &["kind"],
        ),
        commits: counter_vec(
            Opts::new(
                "sluice_consumer_commits_total",
                "Offset commits, by trigger (timer, idle, revoke, shutdown) and result.",
            ),
            &["trigger", "result"],
        ),
        pauses: counter_vec(
            Opts::new(
                "sluice_consumer_pauses_total",
                "Times the partitions were paused, by cause (dependency, backpressure).",
            ),
            &["cause"],
        ),
        paused: gauge_vec(
            Opts::new(
                "sluice_consumer_paused",
                "1 while the partitions are paused (of any member of the group in this process).",
            ),
            &["group"],
        ),
        batch_latency: histogram_vec(
            HistogramOpts::new(
                "sluice_consumer_batch_seconds",
                "Time to process a batch until its effects are durable.",
            ),
            &["group"],
        ),
        batch_size: histogram_vec(
            HistogramOpts::new("sluice_consumer_batch_messages", "Messages per batch.")
                .buckets(vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0]),
            &["group"],
        ),
        lag: gauge_vec(
            Opts::new(
                "sluice_consumer_lag_messages",
                "High watermark minus position, per assigned partition.",
            ),
            &["topic", "partition"],
        ),
        offset_resets: counter_vec(
            Opts::new(
                "sluice_consumer_offset_resets_total",
                "Offsets reset because they were out of range.",
            ),
            &["topic"],
        ),
        rebalances: counter_vec(
            Opts::new(
                "sluice_consumer_rebalances_total",
                "Rebalance events, by kind (assign, revoke).",
            ),
            &["kind"],
        ),
        assigned: gauge_vec(
            Opts::new(
                "sluice_consumer_assigned_partitions",
                "Partitions assigned (to all members of the group in this process).",
            ),
            &["group"],
        ),
        members: gauge_vec(
            Opts::new(
                "sluice_consumer_members",
                "Members of the group in this process (--consumers) that hold partitions.",
            ),
            &["group"],
        ),
        errors: counter_vec(
            Opts::new("sluice_consumer_errors_total", "Consumer errors, by kind."),
            &["kind"],
        ),
    })
}
