//! `occurrence-consumer`: issue occurrences and status changes → issue groups.

mod batch;

use sluice_core::consumer_binary::{self, Binary, Cli};
use sluice_core::outcomes::Outcomes;
use sluice_core::stages::{occurrence_topics, OCCURRENCE};
use std::process::ExitCode;

/// The binary's entry point (also reached through `sluice` when it is invoked by this name).
pub fn main() -> ExitCode {
    let cli: Cli = sluice_core::cli::parse(&OCCURRENCE);
    let binary = Binary {
        defaults: OCCURRENCE,
        inputs: vec![cli.common.topics.occurrences_topic.clone()],
        topics: occurrence_topics(&cli.common),
    };
    consumer_binary::main(binary, cli.common, cli.command, |s| {
        Ok(batch::OccurrenceStage {
            outcomes: Outcomes::new(s.producer, &s.ctx.common.topics, s.db.clone()),
            settings: s.ctx.settings.issues.clone(),
            db: s.db,
        })
    })
}
