//! `sluice api`: serves Sentry's web API and delivers webhooks (unless `--no-webhooks`, for
//! a deployment that runs delivery in another replica set). `/metrics`, `/health/live` and
//! `/health/ready` are served on the same listener.

use clap::Args as ClapArgs;
use sluice_api::{webhooks, Limits, State};
use sluice_core::health::Health;
use sluice_core::objects::Objects;
use sluice_core::storage::Db;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8400")]
    listen: SocketAddr,
    /// The URL clients reach the API at (permalinks, `Link` headers, webhook links); default
    /// http://LISTEN.
    #[arg(long, env = "PUBLIC_URL")]
    public_url: Option<String>,
    /// Attachment storage (downloads): s3://bucket/prefix or file:///dir.
    #[arg(
        long,
        env = "OBJECT_STORE_URL",
        default_value = "file://./data/objects"
    )]
    object_store_url: String,
    /// Database connections.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 8)]
    db_pool_size: u32,
    /// Seconds to answer a request (503 after).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    request_timeout_secs: u64,
    /// Requests handled at once; beyond, 503 with `Retry-After`.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 128)]
    max_concurrent_requests: usize,
    /// Do not deliver webhooks from this process.
    #[arg(long, env = "NO_WEBHOOKS")]
    no_webhooks: bool,
    /// Webhook deliveries in flight at once.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 8)]
    webhook_concurrency: usize,
    /// Seconds for one webhook attempt.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    webhook_timeout_secs: u64,
    /// Seconds after which an undelivered webhook is given up on (recorded as failed).
    #[arg(long, env = "WEBHOOK_GIVE_UP_AFTER_SECS", default_value_t = 86_400)]
    webhook_give_up_after_secs: u64,
    /// Milliseconds between looks at the outbox when it was empty.
    #[arg(long, env = "WEBHOOK_POLL_MS", default_value_t = 500)]
    webhook_poll_ms: u64,
}

pub async fn run(url: &str, args: &Args) -> anyhow::Result<()> {
    sluice_core::metrics::set_build_info("api");
    let db = Db::new(url, args.db_pool_size.max(2));
    let health = Health::new(Duration::from_secs(3600));
    let shutdown = sluice_core::shutdown::install(health.clone());
    sluice_core::app::wait_for_schema(url, &health, &shutdown).await?;
    let objects = match Objects::from_url(&args.object_store_url) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::warn!(error = %e, "attachment storage unavailable: downloads answer 404");
            None
        }
    };
    let base_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen))
        .trim_end_matches('/')
        .to_owned();
    let state = Arc::new(State {
        db: db.clone(),
        objects,
        base_url: base_url.clone(),
        components: Vec::new(),
    });
    let delivery = (!args.no_webhooks).then(|| {
        tokio::spawn(webhooks::run(
            db.clone(),
            webhooks::Settings {
                concurrency: args.webhook_concurrency.max(1),
                timeout: Duration::from_secs(args.webhook_timeout_secs.max(1)),
                give_up_after: Duration::from_secs(args.webhook_give_up_after_secs),
                poll: Duration::from_millis(args.webhook_poll_ms.max(10)),
                base_url,
            },
            shutdown.clone(),
        ))
    });
    let app = sluice_api::router(
        state,
        Limits {
            request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
            max_concurrent: args.max_concurrent_requests,
        },
    );
    producer_shim::http::serve_router(args.listen, app, Duration::from_secs(10), shutdown.clone())
        .await?;
    if let Some(d) = delivery {
        let _ = d.await;
    }
    Ok(())
}
