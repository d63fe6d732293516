//! The ingest stage: one batch of `ingest-events` / `ingest-attachments` messages. Chunks of the
//! whole batch are stored first (one statement), so everything that needs them finds them; then
//! the other messages run concurrently, in offset order per event (`project_id`, `event_id`), so an
//! event's attachments, report and event never overtake each other.

use crate::{attachment, event, limits, metrics, user_report};
use futures::stream::{self, StreamExt};
use sluice_core::config::Settings;
use sluice_core::issues::project;
use sluice_core::kafka::consumer::{Msg, Outcome, Stage};
use sluice_core::kafka::producer::Producer;
use sluice_core::messages::{IngestMessage, OutcomeMessage};
use sluice_core::objects::Objects;
use sluice_core::outcomes::Outcomes;
use sluice_core::storage::Db;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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
}

/// How many events are handled at once within a batch (bounded by the database pool anyway).
const CONCURRENCY: usize = 64;

/// The stage.
pub struct IngestStage {
    pub deps: Arc<Deps>,
}

/// `Err` carries the outcome that ends a handler early (an outage, a retry, a rejection).
pub type Step<T> = Result<T, Outcome>;

/// An outage of a dependency every message needs.
pub fn unavailable(e: impl std::fmt::Display) -> Outcome {
    Outcome::Unavailable(e.to_string())
}

/// Emits `outcome` once per natural `key` (see `Outcomes::emit_once`); a failure is an outage.
pub async fn emit(deps: &Deps, key: &str, outcome: &OutcomeMessage) -> Step<()> {
    deps.outcomes
        .emit_once(key, outcome)
        .await
        .map(|_| ())
        .map_err(unavailable)
}

impl IngestStage {
    async fn handle(&self, raw: &Msg, msg: &IngestMessage) -> Outcome {
        let deps = &self.deps;
        let project = match deps.projects.get(msg.project_id()).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                metrics::count(msg.type_name(), "unknown_project");
                tracing::warn!(
                    project_id = msg.project_id(),
                    "Project for ingested event does not exist"
                );
                return Outcome::Done;
            }
            Err(e) => return Outcome::from_db(&e),
        };
        let result = match msg {
            IngestMessage::Event(m) => event::process(deps, raw, m, &project).await,
            IngestMessage::Attachment(m) => attachment::process_individual(deps, m, &project).await,
            IngestMessage::UserReport(m) => user_report::process(deps, m, &project).await,
            IngestMessage::AttachmentChunk(_) => Ok(()),
        };
        result.err().unwrap_or(Outcome::Done)
    }
}

/// Messages of one event share a lane; other messages get a lane of their own.
fn lane_key(msg: &IngestMessage, index: usize) -> (u64, String) {
    let event_id = match msg {
        IngestMessage::Event(m) => Some(m.event_id.clone()),
        IngestMessage::Attachment(m) => Some(m.event_id.clone()),
        IngestMessage::UserReport(m) => user_report::event_id_hint(m),
        IngestMessage::AttachmentChunk(_) => None,
    };
    (
        msg.project_id(),
        event_id.unwrap_or_else(|| format!("#{index}")),
    )
}

impl Stage for IngestStage {
    async fn process(&self, batch: Vec<Arc<Msg>>) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Done; batch.len()];
        let mut decoded = Vec::with_capacity(batch.len());
        let mut chunks = Vec::new();
        for (i, raw) in batch.iter().enumerate() {
            match IngestMessage::decode(raw.payload()) {
                Ok(IngestMessage::AttachmentChunk(c)) => {
                    metrics::count("attachment_chunk", "stored");
                    chunks.push(c);
                }
                Ok(m) => decoded.push((i, m)),
                Err(r) => {
                    metrics::count("unknown", "rejected");
                    outcomes[i] = Outcome::Reject(r);
                }
            }
        }
        let ttl = Duration::from_secs(self.deps.settings.attachments.chunk_ttl_secs);
        if let Err(e) = crate::chunk::store(&self.deps.db, chunks, ttl).await {
            // Nothing later in the batch may run without its chunks: the whole batch waits and
            // is retried, never dead-lettered.
            return vec![unavailable(&e); batch.len()];
        }

        // Plain error events (the bulk of the traffic) take the batched path.
        let mut ready = Vec::new();
        let mut held = Vec::new();
        let mut rest = Vec::with_capacity(decoded.len());
        for (i, m) in decoded {
            if let IngestMessage::Event(e) = &m {
                if let Ok(Some(p)) = self.deps.projects.get(e.project_id).await {
                    if let Some(r) = event::ready(&self.deps, i, e, &p) {
                        ready.push(r);
                        held.push((i, m));
                        continue;
                    }
                }
            }
            rest.push((i, m));
        }
        if !ready.is_empty() {
            match event::process_ready(&self.deps, &ready).await {
                Some(done) => {
                    for (i, o) in done {
                        outcomes[i] = o;
                    }
                }
                None => {
                    rest.extend(held);
                    rest.sort_by_key(|(i, _)| *i);
                }
            }
        }

        let mut lanes: HashMap<(u64, String), Vec<(usize, IngestMessage)>> = HashMap::new();
        let mut order = Vec::new();
        for (i, m) in rest {
            let key = lane_key(&m, i);
            let lane = lanes.entry(key.clone()).or_default();
            if lane.is_empty() {
                order.push(key);
            }
            lane.push((i, m));
        }
        let runs = stream::iter(order.into_iter().filter_map(|k| lanes.remove(&k)))
            .map(|lane| async {
                let mut done = Vec::with_capacity(lane.len());
                let mut blocked = false;
                for (i, m) in lane {
                    let o = if blocked {
                        Outcome::Defer
                    } else {
                        self.handle(&batch[i], &m).await
                    };
                    blocked |= !matches!(o, Outcome::Done | Outcome::Reject(_));
                    done.push((i, o));
                }
                done
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for (i, o) in runs.into_iter().flatten() {
            outcomes[i] = o;
        }
        outcomes
    }
}
