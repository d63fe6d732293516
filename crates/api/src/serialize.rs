//! Sentry's JSON shapes for organizations, projects, issues, user reports and attachments
//! (the serializers of Sentry's `api/serializers/models`). Ids are strings, counts of issues
//! are strings, times are RFC 3339 in UTC with milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sluice_core::issues::group::priority_name;
use sluice_core::issues::grouptype;
use sluice_core::issues::status_change::substatus_name;
use sluice_core::messages::enums::{group_category as cat, group_status as st};
use sluice_core::storage::read;

/// A time as Sentry writes it.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Sentry's status name.
pub fn status_name(status: i32) -> &'static str {
    match status {
        st::RESOLVED => "resolved",
        st::IGNORED => "ignored",
        st::PENDING_DELETION | st::DELETION_IN_PROGRESS => "pending_deletion",
        st::PENDING_MERGE => "pending_merge",
        st::REPROCESSING => "reprocessing",
        _ => "unresolved",
    }
}

/// Sentry's level name of a level number.
pub fn level_name(level: i32) -> &'static str {
    match level {
        0 => "sample",
        10 => "debug",
        20 => "info",
        30 => "warning",
        50 => "fatal",
        _ => "error",
    }
}

/// An organization (Sentry's `OrganizationSerializer`).
pub fn organization(o: &read::Organization, base: &str) -> Value {
    json!({
        "id": o.id.to_string(),
        "slug": o.slug,
        "name": o.name,
        "dateCreated": time(o.date_added),
        "status": {"id": "active", "name": "active"},
        "isEarlyAdopter": false,
        "require2FA": false,
        "requireEmailVerification": false,
        "avatar": {"avatarType": "letter_avatar", "avatarUuid": null, "avatarUrl": null},
        "features": [],
        "hasAuthProvider": false,
        "allowMemberInvite": true,
        "allowMemberProjectCreation": true,
        "allowSuperuserAccess": false,
        "links": {"organizationUrl": base, "regionUrl": base},
    })
}

/// A project (Sentry's `ProjectSummarySerializer`), with its organization when `org` is given.
pub fn project(p: &read::Project, org: Option<&read::Organization>, base: &str) -> Value {
    let mut v = json!({
        "id": p.id.to_string(),
        "slug": p.slug,
        "name": p.name,
        "platform": p.platform,
        "dateCreated": time(p.date_added),
        "isBookmarked": false,
        "isMember": true,
        "hasAccess": true,
        "isPublic": false,
        "features": [],
        "firstEvent": null,
        "firstTransactionEvent": false,
        "access": [],
        "status": "active",
        "environments": [],
    });
    if let Some(o) = org {
        v["organization"] = organization(o, base);
    }
    v
}

/// `permalink` and `web_url` of an issue.
pub fn issue_web_url(base: &str, org: &str, g: &read::Group) -> String {
    if grouptype::get(g.group_type).map(|t| t.category) == Some(cat::FEEDBACK) {
        format!(
            "{base}/organizations/{org}/feedback/?feedbackSlug={}:{}&project={}",
            g.project_slug, g.id, g.project_id
        )
    } else {
        format!("{base}/organizations/{org}/issues/{}/", g.id)
    }
}

/// Sentry's short id: the project slug upper-cased and the group id in base 36.
pub fn short_id(g: &read::Group) -> String {
    let mut n = g.id.max(0) as u64;
    let mut digits = Vec::new();
    loop {
        let d = (n % 36) as u8;
        digits.push(if d < 10 { b'0' + d } else { b'A' + d - 10 });
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    format!(
        "{}-{}",
        g.project_slug.to_uppercase(),
        String::from_utf8_lossy(&digits)
    )
}

/// An issue (Sentry's `GroupSerializer`).
pub fn group(g: &read::Group, org: &str, base: &str) -> Value {
    let gt = grouptype::get(g.group_type);
    let category = gt.map_or(cat::ERROR, |t| t.category);
    let metadata = g.data.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let event_type = g.data.get("type").and_then(Value::as_str).unwrap_or(
        if category == cat::ERROR && metadata.get("type").is_some() {
            "error"
        } else {
            "default"
        },
    );
    json!({
        "id": g.id.to_string(),
        "shareId": null,
        "shortId": short_id(g),
        "title": g.title,
        "culprit": g.culprit,
        "permalink": issue_web_url(base, org, g),
        "logger": g.data.get("logger").cloned().unwrap_or(Value::Null),
        "level": level_name(g.level),
        "status": status_name(g.status),
        // Sentry fills it for resolutions in a release and for snoozes; sluice records neither.
        "statusDetails": {},
        "substatus": g.substatus.map(substatus_name),
        "isPublic": false,
        "platform": g.data.get("platform").cloned().unwrap_or_else(|| json!(g.project_platform)),
        "priority": priority_name(g.priority),
        "priorityLockedAt": null,
        "project": {
            "id": g.project_id.to_string(),
            "name": g.project_name,
            "slug": g.project_slug,
            "platform": g.project_platform,
        },
        "type": event_type,
        "issueType": gt.map_or("error", |t| t.slug),
        "issueCategory": crate::search::category_name(category),
        "metadata": metadata,
        "numComments": 0,
        "assignedTo": null,
        "isBookmarked": false,
        "isSubscribed": false,
        "subscriptionDetails": null,
        "hasSeen": false,
        "annotations": [],
        "isUnhandled": false,
        "count": g.times_seen.to_string(),
        "userCount": 0,
        "firstSeen": time(g.first_seen),
        "lastSeen": time(g.last_seen),
    })
}

/// A user report (Sentry's `UserReportSerializer`), with its issue when given.
pub fn user_report(r: &read::UserReport, issue: Option<Value>) -> Value {
    let event_id = r.event_id.trim();
    json!({
        "id": r.id.to_string(),
        "eventID": event_id,
        "name": r.name,
        "email": r.email,
        "comments": r.comments,
        "dateCreated": time(r.date_added),
        "user": null,
        "event": {"id": event_id, "eventID": event_id},
        "issue": issue,
    })
}

/// An attachment of an event (Sentry's `EventAttachmentSerializer`).
pub fn attachment(a: &read::Attachment) -> Value {
    json!({
        "id": a.id.to_string(),
        "event_id": a.event_id.trim(),
        "type": a.kind,
        "name": a.name,
        "mimetype": a.content_type,
        "dateCreated": time(a.date_added),
        "size": a.size,
        "headers": {"Content-Type": a.content_type},
        "sha1": a.sha1.trim(),
    })
}
