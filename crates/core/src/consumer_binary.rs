//! What every consumer binary does around its stage: the `run` and `migrate` subcommands,
//! start-up (settings, logs, metrics and health, the topic check), a producer for its outputs
//! and outcomes, the consumer runtime until shutdown, and the final flush. A binary's `main`
//! parses its command line and hands its stage builder to [`main`].

use crate::app::{self, Context, Needs};
use crate::cli::{CommonArgs, StageDefaults, Transport};
use crate::kafka::consumer::{self, RuntimeConfig, Stage};
use crate::kafka::producer::{Producer, ProducerConfig};
use crate::storage::Db;
use std::process::ExitCode;
use std::time::Duration;

/// The subcommands of a consumer binary.
#[derive(clap::Subcommand, Debug, Clone, Copy)]
pub enum Command {
    /// Consume and process (the default).
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
}

/// The command line of a consumer binary without flags of its own.
#[derive(clap::Parser, Debug)]
#[command(version)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How long a produce may wait for the broker's acknowledgement before it counts as failed.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the producer may take to deliver what is queued at exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// What a stage builder gets: the started context, the process's database pool and producer.
pub struct Started<'a> {
    pub ctx: &'a Context,
    pub db: Db,
    pub producer: Producer,
}

/// A consumer binary: what it reads, every topic it needs, and its defaults.
pub struct Binary {
    pub defaults: StageDefaults,
    pub inputs: Vec<String>,
    /// Inputs, DLQs and outputs: checked at start-up.
    pub topics: Vec<String>,
}

/// Runs `command` (default `run`): `migrate`, or consume with the stage `build` returns.
pub fn main<S, F>(
    binary: Binary,
    common: CommonArgs,
    command: Option<Command>,
    build: F,
) -> ExitCode
where
    S: Stage,
    F: FnOnce(Started<'_>) -> anyhow::Result<S>,
{
    app::block_on(async move {
        match command.unwrap_or(Command::Run) {
            Command::Migrate => app::migrate(&common).await,
            Command::Run => {
                let needs = Needs {
                    kafka: common.transport == Transport::Kafka,
                    database: true,
                    topics: binary.topics.clone(),
                    schema: true,
                };
                let ctx = Context::start(binary.defaults, common, needs).await?;
                run(binary, &ctx, None, build).await
            }
        }
    })
}

/// Runs the stage `build` returns in a started context until shutdown, on the context's
/// transport: Kafka, or the embedded transport in the context's database. `producer` is the
/// process's producer when it already has one (`sluice run` shares one between its stages).
pub async fn run<S, F>(
    binary: Binary,
    ctx: &Context,
    producer: Option<Producer>,
    build: F,
) -> anyhow::Result<()>
where
    S: Stage,
    F: FnOnce(Started<'_>) -> anyhow::Result<S>,
{
    let db = ctx
        .db
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the database is not configured"))?;
    let brokers = ctx.common.kafka_brokers.clone().unwrap_or_default();
    let config = RuntimeConfig::from_args(&ctx.common, &brokers, binary.inputs);
    match ctx.common.transport {
        Transport::Kafka => {
            let producer = match producer {
                Some(p) => p,
                None => Producer::new(&ProducerConfig {
                    brokers,
                    client_id: binary.defaults.name.into(),
                    message_timeout: PRODUCE_TIMEOUT,
                })?,
            };
            let stage = build(Started {
                ctx,
                db,
                producer: producer.clone(),
            })?;
            consumer::run(stage, config, ctx.health.clone(), ctx.shutdown.clone()).await?;
            producer.flush(FLUSH_TIMEOUT)?;
        }
        Transport::Postgres => {
            let url = ctx
                .common
                .database_url
                .clone()
                .ok_or_else(|| anyhow::anyhow!("the database is not configured"))?;
            let producer = producer
                .unwrap_or_else(|| Producer::queue(crate::queue::Publisher::start(db.clone())));
            let stage = build(Started {
                ctx,
                db,
                producer: producer.clone(),
            })?;
            tracing::info!(
                stage = binary.defaults.name,
                "consuming from the embedded transport (PostgreSQL)"
            );
            crate::queue::run(
                stage,
                config,
                url,
                producer,
                ctx.health.clone(),
                ctx.shutdown.clone(),
            )
            .await?;
        }
    }
    Ok(())
}
