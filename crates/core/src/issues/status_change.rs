//! Applying a status change: find the group of the hashed `fingerprint[0]`,
//! validate the requested (status, substatus), update the group and write one activity and one
//! history row. Applied ids are recorded in `applied_status_changes` in the same transaction, so
//! a replay is a no-op.

use super::group::priority_name;
use super::{Applied, IssueError};
use crate::ids::md5_hex;
use crate::messages::enums::{group_status as st, group_substatus as sub, priority};
use crate::messages::StatusChangeMessage;
use crate::storage::groups::{self, GroupRow};
use crate::storage::{status_changes, webhooks};
use diesel::PgConnection;
use serde_json::json;

/// Why a requested status is refused (Sentry's log keys).
fn validate(status: i32, substatus: Option<i32>) -> Result<(), &'static str> {
    match (status, substatus) {
        (st::UNRESOLVED | st::IGNORED, None) => Err("group.update_status.missing_substatus"),
        (st::RESOLVED, Some(_)) => Err("group.update_status.unexpected_substatus"),
        (st::IGNORED, Some(s))
            if ![
                sub::UNTIL_ESCALATING,
                sub::UNTIL_CONDITION_MET,
                sub::FOREVER,
            ]
            .contains(&s) =>
        {
            Err("group.update_status.invalid_substatus")
        }
        (st::UNRESOLVED, Some(s))
            if ![sub::ESCALATING, sub::REGRESSED, sub::ONGOING].contains(&s) =>
        {
            Err("group.update_status.invalid_substatus")
        }
        (st::RESOLVED | st::IGNORED | st::UNRESOLVED, _) => Ok(()),
        _ => Err("group.update_status.unsupported_status"),
    }
}

/// The history status of a (status, substatus): `resolved`, else the substatus's name.
fn history_name(status: i32, substatus: Option<i32>) -> &'static str {
    match (status, substatus) {
        (st::RESOLVED, _) => "resolved",
        (_, Some(s)) => substatus_name(s),
        (_, None) => "ongoing",
    }
}

/// Applies `change`; runs inside the caller's transaction.
pub fn apply(conn: &mut PgConnection, change: &StatusChangeMessage) -> Result<Applied, IssueError> {
    let hash = md5_hex(&change.fingerprint[0]);
    let project_id = change.project_id as i64;
    let locked = groups::lock(conn, &[(project_id, hash.clone())])?;
    let Some(g) = locked.into_values().next().map(|l| l.group) else {
        return Err(IssueError::GroupNotFound(format!(
            "no group for fingerprint hash {hash} in project {project_id}"
        )));
    };
    apply_to(
        conn,
        g,
        &normalised_id(&change.id),
        change.new_status,
        change.new_substatus,
    )
}

/// Applies the status change `id` to the group `group_id` (a change that names its group by id,
/// as the web API's updates do); runs inside the caller's transaction.
pub fn apply_to_group(
    conn: &mut PgConnection,
    group_id: i64,
    id: &str,
    status: i32,
    substatus: Option<i32>,
) -> Result<Applied, IssueError> {
    let Some(g) = groups::lock_by_id(conn, group_id)? else {
        return Err(IssueError::GroupNotFound(format!("no group {group_id}")));
    };
    apply_to(conn, g, &normalised_id(id), status, substatus)
}

fn apply_to(
    conn: &mut PgConnection,
    g: GroupRow,
    id: &str,
    status: i32,
    substatus: Option<i32>,
) -> Result<Applied, IssueError> {
    let recorded = status_changes::record(conn, id, g.project_id, g.id)?;
    if !recorded {
        return Ok(Applied::Duplicate);
    }
    if g.status == status && g.substatus == substatus {
        return Ok(Applied::StatusUnchanged);
    }
    if let Err(key) = validate(status, substatus) {
        tracing::error!(project_id = g.project_id, group_id = g.id, new_status = status, new_substatus = ?substatus, "{key}");
        return Ok(Applied::StatusInvalid(key));
    }
    let (activity, new_priority) = match (status, substatus) {
        (st::RESOLVED, _) => ("set_resolved", None),
        (st::IGNORED, _) => ("set_ignored", None),
        (_, Some(sub::ESCALATING)) => ("set_escalating", Some(priority::HIGH)),
        (_, Some(sub::REGRESSED)) => ("set_regression", None),
        _ if g.substatus == Some(sub::ESCALATING) => ("auto_set_ongoing", initial_priority(&g)),
        _ => ("set_unresolved", None),
    };
    let new_priority = new_priority.filter(|p| *p != g.priority);
    groups::set_status(conn, g.id, status, substatus, new_priority)?;
    groups::record(
        conn,
        g.id,
        g.project_id,
        activity,
        json!({}),
        history_name(status, substatus),
    )?;
    let (event, extra) = match (status, substatus) {
        (st::RESOLVED, _) => (
            webhooks::event::ISSUE_RESOLVED,
            json!({ "resolution_type": "now" }),
        ),
        (st::IGNORED, _) => (webhooks::event::ISSUE_IGNORED, json!({})),
        _ => (webhooks::event::ISSUE_UNRESOLVED, json!({})),
    };
    webhooks::enqueue(
        conn,
        &[webhooks::Notice {
            project_id: g.project_id,
            group_id: Some(g.id),
            event,
            cause: format!("status_change:{id}"),
            data: json!({ "extra": extra, "substatus": substatus.map(substatus_name) }),
        }],
    )?;
    if let Some(p) = new_priority {
        let reason = if activity == "set_escalating" {
            "escalating"
        } else {
            "ongoing"
        };
        groups::record(
            conn,
            g.id,
            g.project_id,
            "set_priority",
            json!({ "priority": priority_name(p), "reason": reason }),
            "",
        )?;
    }
    Ok(Applied::StatusChanged { group_id: g.id })
}

/// Sentry's name of a substatus.
pub fn substatus_name(substatus: i32) -> &'static str {
    match substatus {
        sub::UNTIL_ESCALATING => "archived_until_escalating",
        sub::ONGOING => "ongoing",
        sub::ESCALATING => "escalating",
        sub::UNTIL_CONDITION_MET => "archived_until_condition_met",
        sub::REGRESSED => "regressed",
        sub::NEW => "new",
        sub::FOREVER => "archived_forever",
        _ => "ongoing",
    }
}

/// The priority the group was created with (`data.metadata.initial_priority`).
fn initial_priority(g: &GroupRow) -> Option<i32> {
    g.data
        .get("metadata")?
        .get("initial_priority")?
        .as_i64()
        .map(|p| p as i32)
}

/// Status change ids are uuid4 hex from Sentry's producer; anything else (legacy md5 ids, other
/// producers' strings) is kept when it fits 32 characters and hashed otherwise.
fn normalised_id(id: &str) -> String {
    match crate::ids::uuid_hex(id) {
        Ok(u) => u,
        Err(_) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            id.to_ascii_lowercase()
        }
        Err(_) => md5_hex(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentry_validation_table() {
        assert_eq!(
            validate(st::RESOLVED, Some(sub::FOREVER)),
            Err("group.update_status.unexpected_substatus")
        );
        assert_eq!(
            validate(st::IGNORED, None),
            Err("group.update_status.missing_substatus")
        );
        assert_eq!(
            validate(st::IGNORED, Some(sub::REGRESSED)),
            Err("group.update_status.invalid_substatus")
        );
        assert_eq!(
            validate(st::UNRESOLVED, Some(sub::NEW)),
            Err("group.update_status.invalid_substatus")
        );
        assert_eq!(
            validate(st::PENDING_DELETION, None),
            Err("group.update_status.unsupported_status")
        );
        for ok in [
            (st::RESOLVED, None),
            (st::IGNORED, Some(sub::FOREVER)),
            (st::IGNORED, Some(sub::UNTIL_ESCALATING)),
            (st::IGNORED, Some(sub::UNTIL_CONDITION_MET)),
            (st::UNRESOLVED, Some(sub::ESCALATING)),
            (st::UNRESOLVED, Some(sub::ONGOING)),
            (st::UNRESOLVED, Some(sub::REGRESSED)),
        ] {
            assert_eq!(validate(ok.0, ok.1), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn history_names_and_ids() {
        assert_eq!(
            history_name(st::IGNORED, Some(sub::FOREVER)),
            "archived_forever"
        );
        assert_eq!(history_name(st::RESOLVED, None), "resolved");
        assert_eq!(history_name(st::UNRESOLVED, Some(sub::ONGOING)), "ongoing");
        assert_eq!(
            normalised_id("5C1D7A0E-2F4B-4E8A-9D3C-6B1E0A7F4C21"),
            "5c1d7a0e2f4b4e8a9d3c6b1e0a7f4c21"
        );
        assert_eq!(normalised_id("not-a-uuid").len(), 32);
    }
}
