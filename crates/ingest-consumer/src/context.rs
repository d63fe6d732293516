//! What every handler of the ingest stage shares: its dependencies and the small helpers that
//! turn their failures into verdicts.

use crate::limits;
use sluice_core::config::Settings;
use sluice_core::failure::Classify;
use sluice_core::issues::project;
use sluice_core::kafka::consumer::Verdict;
use sluice_core::kafka::producer::Producer;
use sluice_core::messages::{DlqReason, OutcomeMessage, Rejection};
use sluice_core::objects::Objects;
use sluice_core::outcomes::Outcomes;
use sluice_core::storage::Db;
use std::sync::Arc;

/// Everything the handlers use.
pub struct Deps {
    pub db: Db,
    pub objects: Objects,
    pub producer: Producer,
    pub outcomes: Outcomes,
    pub settings: Arc<Settings>,
    pub projects: project::Shared,
    pub limiter: limits::AttachmentLimiter,
    pub feedback_topic: String,
    pub occurrences_topic: String,
    /// Attachment bodies read back from Postgres hold permits of this budget (KiB) until saved.
    pub bodies: Arc<tokio::sync::Semaphore>,
    /// Object writes started ahead of their batch (`attachment::write_ahead`) run under these
    /// permits, granted in the order asked: a batch's writes go before the next batch's.
    pub writes_ahead: Arc<tokio::sync::Semaphore>,
    /// How far each partition's error events are stored: an insert ahead waits for its turn.
    pub inserted: crate::event_ahead::InsertedUpTo,
}

/// Bytes of attachment bodies read from stored chunks that the stage holds at once.
pub const BODY_BUDGET_BYTES: usize = 32 << 20;

/// The body budget of one process: [`BODY_BUDGET_BYTES`] in KiB permits.
pub fn body_budget() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET_BYTES >> 10))
}

/// `Err` carries the verdict that ends a handler early (an outage, a retry, a rejection).
pub type Step<T> = Result<T, Verdict>;

/// Bad input: dead-lettered with `reason`.
pub fn reject(reason: DlqReason, detail: impl Into<String>) -> Verdict {
    Verdict::Reject(Rejection::new(reason, detail))
}

/// Emits `outcome` once per natural `key` (see `Outcomes::emit_once`).
pub async fn emit(deps: &Deps, key: &str, outcome: &OutcomeMessage) -> Step<()> {
    deps.outcomes
        .emit_once(key, outcome)
        .await
        .map(|_| ())
        .map_err(|e| e.verdict())
}
