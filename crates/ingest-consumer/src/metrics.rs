//! The ingest stage's metrics.

use prometheus::{IntCounterVec, Opts};
use std::sync::OnceLock;

fn results() -> &'static IntCounterVec {
    static M: OnceLock<IntCounterVec> = OnceLock::new();
    M.get_or_init(|| {
        sluice_core::metrics::counter_vec(
            Opts::new(
                "sluice_ingest_messages_total",
                "Ingest messages handled, by message type and result.",
            ),
            &["type", "result"],
        )
    })
}

/// Counts one message of `ty` (a wire type name) with `result` (a fixed label).
pub fn count(ty: &str, result: &str) {
    results().with_label_values(&[ty, result]).inc();
}
