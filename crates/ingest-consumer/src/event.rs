//! `type: event` messages. Transactions are dropped with a metric; feedback events are forwarded
//! to the feedback topic; every other event takes one path, for a batch of events or a single
//! one ([`process_ready`]): stored in `events` (first write wins) with its attachments, then
//! turned into an error occurrence without an event body, produced until the event has a group
//! (so a redelivered event that was never grouped produces the same occurrence again). User
//! reports that arrived before the event are shimmed.

use crate::attachment::{self, Owner};
use crate::context::{reject, Deps, Step};
use crate::{event_ahead, event_payload, grouping, metrics, shed, user_report};
use serde_json::{Map, Value};
use sluice_core::failure::Classify;
use sluice_core::ids;
use sluice_core::issues::payload;
use sluice_core::issues::project::Project;
use sluice_core::kafka::consumer::{Msg, Verdict};
use sluice_core::messages::enums::{data_category, log_level, Outcome};
use sluice_core::messages::{
    event_time, ChunkedAttachment, DlqReason, EventMessage, IngestMessage, OccurrenceMessage,
    OutcomeMessage, Timestamp,
};
use sluice_core::parallel;
use sluice_core::storage::events::{self, RawEvent};
use sluice_core::storage::{DbError, EventKey};
use std::collections::HashMap;
use std::sync::Arc;

/// Group type of error occurrences.
const ERROR_GROUP_TYPE: i32 = 1;

/// What an event message is, once the load-shedding lists and its payload have been read.
enum Kind {
    Shed,
    Transaction,
    Feedback(Map<String, Value>),
    Error(Map<String, Value>),
}

/// Reads `m`: shedding is checked before the payload is parsed and again with its type.
fn classify(deps: &Deps, m: &EventMessage, project: &Project) -> Step<Kind> {
    let has_attachments = !m.attachments.is_empty();
    if shed::before_parse(&deps.settings, project, &m.event_id, has_attachments) {
        return Ok(Kind::Shed);
    }
    let data = event_payload::parse(m)?;
    let event_type = data.get("type").and_then(Value::as_str).unwrap_or("null");
    if shed::after_parse(
        &deps.settings,
        project,
        &m.event_id,
        event_type,
        has_attachments,
    ) {
        return Ok(Kind::Shed);
    }
    Ok(match event_type {
        "transaction" => Kind::Transaction,
        "feedback" => Kind::Feedback(data),
        _ => Kind::Error(data),
    })
}

/// Handles one `type: event` message outside the batch.
pub async fn process(deps: &Deps, raw: &Msg, m: &EventMessage, project: &Project) -> Step<()> {
    match classify(deps, m, project)? {
        Kind::Shed => {
            metrics::count("event", "load_shed");
            Ok(())
        }
        Kind::Transaction => {
            metrics::count("event", "transaction_dropped");
            attachment::drop_chunks(deps, m.project_id, &m.event_id, &m.attachments).await
        }
        Kind::Feedback(data) => forward_feedback(deps, raw, m, project, &data).await,
        Kind::Error(data) => {
            let Some(ready) = Ready::of(0, &mut m.clone(), project, data) else {
                return Err(reject(
                    DlqReason::InvalidEvent,
                    "event payload is not UTF-8",
                ));
            };
            match process_ready(
                deps,
                std::slice::from_ref(&ready),
                Default::default(),
                || {},
            )
            .await
            {
                Ok(mut done) => done.pop().map_or(Ok(()), |(_, v)| match v {
                    Verdict::Done => Ok(()),
                    v => Err(v),
                }),
                Err(e) => Err(e.verdict()),
            }
        }
    }
}

fn key_id(data: &Map<String, Value>) -> Option<u64> {
    match data.get("key_id") {
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
}

/// Feedback goes to the feedback worker unchanged (no `source` header: a new feedback).
async fn forward_feedback(
    deps: &Deps,
    raw: &Msg,
    m: &EventMessage,
    project: &Project,
    data: &Map<String, Value>,
) -> Step<()> {
    let denylist = &deps.settings.feedback.slug_denylist;
    if denylist.contains(&project.organization_slug) {
        metrics::count("event", "feedback_denylisted");
        return attachment::drop_chunks(deps, m.project_id, &m.event_id, &m.attachments).await;
    }
    let owner = Owner {
        project: project.clone(),
        event_id: m.event_id.clone(),
        group_id: None,
        start_time: Some(m.start_time),
        key_id: key_id(data),
        fingerprint: None,
    };
    attachment::for_event(deps, &m.attachments, &owner).await?;
    deps.producer
        .send(&deps.feedback_topic, raw.key.as_deref(), raw.payload(), &[])
        .await
        .map_err(|e| e.verdict())?;
    metrics::count("event", "feedback_forwarded");
    Ok(())
}

/// Produces an error occurrence (acknowledged before returning) and counts it.
async fn produce_occurrence(deps: &Deps, occurrence: OccurrenceMessage) -> Step<()> {
    let record = payload::build("occurrence", Some(occurrence), None, None)
        .map_err(|e| reject(DlqReason::InvalidEvent, e.to_string()))?;
    record
        .send(&deps.producer, &deps.occurrences_topic)
        .await
        .map_err(|e| e.verdict())?;
    metrics::count("event", "grouped");
    Ok(())
}

/// The error occurrence of an event: uuid5 id, the grouping's fingerprint, title, culprit and
/// the exception's value as subtitle, the priority of its level, and in `evidence_data` the
/// issue metadata and the rule that grouped it; no event body (the occurrence consumer reads the
/// stored event).
pub fn occurrence(m: &EventMessage, data: &Value) -> OccurrenceMessage {
    let g = grouping::group(data);
    let level = data
        .get("level")
        .and_then(Value::as_str)
        .filter(|l| log_level(l).is_some())
        .unwrap_or("error");
    let subtitle = g
        .metadata
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut evidence = Map::new();
    evidence.insert(
        "grouping".into(),
        serde_json::json!({"config": grouping::config(), "rule": g.rule}),
    );
    evidence.insert("metadata".into(), Value::Object(g.metadata));
    OccurrenceMessage {
        id: ids::error_occurrence_id(m.project_id, &m.event_id),
        project_id: m.project_id,
        event_id: Some(m.event_id.clone()),
        fingerprint: vec![g.fingerprint],
        issue_title: g.title,
        subtitle,
        resource_id: None,
        evidence_data: Some(evidence),
        evidence_display: Some(Vec::new()),
        group_type: ERROR_GROUP_TYPE,
        detection_time: event_time(data, m.start_time),
        level: Some(level.to_owned()),
        culprit: Some(g.culprit),
        initial_issue_priority: Some(grouping::priority(level)),
        assignee: None,
        event: None,
        is_buffered_spans: false,
    }
}

/// An error event ready to be stored. Its parsed payload is not kept: the occurrence is
/// built from it at once, and a batch of these waits for the database.
pub struct Ready {
    pub index: usize,
    pub project: Project,
    pub event_id: String,
    /// The payload as received (stored as is: no second serialization; parsed again only to
    /// shim user reports that were waiting for the event).
    pub raw: Arc<String>,
    pub occurrence: OccurrenceMessage,
    pub attachments: Vec<ChunkedAttachment>,
    pub start_time: Timestamp,
    pub key_id: Option<u64>,
}

impl Ready {
    /// Takes `m`'s payload and attachments without copying them; `None` (and `m` untouched)
    /// if the payload is not UTF-8.
    fn of(
        index: usize,
        m: &mut EventMessage,
        project: &Project,
        data: Map<String, Value>,
    ) -> Option<Ready> {
        let raw = match String::from_utf8(std::mem::take(&mut m.payload)) {
            Ok(raw) => raw,
            Err(e) => {
                m.payload = e.into_bytes();
                return None;
            }
        };
        let key_id = key_id(&data);
        Some(Ready {
            occurrence: occurrence(m, &Value::Object(data)),
            raw: Arc::new(raw),
            index,
            project: project.clone(),
            event_id: m.event_id.clone(),
            attachments: std::mem::take(&mut m.attachments),
            start_time: m.start_time,
            key_id,
        })
    }

    /// The payload parsed again (it parsed when the event was made ready).
    pub fn data(&self) -> Value {
        serde_json::from_str(&self.raw).unwrap_or(Value::Null)
    }
}

/// `m` made ready if it is an error event (not shed) for the batch, taking its payload and
/// attachments; otherwise `None` and `m` is left for [`process`].
pub fn ready(deps: &Deps, index: usize, m: &mut EventMessage, project: &Project) -> Option<Ready> {
    match classify(deps, m, project) {
        Ok(Kind::Error(data)) => Ready::of(index, m, project, data),
        _ => None,
    }
}

/// Threads the events of a batch are made [`ready`] on, at most, and the fewest events worth a
/// thread of their own.
const READY_PARALLELISM: usize = 2;
const MIN_EVENTS_PER_THREAD: usize = 64;

/// [`ready`] for many event messages (anything else is not ready), in order: a message made
/// ready is returned emptied of its payload. Parsing and grouping are the stage's main CPU
/// work and a batch's events do not depend on each other, so a large batch is split over a
/// few threads.
pub fn ready_many(
    deps: &Deps,
    items: Vec<(usize, IngestMessage, Project)>,
) -> Vec<((usize, IngestMessage), Option<Ready>)> {
    parallel::map_ordered(
        items,
        READY_PARALLELISM,
        MIN_EVENTS_PER_THREAD,
        |(i, mut m, p)| {
            let r = match &mut m {
                IngestMessage::Event(e) => ready(deps, i, e, &p),
                _ => None,
            };
            ((i, m), r)
        },
    )
}

/// Connections one batch of events is inserted over, at most.
const INSERT_PARALLELISM: usize = 2;
/// Fewer rows than this are inserted in one statement.
const MIN_ROWS_PER_INSERT: usize = 200;

/// One row of `events`, owned, so it can be written by a task of its own.
pub(crate) type Row = (i64, String, Arc<String>, Option<i32>);

/// The rows of `items` in key order, split into the parts inserted concurrently. In key order
/// so the parts lock rows in one order (a key repeated across the boundary of two parts is
/// stored by one of them; the other waits for it, then skips the key).
pub(crate) fn rows_in_parts(items: &[Ready]) -> Vec<Vec<Row>> {
    // Large batches are split over a few connections: parsing the JSON into jsonb keeps one
    // server process busy, and the parts run on different cores.
    let part = items
        .len()
        .div_ceil(INSERT_PARALLELISM)
        .max(MIN_ROWS_PER_INSERT);
    let mut rows: Vec<Row> = items
        .iter()
        .map(|r| {
            let days = ChunkedAttachment::longest_retention(&r.attachments).map(i32::from);
            (r.project.id, r.event_id.clone(), r.raw.clone(), days)
        })
        .collect();
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut parts = Vec::with_capacity(INSERT_PARALLELISM);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        parts.push(rows.by_ref().take(part).collect());
    }
    parts
}

/// Inserts the rows of `parts` into `events` (first write wins), each part in a statement of
/// its own and the parts concurrently; returns the group of the events that already have one.
pub(crate) async fn insert(
    deps: &Deps,
    parts: Vec<Vec<Row>>,
) -> Result<HashMap<EventKey, i64>, DbError> {
    let stored: Vec<Result<HashMap<EventKey, i64>, DbError>> =
        futures::future::join_all(parts.into_iter().map(|rows| {
            deps.db.run(move |c| {
                let events: Vec<RawEvent<'_>> = rows
                    .iter()
                    .map(|(p, e, d, r)| RawEvent {
                        project_id: *p,
                        event_id: e,
                        json: d,
                        retention_days: *r,
                    })
                    .collect();
                Ok(events::insert_raw(c, &events)?)
            })
        }))
        .await;
    let mut grouped = HashMap::new();
    for part in stored {
        grouped.extend(part?);
    }
    Ok(grouped)
}

/// Stores error events (a statement per part, the parts concurrently, or the insert started
/// ahead: [`event_ahead`]) and saves their attachments; then produces the occurrences of those
/// without a group, emits their outcomes and looks up waiting reports, together; then shims the
/// reports. `stored` is called once the events are stored, before anything else.
/// `Err` when an insert failed on something other than an outage: the caller then runs the
/// events one by one, so one bad event cannot hold back the others.
pub async fn process_ready(
    deps: &Deps,
    items: &[Ready],
    ahead: event_ahead::Ahead,
    stored: impl FnOnce(),
) -> Result<Vec<(usize, Verdict)>, DbError> {
    let started = std::time::Instant::now();
    let inserted = match ahead.outcome().await {
        Some(Ok(grouped)) => {
            metrics::event_inserts_n("ahead", items.len());
            Ok(grouped)
        }
        // An outage is not waited out twice.
        Some(Err(e)) if e.failure().is_outage() => Err(e),
        // Inserted again here, where a refused row is classified as for any insert.
        _ => {
            metrics::event_inserts_n("with_batch", items.len());
            insert(deps, rows_in_parts(items)).await
        }
    };
    metrics::time_step("events_insert", started);
    let grouped: HashMap<EventKey, i64> = match inserted {
        Ok(grouped) => {
            stored();
            grouped
        }
        Err(e) if e.failure().is_outage() => {
            return Ok(items.iter().map(|r| (r.index, e.verdict())).collect())
        }
        Err(e) => {
            tracing::warn!(error = %e, "batched event insert failed; processing one by one");
            return Err(e);
        }
    };
    // An event is done with its attachments saved first; the steps after that do not depend
    // on each other and run together: its occurrence produced (unless it has a group), its
    // ACCEPTED outcome emitted, and the user reports waiting for it looked up.
    let attached = futures::future::join_all(items.iter().map(|r| async {
        if r.attachments.is_empty() {
            return Verdict::Done;
        }
        let owner = Owner {
            project: r.project.clone(),
            event_id: r.event_id.clone(),
            group_id: grouped.get(&(r.project.id, r.event_id.clone())).copied(),
            start_time: Some(r.start_time),
            key_id: r.key_id,
            fingerprint: r.occurrence.fingerprint.first().cloned(),
        };
        attachment::for_event(deps, &r.attachments, &owner)
            .await
            .err()
            .unwrap_or(Verdict::Done)
    }))
    .await;
    let produce = async {
        let started = std::time::Instant::now();
        let produced = futures::future::join_all(items.iter().zip(&attached).map(|(r, v)| async {
            if *v != Verdict::Done {
                return v.clone();
            }
            if grouped.contains_key(&(r.project.id, r.event_id.clone())) {
                metrics::count("event", "already_grouped");
                return Verdict::Done;
            }
            produce_occurrence(deps, r.occurrence.clone())
                .await
                .err()
                .unwrap_or(Verdict::Done)
        }))
        .await;
        metrics::time_step("occurrences_produce", started);
        produced
    };
    let lookup = async {
        let started = std::time::Instant::now();
        let keys: Vec<EventKey> = items
            .iter()
            .map(|r| (r.project.id, r.event_id.clone()))
            .collect();
        let waiting = user_report::waiting_for(deps, keys).await;
        metrics::time_step("reports_lookup", started);
        waiting
    };
    let (produced, refused, waiting) =
        futures::join!(produce, accept(deps, items, &attached), lookup);
    let mut out: Vec<(usize, Verdict)> = items.iter().map(|r| r.index).zip(produced).collect();
    if let Some(v) = refused {
        for (_, slot) in out.iter_mut() {
            if *slot == Verdict::Done {
                *slot = v.clone();
            }
        }
    }
    match waiting {
        Ok(waiting) => {
            for (pid, eid) in waiting {
                let Some(pos) = items
                    .iter()
                    .position(|r| r.project.id == pid && r.event_id == eid)
                else {
                    continue;
                };
                if out[pos].1 != Verdict::Done {
                    continue;
                }
                let r = &items[pos];
                if let Err(v) =
                    user_report::shim_waiting(deps, &r.project, &r.event_id, &r.data()).await
                {
                    out[pos].1 = v;
                }
            }
        }
        Err(v) => {
            for (_, slot) in out.iter_mut() {
                if *slot == Verdict::Done {
                    *slot = v.clone();
                }
            }
        }
    }
    Ok(out)
}

/// One ACCEPTED outcome (category error) per stored event, once per event across replays:
/// for the events stored with their attachments (`attached` Done), emitted before the offset is
/// committed. The error that kept them from being emitted, if any.
async fn accept(deps: &Deps, items: &[Ready], attached: &[Verdict]) -> Option<Verdict> {
    let started = std::time::Instant::now();
    let outcomes: Vec<(String, OutcomeMessage)> = items
        .iter()
        .zip(attached)
        .filter(|(_, v)| **v == Verdict::Done)
        .map(|(r, _)| {
            let mut o = OutcomeMessage::new(
                r.project.organization_id as u64,
                r.project.id as u64,
                Outcome::Accepted,
                data_category::ERROR,
            );
            o.event_id = Some(r.event_id.clone());
            o.key_id = r.key_id;
            o.timestamp = r.start_time;
            (format!("event:{}:{}", r.project.id, r.event_id), o)
        })
        .collect();
    if outcomes.is_empty() {
        return None;
    }
    let refused = deps.outcomes.emit_once_many(outcomes).await.err();
    metrics::time_step("events_outcomes", started);
    refused.map(|e| e.verdict())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_payload::tests::msg;
    use serde_json::json;

    #[test]
    fn occurrence_of_an_error_event() {
        let m = msg("{}");
        let data = json!({"timestamp": 1795432199.5, "level": "warning",
            "exception": {"values": [{"type": "E", "value": "v", "stacktrace": {"frames": [
                {"module": "m", "function": "f", "in_app": true}]}}]}});
        let o = occurrence(&m, &data);
        assert_eq!(o.id, ids::error_occurrence_id(42, &m.event_id));
        assert_eq!(o.group_type, 1);
        assert_eq!(o.issue_title, "E: v");
        assert_eq!(o.subtitle, "v");
        assert_eq!(o.culprit.as_deref(), Some("m in f"));
        assert_eq!(o.level.as_deref(), Some("warning"));
        assert_eq!(o.initial_issue_priority, Some(50));
        let evidence = o.evidence_data.clone().unwrap_or_default();
        assert_eq!(evidence["grouping"]["rule"], "in-app-stacktrace");
        assert_eq!(evidence["metadata"]["type"], "E");
        assert_eq!(evidence["metadata"]["function"], "f");
        assert_eq!(evidence["metadata"]["in_app_frame_mix"], "in-app-only");
        assert!(o.event.is_none());
        assert_eq!(o.detection_time.epoch_secs(), 1795432199.5);
        let bad_level = occurrence(&m, &json!({"level": "loud"}));
        assert_eq!(bad_level.level.as_deref(), Some("error"));
        assert_eq!(bad_level.initial_issue_priority, Some(75));
        let info = occurrence(&m, &json!({"level": "info", "message": "hello"}));
        assert_eq!(info.initial_issue_priority, Some(25));
    }
}
