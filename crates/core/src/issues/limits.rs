//! The optional issue-platform limits:
//! the per-fingerprint occurrence rate limit, noise reduction and the per-type issue creation
//! quotas. All are off by default, and error occurrences (type 1) are never subject to them.
//!
//! State lives in PostgreSQL (`rate_limit_counters`, `noise_counters`), so every replica sees the
//! same windows and counts. Windows are measured on the occurrence's detection time, not the
//! clock, so a consumer catching up on a backlog judges each occurrence by when it happened.
//! A limited occurrence keeps its `occurrences` row (with `dropped` set and no group): a
//! redelivery is recognised as a duplicate and never counted twice.

use super::parse::Occurrence;
use crate::config::IssueSettings;
use crate::storage::limits::{noise_bump, noise_reset, take};
use diesel::prelude::*;

/// Why an occurrence was held back (also its metric label and outcome reason).
pub const RATE_LIMITED: &str = "occurrence_rate_limit";
pub const NOISE: &str = "noise_reduction";
pub const CREATION_QUOTA: &str = "issue_creation_quota";

/// How long a noise counter lives after its last increment (Sentry's NoiseConfig expiry).
const NOISE_EXPIRY_SECS: i64 = 24 * 3600;

/// Error occurrences (group type 1) are never subject to a limit.
fn exempt(occ: &Occurrence) -> bool {
    occ.group_type.id == 1
}

/// Whether any limit can apply to `occ` under `settings`.
pub fn any_enabled(settings: &IssueSettings, occ: &Occurrence) -> bool {
    !exempt(occ)
        && (settings.occurrence_rate_limit.enabled
            || settings.creation_quotas
            || (settings.noise_reduction && occ.group_type.noise_ignore_limit.is_some()))
}

/// The per-project, per-fingerprint occurrence rate limit. `Some(reason)` when limited.
pub fn check_occurrence(
    conn: &mut PgConnection,
    settings: &IssueSettings,
    occ: &Occurrence,
) -> QueryResult<Option<&'static str>> {
    let q = &settings.occurrence_rate_limit;
    if exempt(occ) || !q.enabled {
        return Ok(None);
    }
    let key = format!(
        "occurrence_rate_limit:{}-{}",
        occ.project_id, occ.fingerprint[0]
    );
    let granted = take(
        conn,
        &key,
        occ.detection_time.0.timestamp(),
        (q.window_seconds, q.granularity_seconds, q.limit),
    )?;
    Ok((!granted).then_some(RATE_LIMITED))
}

/// Before a new group is created: noise reduction, then the type's creation quota.
/// `Some(reason)` when creation is held back.
pub fn check_creation(
    conn: &mut PgConnection,
    settings: &IssueSettings,
    occ: &Occurrence,
) -> QueryResult<Option<&'static str>> {
    if exempt(occ) {
        return Ok(None);
    }
    let hash = &occ.fingerprint[0];
    if let (true, Some(limit)) = (settings.noise_reduction, occ.group_type.noise_ignore_limit) {
        let project_id = occ.project_id as i64;
        let seen = noise_bump(
            conn,
            project_id,
            hash,
            occ.detection_time.0,
            NOISE_EXPIRY_SECS,
        )?;
        if (seen as u64) < limit {
            return Ok(Some(NOISE));
        }
        noise_reset(conn, project_id, hash)?;
    }
    if settings.creation_quotas {
        let key = format!(
            "issue-platform-issues:{}:{}",
            occ.project_id, occ.group_type.slug
        );
        let at = occ.detection_time.0.timestamp();
        if !take(conn, &key, at, occ.group_type.creation_quota)? {
            return Ok(Some(CREATION_QUOTA));
        }
    }
    Ok(None)
}

/// The known reason of a stored `dropped` value.
pub fn reason(dropped: &str) -> Option<&'static str> {
    [RATE_LIMITED, NOISE, CREATION_QUOTA]
        .into_iter()
        .find(|known| *known == dropped)
}
