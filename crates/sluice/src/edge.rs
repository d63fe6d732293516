//! `sluice edge`: the front door for Sentry SDKs (`/api/{project_id}/envelope/` and
//! `/api/{project_id}/store/`), writing what Relay would write to the ingest topics.
//! `/metrics`, `/health/live` and `/health/ready` are served on the same listener.

use crate::kafka_args::KafkaArgs;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clap::Args as ClapArgs;
use sluice_core::cli::TopicArgs;
use sluice_core::health::Health;
use sluice_core::kafka::producer::{Producer, ProducerConfig};
use sluice_core::storage::Db;
use sluice_edge::{KafkaSink, SizeLimits, State, Topics};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8410")]
    listen: SocketAddr,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    topics: TopicArgs,
    #[command(flatten)]
    limits: SizeLimits,
    /// Bytes of request bodies held in memory at once, across requests (at least the largest
    /// envelope); requests beyond wait.
    #[arg(long, env = "MEMORY_BUDGET_BYTES", default_value_t = 256 * 1024 * 1024)]
    memory_budget_bytes: usize,
    /// Database connections (key lookups).
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 4)]
    db_pool_size: u32,
    /// Seconds to answer a request (503 after).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    request_timeout_secs: u64,
    /// Requests handled at once; beyond, 503 with `Retry-After`.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    max_concurrent_requests: usize,
    /// Milliseconds the broker may take to acknowledge an envelope's messages (503 after).
    #[arg(long, env = "PRODUCE_TIMEOUT_MS", default_value_t = 10_000)]
    produce_timeout_ms: u64,
}

pub async fn run(url: &str, args: &Args) -> anyhow::Result<()> {
    sluice_core::metrics::set_build_info("edge");
    let brokers = args.kafka.kafka_brokers.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "the ingest topics' broker is not configured: set --kafka-brokers or KAFKA_BROKERS"
        )
    })?;
    args.kafka.install_options()?;
    let db = Db::new(url, args.db_pool_size.max(1));
    let health = Health::new(Duration::from_secs(3600));
    let shutdown = sluice_core::shutdown::install(health.clone());
    sluice_core::app::wait_for_schema(url, &health, &shutdown).await?;
    let t = &args.topics;
    let mut required = vec![
        t.events_topic.clone(),
        t.attachments_topic.clone(),
        t.feedback_topic.clone(),
        t.outcomes_topic.clone(),
    ];
    required.extend(t.outcomes_billing_topic.clone());
    sluice_core::kafka::topics::ensure_topics_exist(&brokers, required, Duration::from_secs(10))
        .await?;
    let producer = Producer::new(&ProducerConfig {
        brokers,
        client_id: "sluice-edge".into(),
        message_timeout: Duration::from_millis(args.produce_timeout_ms.max(1)),
    })?;
    let state = Arc::new(State::new(
        db,
        Arc::new(KafkaSink::new(producer.clone())),
        Topics {
            events: t.events_topic.clone(),
            attachments: t.attachments_topic.clone(),
            feedback: t.feedback_topic.clone(),
        },
        t.outcomes_topic.clone(),
        t.outcomes_billing_topic.clone(),
        args.limits.clone(),
        args.memory_budget_bytes,
    ));
    let app = sluice_edge::router(state).layer(
        ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
            .load_shed()
            .concurrency_limit(args.max_concurrent_requests.max(1))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(args.request_timeout_secs.max(1)),
            )),
    );
    tracing::info!(listen = %args.listen, "SDK front door listening");
    producer_shim::http::serve_router(args.listen, app, Duration::from_secs(10), shutdown).await?;
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    Ok(())
}

/// The answer to a request beyond `--max-concurrent-requests` (shared with `sluice run`).
pub async fn overloaded(_: axum::BoxError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        axum::Json(serde_json::json!({"detail": "the service is overloaded"})),
    )
        .into_response()
}
