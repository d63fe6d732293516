//! Saving occurrences, one or a run of consecutive ones, in the caller's transaction: the event
//! (stored, or looked up), the occurrence row (deduped by id), the group created or updated, and
//! where it was seen (its first release, per release and per environment).
//! The group changes only for occurrences whose row is new, so replays change nothing.
//!
//! The run's groups are locked and read once, every occurrence is applied to them in memory in
//! arrival order by the one update rule of [`group::State`], the optional limits are checked on
//! the way, and the final states are written back in one statement each. Anything unusual (an
//! event to look up that is not stored, another transaction creating one of the run's groups)
//! returns an error: the caller rolls back and saves the messages one at a time, each in its own
//! savepoint, which settles every case.

use super::group::{self, State};
use super::parse::Occurrence;
use super::{limits, project, Applied, IssueError, Limited};
use crate::config::IssueSettings;
use crate::storage::groups::HashKey;
use crate::storage::{events, group_releases, groups, linking, occurrences, webhooks, EventKey};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// Saves `occs` in order; one [`Applied`] per occurrence.
pub fn save(
    conn: &mut diesel::PgConnection,
    occs: &[&Occurrence],
    projects: &mut project::Cache,
    settings: &IssueSettings,
) -> Result<Vec<Applied>, IssueError> {
    let mut applied: Vec<Option<Applied>> = vec![None; occs.len()];
    let mut organization: HashMap<usize, i64> = HashMap::new();
    let mut active = Vec::with_capacity(occs.len());
    for (i, occ) in occs.iter().enumerate() {
        match projects.get(conn, occ.project_id)? {
            None => applied[i] = Some(Applied::Dropped("unknown_project")),
            Some(p) if !occ.group_type.allows_ingest(&p.organization_options) => {
                applied[i] = Some(Applied::Dropped("group_type_disabled"))
            }
            Some(p) => {
                organization.insert(i, p.organization_id);
                active.push(i);
            }
        }
    }
    let limited = |i: usize, reason: &'static str| {
        let occ = occs[i];
        Applied::Limited(Limited {
            reason,
            organization_id: organization.get(&i).copied().unwrap_or_default(),
            project_id: occ.project_id as i64,
            event_id: occ.event_id.clone(),
            occurrence_id: occ.id.clone(),
            category: occ.group_type.category,
        })
    };
    let key = |occ: &Occurrence| -> EventKey { (occ.project_id as i64, occ.event_id.clone()) };

    // Occurrences already stored (replays) change nothing; the first copy in the run counts. One
    // held back by a limit is reported as limited again (its outcome is emitted once).
    let ids: Vec<&str> = active.iter().map(|&i| occs[i].id.as_str()).collect();
    let stored_ids = occurrences::existing(conn, &ids)?;
    let mut fresh = Vec::new();
    let mut first_copy: HashMap<&str, usize> = HashMap::new();
    let mut copies = Vec::new();
    for &i in &active {
        let occ = occs[i];
        let id = occ.id.as_str();
        if let Some(dropped) = stored_ids.get(id) {
            let reason = dropped
                .as_deref()
                .and_then(limits::reason)
                .filter(|_| limits::any_enabled(settings, occ));
            applied[i] = Some(match reason {
                Some(r) => limited(i, r),
                None => Applied::Duplicate,
            });
        } else if let Some(&first) = first_copy.get(id) {
            copies.push((i, first));
        } else {
            first_copy.insert(id, i);
            fresh.push(i);
        }
    }

    // Events: the stored copy wins; otherwise the first embedded one in the run is stored below.
    let keys: Vec<EventKey> = active
        .iter()
        .map(|&i| key(occs[i]))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let stored_events = events::load_many(conn, &keys)?;
    let mut new_events: Vec<EventKey> = Vec::new();
    let mut event_of: HashMap<EventKey, &Value> = HashMap::new();
    for &i in &active {
        let k = key(occs[i]);
        if event_of.contains_key(&k) {
            continue;
        }
        match (stored_events.get(&k), &occs[i].event) {
            (Some((data, _)), _) => {
                event_of.insert(k, data);
            }
            (None, Some(body)) => {
                new_events.push(k.clone());
                event_of.insert(k, body);
            }
            (None, None) => {
                return Err(IssueError::EventNotFound(format!(
                    "Failed to lookup event({}) for project_id({})",
                    occs[i].event_id, occs[i].project_id
                )))
            }
        }
    }

    // Groups: lock and read the existing ones, then apply every occurrence in memory.
    let hashes: Vec<HashKey> = fresh
        .iter()
        .map(|&i| (occs[i].project_id as i64, occs[i].fingerprint[0].clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut states: HashMap<HashKey, State> = groups::lock(conn, &hashes)?
        .into_iter()
        .map(|(k, l)| (k, State::existing(l)))
        .collect();
    let mut creators: Vec<(HashKey, usize)> = Vec::new();
    let mut links: Vec<(usize, HashKey)> = Vec::new();
    let mut dropped: HashMap<usize, &'static str> = HashMap::new();
    for &i in &fresh {
        let occ = occs[i];
        let hash: HashKey = (occ.project_id as i64, occ.fingerprint[0].clone());
        if limits::any_enabled(settings, occ) {
            let mut reason = limits::check_occurrence(conn, settings, occ)?;
            if reason.is_none() && !states.contains_key(&hash) {
                reason = limits::check_creation(conn, settings, occ)?;
            }
            if let Some(reason) = reason {
                dropped.insert(i, reason);
                applied[i] = Some(limited(i, reason));
                continue;
            }
        }
        let event = event_of[&key(occ)];
        match states.get_mut(&hash) {
            None => {
                states.insert(hash.clone(), State::created(occ, event));
                creators.push((hash.clone(), i));
                links.push((i, hash));
            }
            Some(state) => {
                if !group::same_category(state.row.group_type, occ) {
                    tracing::error!(
                        group_id = state.row.id,
                        issue_type = state.row.group_type,
                        occurrence_type = occ.group_type.id,
                        "save_issue_from_occurrence.category_mismatch"
                    );
                    applied[i] = Some(Applied::Dropped("category_mismatch"));
                    continue;
                }
                state.apply(i, occ, event);
                links.push((i, hash));
            }
        }
    }
    for (i, first) in copies {
        applied[i] = Some(match dropped.get(&first) {
            Some(r) if limits::any_enabled(settings, occs[i]) => limited(i, r),
            _ => Applied::Duplicate,
        });
    }

    // Write the groups back: new ones inserted and linked, existing ones updated.
    if !creators.is_empty() {
        let ids = groups::next_ids(conn, creators.len())?;
        for ((hash, _), id) in creators.iter().zip(ids) {
            if let Some(state) = states.get_mut(hash) {
                state.row.id = id;
            }
        }
        let writes: Vec<_> = creators
            .iter()
            .filter_map(|(h, _)| states.get(h).map(State::write))
            .collect();
        if groups::insert(conn, &writes)? != creators.len() {
            return Err(IssueError::Conflict(
                "another transaction created one of the run's groups".into(),
            ));
        }
    }
    let updates: Vec<_> = states
        .values()
        .filter(|s| !s.new)
        .map(State::write)
        .collect();
    groups::update(conn, &updates)?;
    for state in states.values() {
        if let Some((_, event_id)) = &state.regressed_by {
            groups::record(
                conn,
                state.row.id,
                state.row.project_id,
                "set_regression",
                json!({ "event_id": event_id, "version": null }),
                "regressed",
            )?;
        }
    }

    // Results, and the group of each occurrence and event (an event keeps the first it gets).
    let creator_of: HashSet<usize> = creators.iter().map(|(_, i)| *i).collect();
    let mut group_of: HashMap<usize, i64> = HashMap::with_capacity(links.len());
    let mut event_group: HashMap<EventKey, i64> = HashMap::new();
    let mut seen: Vec<group_releases::Seen<'_>> = Vec::with_capacity(links.len());
    let mut first_releases: Vec<(i64, &str)> = Vec::new();
    for (i, hash) in links {
        let state = &states[&hash];
        let id = state.row.id;
        let event = event_of[&key(occs[i])];
        // Cut to Sentry's lengths (release 250, environment 64 characters), so no value can
        // overflow an index row.
        let text = |k: &str, max: usize| {
            event
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| s.char_indices().nth(max).map_or(s, |(at, _)| &s[..at]))
        };
        let release = text("release", 250);
        seen.push(group_releases::Seen {
            group_id: id,
            project_id: occs[i].project_id as i64,
            release,
            environment: text("environment", 64).unwrap_or(""),
            at: occs[i].detection_time.epoch_secs(),
        });
        if let (true, Some(r)) = (creator_of.contains(&i), release) {
            first_releases.push((id, r));
        }
        applied[i] = Some(if creator_of.contains(&i) {
            Applied::Created { group_id: id }
        } else {
            Applied::Updated {
                group_id: id,
                regressed: matches!(&state.regressed_by, Some((by, _)) if *by == i),
            }
        });
        group_of.insert(i, id);
        event_group.entry(key(occs[i])).or_insert(id);
    }

    // Rows are written with their group: new events and occurrences are inserted complete, and
    // only events stored earlier without a group are updated.
    let new_rows: Vec<(&EventKey, &Value, Option<i64>)> = new_events
        .iter()
        .map(|k| (k, event_of[k], event_group.get(k).copied()))
        .collect();
    if events::insert_grouped(conn, &new_rows)? != new_rows.len() {
        return Err(IssueError::Conflict(
            "another transaction stored one of the run's events".into(),
        ));
    }
    let rows: Vec<occurrences::Row<'_>> = fresh
        .iter()
        .map(|&i| {
            let o = occs[i];
            occurrences::Row {
                id: &o.id,
                project_id: o.project_id as i64,
                event_id: &o.event_id,
                group_type: o.group_type.id,
                data: &o.data,
                group_id: group_of.get(&i).copied(),
                dropped: dropped.get(&i).copied(),
            }
        })
        .collect();
    if occurrences::insert(conn, &rows)? != rows.len() {
        return Err(IssueError::Conflict(
            "another transaction stored one of the run's occurrences".into(),
        ));
    }
    let mut grouped: Vec<(&EventKey, i64)> = event_group.iter().map(|(k, g)| (k, *g)).collect();
    grouped.sort();
    let earlier: Vec<(&EventKey, i64)> = grouped
        .iter()
        .filter(|(k, _)| matches!(stored_events.get(*k), Some((_, None))))
        .copied()
        .collect();
    linking::backfill(conn, &earlier, &grouped)?;
    // Where the groups were seen: only occurrences counted for the first time, so replays
    // change nothing.
    group_releases::record(conn, &seen)?;
    group_releases::set_first_release(conn, &first_releases)?;
    webhooks::enqueue(conn, &notices(occs, &applied))?;
    Ok(applied
        .into_iter()
        .map(|a| a.unwrap_or(Applied::Duplicate))
        .collect())
}

/// The notifications of a run: a new issue (a new feedback flagged as spam only for those who
/// ask for spam) and a regression (Sentry sends it as `issue.unresolved`). Keyed by the group
/// and the regressing occurrence, so a replay queues nothing twice.
fn notices(occs: &[&Occurrence], applied: &[Option<Applied>]) -> Vec<webhooks::Notice> {
    let mut out = Vec::new();
    for (i, a) in applied.iter().enumerate() {
        let o = occs[i];
        let project_id = o.project_id as i64;
        match a {
            Some(Applied::Created { group_id }) => {
                let spam = o.evidence_data.get("is_spam") == Some(&Value::Bool(true));
                out.push(webhooks::Notice {
                    project_id,
                    group_id: Some(*group_id),
                    event: if spam {
                        webhooks::event::FEEDBACK_SPAM
                    } else {
                        webhooks::event::ISSUE_CREATED
                    },
                    cause: format!("issue.created:{group_id}"),
                    data: json!({ "event_id": o.event_id }),
                });
            }
            Some(Applied::Updated {
                group_id,
                regressed: true,
            }) => out.push(webhooks::Notice {
                project_id,
                group_id: Some(*group_id),
                event: webhooks::event::ISSUE_UNRESOLVED,
                cause: format!("regression:{}", o.id),
                data: json!({ "event_id": o.event_id, "substatus": "regressed" }),
            }),
            _ => {}
        }
    }
    out
}
