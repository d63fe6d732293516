//! The occurrence consumer's stage: a batch is decoded and split into lanes by raw
//! `fingerprint[0]` (every message of a fingerprint in one lane, in arrival order). Lanes run
//! concurrently, each as one transaction with a savepoint per message, so a batch costs a few
//! commits instead of one per message.

use prometheus::{IntCounterVec, Opts};
use sluice_core::issues::{self, IssueError};
use sluice_core::kafka::consumer::{Msg, Outcome, Stage};
use sluice_core::messages::{DlqReason, IssuePlatformMessage};
use sluice_core::storage::Db;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// Lanes (concurrent transactions) per batch; bounded by the database pool.
pub const CONCURRENCY: usize = 8;

fn results() -> &'static IntCounterVec {
    static M: OnceLock<IntCounterVec> = OnceLock::new();
    M.get_or_init(|| {
        sluice_core::metrics::counter_vec(
            Opts::new(
                "sluice_occurrences_processed_total",
                "Issue-platform messages applied, by result.",
            ),
            &["result"],
        )
    })
}

/// The stage.
pub struct OccurrenceStage {
    pub db: Db,
}

/// The runtime outcome of one processing result.
pub fn outcome(result: Result<issues::Applied, IssueError>) -> Outcome {
    match result {
        Ok(applied) => {
            results().with_label_values(&[applied.label()]).inc();
            Outcome::Done
        }
        Err(IssueError::Reject(r)) => Outcome::Reject(r),
        Err(IssueError::EventNotFound(d)) => Outcome::Retry {
            reason: DlqReason::EventNotFound,
            detail: d,
        },
        Err(IssueError::GroupNotFound(d)) => {
            results().with_label_values(&["group_not_found"]).inc();
            Outcome::RetryThenDrop(d)
        }
        Err(IssueError::Blocked) => Outcome::Defer,
        Err(IssueError::Conflict(d)) => Outcome::Retry {
            reason: DlqReason::RetryExhausted,
            detail: d,
        },
        Err(IssueError::Db(e)) if e.is_dependency_wide() => Outcome::Unavailable(e.to_string()),
        Err(IssueError::Db(e)) => Outcome::Retry {
            reason: DlqReason::RetryExhausted,
            detail: e.to_string(),
        },
    }
}

impl Stage for OccurrenceStage {
    async fn process(&self, batch: Vec<Arc<Msg>>) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        // Lanes: every message of one fingerprint goes to the same lane, in arrival order.
        let mut lanes: Vec<Vec<(usize, IssuePlatformMessage)>> =
            (0..CONCURRENCY).map(|_| Vec::new()).collect();
        for (i, m) in batch.iter().enumerate() {
            match IssuePlatformMessage::decode(m.payload()) {
                Err(r) => outcomes[i] = Some(Outcome::Reject(r)),
                Ok(msg) => {
                    let mut h = DefaultHasher::new();
                    msg.ordering_key().hash(&mut h);
                    lanes[(h.finish() % CONCURRENCY as u64) as usize].push((i, msg));
                }
            }
        }
        let db = &self.db;
        let done: Vec<Vec<(usize, Outcome)>> =
            futures::future::join_all(lanes.into_iter().filter(|l| !l.is_empty()).map(
                |lane| async move {
                    let (idx, msgs): (Vec<usize>, Vec<IssuePlatformMessage>) =
                        lane.into_iter().unzip();
                    let results = issues::process_many(db, msgs).await;
                    idx.into_iter()
                        .zip(results.into_iter().map(outcome))
                        .collect()
                },
            ))
            .await;
        for (i, o) in done.into_iter().flatten() {
            outcomes[i] = Some(o);
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(Outcome::Retry {
                    reason: DlqReason::RetryExhausted,
                    detail: "not processed".into(),
                })
            })
            .collect()
    }
}
