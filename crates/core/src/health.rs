//! Liveness and readiness, served with `/metrics` on `--metrics-addr`.
//! Live = the process's loops make progress. Ready = dependencies reachable, the database schema
//! current, and not shutting down (never "has partitions", so replicas beyond the partition
//! count stay ready).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shared health state.
#[derive(Debug)]
pub struct Health {
    dependencies_ok: AtomicBool,
    shutting_down: AtomicBool,
    stall_after: Duration,
    /// How many consumers hold the same work while their dependencies answer.
    stuck: AtomicUsize,
    /// Cleared while the database schema is older than this binary needs.
    schema_ok: AtomicBool,
    /// Loops watched one by one (see [`Health::watch`]): epoch milliseconds of each one's last
    /// progress, 0 = not started or stopped.
    watched: Mutex<Vec<Arc<AtomicU64>>>,
}

/// One watched loop's progress (see [`Health::watch`]); it stops being watched when dropped.
#[derive(Debug)]
pub struct Watch(Arc<AtomicU64>);

impl Watch {
    /// The loop made progress.
    pub fn tick(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Health {
    /// A state that reports not ready until the first successful dependency check, and not
    /// live when a watched loop has not ticked for `stall_after`.
    pub fn new(stall_after: Duration) -> Arc<Health> {
        Arc::new(Health {
            dependencies_ok: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            stall_after,
            stuck: AtomicUsize::new(0),
            schema_ok: AtomicBool::new(true),
            watched: Mutex::new(Vec::new()),
        })
    }

    /// Records the outcome of a dependency check.
    pub fn set_dependencies_ok(&self, ok: bool) {
        self.dependencies_ok.store(ok, Ordering::Relaxed);
    }

    /// From now on the process reports not ready.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// A loop watched for liveness: the process is not live when any watched loop has not
    /// progressed for the stall time, whatever the others do (several consumers in one process).
    pub fn watch(&self) -> Watch {
        let slot = Arc::new(AtomicU64::new(0));
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        watched.retain(|w| Arc::strong_count(w) > 1);
        watched.push(slot.clone());
        Watch(slot)
    }

    /// Whether the last dependency check succeeded.
    pub fn dependencies_ok(&self) -> bool {
        self.dependencies_ok.load(Ordering::Relaxed)
    }

    /// A consumer reports that it became stuck (or no longer is); each consumer reports only
    /// its own changes, so the process is live again once none is stuck.
    pub fn set_stuck(&self, stuck: bool) {
        if stuck {
            self.stuck.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = self
                .stuck
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Whether the database schema is one this binary can run on.
    pub fn set_schema_ok(&self, ok: bool) {
        self.schema_ok.store(ok, Ordering::Relaxed);
    }

    /// Ready to take traffic.
    pub fn is_ready(&self) -> bool {
        self.dependencies_ok.load(Ordering::Relaxed)
            && self.schema_ok.load(Ordering::Relaxed)
            && !self.is_shutting_down()
    }

    /// Not stuck.
    pub fn is_live(&self) -> bool {
        if self.stuck.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let stall = self.stall_after.as_millis() as u64;
        let now = now_ms();
        let fresh = |last: u64| last == 0 || now.saturating_sub(last) <= stall;
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .all(|w| fresh(w.load(Ordering::Relaxed)))
    }
}

/// Binds `addr` (an error names `--metrics-addr`) and serves `/metrics`, `/health/live` and
/// `/health/ready` until the process ends.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --metrics-addr {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(health);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

async fn metrics() -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

async fn live(State(h): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if h.is_live() {
        (StatusCode::OK, "live\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stalled\n")
    }
}

async fn ready(State(h): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if h.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if h.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "dependencies unavailable\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_dependencies_and_shutdown() {
        let h = Health::new(Duration::from_secs(60));
        assert!(!h.is_ready());
        h.set_dependencies_ok(true);
        assert!(h.is_ready() && h.is_live());
        let w = h.watch();
        w.tick();
        assert!(h.is_live());
        h.begin_shutdown();
        assert!(!h.is_ready());
        let stalled = Health::new(Duration::from_millis(0));
        let s = stalled.watch();
        s.0.store(1, Ordering::Relaxed);
        assert!(!stalled.is_live());
    }

    #[test]
    fn one_stalled_watched_loop_makes_the_process_not_live() {
        let h = Health::new(Duration::from_secs(60));
        let (a, b) = (h.watch(), h.watch());
        a.tick();
        b.tick();
        assert!(h.is_live());
        b.0.store(1, Ordering::Relaxed); // b's last progress long ago; a keeps ticking
        a.tick();
        assert!(!h.is_live());
        drop(b);
        assert!(h.is_live(), "a loop that stopped is no longer watched");
    }
}
