//! `producer-shim`: how other services raise issues, over HTTP or from NDJSON files.

pub mod http;
mod send;
mod submit;

use clap::{Parser, Subcommand};
use sluice_core::app::{self, Context, Needs};
use sluice_core::cli::CommonArgs;
use sluice_core::kafka::producer::{Producer, ProducerConfig};
use sluice_core::stages::{shim_topics, SHIM};
use sluice_core::storage::Db;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Accepts occurrences and status changes and produces them to the occurrences topic, or
/// processes them directly when Kafka is not configured or unavailable.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Address of the HTTP API (`serve`).
    #[arg(long, env = "LISTEN", global = true, default_value = "127.0.0.1:8300")]
    listen: SocketAddr,
    /// Bearer token required on every HTTP request (unset = no authentication).
    #[arg(long, env = "AUTH_TOKEN", global = true, hide_env_values = true)]
    auth_token: Option<String>,
    /// Largest request body accepted (413 above).
    #[arg(long, env = "MAX_BODY_BYTES", global = true, default_value_t = 10 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Seconds to receive a request's headers; an idle connection is closed after as long.
    #[arg(long, env = "HEADER_TIMEOUT_SECS", global = true, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds to receive a request's body (408 after).
    #[arg(long, env = "BODY_TIMEOUT_SECS", global = true, default_value_t = 30)]
    body_timeout_secs: u64,
    /// Seconds to answer a request (503 after).
    #[arg(
        long,
        env = "REQUEST_TIMEOUT_SECS",
        global = true,
        default_value_t = 60
    )]
    request_timeout_secs: u64,
    /// Requests handled at once; beyond, 503 with `Retry-After`.
    #[arg(
        long,
        env = "MAX_CONCURRENT_REQUESTS",
        global = true,
        default_value_t = 256
    )]
    max_concurrent_requests: usize,
    /// How long a send may wait for the broker before the item is processed directly
    /// (the producer's message.timeout.ms).
    #[arg(
        long,
        env = "FALLBACK_AFTER_MS",
        global = true,
        default_value_t = 5_000
    )]
    fallback_after_ms: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Deliver NDJSON occurrences and status changes from FILE, or stdin with `-`.
    Send {
        /// NDJSON file, or `-` for stdin.
        file: String,
    },
    /// Apply pending database migrations and exit.
    Migrate,
}

fn producer(cli: &Cli) -> anyhow::Result<Option<Producer>> {
    cli.common
        .kafka_brokers
        .as_ref()
        .map(|brokers| {
            Producer::new(&ProducerConfig {
                brokers: brokers.clone(),
                client_id: "producer-shim".into(),
                message_timeout: Duration::from_millis(cli.fallback_after_ms.max(1)),
            })
        })
        .transpose()
        .map_err(Into::into)
}

/// The binary's entry point (also reached through `sluice` when it is invoked by this name).
pub fn main() -> ExitCode {
    let cli: Cli = sluice_core::cli::parse(&SHIM);
    let mut exit = ExitCode::SUCCESS;
    let result = app::block_on(async {
        match cli.command {
            Some(Command::Migrate) => app::migrate(&cli.common).await,
            Some(Command::Send { ref file }) => {
                sluice_core::logging::init(cli.common.log_format, &cli.common.log_level);
                let settings = sluice_core::config::Settings::load(cli.common.config.as_deref())?;
                app::install_kafka_options(&settings, &cli.common)?;
                let submitter = submit::Submitter {
                    producer: producer(&cli)?,
                    topic: cli.common.topics.occurrences_topic.clone(),
                    db: cli.common.database_url.as_deref().map(|u| Db::new(u, 4)),
                    issue_settings: settings.issues,
                };
                let summary = send::run(file, &submitter).await?;
                if let Some(p) = &submitter.producer {
                    p.flush(Duration::from_secs(10))?;
                }
                send::print(&summary);
                if !summary.ok() {
                    exit = ExitCode::FAILURE;
                }
                Ok(())
            }
            None | Some(Command::Serve) => {
                if cli
                    .auth_token
                    .as_deref()
                    .is_some_and(|t| t.trim().is_empty())
                {
                    anyhow::bail!(
                        "--auth-token (AUTH_TOKEN) is set but empty: set a token, or unset it to serve without authentication"
                    );
                }
                if !cli.listen.ip().is_loopback() && cli.auth_token.is_none() {
                    tracing::warn!(listen = %cli.listen, "listening beyond loopback without --auth-token");
                }
                let topics = if cli.common.kafka_brokers.is_some() {
                    shim_topics(&cli.common)
                } else {
                    Vec::new()
                };
                let needs = Needs {
                    kafka: false,
                    database: true,
                    topics,
                    schema: true,
                };
                let ctx = Context::start(SHIM, cli.common.clone(), needs).await?;
                // After start-up, which installs the Kafka client options.
                let producer = producer(&cli)?;
                if producer.is_none() {
                    tracing::info!("Kafka is not configured: every item is processed directly");
                }
                let submitter = submit::Submitter {
                    producer: producer.clone(),
                    topic: ctx.common.topics.occurrences_topic.clone(),
                    db: ctx.db.clone(),
                    issue_settings: ctx.settings.issues.clone(),
                };
                let api = http::Api {
                    submitter,
                    auth_token: cli.auth_token.clone(),
                };
                let limits = http::Limits {
                    max_body: cli.max_body_bytes,
                    header_timeout: Duration::from_secs(cli.header_timeout_secs.max(1)),
                    body_timeout: Duration::from_secs(cli.body_timeout_secs.max(1)),
                    request_timeout: Duration::from_secs(cli.request_timeout_secs.max(1)),
                    max_concurrent: cli.max_concurrent_requests,
                };
                http::serve(cli.listen, api, limits, ctx.shutdown.clone()).await?;
                if let Some(p) = producer {
                    p.flush(Duration::from_secs(10))?;
                }
                tracing::info!("stopped");
                Ok(())
            }
        }
    });
    if result != ExitCode::SUCCESS {
        return result;
    }
    exit
}
