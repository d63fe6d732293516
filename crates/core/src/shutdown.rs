//! SIGTERM / SIGINT handling: the first signal starts a graceful shutdown (not ready, stop
//! fetching, drain, commit, flush, exit 0); a second one exits immediately. A shutdown that has
//! not finished [`DEADLINE`] after the first signal (say the broker vanished and a commit or the
//! group leave waits for it) exits with status 1: nothing is lost, since work whose offsets were
//! not committed is read again, and every effect is idempotent.

use crate::health::Health;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a graceful shutdown may take: the drain deadline (30 s), a commit and the producer
/// flush (10 s), inside the deploy files' 60 s termination grace period.
pub const DEADLINE: Duration = Duration::from_secs(50);

/// Spawns the signal listener; the returned token is cancelled on the first signal.
pub fn install(health: Arc<Health>) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        health.begin_shutdown();
        t.cancel();
        spawn_watchdog(DEADLINE);
        wait_for_signal().await;
        tracing::warn!("second signal; exiting without draining");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Exits the process if it is still running `after` from now. A plain thread, so that it fires
/// even when every runtime thread is blocked.
fn spawn_watchdog(after: Duration) {
    let started = std::thread::Builder::new()
        .name("shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(after);
            tracing::error!(
                deadline_secs = after.as_secs(),
                "graceful shutdown did not finish in time; exiting (uncommitted work is read again)"
            );
            std::process::exit(1);
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the shutdown watchdog");
    }
}
