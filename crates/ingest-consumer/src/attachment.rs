//! Attachments: standalone attachment messages and the attachments an event lists, saved by one
//! path ([`save`]) whether one attachment or a whole batch of them. The body comes from the
//! chunks (in memory when they came in the same batch, else from Postgres), inline `data`, or is
//! empty; a non-empty body is stored raw in object storage under a key built from ids only; the
//! row is inserted once per (project, event, attachment id); ACCEPTED / INVALID `missing_chunks`
//! / RATE_LIMITED outcomes are emitted once per attachment.
//!
//! An attachment Relay uploaded itself and sent by reference (`stored_id`) is recorded as a
//! reference (`blob_path = "objectstore:<stored_id>"`, its declared size) when
//! `attachments.relay_objectstore_url` says where those uploads are; otherwise it gets an
//! INVALID outcome `stored_attachment_unavailable` (and a metric), never an empty row.
//!
//! Crash reports (`event.minidump`, `event.applecrashreport`) follow the option
//! `store_crash_reports` (project, else organization; Sentry's `sentry:store_crash_reports` is
//! read too): 0 (the default) stores none, -1 all, N at most N per issue. Each one not stored
//! gets Sentry's outcome, FILTERED `crash-report-limit` with its size.

use crate::chunk::{self, InBatch, Key};
use crate::context::{emit, reject, Deps, Step, BODY_BUDGET_BYTES};
use crate::{metrics, shed};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde_json::Value;
use sha1::{Digest, Sha1};
use sluice_core::failure::Classify;
use sluice_core::issues::project::Project;
use sluice_core::kafka::consumer::Verdict;
use sluice_core::messages::enums::{data_category, Outcome};
use sluice_core::messages::{
    AttachmentMessage, ChunkedAttachment, DlqReason, OutcomeMessage, Timestamp,
};
use sluice_core::objects::ObjectsError;
use sluice_core::storage::attachments::{self, Row};
use sluice_core::storage::DbError;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::task::AbortOnDropHandle;

/// Attachment types a standalone attachment message may carry.
pub const STANDALONE_TYPES: [&str; 2] = ["event.attachment", "event.view_hierarchy"];

/// Object writes in flight at once.
pub const PUT_CONCURRENCY: usize = 32;

/// Where an attachment belongs.
#[derive(Clone)]
pub struct Owner {
    pub project: Project,
    /// 32 lowercase hex characters.
    pub event_id: String,
    /// The event's group when known; otherwise looked up when the row is written.
    pub group_id: Option<i64>,
    /// Ingest time of the event (outcome timestamp); now when absent.
    pub start_time: Option<Timestamp>,
    /// The DSN key id, for outcomes.
    pub key_id: Option<u64>,
    /// The event's grouping fingerprint (md5 hex), which finds its issue before the event has
    /// a group (crash-report limits); `None` outside error events.
    pub fingerprint: Option<String>,
}

/// An attachment ready to be saved.
pub struct Pending {
    /// Position of the message it came from (or of the attachment within its event).
    pub index: usize,
    pub owner: Owner,
    pub att: ChunkedAttachment,
    /// The body as parts; `None` when chunks are missing.
    pub body: Option<Vec<Bytes>>,
    /// Set when the body comes from chunks (they are removed once the attachment is saved).
    pub chunk_key: Option<Key>,
    /// The share of the body budget a body read from Postgres holds until it is saved.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Pending {
    fn size(&self) -> u64 {
        self.body
            .as_ref()
            .map(|parts| parts.iter().map(|p| p.len() as u64).sum())
            .unwrap_or(0)
    }
}

/// Whether the organization accepts attachments (org option `event_attachments`, default on).
pub fn enabled(project: &Project) -> bool {
    project
        .organization_options
        .get("event_attachments")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

fn standalone_owner(m: &AttachmentMessage, project: &Project) -> Owner {
    Owner {
        project: project.clone(),
        event_id: m.event_id.clone(),
        group_id: None,
        start_time: None,
        key_id: None,
        fingerprint: None,
    }
}

/// Where an attachment's body comes from: inline `data` first, else its chunks, else it is empty.
enum Source {
    Inline(Bytes),
    Chunks(Key, u32),
    /// Uploaded by Relay; only its key is here.
    Stored,
    Empty,
}

fn source(project_id: u64, event_id: &str, att: &ChunkedAttachment) -> Source {
    match (&att.data, att.chunks) {
        (Some(data), _) => Source::Inline(Bytes::from(data.clone())),
        (None, Some(n)) if n > 0 => {
            Source::Chunks((project_id, event_id.to_owned(), att.id.clone()), n)
        }
        (None, _) if att.stored_id.is_some() => Source::Stored,
        (None, _) => Source::Empty,
    }
}

/// Whether `att` is a body Relay stored itself (by reference).
fn by_reference(att: &ChunkedAttachment) -> bool {
    matches!(source(0, "", att), Source::Stored)
}

/// A standalone attachment that can be saved with the batch: attachments on, not shed, a savable
/// type, and a body that is inline, empty, or complete in `chunks`. Everything else goes
/// through [`process_individual`].
pub fn standalone(
    deps: &Deps,
    index: usize,
    m: &AttachmentMessage,
    project: &Project,
    chunks: &InBatch,
) -> Option<Pending> {
    let att = &m.attachment;
    if !enabled(project)
        || !STANDALONE_TYPES.contains(&att.attachment_type.as_str())
        || shed::before_parse(&deps.settings, project, &m.event_id, true)
    {
        return None;
    }
    let (body, chunk_key) = match source(m.project_id, &m.event_id, att) {
        Source::Inline(data) => (vec![data], None),
        Source::Chunks(key, n) => (chunks.complete(&key, n)?, Some(key)),
        Source::Stored | Source::Empty => (Vec::new(), None),
    };
    Some(Pending {
        index,
        owner: standalone_owner(m, project),
        att: att.clone(),
        body: Some(body),
        chunk_key,
        permit: None,
    })
}

/// The attachment with its body read from inline data or the stored chunks.
async fn with_stored_body(
    deps: &Deps,
    index: usize,
    owner: Owner,
    att: &ChunkedAttachment,
) -> Step<Pending> {
    let mut permit = None;
    let (body, chunk_key) = match source(owner.project.id as u64, &owner.event_id, att) {
        Source::Inline(data) => (Some(vec![data]), None),
        Source::Chunks(key, n) => {
            permit = Some(body_permit(deps, att, n).await?);
            let body = chunk::load(&deps.db, key.clone(), n)
                .await
                .map_err(|e| e.verdict())?;
            (body, Some(key))
        }
        Source::Stored | Source::Empty => (Some(Vec::new()), None),
    };
    Ok(Pending {
        index,
        owner,
        att: att.clone(),
        body,
        chunk_key,
        permit,
    })
}

/// Waits until the body budget can hold `att` (its declared size, else `chunks` MiB; a body
/// larger than the whole budget waits for all of it, so it is read alone).
async fn body_permit(
    deps: &Deps,
    att: &ChunkedAttachment,
    chunks: u32,
) -> Step<tokio::sync::OwnedSemaphorePermit> {
    let estimate = att.size.unwrap_or(u64::from(chunks) << 20);
    let kib = estimate
        .div_ceil(1024)
        .clamp(1, (BODY_BUDGET_BYTES >> 10) as u64) as u32;
    deps.bodies
        .clone()
        .acquire_many_owned(kib)
        .await
        .map_err(|e| Verdict::Unavailable(format!("body budget: {e}")))
}

/// A standalone `attachment` message outside the batch (its chunks are read from Postgres).
pub async fn process_individual(deps: &Deps, m: &AttachmentMessage, project: &Project) -> Step<()> {
    if !enabled(project) {
        tracing::info!(
            organization_id = project.organization_id,
            "Organization has no event attachments"
        );
        metrics::count("attachment", "attachments_disabled");
        return Ok(());
    }
    if shed::before_parse(&deps.settings, project, &m.event_id, true) {
        metrics::count("attachment", "load_shed");
        return Ok(());
    }
    let att = &m.attachment;
    if STANDALONE_TYPES.contains(&att.attachment_type.as_str()) {
        let pending = with_stored_body(deps, 0, standalone_owner(m, project), att).await?;
        first_failure(save(deps, vec![pending], Ahead::default()).await)?;
    } else {
        tracing::error!(
            attachment_type = %sluice_core::messages::dlq::truncate_utf8(&att.attachment_type, 64),
            "invalid individual attachment type"
        );
        metrics::count("attachment", "invalid_type");
    }
    let key = (m.project_id, m.event_id.clone(), att.id.clone());
    chunk::delete(&deps.db, vec![key])
        .await
        .map_err(|e| e.verdict())
}

/// Saves the attachments an event lists (those Relay did not rate-limit, crash reports within
/// the project's limit), then drops the chunks of every attachment it lists.
pub async fn for_event(deps: &Deps, attachments: &[ChunkedAttachment], owner: &Owner) -> Step<()> {
    if enabled(&owner.project) {
        let limit = crash_report_limit(&owner.project);
        // Crash reports the event's issue holds, read once when the first one comes.
        let mut held: Option<i64> = None;
        // One at a time: an event's bodies are never all in memory together.
        for (i, a) in attachments
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.rate_limited)
        {
            if attachments::CRASH_REPORT_TYPES.contains(&a.attachment_type.as_str()) && limit >= 0 {
                let n = match held {
                    Some(n) => n,
                    None if limit == 0 => 0,
                    None => crash_reports_held(deps, owner, limit).await?,
                };
                if n >= limit {
                    metrics::count("attachment", "crash_report_limit");
                    let mut o = outcome(owner, Outcome::Filtered, a.size.unwrap_or(0).max(1));
                    o.reason = Some("crash-report-limit".into());
                    let key = outcome_key(owner.project.id as u64, &owner.event_id, &a.id);
                    emit(deps, &key, &o).await?;
                    held = Some(n);
                    continue;
                }
                held = Some(n + 1);
            }
            let pending = with_stored_body(deps, i, owner.clone(), a).await?;
            first_failure(save(deps, vec![pending], Ahead::default()).await)?;
        }
    }
    let pid = owner.project.id as u64;
    drop_chunks(deps, pid, &owner.event_id, attachments).await
}

/// Crash reports stored per issue: the project's `store_crash_reports`, else the
/// organization's; -1 is unlimited, `true` means -1, `false` or absent 0 (store none), at most
/// 100 otherwise.
pub fn crash_report_limit(project: &Project) -> i64 {
    let read = |options: &Value| {
        ["store_crash_reports", "sentry:store_crash_reports"]
            .iter()
            .find_map(|k| match options.get(*k)? {
                Value::Bool(true) => Some(-1),
                Value::Bool(false) => Some(0),
                Value::Number(n) => n.as_i64().map(|n| if n < 0 { -1 } else { n.min(100) }),
                _ => None,
            })
    };
    read(&project.options)
        .or_else(|| read(&project.organization_options))
        .unwrap_or(0)
}

/// How many crash reports the event's issue already holds (at most `limit`).
async fn crash_reports_held(deps: &Deps, owner: &Owner, limit: i64) -> Step<i64> {
    let (pid, group, event) = (owner.project.id, owner.group_id, owner.event_id.clone());
    let hash = owner
        .fingerprint
        .as_deref()
        .map(sluice_core::ids::md5_hex)
        .unwrap_or_default();
    deps.db
        .run(move |c| {
            Ok(attachments::crash_reports_of_group(
                c, pid, &event, group, &hash, limit,
            )?)
        })
        .await
        .map_err(|e: DbError| e.verdict())
}

/// Removes the chunks of every attachment of an event.
pub async fn drop_chunks(
    deps: &Deps,
    project_id: u64,
    event_id: &str,
    attachments: &[ChunkedAttachment],
) -> Step<()> {
    let keys = attachments
        .iter()
        .map(|a| (project_id, event_id.to_owned(), a.id.clone()))
        .collect();
    chunk::delete(&deps.db, keys).await.map_err(|e| e.verdict())
}

fn first_failure(results: Vec<(usize, Verdict)>) -> Step<()> {
    match results.into_iter().find(|(_, v)| *v != Verdict::Done) {
        Some((_, v)) => Err(v),
        None => Ok(()),
    }
}

/// Saves `items`, using the objects `ahead` wrote for them; returns each one's verdict by index.
/// Idempotent: objects are rewritten with the same bytes, rows inserted once, outcomes emitted
/// once.
pub async fn save(deps: &Deps, items: Vec<Pending>, ahead: Ahead) -> Vec<(usize, Verdict)> {
    let mut out: Vec<(usize, Verdict)> = Vec::with_capacity(items.len());
    // Missing chunks and (when the limiter is on) rate-limited attachments end with an outcome.
    let mut ended: Vec<(usize, String, OutcomeMessage)> = Vec::new();
    let mut to_store = Vec::with_capacity(items.len());
    for p in items {
        let pid = p.owner.project.id as u64;
        let key = outcome_key(pid, &p.owner.event_id, &p.att.id);
        if by_reference(&p.att) && deps.settings.attachments.relay_objectstore_url.is_none() {
            tracing::warn!(event_id = %p.owner.event_id, attachment_id = %p.att.id,
                "attachment stored by Relay (stored_id) and no attachments.relay_objectstore_url");
            metrics::count("attachment", "stored_attachment_unavailable");
            let mut o = outcome(&p.owner, Outcome::Invalid, p.att.size.unwrap_or(0).max(1));
            o.reason = Some("stored_attachment_unavailable".into());
            ended.push((p.index, key, o));
            continue;
        }
        if p.body.is_none() {
            tracing::error!(event_id = %p.owner.event_id, attachment_id = %p.att.id, "Missing chunks");
            metrics::count("attachment", "missing_chunks");
            let mut o = outcome(&p.owner, Outcome::Invalid, 1);
            o.reason = Some("missing_chunks".into());
            ended.push((p.index, key, o));
            continue;
        }
        if deps.limiter.enabled() {
            let (e, a) = (p.owner.event_id.clone(), p.att.id.clone());
            let exists: Result<bool, DbError> = deps
                .db
                .run(move |c| Ok(attachments::exists(c, pid as i64, &e, &a)?))
                .await;
            match exists {
                Err(e) => {
                    out.push((p.index, e.verdict()));
                    continue;
                }
                Ok(false) => {
                    if let Some(which) = deps.limiter.check(pid) {
                        metrics::count("attachment", which.label());
                        let mut o = outcome(&p.owner, Outcome::RateLimited, p.size().max(1));
                        o.reason = Some("rate_limited".into());
                        ended.push((p.index, key, o));
                        continue;
                    }
                }
                Ok(true) => {}
            }
        }
        to_store.push(p);
    }
    if !ended.is_empty() {
        let indexes: Vec<usize> = ended.iter().map(|(i, _, _)| *i).collect();
        let emitted = deps
            .outcomes
            .emit_once_many(ended.into_iter().map(|(_, k, o)| (k, o)).collect())
            .await;
        let v = match emitted {
            Ok(_) => Verdict::Done,
            Err(e) => e.verdict(),
        };
        out.extend(indexes.into_iter().map(|i| (i, v.clone())));
    }
    if !to_store.is_empty() {
        out.extend(store(deps, to_store, ahead).await);
    }
    out
}

/// Objects of a batch's standalone attachments being written ahead ([`write_ahead`]), by the
/// attachment's position in the batch and its key (two attachments of one batch may share a
/// key). Dropping it (the batch's prepared work went unused) stops the writes not yet done.
#[derive(Default)]
pub struct Ahead {
    writes: HashMap<(usize, String), Write>,
}

/// A write under way: `None` if it never got a permit (the pool was closed).
type Write = AbortOnDropHandle<Option<Result<(), ObjectsError>>>;

impl Ahead {
    /// Whether no write was started ahead.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Starts writing the objects [`store`] would write for `items`, the standalone attachments of
/// a batch handed over while the batch before it is still in flight: so the object store is
/// kept busy while that batch writes its rows and outcomes. Writes ahead share one pool
/// (`Deps::writes_ahead`), granted in the order asked, so a batch's writes go before those of
/// the batch after it. Nothing is written ahead while the attachment rate limit is on: it may
/// refuse an attachment whose object would then be left without a row. Objects are keyed by
/// ids and rewritten with the same bytes, so writing one ahead and again (a write that failed
/// or was stopped) is harmless.
pub fn write_ahead(deps: &Arc<Deps>, items: &[Pending]) -> Ahead {
    let mut ahead = Ahead::default();
    if deps.limiter.enabled() {
        return ahead;
    }
    for p in items {
        let (Some(parts), Some(Ok(key))) = (p.body.as_ref(), object_key(deps, p)) else {
            continue;
        };
        let (objects, pool) = (deps.objects.clone(), deps.writes_ahead.clone());
        let (parts, content_type, at) = (parts.clone(), content_type(&p.att), key.clone());
        let write = tokio::spawn(async move {
            // The pool is never closed; if it were, the batch would write the object itself.
            let _permit = pool.acquire_owned().await.ok()?;
            Some(objects.put_parts(&at, parts, Some(&content_type)).await)
        });
        ahead
            .writes
            .insert((p.index, key), AbortOnDropHandle::new(write));
    }
    ahead
}

/// The key `p`'s body is written under: none when Relay stored the body itself (by reference)
/// or when it is empty. Both [`store`] and [`write_ahead`] write exactly these.
fn object_key(deps: &Deps, p: &Pending) -> Option<Result<String, ObjectsError>> {
    if by_reference(&p.att) || p.size() == 0 {
        return None;
    }
    let pid = p.owner.project.id as u64;
    Some(
        deps.objects
            .attachment_key(pid, &p.owner.event_id, &p.att.id),
    )
}

/// An attachment about to be stored: its row, its ACCEPTED outcome and where its chunks are.
struct Prepared {
    index: usize,
    row: Row,
    outcome: (String, OutcomeMessage),
    chunk_key: Option<Key>,
}

/// Stores attachments whose body is at hand: objects written concurrently (or awaited, when
/// written ahead), one insert for every row, one outcome lookup and record, one chunk cleanup.
async fn store(deps: &Deps, items: Vec<Pending>, mut ahead: Ahead) -> Vec<(usize, Verdict)> {
    let mut out: Vec<(usize, Verdict)> = Vec::with_capacity(items.len());
    let mut prepared = Vec::with_capacity(items.len());
    let mut puts = Vec::new();
    // Budget permits stay held until the bodies are written (the end of this function).
    let mut permits = Vec::with_capacity(items.len());
    for mut p in items {
        permits.push(p.permit.take());
        let size = p.size();
        let object = object_key(deps, &p);
        let pid = p.owner.project.id as u64;
        let parts = p.body.unwrap_or_default();
        let content_type = content_type(&p.att);
        let reference = by_reference(&p.att)
            .then(|| {
                p.att
                    .stored_id
                    .as_ref()
                    .map(|id| format!("objectstore:{id}"))
            })
            .flatten();
        let size = if reference.is_some() {
            p.att.size.unwrap_or(0).min(i64::MAX as u64)
        } else {
            size
        };
        // A body stored by Relay has its reference and no object of ours.
        let blob_path = match object {
            Some(Ok(key)) => {
                puts.push((prepared.len(), key.clone(), parts.clone()));
                Some(key)
            }
            Some(Err(e)) => {
                out.push((p.index, reject(DlqReason::InvalidField, e.to_string())));
                continue;
            }
            None => reference,
        };
        prepared.push(Prepared {
            index: p.index,
            outcome: (
                outcome_key(pid, &p.owner.event_id, &p.att.id),
                outcome(&p.owner, Outcome::Accepted, size.max(1)),
            ),
            row: Row {
                project_id: p.owner.project.id,
                event_id: p.owner.event_id,
                attachment_id: p.att.id,
                group_id: p.owner.group_id,
                kind: p.att.attachment_type,
                name: p.att.name,
                content_type,
                size: size as i64,
                sha1: sha1_hex(&parts),
                blob_path,
                retention_days: p.att.retention_days.filter(|d| *d > 0).map(i32::from),
            },
            chunk_key: p.chunk_key,
        });
    }

    // Objects first: a row never points at an object that is not there.
    let started = std::time::Instant::now();
    let written: Vec<(Option<(usize, Verdict)>, bool)> = stream::iter(puts)
        .map(|(at, key, parts)| {
            let content_type = prepared[at].row.content_type.clone();
            let started_ahead = ahead.writes.remove(&(prepared[at].index, key.clone()));
            async move {
                // A write started ahead is awaited; one that failed or was stopped is done now.
                let written_ahead = match started_ahead {
                    Some(w) => matches!(w.await, Ok(Some(Ok(())))),
                    None => false,
                };
                let result = if written_ahead {
                    Ok(())
                } else {
                    deps.objects
                        .put_parts(&key, parts, Some(&content_type))
                        .await
                };
                (result.err().map(|e| (at, e.verdict())), written_ahead)
            }
        })
        .buffer_unordered(PUT_CONCURRENCY)
        .collect()
        .await;
    let ahead_used = written.iter().filter(|(_, a)| *a).count();
    metrics::object_writes_n("ahead", ahead_used);
    metrics::object_writes_n("with_batch", written.len() - ahead_used);
    let failed: Vec<(usize, Verdict)> = written.into_iter().filter_map(|(f, _)| f).collect();
    metrics::time_step("attachments_put", started);
    let mut stored = vec![true; prepared.len()];
    for (at, v) in failed {
        stored[at] = false;
        out.push((prepared[at].index, v));
    }
    let prepared: Vec<Prepared> = prepared
        .into_iter()
        .zip(stored)
        .filter_map(|(p, ok)| ok.then_some(p))
        .collect();
    if prepared.is_empty() {
        return out;
    }
    let mut indexes = Vec::with_capacity(prepared.len());
    let mut rows = Vec::with_capacity(prepared.len());
    let mut outcomes = Vec::with_capacity(prepared.len());
    let mut keys: Vec<Option<Key>> = Vec::with_capacity(prepared.len());
    for p in prepared {
        indexes.push(p.index);
        rows.push(p.row);
        outcomes.push(p.outcome);
        keys.push(p.chunk_key);
    }

    let started = std::time::Instant::now();
    let inserted = insert_rows(deps, rows.clone()).await;
    metrics::time_step("attachments_insert", started);
    if let Err(e) = inserted {
        if e.failure().is_outage() || rows.len() == 1 {
            let v = e.verdict();
            out.extend(indexes.into_iter().map(|i| (i, v.clone())));
            return out;
        }
        // One bad row must not fail its neighbours: the rows are inserted one at a time, and
        // only those that fail get the verdict of their own error.
        tracing::warn!(error = %e, rows = rows.len(), "batched attachment insert failed; inserting row by row");
        let mut keep = Vec::with_capacity(rows.len());
        for (row, index) in rows.into_iter().zip(&indexes) {
            match insert_rows(deps, vec![row]).await {
                Ok(()) => keep.push(true),
                Err(e) => {
                    out.push((*index, e.verdict()));
                    keep.push(false);
                }
            }
        }
        indexes = kept(indexes, &keep);
        outcomes = kept(outcomes, &keep);
        keys = kept(keys, &keep);
    }
    let keys: Vec<Key> = keys.into_iter().flatten().collect();

    let started = std::time::Instant::now();
    let emitted = deps.outcomes.emit_once_many(outcomes).await;
    metrics::time_step("attachments_outcomes", started);
    if let Err(e) = emitted {
        let v = e.verdict();
        out.extend(indexes.into_iter().map(|i| (i, v.clone())));
        return out;
    }
    // Chunks go last: a redelivery before this point still finds them.
    if let Err(e) = chunk::delete(&deps.db, keys).await {
        let v = e.verdict();
        out.extend(indexes.into_iter().map(|i| (i, v.clone())));
        return out;
    }
    for _ in &indexes {
        metrics::count("attachment", "stored");
    }
    out.extend(indexes.into_iter().map(|i| (i, Verdict::Done)));
    out
}

/// The items of `v` whose `keep` flag is set.
fn kept<T>(v: Vec<T>, keep: &[bool]) -> Vec<T> {
    v.into_iter()
        .zip(keep)
        .filter_map(|(x, k)| k.then_some(x))
        .collect()
}

/// Inserts attachment rows (one statement).
async fn insert_rows(deps: &Deps, rows: Vec<Row>) -> Result<(), DbError> {
    deps.db
        .run(move |c| Ok(attachments::insert(c, &rows)?))
        .await
}

/// The given content type up to the first `;`, else one guessed from the file name, else
/// `application/octet-stream`.
pub fn content_type(att: &ChunkedAttachment) -> String {
    att.content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            mime_guess::from_path(&att.name)
                .first_raw()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// The natural key of an attachment's outcome (one per attachment, whatever the outcome).
pub fn outcome_key(project_id: u64, event_id: &str, attachment_id: &str) -> String {
    format!("attachment:{project_id}:{event_id}:{attachment_id}")
}

/// The outcome of one attachment of `owner`.
pub fn outcome(owner: &Owner, o: Outcome, quantity: u64) -> OutcomeMessage {
    let mut m = OutcomeMessage::new(
        owner.project.organization_id as u64,
        owner.project.id as u64,
        o,
        data_category::ATTACHMENT,
    );
    m.quantity = quantity;
    m.event_id = Some(owner.event_id.clone());
    m.key_id = owner.key_id;
    if let Some(t) = owner.start_time {
        m.timestamp = t;
    }
    m
}

/// The hex sha1 of a body given as parts.
pub fn sha1_hex(parts: &[Bytes]) -> String {
    let mut sha = Sha1::new();
    for p in parts {
        sha.update(p);
    }
    hex::encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(name: &str, ct: Option<&str>) -> ChunkedAttachment {
        ChunkedAttachment {
            id: "a".into(),
            name: name.into(),
            content_type: ct.map(str::to_owned),
            attachment_type: "event.attachment".into(),
            chunks: None,
            data: None,
            stored_id: None,
            size: None,
            rate_limited: false,
            retention_days: None,
        }
    }

    #[test]
    fn content_type_rules() {
        assert_eq!(
            content_type(&att("x.bin", Some("text/plain; charset=utf-8"))),
            "text/plain"
        );
        assert_eq!(content_type(&att("lol.txt", None)), "text/plain");
        assert_eq!(content_type(&att("shot.png", Some("  "))), "image/png");
        assert_eq!(
            content_type(&att("noext", None)),
            "application/octet-stream"
        );
    }
}
