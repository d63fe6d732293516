//! `ingest-consumer`: consumes Relay's `ingest-events` and `ingest-attachments`.

use clap::{Parser, Subcommand};
use sluice_core::app::{self, Context, Needs};
use sluice_core::cli::CommonArgs;
use sluice_core::stages::{ingest_topics, INGEST};
use std::process::ExitCode;

/// Turns Relay's events, attachments and user reports into stored events, attachments and user
/// reports, error occurrences and shimmed feedback.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Input topics, comma-separated (default: the events and attachments topics).
    #[arg(
        long = "topics",
        env = "INPUT_TOPICS",
        global = true,
        value_delimiter = ','
    )]
    input_topics: Vec<String>,
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
    let cli: Cli = sluice_core::cli::parse(&INGEST);
    app::block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Migrate => app::migrate(&cli.common).await,
            Command::Run => {
                let inputs = if cli.input_topics.is_empty() {
                    vec![
                        cli.common.topics.events_topic.clone(),
                        cli.common.topics.attachments_topic.clone(),
                    ]
                } else {
                    cli.input_topics
                };
                let needs = Needs {
                    kafka: true,
                    database: true,
                    topics: ingest_topics(&cli.common, &inputs),
                };
                Context::start(INGEST, cli.common, needs)
                    .await?
                    .idle_until_shutdown()
                    .await
            }
        }
    })
}
