//! `sluice run`: the whole installation in one process, for small teams. One listener serves
//! the SDK endpoints (`/api/{project_id}/envelope/`, `/store/`), Sentry's web API (`/api/0/`),
//! `/metrics` and `/health/*`; beside it run the three consumer stages, webhook delivery and
//! the hourly cleanup. The topics are on Kafka when `KAFKA_BROKERS` is set and on the embedded
//! transport in the database otherwise, so a PostgreSQL database (and a directory or an S3
//! bucket for attachments) is all it needs. Pending migrations are applied at start-up.

use crate::kafka_args::KafkaArgs;
use anyhow::Context as _;
use axum::http::StatusCode;
use clap::Args as ClapArgs;
use sluice_core::app::Context;
use sluice_core::cli::{CommonArgs, StageDefaults};
use sluice_core::config::Settings;
use sluice_core::consumer_binary::{self, Binary};
use sluice_core::health::Health;
use sluice_core::kafka::producer::{Producer, ProducerConfig};
use sluice_core::objects::Objects;
use sluice_core::stages::{FEEDBACK, INGEST, OCCURRENCE};
use sluice_core::storage::Db;
use sluice_edge::{KafkaSink, QueueSink, Sink, SizeLimits, Topics};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Address of the one listener (SDK endpoints, web API, metrics, health).
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The URL clients reach this process at (DSNs, permalinks, `Link` headers, webhook links);
    /// default http://LISTEN.
    #[arg(long, env = "PUBLIC_URL")]
    public_url: Option<String>,
    /// Attachment storage: s3://bucket/prefix or file:///dir.
    #[arg(
        long,
        env = "OBJECT_STORE_URL",
        default_value = "file://./data/objects"
    )]
    object_store_url: String,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// TOML file with the global settings (as the stages' `--config`).
    #[arg(long = "config", env = "CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(flatten)]
    limits: SizeLimits,
    /// Bytes of SDK request bodies held in memory at once.
    #[arg(long, env = "MEMORY_BUDGET_BYTES", default_value_t = 64 * 1024 * 1024)]
    memory_budget_bytes: usize,
    /// Do not run the hourly cleanup in this process.
    #[arg(long, env = "NO_CLEANUP")]
    no_cleanup: bool,
    /// Milliseconds a stage's batch may wait to fill (the stages' `--max-batch-time-ms`).
    #[arg(long, env = "MAX_BATCH_TIME_MS", default_value_t = 200)]
    max_batch_time_ms: u64,
}

/// A stage's command line as if it had been started on its own with these settings.
fn stage_args(defaults: &StageDefaults, url: &str, args: &Args) -> anyhow::Result<CommonArgs> {
    let mut argv = vec![
        defaults.name.to_owned(),
        "--database-url".into(),
        url.to_owned(),
        "--object-store-url".into(),
        args.object_store_url.clone(),
        "--max-batch-time-ms".into(),
        args.max_batch_time_ms.to_string(),
        // Each stage its own group, whatever CONSUMER_GROUP says.
        "--consumer-group".into(),
        defaults.consumer_group.to_owned(),
    ];
    match &args.kafka.kafka_brokers {
        Some(b) => argv.extend([
            "--transport".into(),
            "kafka".into(),
            "--kafka-brokers".into(),
            b.clone(),
        ]),
        None => argv.extend(["--transport".into(), "postgres".into()]),
    }
    if let Some(c) = &args.config {
        argv.extend(["--config".into(), c.display().to_string()]);
    }
    let cli: consumer_binary::Cli = sluice_core::cli::try_parse_from(defaults, argv)
        .map_err(|e| anyhow::anyhow!("{defaults:?}: {e}", defaults = defaults.name))?;
    Ok(cli.common)
}

pub async fn run(url: &str, args: &Args) -> anyhow::Result<()> {
    sluice_core::metrics::set_build_info("run");
    let applied = {
        let u = url.to_owned();
        tokio::task::spawn_blocking(move || sluice_core::storage::migrate(&u)).await??
    };
    for version in applied {
        tracing::info!(%version, "migration applied");
    }
    let settings = Arc::new(Settings::load(args.config.as_deref())?);
    args.kafka.install_options()?;
    let health = Health::new(Duration::from_secs(3600));
    let shutdown = sluice_core::shutdown::install(health.clone());
    let db = Db::new(url, 8);
    let background = Background::start()?;

    let ingest = stage_args(&INGEST, url, args)?;
    let topics = ingest.topics.clone();
    let (producer, sink): (Producer, Arc<dyn Sink>) = match &args.kafka.kafka_brokers {
        Some(brokers) => {
            let mut required: Vec<String> = Vec::new();
            for t in [
                &topics.events_topic,
                &topics.attachments_topic,
                &topics.feedback_topic,
                &topics.occurrences_topic,
                &topics.outcomes_topic,
            ] {
                required.push(t.clone());
            }
            for t in [
                &topics.events_topic,
                &topics.attachments_topic,
                &topics.feedback_topic,
                &topics.occurrences_topic,
            ] {
                required.push(sluice_core::cli::dlq_topic(t));
            }
            sluice_core::kafka::topics::ensure_topics_exist(
                brokers,
                required,
                Duration::from_secs(10),
            )
            .await?;
            let p = Producer::new(&ProducerConfig {
                brokers: brokers.clone(),
                client_id: "sluice-run".into(),
                message_timeout: Duration::from_secs(30),
            })?;
            (p.clone(), Arc::new(KafkaSink::new(p)))
        }
        None => {
            tracing::info!(
                "no KAFKA_BROKERS: topics are on the embedded transport in the database"
            );
            // The front door publishes through its own transactions, so an SDK's answer never
            // waits behind a stage's batch of a thousand messages; the stages' publisher runs
            // with them, in the background.
            let stage_publisher = {
                let _in = background.handle().enter();
                sluice_core::queue::Publisher::start(Db::new(url, 2))
            };
            (
                Producer::queue(stage_publisher),
                Arc::new(QueueSink::new(sluice_core::queue::Publisher::start_named(
                    Db::new(url, 2),
                    "sdk",
                ))),
            )
        }
    };

    // The three consumer stages, each with its own health (progress and stalls), sharing the
    // process's shutdown and producer.
    let mut stages = tokio::task::JoinSet::new();
    // Each stage's health is part of the listener's /health/live and /health/ready.
    let mut components: Vec<(String, Arc<Health>)> = Vec::new();
    let mut start = |defaults: StageDefaults, common: CommonArgs| Context {
        stage: defaults,
        db: Some(Db::new(url, 8)),
        common,
        settings: settings.clone(),
        health: {
            let h = Health::new(Duration::from_secs(3600));
            components.push((defaults.name.to_owned(), h.clone()));
            h
        },
        shutdown: shutdown.clone(),
        metrics_addr: args.listen,
    };
    {
        let ctx = start(INGEST, ingest);
        let producer = producer.clone();
        stages.spawn_on(
            async move {
                let binary = ingest_consumer::binary(&ctx.common, Vec::new());
                consumer_binary::run(binary, &ctx, Some(producer), ingest_consumer::build)
                    .await
                    .context("ingest-consumer")
            },
            background.handle(),
        );
    }
    {
        let ctx = start(FEEDBACK, stage_args(&FEEDBACK, url, args)?);
        let producer = producer.clone();
        stages.spawn_on(
            async move {
                let binary: Binary = feedback_worker::binary(&ctx.common);
                consumer_binary::run(binary, &ctx, Some(producer), feedback_worker::build)
                    .await
                    .context("feedback-worker")
            },
            background.handle(),
        );
    }
    {
        let ctx = start(OCCURRENCE, stage_args(&OCCURRENCE, url, args)?);
        let producer = producer.clone();
        stages.spawn_on(
            async move {
                let binary = occurrence_consumer::binary(&ctx.common);
                // Two lanes: at 2,000 events/s the SDK endpoints' p99 was 18.7-29.5 ms with
                // two (median 23), 27-29 ms with four, 42-45 ms with eight (BENCHMARKS.md).
                let build =
                    |s: consumer_binary::Started<'_>| occurrence_consumer::build_with_lanes(s, 2);
                consumer_binary::run(binary, &ctx, Some(producer), build)
                    .await
                    .context("occurrence-consumer")
            },
            background.handle(),
        );
    }

    let objects = Objects::from_url(&args.object_store_url).ok();
    let base_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen))
        .trim_end_matches('/')
        .to_owned();
    // Webhook delivery.
    let webhooks = background.handle().spawn(sluice_api::webhooks::run(
        db.clone(),
        sluice_api::webhooks::Settings {
            concurrency: 4,
            timeout: Duration::from_secs(10),
            give_up_after: Duration::from_secs(86_400),
            poll: Duration::from_millis(500),
            base_url: base_url.clone(),
        },
        shutdown.clone(),
    ));
    // Cleanup, hourly.
    let cleanup = (!args.no_cleanup)
        .then(|| {
            let objects = match Objects::from_url(&args.object_store_url) {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(error = %e, "cleanup cannot reach the attachment storage: it does not run");
                    return None;
                }
            };
            let cleanup_args = crate::cleanup::default_args(&args.object_store_url);
            let (db, health, shutdown) = (Db::new(url, 2), health.clone(), shutdown.clone());
            Some(background.handle().spawn(async move {
                crate::cleanup::rounds(&db, &objects, &cleanup_args, &health, &shutdown).await;
            }))
        })
        .flatten();

    let edge_state = Arc::new(sluice_edge::State::new(
        db.clone(),
        sink,
        Topics {
            events: topics.events_topic.clone(),
            attachments: topics.attachments_topic.clone(),
            feedback: topics.feedback_topic.clone(),
        },
        topics.outcomes_topic.clone(),
        topics.outcomes_billing_topic.clone(),
        args.limits.clone(),
        args.memory_budget_bytes,
    ));
    let api = sluice_api::router(
        Arc::new(sluice_api::State {
            db: db.clone(),
            objects,
            base_url,
            components,
        }),
        sluice_api::Limits {
            request_timeout: Duration::from_secs(30),
            max_concurrent: 128,
        },
    );
    let sdk = sluice_edge::sdk_routes(edge_state).layer(
        ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(
                crate::edge::overloaded,
            ))
            .load_shed()
            .concurrency_limit(512)
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(60),
            )),
    );
    let app = api.merge(sdk);
    tracing::info!(listen = %args.listen, "sluice run: SDK endpoints, web API, metrics and health listening");
    let served = producer_shim::http::serve_router(
        args.listen,
        app,
        Duration::from_secs(10),
        shutdown.clone(),
    );
    let result = tokio::select! {
        r = served => r,
        Some(r) = stages.join_next() => {
            // A stage stopped on its own: stop everything, so a supervisor restarts the process.
            shutdown.cancel();
            match r {
                Ok(Ok(())) => Err(anyhow::anyhow!("a stage stopped")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a stage failed: {e}")),
            }
        }
    };
    shutdown.cancel();
    while let Some(r) = stages.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!(error = format!("{e:#}"), "stage stopped with an error");
        }
    }
    let _ = webhooks.await;
    if let Some(c) = cleanup {
        let _ = c.await;
    }
    let _ = producer.flush(Duration::from_secs(10));
    result
}

/// The nice value of the background threads: the kernel then gives the front door's threads
/// (SDK answers, the web API) the processor first when the machine is busy, and the stages
/// take the rest.
const BACKGROUND_NICE: i32 = 10;

/// The runtime of the stages, their publisher, webhook delivery and cleanup: its own threads
/// at a lower priority, so a batch being processed never holds an SDK's answer (on one shared
/// runtime, a worker thread busy with a batch delays every request queued on it).
struct Background {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Background {
    fn start() -> anyhow::Result<Background> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("sluice-background")
            .on_thread_start(|| {
                // Per thread on Linux; elsewhere the threads keep the process's priority.
                if let Err(e) = rustix::process::setpriority_process(None, BACKGROUND_NICE) {
                    tracing::debug!(error = %e, "cannot lower a background thread's priority");
                }
            })
            .enable_all()
            .build()
            .context("cannot start the background runtime")?;
        Ok(Background {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

/// How long the background runtime's last blocking calls (a database call still under way)
/// may take to return at shutdown.
const BACKGROUND_SHUTDOWN: Duration = Duration::from_secs(10);

impl Drop for Background {
    fn drop(&mut self) {
        // Its threads are joined before the process exits: a thread still inside a database
        // call while the process runs its exit handlers could crash it. A runtime cannot be
        // shut down with a wait from async code, hence the plain thread.
        if let Some(r) = self.runtime.take() {
            let joined = std::thread::Builder::new()
                .name("sluice-background-stop".into())
                .spawn(move || r.shutdown_timeout(BACKGROUND_SHUTDOWN))
                .map(|t| t.join().is_ok());
            if !matches!(joined, Ok(true)) {
                tracing::warn!("the background runtime did not stop cleanly");
            }
        }
    }
}
