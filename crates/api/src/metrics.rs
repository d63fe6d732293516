//! Request metrics of the API: count and latency by route template and status.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::OnceLock;
use std::time::Instant;

sluice_core::counter_vec!(
    fn requests = "sluice_api_requests_total",
    "API requests, by method, route and status code.",
    ["method", "route", "status"]
);

fn latency() -> &'static prometheus::HistogramVec {
    static H: OnceLock<prometheus::HistogramVec> = OnceLock::new();
    H.get_or_init(|| {
        sluice_core::metrics::histogram_vec(
            prometheus::HistogramOpts::new(
                "sluice_api_request_duration_seconds",
                "Time to answer an API request, by route.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route"],
        )
    })
}

/// Counts and times every request.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    latency()
        .with_label_values(&[&route])
        .observe(start.elapsed().as_secs_f64());
    requests()
        .with_label_values(&[&method, &route, response.status().as_str()])
        .inc();
    response
}
