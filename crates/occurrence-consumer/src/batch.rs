//! The occurrence consumer's stage: a batch is decoded, grouped by raw `fingerprint[0]`
//! (order kept within a fingerprint), and the fingerprints run concurrently, each message in its
//! own transaction.

use futures::StreamExt;
use prometheus::{IntCounterVec, Opts};
use sluice_core::issues::{self, IssueError};
use sluice_core::kafka::consumer::{Msg, Outcome, Stage};
use sluice_core::messages::{DlqReason, IssuePlatformMessage};
use sluice_core::storage::Db;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Fingerprints processed at once (bounded by the database pool).
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
        let mut order: Vec<String> = Vec::new();
        let mut groups: HashMap<String, Vec<(usize, IssuePlatformMessage)>> = HashMap::new();
        for (i, m) in batch.iter().enumerate() {
            match IssuePlatformMessage::decode(m.payload()) {
                Err(r) => outcomes[i] = Some(Outcome::Reject(r)),
                Ok(msg) => {
                    let key = msg.ordering_key().to_owned();
                    if !groups.contains_key(&key) {
                        order.push(key.clone());
                    }
                    groups.entry(key).or_default().push((i, msg));
                }
            }
        }
        let db = &self.db;
        let done: Vec<Vec<(usize, Outcome)>> =
            futures::stream::iter(order.into_iter().filter_map(|k| groups.remove(&k)))
                .map(|items| async move {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, msg) in items {
                        out.push((i, outcome(issues::process(db, msg).await)));
                    }
                    out
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
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
