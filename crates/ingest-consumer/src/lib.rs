//! `ingest-consumer`: consumes Relay's `ingest-events` and `ingest-attachments`.

mod attachment;
mod chunk;
mod context;
mod dispatch;
mod event;
mod event_ahead;
mod event_payload;
mod grouping;
mod limits;
mod metrics;
mod shed;
mod user_report;

use clap::Parser;
use sluice_core::cli::CommonArgs;
use sluice_core::consumer_binary::{self, Binary, Command, Started};
use sluice_core::issues::project;
use sluice_core::kafka::consumer::Stage;
use sluice_core::objects::Objects;
use sluice_core::outcomes::Outcomes;
use sluice_core::stages::{ingest_topics, INGEST};
use sluice_core::storage::Db;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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

/// Database connections of the stage.
const DB_POOL: u32 = 32;

/// How often expired attachment chunks are deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

fn spawn_sweeper(db: Db, shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        loop {
            match chunk::sweep(&db).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::count("attachment_chunk", "expired");
                    tracing::info!(deleted = n, "expired attachment chunks deleted");
                }
                Err(e) => tracing::warn!(error = %e, "attachment chunk sweep failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            }
        }
    });
}

/// The binary's entry point (also reached through `sluice` when it is invoked by this name).
pub fn main() -> ExitCode {
    let cli: Cli = sluice_core::cli::parse(&INGEST);
    let binary = binary(&cli.common, cli.input_topics);
    consumer_binary::main(binary, cli.common, cli.command, build)
}

/// What the stage reads (`inputs`, or both ingest topics when empty) and needs.
pub fn binary(common: &CommonArgs, inputs: Vec<String>) -> Binary {
    let inputs = if inputs.is_empty() {
        vec![
            common.topics.events_topic.clone(),
            common.topics.attachments_topic.clone(),
        ]
    } else {
        inputs
    };
    Binary {
        defaults: INGEST,
        topics: ingest_topics(common, &inputs),
        inputs,
    }
}

/// The stage, in a started process.
pub fn build(s: Started<'_>) -> anyhow::Result<impl Stage> {
    let common = &s.ctx.common;
    let objects = Objects::from_url(&common.object_store_url)?;
    // The stage's own pool: attachments and reports run many messages at once.
    let url = common
        .database_url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("the database is not configured"))?;
    let db = Db::new(url, DB_POOL);
    let topics = &common.topics;
    let limits = &s.ctx.settings.attachments;
    let deps = context::Deps {
        db: db.clone(),
        objects,
        producer: s.producer.clone(),
        outcomes: Outcomes::new(s.producer, topics, db.clone()),
        settings: s.ctx.settings.clone(),
        projects: project::Shared::new(db.clone()),
        limiter: limits::AttachmentLimiter::new(
            limits.project_per_sec_limit,
            limits.project_per_5_minute_limit,
        ),
        feedback_topic: topics.feedback_topic.clone(),
        occurrences_topic: topics.occurrences_topic.clone(),
        bodies: context::body_budget(),
        // Each member of the group in this process writes as many at once as one alone would.
        writes_ahead: Arc::new(tokio::sync::Semaphore::new(
            attachment::PUT_CONCURRENCY * usize::from(common.consumers.max(1)),
        )),
        inserted: Default::default(),
    };
    spawn_sweeper(db, s.ctx.shutdown.clone());
    Ok(dispatch::IngestStage {
        deps: Arc::new(deps),
        prepared: Default::default(),
    })
}
