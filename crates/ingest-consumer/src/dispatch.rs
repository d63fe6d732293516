//! The ingest stage's dispatcher: decodes one batch of `ingest-events` / `ingest-attachments`
//! messages and routes each to its handler (`event`, `attachment`, `user_report`, `chunk`).
//! Error events and standalone attachments are handled together (`event::process_ready`,
//! `attachment::save`); an attachment whose chunks all came in the same batch is saved straight
//! from memory. Every other chunk is stored first (one statement), so everything that needs it
//! finds it; then the other messages run concurrently, in offset order per event (`project_id`,
//! `event_id`), so an event's attachments, report and event never overtake each other.

use crate::chunk::{self, InBatch};
use crate::context::Deps;
use crate::{attachment, event, event_ahead, metrics, user_report};
use futures::stream::{self, StreamExt};
use sluice_core::failure::Classify;
use sluice_core::kafka::consumer::{Msg, Prepared, Stage, Verdict};
use sluice_core::messages::IngestMessage;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many events are handled at once within a batch (bounded by the database pool anyway).
const CONCURRENCY: usize = 64;

/// The stage.
pub struct IngestStage {
    pub deps: Arc<Deps>,
    /// Batches decoded and split while the batch before them was being written.
    pub prepared: Prepared<Decoded>,
}

/// The batch split by path: (events for the batched path, standalone attachments for the
/// batched path, everything else).
type Split = (
    Vec<event::Ready>,
    Vec<attachment::Pending>,
    Vec<(usize, IngestMessage)>,
);

/// A batch decoded and split by path: everything done before anything is written, so it can
/// be done ahead while the batch before it is being written.
pub struct Decoded {
    /// Each message's verdict so far (rejected when it could not be decoded).
    outcomes: Vec<Verdict>,
    chunks: InBatch,
    split: Split,
    /// Counted when the batch is processed, not when it is prepared (a preparing may go unused).
    chunk_count: usize,
    /// Whether a project lookup failed: its messages left the batched paths.
    lookup_failed: bool,
    /// When it was made: the projects it holds were read then.
    at: Instant,
    /// The standalone attachments' objects being written ahead (only for a batch prepared
    /// while another was in flight).
    ahead: attachment::Ahead,
    /// The error events' insert started ahead (likewise).
    events_ahead: event_ahead::Ahead,
}

/// Work prepared longer ago than this is done again: its projects may be out of date.
const PREPARED_FRESH_FOR: Duration = Duration::from_secs(5);

impl IngestStage {
    /// Picks the messages of the batched paths. A standalone attachment takes its path only when
    /// no event or user report of the same event is in the batch (those keep their lane order).
    async fn select(
        &self,
        decoded: Vec<(usize, IngestMessage)>,
        chunks: &InBatch,
        lookup_failed: &mut bool,
    ) -> Split {
        let deps = &self.deps;
        let others: HashSet<(u64, String)> = decoded
            .iter()
            .filter(|(_, m)| !matches!(m, IngestMessage::Attachment(_)))
            .map(|(i, m)| lane_key(m, *i))
            .collect();
        let (mut candidates, mut attachments, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for (i, m) in decoded {
            let project = match deps.projects.get(m.project_id()).await {
                Ok(Some(p)) => p,
                Ok(None) => {
                    rest.push((i, m));
                    continue;
                }
                Err(_) => {
                    *lookup_failed = true;
                    rest.push((i, m));
                    continue;
                }
            };
            match &m {
                IngestMessage::Event(_) => {
                    candidates.push((i, m, project));
                    continue;
                }
                IngestMessage::Attachment(a)
                    if !others.contains(&(a.project_id, a.event_id.clone())) =>
                {
                    if let Some(r) = attachment::standalone(deps, i, a, &project, chunks) {
                        attachments.push(r);
                        continue;
                    }
                }
                _ => {}
            }
            rest.push((i, m));
        }
        let mut events = Vec::with_capacity(candidates.len());
        for (m, ready) in event::ready_many(deps, candidates) {
            match ready {
                Some(r) => events.push(r),
                None => rest.push(m),
            }
        }
        // The lanes below keep each event's messages in offset order.
        rest.sort_by_key(|(i, _)| *i);
        (events, attachments, rest)
    }

    /// Decodes `batch` and splits it by path. Nothing here writes, so it may run ahead.
    async fn decode(&self, batch: &[Arc<Msg>]) -> Decoded {
        let mut outcomes = vec![Verdict::Done; batch.len()];
        let mut decoded = Vec::with_capacity(batch.len());
        let mut chunks = InBatch::default();
        let mut chunk_count = 0;
        let started = Instant::now();
        for (i, raw) in batch.iter().enumerate() {
            match IngestMessage::decode(raw.payload()) {
                Ok(IngestMessage::AttachmentChunk(c)) => {
                    chunk_count += 1;
                    chunks.add(i, c);
                }
                Ok(m) => decoded.push((i, m)),
                Err(r) => outcomes[i] = Verdict::Reject(r),
            }
        }
        // Split the batch: plain error events and standalone attachments (the bulk of the
        // traffic) take the batched paths; everything else runs in lanes.
        let mut lookup_failed = false;
        let split = self.select(decoded, &chunks, &mut lookup_failed).await;
        metrics::time_step("decode_and_select", started);
        Decoded {
            outcomes,
            chunks,
            split,
            chunk_count,
            lookup_failed,
            at: started,
            ahead: attachment::Ahead::default(),
            events_ahead: event_ahead::Ahead::default(),
        }
    }

    /// The batch's prepared work, or the work done now. Work prepared while a project lookup
    /// failed (an outage the batch in flight was waiting out) or a while ago is done again, so
    /// the batch takes the batched paths with current projects; the objects it was writing
    /// ahead are kept (an object's key and bytes come from its messages alone). Its events'
    /// insert ahead is awaited, if it started, and not used: the events chosen with current
    /// projects are inserted with the batch (first write wins).
    async fn decoded(&self, batch: &[Arc<Msg>]) -> Decoded {
        let mut carried = attachment::Ahead::default();
        let mut stale_events = event_ahead::Ahead::default();
        let usable = |d: &mut Decoded| {
            let fresh = !d.lookup_failed && d.at.elapsed() <= PREPARED_FRESH_FOR;
            if !fresh {
                carried = std::mem::take(&mut d.ahead);
                stale_events = std::mem::take(&mut d.events_ahead).stale();
            }
            fresh
        };
        let mut decoded = self
            .prepared
            .take_or(batch, usable, self.decode(batch))
            .await;
        if !carried.is_empty() {
            decoded.ahead = carried;
        }
        if stale_events.started_ahead() {
            decoded.events_ahead = stale_events;
        }
        decoded
    }

    async fn handle(&self, raw: &Msg, msg: &IngestMessage) -> Verdict {
        let deps = &self.deps;
        let project = match deps.projects.get(msg.project_id()).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                metrics::count(msg.type_name(), "unknown_project");
                tracing::warn!(
                    project_id = msg.project_id(),
                    "Project for ingested event does not exist"
                );
                return Verdict::Done;
            }
            Err(e) => return e.verdict(),
        };
        let result = match msg {
            IngestMessage::Event(m) => event::process(deps, raw, m, &project).await,
            IngestMessage::Attachment(m) => attachment::process_individual(deps, m, &project).await,
            IngestMessage::UserReport(m) => user_report::process(deps, m, &project).await,
            IngestMessage::AttachmentChunk(_) => Ok(()),
        };
        result.err().unwrap_or(Verdict::Done)
    }
}

/// Whether `m` may read the chunks of `key` (so they cannot stay in memory only).
fn uses_chunks_of(m: &IngestMessage, key: &chunk::Key) -> bool {
    let (project, event) = (key.0, key.1.as_str());
    match m {
        IngestMessage::Event(e) => {
            e.project_id == project
                && e.event_id == event
                && e.attachments.iter().any(|a| a.id == key.2)
        }
        IngestMessage::Attachment(a) => {
            a.project_id == project && a.event_id == event && a.attachment.id == key.2
        }
        _ => false,
    }
}

/// [`uses_chunks_of`] for an event made ready.
fn ready_uses_chunks_of(r: &event::Ready, key: &chunk::Key) -> bool {
    r.project.id as u64 == key.0
        && r.event_id == key.1
        && r.attachments.iter().any(|a| a.id == key.2)
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
    fn tenant(&self, msg: &Msg) -> Option<u64> {
        IngestMessage::project_of(msg.payload())
    }

    async fn prepare(&self, batch: &[Arc<Msg>]) {
        let work = async {
            let mut decoded = self.decode(batch).await;
            // Usable work only: work the batch would refuse is not written ahead.
            if !decoded.lookup_failed {
                decoded.ahead = attachment::write_ahead(&self.deps, &decoded.split.1);
                decoded.events_ahead =
                    event_ahead::insert_ahead(&self.deps, batch, &decoded.split.0);
            }
            decoded
        };
        self.prepared.ahead(batch, work).await;
    }

    async fn process(&self, batch: Vec<Arc<Msg>>) -> Vec<Verdict> {
        let Decoded {
            mut outcomes,
            mut chunks,
            split: (ready_events, ready_attachments, mut rest),
            chunk_count,
            ahead,
            events_ahead,
            ..
        } = self.decoded(&batch).await;
        metrics::count_n("attachment_chunk", "stored", chunk_count);
        let undecodable = outcomes
            .iter()
            .filter(|o| matches!(o, Verdict::Reject(_)))
            .count();
        metrics::count_n("unknown", "rejected", undecodable);
        // Once this batch's events are stored, the next batch's error events may be inserted
        // ahead (`event_ahead`): at once when it has none, after the batched insert when they
        // all take it, else at the end, when every event has its final verdict (the lanes run
        // the others one by one: transactions, feedback, a batched insert that failed).
        // Recording a batch a second time changes nothing: offsets only move forward.
        let events: Vec<usize> = ready_events
            .iter()
            .map(|r| r.index)
            .chain(
                rest.iter()
                    .filter(|(_, m)| matches!(m, IngestMessage::Event(_)))
                    .map(|(i, _)| *i),
            )
            .collect();
        let all_batched = events.len() == ready_events.len();
        let events_stored = || {
            if all_batched {
                self.deps.inserted.passed(&batch);
            }
        };
        if events.is_empty() {
            events_stored();
        }
        // Chunks stay in memory only for the attachments saved from memory; every other chunk
        // is stored first (one statement), so everything that needs it finds it.
        let in_memory: HashSet<chunk::Key> = ready_attachments
            .iter()
            .filter_map(|r| r.chunk_key.clone())
            .filter(|k| {
                !rest.iter().any(|(_, m)| uses_chunks_of(m, k))
                    && !ready_events.iter().any(|r| ready_uses_chunks_of(r, k))
            })
            .collect();
        let ttl = Duration::from_secs(self.deps.settings.attachments.chunk_ttl_secs);
        let started = std::time::Instant::now();
        let stored = chunk::store(&self.deps.db, chunks.split_off_others(&in_memory), ttl).await;
        metrics::time_step("chunks_store", started);
        match stored {
            // Nothing later in the batch may run without its chunks: the whole batch waits and
            // is retried, never dead-lettered.
            Err(e) => return vec![e.verdict(); batch.len()],
            // A chunk that cannot be stored gets its own verdict; its attachment then finds it
            // missing (an INVALID outcome), like any attachment with a lost chunk.
            Ok(failed) => {
                for (i, e) in failed {
                    outcomes[i] = e.verdict();
                }
            }
        }

        let chunk_keys: HashMap<usize, chunk::Key> = ready_attachments
            .iter()
            .filter_map(|r| r.chunk_key.clone().map(|k| (r.index, k)))
            .collect();
        let attachment_results = async {
            if ready_attachments.is_empty() {
                Vec::new()
            } else {
                attachment::save(&self.deps, ready_attachments, ahead).await
            }
        };
        let event_results = async {
            if ready_events.is_empty() {
                Ok(Vec::new())
            } else {
                event::process_ready(&self.deps, &ready_events, events_ahead, events_stored).await
            }
        };
        let (attachment_results, event_results) = futures::join!(attachment_results, event_results);
        let mut unfinished_keys = Vec::new();
        for (i, o) in attachment_results {
            if !matches!(o, Verdict::Done | Verdict::Reject(_)) {
                if let Some(k) = chunk_keys.get(&i) {
                    unfinished_keys.push(k.clone());
                }
            }
            outcomes[i] = o;
        }
        match event_results {
            Ok(done) => {
                for (i, o) in done {
                    outcomes[i] = o;
                }
            }
            // The events go one by one, decoded again from their messages (the batched path
            // took their payloads).
            Err(_) => {
                for r in &ready_events {
                    match IngestMessage::decode(batch[r.index].payload()) {
                        Ok(m) => rest.push((r.index, m)),
                        Err(reason) => outcomes[r.index] = Verdict::Reject(reason),
                    }
                }
                rest.sort_by_key(|(i, _)| *i);
            }
        }
        drop(ready_events);
        // An attachment that did not finish is retried without the chunks of this batch: they
        // are stored now (or, if that fails, retried with it).
        let late = chunks.take(&unfinished_keys);
        if !late.is_empty() {
            let positions: Vec<usize> = late.iter().map(|(i, _)| *i).collect();
            match chunk::store(&self.deps.db, late, ttl).await {
                Err(e) => {
                    for i in positions {
                        outcomes[i] = e.verdict();
                    }
                }
                Ok(failed) => {
                    for (i, e) in failed {
                        outcomes[i] = e.verdict();
                    }
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
                        Verdict::Defer
                    } else {
                        self.handle(&batch[i], &m).await
                    };
                    blocked |= !matches!(o, Verdict::Done | Verdict::Reject(_));
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
        let settled = events
            .iter()
            .all(|i| matches!(outcomes[*i], Verdict::Done | Verdict::Reject(_)));
        if settled {
            self.deps.inserted.passed(&batch);
        }
        outcomes
    }
}
