//! `feedback-worker`: user feedback → feedback issues, with optional spam detection.

mod create_feedback;
mod spam;
mod stage;

use clap::{Parser, Subcommand};
use sluice_core::app::{self, Context, Needs};
use sluice_core::cli::CommonArgs;
use sluice_core::kafka::consumer::{self, RuntimeConfig};
use sluice_core::kafka::producer::{Producer, ProducerConfig};
use sluice_core::outcomes::Outcomes;
use sluice_core::stages::{feedback_topics, FEEDBACK};
use std::process::ExitCode;
use std::time::Duration;

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
                let brokers = cli.common.kafka_brokers.clone().unwrap_or_default();
                let config = RuntimeConfig::from_args(
                    &cli.common,
                    &brokers,
                    vec![cli.common.topics.feedback_topic.clone()],
                );
                let ctx = Context::start(FEEDBACK, cli.common, needs).await?;
                let db = ctx
                    .db
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("the database is not configured"))?;
                let producer = Producer::new(&ProducerConfig {
                    brokers: brokers.clone(),
                    client_id: "feedback-worker".into(),
                    message_timeout: Duration::from_secs(30),
                })?;
                let topics = &ctx.common.topics;
                let stage = stage::FeedbackStage {
                    db: db.clone(),
                    producer: producer.clone(),
                    occurrences_topic: topics.occurrences_topic.clone(),
                    outcomes: Outcomes::new(producer.clone(), topics, db.clone()),
                    settings: ctx.settings.clone(),
                    http: reqwest::Client::new(),
                    projects: sluice_core::issues::project::Shared::new(db.clone()),
                };
                consumer::run(stage, config, ctx.health.clone(), ctx.shutdown.clone()).await?;
                producer.flush(Duration::from_secs(10))?;
                Ok(())
            }
        }
    })
}
