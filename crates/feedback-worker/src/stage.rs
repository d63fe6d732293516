//! The feedback worker's stage: each `type: event` message on the feedback topic becomes a
//! feedback issue (an occurrence with its event), spam is ignored forever, the linked user report
//! is recorded, and the outcome is emitted once per feedback. A batch goes through these steps
//! together: planned on two threads (see `plan`), every issue handed to the producer at once,
//! then the acknowledgements awaited while the reports are written in one statement and the
//! outcomes emitted with one lookup and one insert. So the database sees a few round trips per
//! batch instead of several per message, and the batch waits for the slowest of its writes, not
//! for their sum.

use crate::plan::{self, Plan, Spam, Staged};
use crate::spam;
use futures::future::join_all;
use sluice_core::config::Settings;
use sluice_core::failure::Classify;
use sluice_core::issues::project::{self, Project};
use sluice_core::kafka::consumer::{Msg, Prepared, Stage, Verdict};
use sluice_core::kafka::producer::{Pending, Producer};
use sluice_core::messages::IngestMessage;
use sluice_core::outcomes::Outcomes;
use sluice_core::parallel::map_ordered;
use sluice_core::storage::user_reports::{self, FeedbackReport};
use sluice_core::storage::{Db, DbError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

sluice_core::counter_vec!(
    fn results = "sluice_feedback_total",
    "Feedback handled, by result (produced, spam, filtered_*, unknown_project).",
    ["result"]
);

/// The stage.
pub struct FeedbackStage {
    pub db: Db,
    pub producer: Producer,
    pub occurrences_topic: String,
    pub outcomes: Outcomes,
    pub settings: Arc<Settings>,
    pub http: reqwest::Client,
    pub projects: project::Shared,
    /// The next batch's plans, made while the batch before it is written.
    pub prepared: Prepared<Vec<Plan>>,
}

impl FeedbackStage {
    /// Plans every message of the batch; nothing is written yet. The CPU passes run on two
    /// threads; in between, each project of the batch is looked up once and the HTTP spam
    /// classifier is asked about every feedback whose project wants it, all concurrently.
    async fn plan(&self, batch: &[Arc<Msg>]) -> Vec<Plan> {
        let max = self.settings.feedback.message_max_size;
        let decoded = map_ordered(
            batch.iter().collect(),
            plan::THREADS,
            plan::MIN_PER_THREAD,
            |m: &Arc<Msg>| plan::decode(m),
        );
        let mut ids: Vec<u64> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok().map(plan::Decoded::project_id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let found: HashMap<u64, Result<Option<Project>, Verdict>> =
            join_all(ids.into_iter().map(|id| async move {
                (id, self.projects.get(id).await.map_err(|e| e.verdict()))
            }))
            .await
            .into_iter()
            .collect();
        let mut staged: Vec<Staged> = decoded
            .into_iter()
            .map(|d| {
                let d = match d {
                    Ok(d) => d,
                    Err(v) => return Staged::Planned(Plan::Settled(v)),
                };
                match found.get(&d.project_id()) {
                    Some(Ok(Some(p))) => plan::resolve(d, p, max),
                    Some(Err(v)) => Staged::Planned(Plan::Settled(v.clone())),
                    Some(Ok(None)) | None => Staged::Planned(Plan::UnknownProject),
                }
            })
            .collect();
        self.ask_classifier(&mut staged).await;
        map_ordered(
            staged,
            plan::THREADS,
            plan::MIN_PER_THREAD,
            |s: Staged| match s {
                Staged::Ready(ready) => plan::build(ready, max),
                Staged::Planned(done) => done,
            },
        )
    }

    /// Answers the spam question of each feedback whose project uses the HTTP classifier, all
    /// concurrently (not spam when no classifier is configured).
    async fn ask_classifier(&self, staged: &mut [Staged]) {
        let asking = staged.iter_mut().filter_map(|s| match s {
            Staged::Ready(r) if matches!(r.spam, Spam::Ask) => Some(r),
            _ => None,
        });
        let Some(url) = &self.settings.feedback.spam_classifier_url else {
            for r in asking {
                r.spam = Spam::Decided(None);
            }
            return;
        };
        let timeout = Duration::from_millis(self.settings.feedback.spam_classifier_timeout_ms);
        join_all(asking.map(|r| async move {
            let message = r.decoded.message().unwrap_or_default();
            let answer = spam::classify(&self.http, url, timeout, message).await;
            r.spam = Spam::Decided(answer);
        }))
        .await;
    }

    /// Hands every issue's occurrence to the producer at once. One refused at once (over the
    /// size limit) fails its message here, before its outcome is considered.
    fn enqueue_issues(
        &self,
        plans: &[Plan],
        verdicts: &mut [Option<Verdict>],
    ) -> Vec<(usize, Pending)> {
        let mut pending = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            let Plan::Issue { records, .. } = plan else {
                continue;
            };
            let Some(first) = records.first() else {
                continue;
            };
            let key = first.key.as_deref().map(str::as_bytes);
            match self
                .producer
                .enqueue(&self.occurrences_topic, key, &first.value, &[])
            {
                Ok(p) => pending.push((i, p)),
                Err(e) => verdicts[i] = Some(e.verdict()),
            }
        }
        pending
    }

    /// Waits for the occurrences' acknowledgements, then produces each message's further
    /// records (a spam's status change) in order after its occurrence; the verdict of each
    /// message whose produce failed.
    async fn await_issues(
        &self,
        plans: &[Plan],
        pending: Vec<(usize, Pending)>,
        verdicts: &mut [Option<Verdict>],
    ) {
        let sends = pending.into_iter().map(|(i, delivery)| async move {
            if let Err(e) = delivery.await {
                return (i, Some(e.verdict()));
            }
            let Plan::Issue { records, .. } = &plans[i] else {
                return (i, None);
            };
            for r in records.iter().skip(1) {
                if let Err(e) = r.send(&self.producer, &self.occurrences_topic).await {
                    return (i, Some(e.verdict()));
                }
            }
            (i, None)
        });
        for (i, failed) in join_all(sends).await {
            if failed.is_some() {
                verdicts[i] = failed;
            }
        }
    }

    /// Records the user reports of the planned issues in one statement. A failure of
    /// the whole statement caused by one report (not an outage) is narrowed down by writing the
    /// reports one by one, so only that message fails.
    async fn record_reports(&self, plans: &[Plan], verdicts: &mut [Option<Verdict>]) {
        let (who, all): (Vec<usize>, Vec<FeedbackReport>) = plans
            .iter()
            .enumerate()
            .filter(|(i, _)| verdicts[*i].is_none())
            .filter_map(|(i, p)| match p {
                Plan::Issue {
                    report: Some(r), ..
                } => Some((i, r.clone())),
                _ => None,
            })
            .unzip();
        if who.is_empty() {
            return;
        }
        let failure = match self
            .db
            .run(move |c| Ok::<_, DbError>(user_reports::insert_for_feedback(c, &all)?))
            .await
        {
            Ok(()) => return,
            Err(e) => e.verdict(),
        };
        if matches!(failure, Verdict::Unavailable(_)) || who.len() == 1 {
            for i in &who {
                verdicts[*i] = Some(failure.clone());
            }
            return;
        }
        for i in who {
            let Plan::Issue {
                report: Some(report),
                ..
            } = &plans[i]
            else {
                continue;
            };
            let report = report.clone();
            if let Err(e) = self
                .db
                .run(move |c| {
                    Ok::<_, DbError>(user_reports::insert_for_feedback(
                        c,
                        std::slice::from_ref(&report),
                    )?)
                })
                .await
            {
                verdicts[i] = Some(e.verdict());
            }
        }
    }

    /// Emits the outcomes of the messages still going, once each, in one lookup and one record
    /// of the keys.
    async fn emit_outcomes(&self, plans: &[Plan], verdicts: &mut [Option<Verdict>]) {
        let mut items = Vec::new();
        let mut who = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            if verdicts[i].is_some() {
                continue;
            }
            match plan {
                Plan::Filtered { key, outcome, .. } | Plan::Issue { key, outcome, .. } => {
                    items.push((key.clone(), outcome.clone()));
                    who.push(i);
                }
                Plan::Settled(_) | Plan::UnknownProject => {}
            }
        }
        if items.is_empty() {
            return;
        }
        if let Err(e) = self.outcomes.emit_once_many(items).await {
            // Keys already acknowledged were recorded: a retry emits only the missing ones.
            let v = e.verdict();
            for i in who {
                verdicts[i] = Some(v.clone());
            }
        }
    }
}

/// Counts each message that went all the way, by what it became (once per processing, not when
/// it was planned: a batch planned ahead is not always the one processed).
fn count_results(plans: &[Plan], verdicts: &[Option<Verdict>]) {
    for (plan, verdict) in plans.iter().zip(verdicts) {
        let label = match (plan, verdict) {
            (Plan::UnknownProject, _) => "unknown_project".to_owned(),
            (_, Some(_)) | (Plan::Settled(_), _) => continue,
            (Plan::Filtered { label, .. }, None) => format!("filtered_{label}"),
            (Plan::Issue { spam: true, .. }, None) => "spam".to_owned(),
            (Plan::Issue { .. }, None) => "produced".to_owned(),
        };
        results().with_label_values(&[&label]).inc();
    }
}

impl Stage for FeedbackStage {
    /// Plans the next batch while the one before it waits for its writes: planning only
    /// reads (the message, the project, the spam classifier).
    async fn prepare(&self, batch: &[Arc<Msg>]) {
        self.prepared.ahead(batch, self.plan(batch)).await;
    }

    fn tenant(&self, msg: &Msg) -> Option<u64> {
        IngestMessage::project_of(msg.payload())
    }

    /// The batch in steps, each step for every message at once: plan (decode, filters, spam),
    /// hand the issues to the producer, then, side by side, wait for their acknowledgements,
    /// record the user reports and emit the outcomes. A message leaves the steps at its first
    /// failure with its own verdict; the others go on.
    ///
    /// The three writes do not need each other, and each is idempotent when a message is tried
    /// again: the occurrence and status change have fixed ids, a report is written only if none
    /// exists, an outcome only if its key was not recorded. A message failed by more than one
    /// keeps the first failure in that order (the produce's). So a feedback whose issue cannot
    /// be produced still leaves its user report: the report is the user's words about their
    /// event, kept like a report sent without feedback. Its outcome is emitted once the producer
    /// took its issue, without waiting for the broker's acknowledgement, as Sentry tracks it
    /// right after handing the occurrence to its producer. A message refused at once (too large
    /// for the producer) gets none; one whose delivery later fails for good (the broker refuses
    /// it) keeps the outcome already emitted, as in Sentry.
    async fn process(&self, batch: Vec<Arc<Msg>>) -> Vec<Verdict> {
        // Planned ahead during an outage (a project lookup failed): planned again now.
        let during_outage = |plans: &Vec<Plan>| {
            plans
                .iter()
                .any(|p| matches!(p, Plan::Settled(Verdict::Unavailable(_))))
        };
        let plans = self
            .prepared
            .take_or(&batch, |p| !during_outage(p), self.plan(&batch))
            .await;
        let plans = plans.as_slice();
        let mut verdicts: Vec<Option<Verdict>> = plans
            .iter()
            .map(|p| match p {
                Plan::Settled(v) => Some(v.clone()),
                Plan::UnknownProject => Some(Verdict::Done),
                _ => None,
            })
            .collect();
        let pending = self.enqueue_issues(plans, &mut verdicts);
        let mut reported = verdicts.clone();
        let mut emitted = verdicts.clone();
        futures::join!(
            self.await_issues(plans, pending, &mut verdicts),
            self.record_reports(plans, &mut reported),
            self.emit_outcomes(plans, &mut emitted)
        );
        for ((v, r), o) in verdicts.iter_mut().zip(reported).zip(emitted) {
            if v.is_none() {
                *v = r.or(o);
            }
        }
        count_results(plans, &verdicts);
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or(Verdict::Done))
            .collect()
    }
}
