//! `feedback-worker`: user feedback → feedback issues, with optional spam detection.

mod create_feedback;
mod plan;
mod spam;
mod stage;

use sluice_core::cli::CommonArgs;
use sluice_core::consumer_binary::{self, Binary, Cli, Started};
use sluice_core::kafka::consumer::Stage;
use sluice_core::outcomes::Outcomes;
use sluice_core::stages::{feedback_topics, FEEDBACK};
use std::process::ExitCode;

/// What the stage reads and needs.
pub fn binary(common: &CommonArgs) -> Binary {
    Binary {
        defaults: FEEDBACK,
        inputs: vec![common.topics.feedback_topic.clone()],
        topics: feedback_topics(common),
    }
}

/// The stage, in a started process.
pub fn build(s: Started<'_>) -> anyhow::Result<impl Stage> {
    let topics = &s.ctx.common.topics;
    Ok(stage::FeedbackStage {
        db: s.db.clone(),
        producer: s.producer.clone(),
        occurrences_topic: topics.occurrences_topic.clone(),
        outcomes: Outcomes::new(s.producer, topics, s.db.clone()),
        settings: s.ctx.settings.clone(),
        http: reqwest::Client::new(),
        projects: sluice_core::issues::project::Shared::new(s.db),
        prepared: Default::default(),
    })
}

/// The binary's entry point (also reached through `sluice` when it is invoked by this name).
pub fn main() -> ExitCode {
    let cli: Cli = sluice_core::cli::parse(&FEEDBACK);
    consumer_binary::main(binary(&cli.common), cli.common, cli.command, build)
}
