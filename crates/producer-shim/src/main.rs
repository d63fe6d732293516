//! `producer-shim`: how other services raise issues over HTTP or from NDJSON files.

use clap::{Parser, Subcommand};
use sluice_core::app::{self, Context, Needs};
use sluice_core::cli::CommonArgs;
use sluice_core::stages::{shim_topics, SHIM};
use std::net::SocketAddr;
use std::process::ExitCode;

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli: Cli = sluice_core::cli::parse(&SHIM);
    app::block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Migrate => app::migrate(&cli.common).await,
            Command::Serve => {
                if !cli.listen.ip().is_loopback() && cli.auth_token.is_none() {
                    tracing::warn!(listen = %cli.listen, "listening beyond loopback without --auth-token");
                }
                let needs = Needs {
                    kafka: false,
                    database: true,
                    topics: shim_topics(&cli.common),
                };
                Context::start(SHIM, cli.common, needs)
                    .await?
                    .idle_until_shutdown()
                    .await
            }
        }
    })
}
