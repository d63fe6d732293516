//! `occurrence-consumer`: issue occurrences and status changes → issue groups.

mod batch;

use clap::{Parser, Subcommand};
use sluice_core::app::{self, Context, Needs};
use sluice_core::cli::CommonArgs;
use sluice_core::kafka::consumer::{self, RuntimeConfig};
use sluice_core::kafka::producer::{Producer, ProducerConfig};
use sluice_core::outcomes::Outcomes;
use sluice_core::stages::{occurrence_topics, OCCURRENCE};
use std::process::ExitCode;
use std::time::Duration;

/// Turns issue occurrences and status changes into issue groups.
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
    let cli: Cli = sluice_core::cli::parse(&OCCURRENCE);
    app::block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Migrate => app::migrate(&cli.common).await,
            Command::Run => {
                let needs = Needs {
                    kafka: true,
                    database: true,
                    topics: occurrence_topics(&cli.common),
                };
                let brokers = cli.common.kafka_brokers.clone().unwrap_or_default();
                let config = RuntimeConfig::from_args(
                    &cli.common,
                    &brokers,
                    vec![cli.common.topics.occurrences_topic.clone()],
                );
                let ctx = Context::start(OCCURRENCE, cli.common, needs).await?;
                let db = ctx
                    .db
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("the database is not configured"))?;
                let producer = Producer::new(&ProducerConfig {
                    brokers: brokers.clone(),
                    client_id: "occurrence-consumer".into(),
                    message_timeout: Duration::from_secs(30),
                })?;
                let stage = batch::OccurrenceStage {
                    outcomes: Outcomes::new(producer.clone(), &ctx.common.topics, db.clone()),
                    settings: ctx.settings.issues.clone(),
                    db,
                };
                consumer::run(stage, config, ctx.health.clone(), ctx.shutdown.clone()).await?;
                producer.flush(Duration::from_secs(10))?;
                Ok(())
            }
        }
    })
}
