//! The front door's metrics. Labels are bounded: endpoints, status codes and item type names
//! from a fixed list.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use std::sync::OnceLock;

struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    items: IntCounterVec,
    outcomes_dropped: IntCounterVec,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        requests: sluice_core::metrics::counter_vec(
            Opts::new(
                "sluice_edge_requests_total",
                "SDK requests answered, by endpoint and status code.",
            ),
            &["endpoint", "status"],
        ),
        duration: sluice_core::metrics::histogram_vec(
            HistogramOpts::new(
                "sluice_edge_request_duration_seconds",
                "Time to answer an SDK request, by endpoint.",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["endpoint"],
        ),
        items: sluice_core::metrics::counter_vec(
            Opts::new(
                "sluice_edge_items_total",
                "Envelope items, by type and result: accepted (sent to the pipeline), dropped \
                 (with an outcome), ignored (not processed, not billed), refused (the request \
                 was answered with an error).",
            ),
            &["type", "result"],
        ),
        outcomes_dropped: sluice_core::metrics::counter_vec(
            Opts::new(
                "sluice_edge_outcomes_dropped_total",
                "Outcomes not produced, by reason (backlog: too many already in flight).",
            ),
            &["reason"],
        ),
    })
}

pub fn request(endpoint: &str, status: u16, seconds: f64) {
    let m = metrics();
    m.requests
        .with_label_values(&[endpoint, &status.to_string()])
        .inc();
    m.duration.with_label_values(&[endpoint]).observe(seconds);
}

pub fn item(ty: &str, result: &str) {
    metrics().items.with_label_values(&[ty, result]).inc();
}

pub fn outcomes_dropped(n: usize) {
    metrics()
        .outcomes_dropped
        .with_label_values(&["backlog"])
        .inc_by(n as u64);
}
