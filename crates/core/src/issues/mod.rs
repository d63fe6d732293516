//! The issue platform's processing: occurrences become groups,
//! status changes move them. Shared by `occurrence-consumer` and the producer-shim fallback.

pub mod group;
pub mod grouptype;
pub mod limits;
pub mod parse;
pub mod payload;
pub mod project;
pub mod save;
pub mod status_change;

use crate::config::IssueSettings;
use crate::failure::Classify;
use crate::messages::{IssuePlatformMessage, Rejection};
use crate::storage::{Db, DbError};
use diesel::Connection;

/// What processing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A new group was created for the occurrence.
    Created { group_id: i64 },
    /// The occurrence was added to an existing group.
    Updated { group_id: i64, regressed: bool },
    /// This occurrence or status change was applied before (replay).
    Duplicate,
    /// Dropped on purpose (reason is a bounded metric label).
    Dropped(&'static str),
    /// Held back by an optional limit: no group; the stage reports a RATE_LIMITED
    /// outcome. Also returned for a redelivery of such an occurrence (the outcome is emitted once).
    Limited(Limited),
    /// The group's status changed.
    StatusChanged { group_id: i64 },
    /// The group already had the requested status.
    StatusUnchanged,
    /// Refused by Sentry's validation table (logged).
    StatusInvalid(&'static str),
}

impl Applied {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Applied::Created { .. } => "group_created",
            Applied::Updated {
                regressed: true, ..
            } => "group_regressed",
            Applied::Updated { .. } => "group_updated",
            Applied::Duplicate => "duplicate",
            Applied::Dropped(r) => r,
            Applied::Limited(l) => l.reason,
            Applied::StatusChanged { .. } => "status_changed",
            Applied::StatusUnchanged => "status_unchanged",
            Applied::StatusInvalid(_) => "status_invalid",
        }
    }
}

/// An occurrence held back by a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// One of the `limits` reasons.
    pub reason: &'static str,
    pub organization_id: i64,
    pub project_id: i64,
    pub event_id: String,
    pub occurrence_id: String,
    /// The group type's category.
    pub category: i32,
}

/// Why processing did not complete.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Bad input: dead-letter it.
    #[error(transparent)]
    Reject(#[from] Rejection),
    /// The occurrence's event is not stored (yet): retry, then dead-letter `event_not_found`.
    #[error("{0}")]
    EventNotFound(String),
    /// No group for the status change's fingerprint (yet): retry, then drop.
    #[error("{0}")]
    GroupNotFound(String),
    /// An earlier message of the same fingerprint failed in this batch: try again after it.
    #[error("blocked by an earlier message of the same fingerprint")]
    Blocked,
    /// A race to retry (serialization failure, vanished row).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for IssueError {
    fn from(e: diesel::result::Error) -> Self {
        IssueError::Db(DbError::Query(e))
    }
}

crate::counter_vec!(
    /// Batches whose set-based save failed and were saved again one message at a time (each
    /// failure is expected to be rare: an event not stored yet, a concurrent group creation, bad
    /// input).
    fn one_by_one = "sluice_issue_batches_one_by_one_total",
    "Issue-platform batches saved again message by message after the set-based path failed.",
    []
);

/// Batches saved one by one after the set-based path failed, since the process started.
pub fn one_by_one_total() -> prometheus::IntCounter {
    one_by_one().with_label_values(&[] as &[&str])
}

/// Processes one decoded message in its own transaction.
pub async fn process(
    db: &Db,
    settings: &IssueSettings,
    msg: IssuePlatformMessage,
) -> Result<Applied, IssueError> {
    let mut out = process_many(db, settings, vec![msg]).await;
    out.pop()
        .unwrap_or_else(|| Err(IssueError::Conflict("no result".into())))
}

/// Processes `msgs` in order in one transaction. The fast path saves each run of consecutive
/// occurrences together ([`save`]) and status changes one by one; if any fails, that transaction
/// is rolled back and the messages run again, each under its own savepoint, so a failing message
/// leaves no trace and does not affect the others. If the transaction itself fails, every message
/// gets that error (nothing was kept).
pub async fn process_many(
    db: &Db,
    settings: &IssueSettings,
    msgs: Vec<IssuePlatformMessage>,
) -> Vec<Result<Applied, IssueError>> {
    let n = msgs.len();
    let settings = settings.clone();
    let keys: Vec<String> = msgs.iter().map(|m| m.ordering_key().to_owned()).collect();
    let parsed: Vec<Result<Parsed, IssueError>> =
        msgs.into_iter().map(Parsed::from_message).collect();
    let outcome = db
        .run(move |c| {
            let fast = c.transaction::<_, IssueError, _>(|c| {
                let mut projects = project::Cache::default();
                let mut out = Vec::with_capacity(parsed.len());
                let mut i = 0;
                while i < parsed.len() {
                    let run: Vec<&parse::Occurrence> = parsed[i..]
                        .iter()
                        .map_while(|p| match p {
                            Ok(Parsed::Occurrence(o)) => Some(o.as_ref()),
                            _ => None,
                        })
                        .collect();
                    if !run.is_empty() {
                        i += run.len();
                        let saved = save::save(c, &run, &mut projects, &settings)?;
                        out.extend(saved.into_iter().map(Ok));
                        continue;
                    }
                    out.push(match &parsed[i] {
                        Ok(p) => Ok(p.save(c, &mut projects, &settings)?),
                        Err(_) => Err(()),
                    });
                    i += 1;
                }
                Ok(out)
            });
            if let Ok(out) = fast {
                let merged = out.into_iter().zip(parsed).map(|(r, p)| match (r, p) {
                    (Ok(applied), _) => Ok(applied),
                    (Err(()), Err(e)) => Err(e),
                    (Err(()), Ok(_)) => Err(IssueError::Conflict("inconsistent fast path".into())),
                });
                return Ok(merged.collect());
            }
            if let Err(e) = &fast {
                tracing::debug!(error = %e, "batch fast path failed; saving one by one");
                one_by_one_total().inc();
            }
            let mut projects = project::Cache::default();
            c.transaction::<_, IssueError, _>(|c| {
                // A message that failed blocks the later messages of its fingerprint, so
                // retries never apply them out of order.
                let mut failed: std::collections::HashSet<String> =
                    std::collections::HashSet::new();
                Ok(parsed
                    .into_iter()
                    .zip(keys)
                    .map(|(p, key)| {
                        if failed.contains(&key) {
                            return Err(IssueError::Blocked);
                        }
                        let result = p.and_then(|p| {
                            let mut attempt = |c: &mut diesel::PgConnection| {
                                c.transaction(|c| p.save(c, &mut projects, &settings))
                            };
                            // A group created by another transaction meanwhile is there to be
                            // updated on the second attempt.
                            match attempt(c) {
                                Err(IssueError::Conflict(_)) => attempt(c),
                                r => r,
                            }
                        });
                        if matches!(&result, Err(e) if !matches!(e, IssueError::Reject(_))) {
                            failed.insert(key);
                        }
                        result
                    })
                    .collect::<Vec<_>>())
            })
        })
        .await;
    match outcome {
        Ok(results) => results,
        Err(e) => {
            let text = e.to_string();
            let dependency = matches!(&e, IssueError::Db(d) if d.failure().is_outage());
            (0..n)
                .map(|_| {
                    Err(if dependency {
                        IssueError::Db(DbError::Unavailable(text.clone()))
                    } else {
                        IssueError::Conflict(text.clone())
                    })
                })
                .collect()
        }
    }
}

/// A message ready for the database.
enum Parsed {
    Occurrence(Box<parse::Occurrence>),
    StatusChange(crate::messages::StatusChangeMessage),
}

impl Parsed {
    fn save(
        &self,
        c: &mut diesel::PgConnection,
        projects: &mut project::Cache,
        settings: &IssueSettings,
    ) -> Result<Applied, IssueError> {
        match self {
            Parsed::Occurrence(occ) => save::save(c, &[occ.as_ref()], projects, settings)?
                .pop()
                .ok_or_else(|| IssueError::Conflict("no result".into())),
            Parsed::StatusChange(change) => status_change::apply(c, change),
        }
    }

    fn from_message(msg: IssuePlatformMessage) -> Result<Parsed, IssueError> {
        Ok(match msg {
            IssuePlatformMessage::Occurrence(o) => Parsed::Occurrence(Box::new(parse::parse(&o)?)),
            IssuePlatformMessage::StatusChange(s) => Parsed::StatusChange(s),
        })
    }
}
