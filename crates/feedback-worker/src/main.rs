//! `feedback-worker`.

use clap::{Parser, Subcommand};
use sluice_core::app::{self, Context, Needs};
use sluice_core::cli::CommonArgs;
use sluice_core::stages::{feedback_topics, FEEDBACK};
use std::process::ExitCode;

/// Turns feedback events into feedback issues, with optional spam detection.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume and process (the default).
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli: Cli = sluice_core::cli::parse(&FEEDBACK);
    app::block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Migrate => app::migrate(&cli.common).await,
            Command::Run => {
                let needs = Needs {
                    kafka: true,
                    database: true,
                    topics: feedback_topics(&cli.common),
                };
                Context::start(FEEDBACK, cli.common, needs)
                    .await?
                    .idle_until_shutdown()
                    .await
            }
        }
    })
}
