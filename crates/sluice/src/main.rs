//! `sluice`: the operator command. It applies migrations, provisions organizations, projects,
//! API tokens and webhook subscriptions, serves the web API (`api`), removes expired data
//! (`cleanup`), serves the SDK front door (`edge`) and inspects and replays dead letters (`dlq`).
//! Each subcommand takes `--database-url` / `DATABASE_URL` where it needs the database.
//!
//! It also holds the four stages: invoked under a stage's name (a link named `ingest-consumer`,
//! `feedback-worker`, `occurrence-consumer` or `producer-shim`), it is that stage, with the same
//! flags and behaviour as the stage's own binary. The container image ships this one binary and
//! the four links, which keeps it small.

mod api;
mod cleanup;
mod dlq;
mod edge;
mod kafka_args;
mod keys;
mod resend;
mod run;
mod tenancy;
mod tokens;
mod webhook;

use clap::{Parser, Subcommand};
use sluice_core::cli::LogFormat;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "Operate a sluice installation.")]
struct Cli {
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/sluice.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log filter (tracing's EnvFilter syntax).
    #[arg(
        long,
        env = "LOG_LEVEL",
        global = true,
        default_value = "info,rdkafka=off,librdkafka=off"
    )]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply pending database migrations.
    Migrate,
    /// Organizations.
    Org {
        #[command(subcommand)]
        command: tenancy::OrgCommand,
    },
    /// Projects.
    Project {
        #[command(subcommand)]
        command: tenancy::ProjectCommand,
    },
    /// API bearer tokens.
    Token {
        #[command(subcommand)]
        command: tokens::Command,
    },
    /// Client keys (DSNs) that SDKs send events with.
    Key {
        #[command(subcommand)]
        command: keys::Command,
    },
    /// Webhook subscriptions.
    Webhook {
        #[command(subcommand)]
        command: webhook::Command,
    },
    /// Serve Sentry's web API (/api/0/) and deliver webhooks.
    Api(api::Args),
    /// Serve the SDK endpoints (/api/{project_id}/envelope/ and /store/) in front of the
    /// ingest topics.
    Edge(edge::Args),
    /// Run everything in one process: SDK endpoints and web API on one listener, the stages,
    /// webhook delivery and cleanup; on Kafka when KAFKA_BROKERS is set, else on the embedded
    /// transport in the database.
    Run(run::Args),
    /// Remove expired events, occurrences, attachments (rows and objects), user reports, groups,
    /// idempotency records and counters.
    Cleanup(cleanup::Args),
    /// Inspect dead letters and send them back to their original topic.
    Dlq {
        #[command(subcommand)]
        command: dlq::Command,
    },
}

impl Cli {
    fn database_url(&self) -> anyhow::Result<&str> {
        self.database_url.as_deref().ok_or_else(|| {
            anyhow::anyhow!("the database is not configured: set --database-url or DATABASE_URL")
        })
    }
}

/// The stage this process was invoked as (the file name it was started under), if any.
fn invoked_stage() -> Option<fn() -> ExitCode> {
    let arg0 = std::env::args_os().next()?;
    let name = std::path::Path::new(&arg0)
        .file_name()?
        .to_str()?
        .to_owned();
    match name.as_str() {
        "ingest-consumer" => Some(ingest_consumer::main),
        "feedback-worker" => Some(feedback_worker::main),
        "occurrence-consumer" => Some(occurrence_consumer::main),
        "producer-shim" => Some(producer_shim::main),
        _ => None,
    }
}

fn main() -> ExitCode {
    if let Some(stage) = invoked_stage() {
        return stage();
    }
    let cli = Cli::parse();
    sluice_core::logging::init(cli.log_format, &cli.log_level);
    sluice_core::app::block_on(async move {
        match &cli.command {
            Command::Migrate => {
                let url = cli.database_url()?.to_owned();
                let applied =
                    tokio::task::spawn_blocking(move || sluice_core::storage::migrate(&url))
                        .await??;
                if applied.is_empty() {
                    println!("schema is current");
                }
                for version in applied {
                    println!("applied {version}");
                }
                Ok(())
            }
            Command::Org { command } => tenancy::org(cli.database_url()?, command).await,
            Command::Project { command } => tenancy::project(cli.database_url()?, command).await,
            Command::Token { command } => tokens::run(cli.database_url()?, command).await,
            Command::Key { command } => keys::run(cli.database_url()?, command).await,
            Command::Webhook { command } => webhook::run(cli.database_url()?, command).await,
            Command::Api(args) => api::run(cli.database_url()?, args).await,
            Command::Edge(args) => edge::run(cli.database_url()?, args).await,
            Command::Run(args) => run::run(cli.database_url()?, args).await,
            Command::Cleanup(args) => cleanup::run(cli.database_url()?, args).await,
            Command::Dlq { command } => dlq::run(command, cli.database_url.as_deref()).await,
        }
    })
}
