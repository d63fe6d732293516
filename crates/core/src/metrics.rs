//! Prometheus metrics: one process-wide registry, rendered at `/metrics`. Names are
//! `sluice_<what>_<unit>`; labels are bounded (stage, topic, reason, result), never ids.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::OnceLock;

/// The registry every metric of this process registers in.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::new)
}

/// Registers a collector, ignoring a second registration of the same metric.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    let _ = registry().register(Box::new(c.clone()));
    c
}

/// `sluice_build_info{stage, version}` = 1.
pub fn set_build_info(stage: &str) {
    static INFO: OnceLock<Option<IntGaugeVec>> = OnceLock::new();
    let gauge = INFO.get_or_init(|| {
        IntGaugeVec::new(
            Opts::new("sluice_build_info", "Build of this process."),
            &["stage", "version"],
        )
        .ok()
        .map(register)
    });
    if let Some(g) = gauge {
        g.with_label_values(&[stage, env!("CARGO_PKG_VERSION")])
            .set(1);
    }
}

/// The text exposition of every registered metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry().gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// A registered counter vector (an invalid static definition yields an unregistered one).
pub fn counter_vec(opts: prometheus::Opts, labels: &[&str]) -> prometheus::IntCounterVec {
    match prometheus::IntCounterVec::new(opts, labels) {
        Ok(c) => register(c),
        Err(e) => {
            tracing::error!(error = %e, "invalid metric definition");
            prometheus::IntCounterVec::new(
                prometheus::Opts::new("sluice_invalid_metric_total", "-"),
                labels,
            )
            .unwrap_or_else(|_| unreachable!("static fallback metric is valid"))
        }
    }
}

/// A registered gauge vector.
pub fn gauge_vec(opts: prometheus::Opts, labels: &[&str]) -> prometheus::IntGaugeVec {
    match prometheus::IntGaugeVec::new(opts, labels) {
        Ok(g) => register(g),
        Err(e) => {
            tracing::error!(error = %e, "invalid metric definition");
            prometheus::IntGaugeVec::new(
                prometheus::Opts::new("sluice_invalid_metric", "-"),
                labels,
            )
            .unwrap_or_else(|_| unreachable!("static fallback metric is valid"))
        }
    }
}

/// A registered histogram vector.
pub fn histogram_vec(opts: prometheus::HistogramOpts, labels: &[&str]) -> prometheus::HistogramVec {
    match prometheus::HistogramVec::new(opts, labels) {
        Ok(h) => register(h),
        Err(e) => {
            tracing::error!(error = %e, "invalid metric definition");
            prometheus::HistogramVec::new(
                prometheus::HistogramOpts::new("sluice_invalid_histogram", "-"),
                labels,
            )
            .unwrap_or_else(|_| unreachable!("static fallback metric is valid"))
        }
    }
}

pub use prometheus as prom;

/// Declares a function that returns a process-wide counter vector, registered on first use:
/// `counter_vec!(fn results = "sluice_x_total", "What it counts.", ["result"]);`
/// Every stage declares its metrics this way.
#[macro_export]
macro_rules! counter_vec {
    ($(#[$meta:meta])* $vis:vis fn $fn:ident = $name:literal, $help:literal, [$($label:literal),* $(,)?]) => {
        $(#[$meta])*
        $vis fn $fn() -> &'static $crate::metrics::prom::IntCounterVec {
            static M: ::std::sync::OnceLock<$crate::metrics::prom::IntCounterVec> =
                ::std::sync::OnceLock::new();
            M.get_or_init(|| {
                $crate::metrics::counter_vec(
                    $crate::metrics::prom::Opts::new($name, $help),
                    &[$($label),*],
                )
            })
        }
    };
}

/// Like [`counter_vec!`], for a gauge vector.
#[macro_export]
macro_rules! gauge_vec {
    ($(#[$meta:meta])* $vis:vis fn $fn:ident = $name:literal, $help:literal, [$($label:literal),* $(,)?]) => {
        $(#[$meta])*
        $vis fn $fn() -> &'static $crate::metrics::prom::IntGaugeVec {
            static M: ::std::sync::OnceLock<$crate::metrics::prom::IntGaugeVec> =
                ::std::sync::OnceLock::new();
            M.get_or_init(|| {
                $crate::metrics::gauge_vec(
                    $crate::metrics::prom::Opts::new($name, $help),
                    &[$($label),*],
                )
            })
        }
    };
}

/// Like [`counter_vec!`], for a histogram vector with the given bucket bounds (seconds).
#[macro_export]
macro_rules! histogram_vec {
    ($(#[$meta:meta])* $vis:vis fn $fn:ident = $name:literal, $help:literal, [$($label:literal),* $(,)?], $buckets:expr) => {
        $(#[$meta])*
        $vis fn $fn() -> &'static $crate::metrics::prom::HistogramVec {
            static M: ::std::sync::OnceLock<$crate::metrics::prom::HistogramVec> =
                ::std::sync::OnceLock::new();
            M.get_or_init(|| {
                $crate::metrics::histogram_vec(
                    $crate::metrics::prom::HistogramOpts::new($name, $help).buckets($buckets),
                    &[$($label),*],
                )
            })
        }
    };
}
