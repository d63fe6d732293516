//! SIGTERM / SIGINT handling: the first signal starts a graceful shutdown (not ready, stop
//! fetching, drain, commit, flush, exit 0); a second one exits immediately.

use crate::health::Health;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Spawns the signal listener; the returned token is cancelled on the first signal.
pub fn install(health: Arc<Health>) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        health.begin_shutdown();
        t.cancel();
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
