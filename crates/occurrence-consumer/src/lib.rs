//! `occurrence-consumer`: issue occurrences and status changes → issue groups.

mod batch;

use sluice_core::cli::CommonArgs;
use sluice_core::consumer_binary::{self, Binary, Cli, Started};
use sluice_core::kafka::consumer::Stage;
use sluice_core::outcomes::Outcomes;
use sluice_core::stages::{occurrence_topics, OCCURRENCE};
use std::process::ExitCode;

/// The binary's entry point (also reached through `sluice` when it is invoked by this name).
pub fn main() -> ExitCode {
    let cli: Cli = sluice_core::cli::parse(&OCCURRENCE);
    consumer_binary::main(binary(&cli.common), cli.common, cli.command, build)
}

/// What the stage reads and needs.
pub fn binary(common: &CommonArgs) -> Binary {
    Binary {
        defaults: OCCURRENCE,
        inputs: vec![common.topics.occurrences_topic.clone()],
        topics: occurrence_topics(common),
    }
}

/// The stage, in a started process, with [`batch::LANES`] lanes per batch.
pub fn build(s: Started<'_>) -> anyhow::Result<impl Stage> {
    build_with_lanes(s, batch::LANES)
}

/// The stage with `lanes` concurrent transactions per batch (`sluice run` uses fewer, so its
/// stages leave more of the database to the SDK endpoints' publish commits).
pub fn build_with_lanes(s: Started<'_>, lanes: usize) -> anyhow::Result<impl Stage> {
    Ok(batch::OccurrenceStage {
        outcomes: Outcomes::new(s.producer, &s.ctx.common.topics, s.db.clone()),
        settings: s.ctx.settings.issues.clone(),
        db: s.db,
        lanes: lanes.max(1),
    })
}
