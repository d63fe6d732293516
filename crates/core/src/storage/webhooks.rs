//! `webhook_subscriptions` and the outbox `webhook_deliveries`. Effects that notify call
//! [`enqueue`] inside their own transaction: one row per matching subscription, keyed by the
//! effect's natural key (`cause`), so a replayed effect adds nothing. The deliverer claims due
//! rows ([`claim`]), at most one pending row per (subscription, issue) at a time, oldest first,
//! which keeps an issue's notifications in order.

use super::prepared::prepared;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Jsonb, Nullable, Text, Timestamptz};
use serde_json::Value;

/// A subscription, as `sluice webhook list` shows it.
#[derive(Debug, Clone, QueryableByName)]
pub struct Subscription {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub uuid: String,
    #[diesel(sql_type = Text)]
    pub organization_slug: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub project_slug: Option<String>,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Array<Text>)]
    pub events: Vec<String>,
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
}

/// The events a subscription can ask for. Sentry's integration-platform names, plus
/// `user_report.created` (Sentry e-mails the issue's subscribers) and `feedback.spam` (a new
/// feedback issue flagged as spam, sent as `issue.created` only to subscriptions that list it).
pub mod event {
    pub const ISSUE_CREATED: &str = "issue.created";
    pub const ISSUE_RESOLVED: &str = "issue.resolved";
    pub const ISSUE_IGNORED: &str = "issue.ignored";
    pub const ISSUE_UNRESOLVED: &str = "issue.unresolved";
    pub const USER_REPORT_CREATED: &str = "user_report.created";
    pub const FEEDBACK_SPAM: &str = "feedback.spam";
    /// Every event, in the order `sluice webhook add --help` lists them.
    pub const ALL: &[&str] = &[
        ISSUE_CREATED,
        ISSUE_RESOLVED,
        ISSUE_IGNORED,
        ISSUE_UNRESOLVED,
        USER_REPORT_CREATED,
        FEEDBACK_SPAM,
    ];
    /// What a subscription gets when it names none: everything but spam.
    pub const DEFAULT: &[&str] = &[
        ISSUE_CREATED,
        ISSUE_RESOLVED,
        ISSUE_IGNORED,
        ISSUE_UNRESOLVED,
        USER_REPORT_CREATED,
    ];
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Why a subscription could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    NoOrganization,
    NoProject,
}

/// Adds a subscription of the organization `org` (or of its project `project`); returns its id.
pub fn add(
    conn: &mut PgConnection,
    org: &str,
    project: Option<&str>,
    url: &str,
    secret: &str,
    events: &[String],
) -> QueryResult<Result<i64, AddError>> {
    let Some(org_id) = super::projects::organization_id(conn, org)? else {
        return Ok(Err(AddError::NoOrganization));
    };
    let project_id = match project {
        None => None,
        Some(slug) => {
            match prepared("SELECT id FROM projects WHERE organization_id = $1 AND slug = $2")
                .bind::<BigInt, _>(org_id)
                .bind::<Text, _>(slug)
                .get_result::<Id>(conn)
                .optional()?
            {
                Some(p) => Some(p.id),
                None => return Ok(Err(AddError::NoProject)),
            }
        }
    };
    prepared(
        "INSERT INTO webhook_subscriptions (organization_id, project_id, url, secret, events) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind::<BigInt, _>(org_id)
    .bind::<Nullable<BigInt>, _>(project_id)
    .bind::<Text, _>(url)
    .bind::<Text, _>(secret)
    .bind::<Array<Text>, _>(events)
    .get_result::<Id>(conn)
    .map(|r| Ok(r.id))
}

/// Every subscription, with its pending and failed deliveries.
pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<Subscription>> {
    prepared(
        "SELECT s.id, s.uuid::text AS uuid, o.slug AS organization_slug, p.slug AS project_slug, \
                s.url, s.events, \
                (SELECT count(*) FROM webhook_deliveries d WHERE d.subscription_id = s.id \
                   AND d.delivered_at IS NULL AND d.failed_at IS NULL) AS pending, \
                (SELECT count(*) FROM webhook_deliveries d WHERE d.subscription_id = s.id \
                   AND d.failed_at IS NOT NULL) AS failed \
         FROM webhook_subscriptions s JOIN organizations o ON o.id = s.organization_id \
         LEFT JOIN projects p ON p.id = s.project_id ORDER BY s.id",
    )
    .load(conn)
}

/// Removes a subscription and its outbox rows; `false` when there was none.
pub fn remove(conn: &mut PgConnection, id: i64) -> QueryResult<bool> {
    prepared("DELETE FROM webhook_subscriptions WHERE id = $1")
        .bind::<BigInt, _>(id)
        .execute(conn)
        .map(|n| n == 1)
}

/// One notification to queue.
#[derive(Debug, Clone)]
pub struct Notice {
    pub project_id: i64,
    /// The issue it is about: deliveries of one issue go out in order.
    pub group_id: Option<i64>,
    /// The event name (`issue.created`, …), matched against the subscriptions' lists.
    pub event: &'static str,
    /// The effect's natural key: the same cause is queued once per subscription.
    pub cause: String,
    /// What the payload is built from at delivery.
    pub data: Value,
}

/// Queues `notices` for every subscription that wants them (same transaction as the effect).
pub fn enqueue(conn: &mut PgConnection, notices: &[Notice]) -> QueryResult<usize> {
    if notices.is_empty() {
        return Ok(0);
    }
    let projects: Vec<i64> = notices.iter().map(|n| n.project_id).collect();
    let groups: Vec<Option<i64>> = notices.iter().map(|n| n.group_id).collect();
    let events: Vec<&str> = notices.iter().map(|n| n.event).collect();
    let causes: Vec<&str> = notices.iter().map(|n| n.cause.as_str()).collect();
    let data: Vec<&Value> = notices.iter().map(|n| &n.data).collect();
    prepared(
        "INSERT INTO webhook_deliveries (subscription_id, project_id, group_id, event, cause, data) \
         SELECT s.id, n.p, n.g, n.e, n.c, n.d \
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[]) \
              WITH ORDINALITY AS n(p, g, e, c, d, i) \
         JOIN projects pr ON pr.id = n.p \
         JOIN webhook_subscriptions s ON s.organization_id = pr.organization_id \
              AND (s.project_id IS NULL OR s.project_id = n.p) \
              AND n.e = ANY (s.events) \
         ORDER BY n.i, s.id \
         ON CONFLICT (subscription_id, cause) DO NOTHING",
    )
    .bind::<Array<BigInt>, _>(projects)
    .bind::<Array<Nullable<BigInt>>, _>(groups)
    .bind::<Array<Text>, _>(events)
    .bind::<Array<Text>, _>(causes)
    .bind::<Array<Jsonb>, _>(data)
    .execute(conn)
}

/// A delivery claimed for an attempt.
#[derive(Debug, Clone, QueryableByName)]
pub struct Due {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub group_id: Option<i64>,
    #[diesel(sql_type = Text)]
    pub event: String,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub date_added: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub secret: String,
    #[diesel(sql_type = Text)]
    pub installation: String,
}

/// Claims up to `limit` due deliveries for `lease_secs` (another deliverer skips them until
/// then): the oldest pending row of each (subscription, issue), and rows of no issue.
pub fn claim(conn: &mut PgConnection, limit: i64, lease_secs: i64) -> QueryResult<Vec<Due>> {
    prepared(
        "WITH due AS ( \
            SELECT d.id FROM webhook_deliveries d \
            WHERE d.delivered_at IS NULL AND d.failed_at IS NULL AND d.next_attempt_at <= now() \
              AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e \
                   WHERE e.subscription_id = d.subscription_id AND e.group_id = d.group_id \
                     AND e.id < d.id AND e.delivered_at IS NULL AND e.failed_at IS NULL) \
            ORDER BY d.next_attempt_at, d.id LIMIT $1 FOR UPDATE OF d SKIP LOCKED), \
         claimed AS ( \
            UPDATE webhook_deliveries w \
            SET attempts = w.attempts + 1, next_attempt_at = now() + make_interval(secs => $2) \
            FROM due WHERE w.id = due.id \
            RETURNING w.id, w.subscription_id, w.project_id, w.group_id, w.event, w.data, \
                      w.attempts, w.date_added) \
         SELECT c.id, c.project_id, c.group_id, c.event, c.data, c.attempts, c.date_added, \
                s.url, s.secret, s.uuid::text AS installation \
         FROM claimed c JOIN webhook_subscriptions s ON s.id = c.subscription_id ORDER BY c.id",
    )
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(lease_secs)
    .load(conn)
}

/// Records a successful delivery.
pub fn delivered(conn: &mut PgConnection, id: i64) -> QueryResult<()> {
    prepared("UPDATE webhook_deliveries SET delivered_at = now(), last_error = NULL WHERE id = $1")
        .bind::<BigInt, _>(id)
        .execute(conn)
        .map(|_| ())
}

/// Records a failed attempt: retried after `retry_in_secs`, or given up on when `give_up`.
pub fn attempt_failed(
    conn: &mut PgConnection,
    id: i64,
    error: &str,
    retry_in_secs: f64,
    give_up: bool,
) -> QueryResult<()> {
    prepared(
        "UPDATE webhook_deliveries SET last_error = $2, \
           next_attempt_at = now() + make_interval(secs => $3), \
           failed_at = CASE WHEN $4 THEN now() ELSE NULL END \
         WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(error)
    .bind::<diesel::sql_types::Double, _>(retry_in_secs)
    .bind::<diesel::sql_types::Bool, _>(give_up)
    .execute(conn)
    .map(|_| ())
}

/// Deliveries not yet delivered nor given up on (a gauge).
pub fn pending(conn: &mut PgConnection) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    prepared(
        "SELECT count(*) AS n FROM webhook_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL",
    )
    .get_result::<N>(conn)
    .map(|r| r.n)
}
