//! `type: event` messages (reference §2.5, design §5). Transactions are dropped with a metric;
//! feedback events are forwarded to the feedback topic; every other event is stored in `events`
//! (first write wins) with its attachments, then becomes an error occurrence without an event
//! body, produced until the event has a group (so a redelivered event that was never grouped
//! produces the same occurrence again). User reports that arrived before the event are shimmed.

use crate::attachment::{self, Owner};
use crate::stage::{unavailable, Deps, Step};
use crate::{chunk, grouping, metrics, shed, user_report};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text};
use serde_json::{Map, Value};
use sluice_core::ids;
use sluice_core::issues::payload;
use sluice_core::issues::project::Project;
use sluice_core::kafka::consumer::{Msg, Outcome};
use sluice_core::messages::enums::log_level;
use sluice_core::messages::{DlqReason, EventMessage, OccurrenceMessage, Rejection, Timestamp};
use sluice_core::storage::DbError;

/// Group type of error occurrences.
const ERROR_GROUP_TYPE: i32 = 1;

fn reject(reason: DlqReason, detail: impl Into<String>) -> Outcome {
    Outcome::Reject(Rejection::new(reason, detail))
}

/// Parses the event JSON: an object whose `event_id` matches the message's.
pub fn parse_payload(m: &EventMessage) -> Step<Map<String, Value>> {
    // Postgres cannot store NUL in jsonb; such an event can never be saved.
    if m.payload.windows(6).any(|w| w == b"\\u0000") {
        return Err(reject(
            DlqReason::InvalidEvent,
            "event contains a NUL character",
        ));
    }
    let data = match serde_json::from_slice::<Value>(&m.payload) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(reject(
                DlqReason::InvalidEvent,
                "event payload is not a JSON object",
            ))
        }
        Err(e) => {
            return Err(reject(
                DlqReason::Undecodable,
                format!("event payload: {e}"),
            ))
        }
    };
    let Some(id) = data.get("event_id") else {
        return Err(reject(
            DlqReason::MissingField,
            "event payload without `event_id`",
        ));
    };
    match id.as_str().map(ids::uuid_hex) {
        Some(Ok(id)) if id == m.event_id => Ok(data),
        Some(Ok(id)) => Err(reject(
            DlqReason::IdMismatch,
            format!(
                "payload event_id {id} differs from the message's {}",
                m.event_id
            ),
        )),
        _ => Err(reject(
            DlqReason::InvalidField,
            "payload `event_id` is not a UUID",
        )),
    }
}

/// Handles one `type: event` message.
pub async fn process(deps: &Deps, raw: &Msg, m: &EventMessage, project: &Project) -> Step<()> {
    let has_attachments = !m.attachments.is_empty();
    if shed::before_parse(&deps.settings, project, &m.event_id, has_attachments) {
        metrics::count("event", "load_shed");
        return Ok(());
    }
    let data = parse_payload(m)?;
    let event_type = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("null")
        .to_owned();
    if shed::after_parse(
        &deps.settings,
        project,
        &m.event_id,
        &event_type,
        has_attachments,
    ) {
        metrics::count("event", "load_shed");
        return Ok(());
    }
    match event_type.as_str() {
        "transaction" => {
            metrics::count("event", "transaction_dropped");
            drop_chunks(deps, m).await
        }
        "feedback" => forward_feedback(deps, raw, m, project, &data).await,
        _ => error_event(deps, m, project, data).await,
    }
}

async fn drop_chunks(deps: &Deps, m: &EventMessage) -> Step<()> {
    for a in &m.attachments {
        chunk::delete(&deps.db, m.project_id, &m.event_id, &a.id)
            .await
            .map_err(|e| Outcome::from_db(&e))?;
    }
    Ok(())
}

/// Saves the event's attachments (those Relay did not rate-limit) and drops their chunks.
async fn save_attachments(
    deps: &Deps,
    m: &EventMessage,
    project: &Project,
    group_id: Option<i64>,
    key_id: Option<u64>,
) -> Step<()> {
    let owner = Owner {
        project,
        event_id: &m.event_id,
        group_id,
        start_time: Some(m.start_time),
        key_id,
    };
    if attachment::enabled(project) {
        for a in m.attachments.iter().filter(|a| !a.rate_limited) {
            attachment::save(deps, &owner, a).await?;
        }
    }
    drop_chunks(deps, m).await
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
        return drop_chunks(deps, m).await;
    }
    save_attachments(deps, m, project, None, key_id(data)).await?;
    deps.producer
        .send(&deps.feedback_topic, raw.key.as_deref(), raw.payload(), &[])
        .await
        .map_err(unavailable)?;
    metrics::count("event", "feedback_forwarded");
    Ok(())
}

/// The stored event's group (`None` for an event stored now or not grouped yet).
struct Stored {
    group_id: Option<i64>,
}

async fn store(deps: &Deps, project_id: i64, event_id: &str, data: Value) -> Step<Stored> {
    let e = event_id.to_owned();
    deps.db
        .run(move |c| {
            #[derive(QueryableByName)]
            struct G {
                #[diesel(sql_type = Nullable<BigInt>)]
                group_id: Option<i64>,
            }
            let inserted = diesel::sql_query(
                "INSERT INTO events (project_id, event_id, data) VALUES ($1, $2::bpchar, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind::<BigInt, _>(project_id)
            .bind::<Text, _>(&e)
            .bind::<Jsonb, _>(&data)
            .execute(c)?;
            if inserted == 1 {
                return Ok(Stored { group_id: None });
            }
            let g: Option<G> = diesel::sql_query(
                "SELECT group_id FROM events WHERE project_id = $1 AND event_id = $2::bpchar",
            )
            .bind::<BigInt, _>(project_id)
            .bind::<Text, _>(&e)
            .get_result(c)
            .optional()?;
            Ok::<_, DbError>(Stored {
                group_id: g.and_then(|g| g.group_id),
            })
        })
        .await
        .map_err(|e| Outcome::from_db(&e))
}

async fn error_event(
    deps: &Deps,
    m: &EventMessage,
    project: &Project,
    data: Map<String, Value>,
) -> Step<()> {
    let key_id = key_id(&data);
    let data = Value::Object(data);
    let occurrence = occurrence(m, &data);
    let stored = store(deps, project.id, &m.event_id, data.clone()).await?;
    save_attachments(deps, m, project, stored.group_id, key_id).await?;
    if stored.group_id.is_none() {
        produce_occurrence(deps, occurrence).await?;
    } else {
        metrics::count("event", "already_grouped");
    }
    user_report::shim_waiting(deps, project, &m.event_id, &data).await
}

/// Produces an error occurrence (acknowledged before returning) and counts it.
async fn produce_occurrence(deps: &Deps, occurrence: OccurrenceMessage) -> Step<()> {
    let record = payload::build("occurrence", Some(occurrence), None, None)
        .map_err(|e| reject(DlqReason::InvalidEvent, e.to_string()))?;
    record
        .send(&deps.producer, &deps.occurrences_topic)
        .await
        .map_err(unavailable)?;
    metrics::count("event", "grouped");
    Ok(())
}

/// When the event happened: its `timestamp` (epoch seconds or RFC 3339), else the ingest time.
pub fn event_time(data: &Value, fallback: Timestamp) -> Timestamp {
    match data.get("timestamp") {
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(|s| Timestamp::from_epoch_secs(s).ok())
            .unwrap_or(fallback),
        Some(Value::String(s)) => Timestamp::parse_str(s).unwrap_or(fallback),
        _ => fallback,
    }
}

/// The error occurrence of an event: uuid5 id, the grouping's fingerprint, title and culprit,
/// no event body (the occurrence consumer reads the stored event).
pub fn occurrence(m: &EventMessage, data: &Value) -> OccurrenceMessage {
    let g = grouping::group(data);
    let level = data
        .get("level")
        .and_then(Value::as_str)
        .filter(|l| log_level(l).is_some())
        .unwrap_or("error");
    OccurrenceMessage {
        id: ids::error_occurrence_id(m.project_id, &m.event_id),
        project_id: m.project_id,
        event_id: Some(m.event_id.clone()),
        fingerprint: vec![g.fingerprint],
        issue_title: g.title,
        subtitle: g.culprit.clone(),
        resource_id: None,
        evidence_data: Some(Map::new()),
        evidence_display: Some(Vec::new()),
        group_type: ERROR_GROUP_TYPE,
        detection_time: event_time(data, m.start_time),
        level: Some(level.to_owned()),
        culprit: Some(g.culprit),
        initial_issue_priority: None,
        assignee: None,
        event: None,
        is_buffered_spans: false,
    }
}

/// An error event ready for the batched path.
pub struct Ready {
    pub index: usize,
    pub project: Project,
    pub event_id: String,
    pub data: Value,
    /// The payload as received (stored as is: no second serialization).
    pub raw: String,
    pub occurrence: OccurrenceMessage,
}

/// Whether `m` is a plain error event (no attachments, not shed) that the batched path can take;
/// everything else goes through [`process`].
pub fn ready(deps: &Deps, index: usize, m: &EventMessage, project: &Project) -> Option<Ready> {
    if !m.attachments.is_empty() {
        return None;
    }
    let data = parse_payload(m).ok()?;
    let event_type = data.get("type").and_then(Value::as_str).unwrap_or("null");
    if matches!(event_type, "transaction" | "feedback") {
        return None;
    }
    if shed::before_parse(&deps.settings, project, &m.event_id, false)
        || shed::after_parse(&deps.settings, project, &m.event_id, event_type, false)
    {
        return None;
    }
    let data = Value::Object(data);
    Some(Ready {
        raw: String::from_utf8(m.payload.clone()).ok()?,
        index,
        project: project.clone(),
        event_id: m.event_id.clone(),
        occurrence: occurrence(m, &data),
        data,
    })
}

/// Connections one batch of events is inserted over, at most.
const INSERT_PARALLELISM: usize = 2;
/// Fewer rows than this are inserted in one statement.
const MIN_ROWS_PER_INSERT: usize = 200;

/// Inserts `items` into `events` (one statement, first write wins); returns those of them that
/// already have a group.
async fn insert_many(deps: &Deps, items: &[&Ready]) -> Result<Vec<(i64, String)>, DbError> {
    let projects: Vec<i64> = items.iter().map(|r| r.project.id).collect();
    let events: Vec<String> = items.iter().map(|r| r.event_id.clone()).collect();
    let data: Vec<String> = items.iter().map(|r| r.raw.clone()).collect();
    #[derive(QueryableByName)]
    struct Grouped {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Text)]
        event_id: String,
    }
    deps.db
        .run(move |c| {
            diesel::sql_query(
                "WITH input AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(p, e, d)), \
                      ins AS (INSERT INTO events (project_id, event_id, data) \
                              SELECT p, e::bpchar, d::jsonb FROM input ON CONFLICT DO NOTHING) \
                 SELECT ev.project_id, ev.event_id::text AS event_id FROM events ev \
                 JOIN input i ON ev.project_id = i.p AND ev.event_id = i.e::bpchar \
                 WHERE ev.group_id IS NOT NULL",
            )
            .bind::<diesel::sql_types::Array<BigInt>, _>(projects)
            .bind::<diesel::sql_types::Array<Text>, _>(events)
            .bind::<diesel::sql_types::Array<Text>, _>(data)
            .load::<Grouped>(c)
            .map(|rows| rows.into_iter().map(|g| (g.project_id, g.event_id)).collect())
            .map_err(DbError::Query)
        })
        .await
}

/// Stores many error events (a statement per part, the parts concurrently), produces the
/// occurrences of those without a group concurrently, then shims waiting reports (one query).
/// `None` when an insert failed on something other than an outage: the caller then runs the events one by one, so one bad
/// event cannot hold back the others.
pub async fn process_ready(deps: &Deps, items: &[Ready]) -> Option<Vec<(usize, Outcome)>> {
    let projects: Vec<i64> = items.iter().map(|r| r.project.id).collect();
    let events: Vec<String> = items.iter().map(|r| r.event_id.clone()).collect();
    let started = std::time::Instant::now();
    // Large batches are split over a few connections: parsing the JSON into jsonb keeps one
    // server process busy, and the parts run on different cores.
    let part = items
        .len()
        .div_ceil(INSERT_PARALLELISM)
        .max(MIN_ROWS_PER_INSERT);
    // In key order, so a repeated event lands in one part and the parts lock rows in one order.
    let mut sorted: Vec<&Ready> = items.iter().collect();
    sorted.sort_by(|a, b| (a.project.id, &a.event_id).cmp(&(b.project.id, &b.event_id)));
    let stored: Result<Vec<Vec<(i64, String)>>, DbError> =
        futures::future::join_all(sorted.chunks(part).map(|chunk| insert_many(deps, chunk)))
            .await
            .into_iter()
            .collect();
    let stored = stored.map(|parts| parts.into_iter().flatten().collect::<Vec<_>>());
    metrics::time_step("events_insert", started);
    let grouped: std::collections::HashSet<(i64, String)> = match stored {
        Ok(rows) => rows.into_iter().collect(),
        Err(e) if e.is_dependency_wide() => {
            return Some(items.iter().map(|r| (r.index, unavailable(&e))).collect())
        }
        Err(e) => {
            tracing::warn!(error = %e, "batched event insert failed; processing one by one");
            return None;
        }
    };
    let started = std::time::Instant::now();
    let produced = futures::future::join_all(items.iter().map(|r| async {
        if grouped.contains(&(r.project.id, r.event_id.clone())) {
            metrics::count("event", "already_grouped");
            return Outcome::Done;
        }
        produce_occurrence(deps, r.occurrence.clone())
            .await
            .err()
            .unwrap_or(Outcome::Done)
    }))
    .await;
    metrics::time_step("occurrences_produce", started);
    let mut out: Vec<(usize, Outcome)> = items.iter().map(|r| r.index).zip(produced).collect();
    let started = std::time::Instant::now();
    let waiting = user_report::waiting_for(deps, projects, events).await;
    metrics::time_step("reports_lookup", started);
    match waiting {
        Ok(waiting) => {
            for (pid, eid) in waiting {
                let Some(pos) = items
                    .iter()
                    .position(|r| r.project.id == pid && r.event_id == eid)
                else {
                    continue;
                };
                if out[pos].1 != Outcome::Done {
                    continue;
                }
                let r = &items[pos];
                if let Err(o) =
                    user_report::shim_waiting(deps, &r.project, &r.event_id, &r.data).await
                {
                    out[pos].1 = o;
                }
            }
        }
        Err(o) => {
            for (_, slot) in out.iter_mut() {
                if *slot == Outcome::Done {
                    *slot = o.clone();
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(payload: &str) -> EventMessage {
        EventMessage {
            payload: payload.as_bytes().to_vec(),
            start_time: Timestamp::now(),
            event_id: "606f3c2bc036486eac417841ebfbf7f0".into(),
            project_id: 42,
            remote_addr: None,
            attachments: Vec::new(),
        }
    }

    fn reason(r: Step<Map<String, Value>>) -> Option<DlqReason> {
        match r {
            Err(Outcome::Reject(r)) => Some(r.reason),
            _ => None,
        }
    }

    #[test]
    fn payload_checks() {
        assert_eq!(
            reason(parse_payload(&msg("{}"))),
            Some(DlqReason::MissingField)
        );
        assert_eq!(
            reason(parse_payload(&msg("nope"))),
            Some(DlqReason::Undecodable)
        );
        assert_eq!(
            reason(parse_payload(&msg("[1]"))),
            Some(DlqReason::InvalidEvent)
        );
        assert_eq!(
            reason(parse_payload(&msg(
                r#"{"event_id":"00000000000000000000000000000001"}"#
            ))),
            Some(DlqReason::IdMismatch)
        );
        assert_eq!(
            reason(parse_payload(&msg(
                r#"{"event_id":"606f3c2b-c036-486e-ac41-7841ebfbf7f0","message":"a\u0000"}"#
            ))),
            Some(DlqReason::InvalidEvent)
        );
        assert!(parse_payload(&msg(
            r#"{"event_id":"606F3C2B-C036-486E-AC41-7841EBFBF7F0"}"#
        ))
        .is_ok());
    }

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
        assert_eq!(o.culprit.as_deref(), Some("m in f"));
        assert_eq!(o.level.as_deref(), Some("warning"));
        assert!(o.event.is_none());
        assert_eq!(o.detection_time.epoch_secs(), 1795432199.5);
        let bad_level = occurrence(&m, &json!({"level": "loud"}));
        assert_eq!(bad_level.level.as_deref(), Some("error"));
    }
}
