//! The ingest stage's metrics.

sluice_core::counter_vec!(
    fn results = "sluice_ingest_messages_total",
    "Ingest messages handled, by message type and result.",
    ["type", "result"]
);

sluice_core::counter_vec!(
    fn object_writes = "sluice_ingest_object_writes_total",
    "Attachment objects written, by when: `ahead` (started while the batch before was being \
     finished) or `with_batch`.",
    ["when"]
);

sluice_core::counter_vec!(
    fn event_inserts = "sluice_ingest_event_inserts_total",
    "Error events of the batched path inserted, by when: `ahead` (started while the batch \
     before was being finished) or `with_batch`.",
    ["when"]
);

sluice_core::histogram_vec!(
    fn steps = "sluice_ingest_step_seconds",
    "Time spent in one step of a batched path, per batch.",
    ["step"],
    vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
);

/// Counts one message of `ty` (a wire type name) with `result` (a fixed label).
pub fn count(ty: &str, result: &str) {
    results().with_label_values(&[ty, result]).inc();
}

/// Counts `n` messages of `ty` with `result`.
pub fn count_n(ty: &str, result: &str, n: usize) {
    results().with_label_values(&[ty, result]).inc_by(n as u64);
}

/// Times one step of a batched path (`step` is a fixed label).
pub fn time_step(step: &str, started: std::time::Instant) {
    steps()
        .with_label_values(&[step])
        .observe(started.elapsed().as_secs_f64());
}

/// Counts `n` attachment objects written `when` (`ahead` or `with_batch`).
pub fn object_writes_n(when: &str, n: usize) {
    object_writes().with_label_values(&[when]).inc_by(n as u64);
}

/// Counts `n` error events inserted `when` (`ahead` or `with_batch`).
pub fn event_inserts_n(when: &str, n: usize) {
    event_inserts().with_label_values(&[when]).inc_by(n as u64);
}
