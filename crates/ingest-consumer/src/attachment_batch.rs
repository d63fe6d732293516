//! Standalone attachments in bulk: the common case of `attachment` messages (attachments on,
//! not shed, a savable type, no per-project limit, body inline or from chunks of the same batch)
//! is saved with the objects written concurrently, one insert for every row, one outcome lookup
//! and one record of the outcomes sent, and one chunk cleanup. The rules are those of
//! [`attachment::save`], which takes every other case one message at a time.

use crate::attachment::{self, Owner, Row, STANDALONE_TYPES};
use crate::chunk::{self, InBatch, Key};
use crate::stage::{unavailable, Deps};
use crate::{metrics, shed};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use sluice_core::issues::project::Project;
use sluice_core::kafka::consumer::Outcome;
use sluice_core::messages::enums::Outcome as O;
use sluice_core::messages::{AttachmentMessage, ChunkedAttachment, DlqReason, Rejection};

/// Object writes in flight at once.
const PUT_CONCURRENCY: usize = 32;

/// A standalone attachment whose body is at hand.
pub struct Ready {
    pub index: usize,
    pub project: Project,
    pub event_id: String,
    pub att: ChunkedAttachment,
    parts: Vec<Bytes>,
    /// Set when the body came from chunks (they are removed once the attachment is saved).
    pub chunk_key: Option<Key>,
}

impl Ready {
    /// The body's size in bytes.
    fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.len() as u64).sum()
    }
}

/// Whether `m` can take the bulk path: everything [`attachment::process_individual`] would do
/// for it is the plain save of a body that is inline, empty, or complete in `chunks`.
pub fn ready(
    deps: &Deps,
    index: usize,
    m: &AttachmentMessage,
    project: &Project,
    chunks: &InBatch,
) -> Option<Ready> {
    let att = &m.attachment;
    if !attachment::enabled(project)
        || deps.limiter.enabled()
        || !STANDALONE_TYPES.contains(&att.attachment_type.as_str())
        || shed::before_parse(&deps.settings, project, &m.event_id, true)
    {
        return None;
    }
    let (parts, chunk_key) = match (&att.data, att.chunks) {
        (Some(data), _) => (vec![Bytes::from(data.clone())], None),
        (None, Some(n)) if n > 0 => {
            let key = (m.project_id, m.event_id.clone(), att.id.clone());
            (chunks.complete(&key, n)?, Some(key))
        }
        (None, _) => (Vec::new(), None),
    };
    Some(Ready {
        index,
        project: project.clone(),
        event_id: m.event_id.clone(),
        att: att.clone(),
        parts,
        chunk_key,
    })
}

/// Saves `items`; returns each one's outcome by batch position.
pub async fn process(deps: &Deps, items: Vec<Ready>) -> Vec<(usize, Outcome)> {
    let mut out: Vec<(usize, Outcome)> = Vec::with_capacity(items.len());
    let mut rows = Vec::with_capacity(items.len());
    let mut puts = Vec::new();
    for r in &items {
        let size = r.size();
        let content_type = attachment::content_type(&r.att);
        let blob_path = if size > 0 {
            match deps
                .objects
                .attachment_key(r.project.id as u64, &r.event_id, &r.att.id)
            {
                Ok(key) => {
                    puts.push((rows.len(), key.clone(), r.parts.clone()));
                    Some(key)
                }
                Err(e) => {
                    out.push((
                        r.index,
                        Outcome::Reject(Rejection::new(DlqReason::InvalidField, e.to_string())),
                    ));
                    continue;
                }
            }
        } else {
            None
        };
        rows.push((
            r.index,
            Row {
                project_id: r.project.id,
                event_id: r.event_id.clone(),
                attachment_id: r.att.id.clone(),
                group_id: None,
                kind: r.att.attachment_type.clone(),
                name: r.att.name.clone(),
                content_type,
                size: size as i64,
                sha1: attachment::sha1_hex(&r.parts),
                blob_path,
            },
        ));
    }

    // Objects first: a row never points at an object that is not there.
    let started = std::time::Instant::now();
    let failed: Vec<(usize, Outcome)> = stream::iter(puts)
        .map(|(row, key, parts)| {
            let content_type = rows[row].1.content_type.clone();
            async move {
                deps.objects
                    .put_parts(&key, parts, Some(&content_type))
                    .await
                    .err()
                    .map(|e| (row, unavailable(e)))
            }
        })
        .buffer_unordered(PUT_CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    metrics::time_step("attachments_put", started);
    let mut stored = vec![true; rows.len()];
    for (row, o) in failed {
        stored[row] = false;
        out.push((rows[row].0, o));
    }
    let (indexes, rows): (Vec<usize>, Vec<Row>) = rows
        .into_iter()
        .zip(stored)
        .filter_map(|(r, ok)| ok.then_some(r))
        .unzip();
    if rows.is_empty() {
        return out;
    }

    let saved_at: std::collections::HashSet<usize> = indexes.iter().copied().collect();
    let started = std::time::Instant::now();
    let inserted = deps.db.run(move |c| attachment::insert(c, &rows)).await;
    metrics::time_step("attachments_insert", started);
    if let Err(e) = inserted {
        let o = Outcome::from_db(&e);
        out.extend(indexes.into_iter().map(|i| (i, o.clone())));
        return out;
    }

    let saved: Vec<&Ready> = items
        .iter()
        .filter(|r| saved_at.contains(&r.index))
        .collect();
    let outcomes = saved
        .iter()
        .map(|r| {
            let owner = Owner {
                project: &r.project,
                event_id: &r.event_id,
                group_id: None,
                start_time: None,
                key_id: None,
            };
            (
                attachment::outcome_key(r.project.id as u64, &r.event_id, &r.att.id),
                attachment::outcome(&owner, O::Accepted, r.size().max(1)),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let emitted = deps.outcomes.emit_once_many(outcomes).await;
    metrics::time_step("attachments_outcomes", started);
    if let Err(e) = emitted {
        let o = unavailable(e);
        out.extend(indexes.into_iter().map(|i| (i, o.clone())));
        return out;
    }
    // Chunks go last: a redelivery before this point still finds them.
    let keys: Vec<Key> = saved.iter().filter_map(|r| r.chunk_key.clone()).collect();
    if let Err(e) = chunk::delete_many(&deps.db, keys).await {
        let o = Outcome::from_db(&e);
        out.extend(indexes.into_iter().map(|i| (i, o.clone())));
        return out;
    }
    for _ in &indexes {
        metrics::count("attachment", "stored");
    }
    out.extend(indexes.into_iter().map(|i| (i, Outcome::Done)));
    out
}
