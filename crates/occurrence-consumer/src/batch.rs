//! The occurrence consumer's stage: a batch is decoded and split into lanes by raw
//! `fingerprint[0]` (every message of a fingerprint in one lane, in arrival order). Lanes run
//! concurrently, each as one transaction with a savepoint per message, so a batch costs a few
//! commits instead of one per message.

use sluice_core::config::IssueSettings;
use sluice_core::failure::Classify;
use sluice_core::issues::{self, Applied, IssueError, Limited};
use sluice_core::kafka::consumer::{Msg, Stage, Verdict};
use sluice_core::messages::enums::{data_category, group_category, Outcome};
use sluice_core::messages::{DlqReason, IssuePlatformMessage, OutcomeMessage};
use sluice_core::outcomes::Outcomes;
use sluice_core::storage::Db;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Lanes (concurrent transactions) per batch by default; bounded by the database pool. Four
/// measured faster than eight or two on two cores: fewer transactions contend for the same hot
/// groups.
pub const LANES: usize = 4;

sluice_core::counter_vec!(
    fn results = "sluice_occurrences_processed_total",
    "Issue-platform messages applied, by result.",
    ["result"]
);

/// The stage.
pub struct OccurrenceStage {
    pub db: Db,
    /// The optional limits (all off by default).
    pub settings: IssueSettings,
    /// Where RATE_LIMITED outcomes of held-back occurrences go.
    pub outcomes: Outcomes,
    /// Concurrent transactions per batch (at least 1).
    pub lanes: usize,
}

/// Emits the RATE_LIMITED outcome of an occurrence a limit held back (once per occurrence).
async fn report_limited(outcomes: &Outcomes, l: &Limited) -> Verdict {
    let category = if l.category == group_category::FEEDBACK {
        data_category::USER_REPORT_V2
    } else {
        data_category::DEFAULT
    };
    let mut m = OutcomeMessage::new(
        l.organization_id as u64,
        l.project_id as u64,
        Outcome::RateLimited,
        category,
    );
    m.reason = Some(l.reason.to_owned());
    m.event_id = Some(l.event_id.clone());
    match outcomes
        .emit_once(&format!("limited:{}", l.occurrence_id), &m)
        .await
    {
        Ok(_) => Verdict::Done,
        Err(e) => e.verdict(),
    }
}

/// The runtime outcome of one processing result.
pub fn outcome(result: Result<issues::Applied, IssueError>) -> Verdict {
    match result {
        Ok(applied) => {
            results().with_label_values(&[applied.label()]).inc();
            Verdict::Done
        }
        Err(IssueError::Reject(r)) => Verdict::Reject(r),
        Err(IssueError::EventNotFound(d)) => Verdict::Retry {
            reason: DlqReason::EventNotFound,
            detail: d,
        },
        Err(IssueError::GroupNotFound(d)) => {
            results().with_label_values(&["group_not_found"]).inc();
            Verdict::RetryThenDrop(d)
        }
        Err(IssueError::Blocked) => Verdict::Defer,
        Err(IssueError::Conflict(d)) => Verdict::Retry {
            reason: DlqReason::RetryExhausted,
            detail: d,
        },
        Err(IssueError::Db(e)) => e.verdict(),
    }
}

impl Stage for OccurrenceStage {
    fn tenant(&self, msg: &Msg) -> Option<u64> {
        IssuePlatformMessage::project_of(msg.payload())
    }

    async fn process(&self, batch: Vec<Arc<Msg>>) -> Vec<Verdict> {
        let mut outcomes: Vec<Option<Verdict>> = vec![None; batch.len()];
        // Lanes: every message of one fingerprint goes to the same lane, in arrival order.
        let n = self.lanes.max(1);
        let mut lanes: Vec<Vec<(usize, IssuePlatformMessage)>> =
            (0..n).map(|_| Vec::new()).collect();
        for (i, m) in batch.iter().enumerate() {
            match IssuePlatformMessage::decode(m.payload()) {
                Err(r) => outcomes[i] = Some(Verdict::Reject(r)),
                Ok(msg) => {
                    let mut h = DefaultHasher::new();
                    msg.ordering_key().hash(&mut h);
                    lanes[(h.finish() % n as u64) as usize].push((i, msg));
                }
            }
        }
        let (db, settings, sink) = (&self.db, &self.settings, &self.outcomes);
        let done: Vec<Vec<(usize, Verdict)>> =
            futures::future::join_all(lanes.into_iter().filter(|l| !l.is_empty()).map(
                |lane| async move {
                    let (idx, msgs): (Vec<usize>, Vec<IssuePlatformMessage>) =
                        lane.into_iter().unzip();
                    let results = issues::process_many(db, settings, msgs).await;
                    let mut out = Vec::with_capacity(idx.len());
                    for (i, result) in idx.into_iter().zip(results) {
                        let limited = match &result {
                            Ok(Applied::Limited(l)) => Some(l.clone()),
                            _ => None,
                        };
                        let mut o = outcome(result);
                        if let Some(l) = limited {
                            o = report_limited(sink, &l).await;
                        }
                        out.push((i, o));
                    }
                    out
                },
            ))
            .await;
        for (i, o) in done.into_iter().flatten() {
            outcomes[i] = Some(o);
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(Verdict::Retry {
                    reason: DlqReason::RetryExhausted,
                    detail: "not processed".into(),
                })
            })
            .collect()
    }
}
