//! What the web API reads: organizations, projects, issues with their filters and orders,
//! events, user reports and attachments. Every query takes the caller's organization, so a
//! token never reads another organization's rows.
//!
//! Issue lists are keyset-paginated on (score, id): `score` is last seen or first seen in epoch
//! milliseconds, or the event count; each order has its own index
//! (`groups_project_status_{last_seen,first_seen,times_seen}_idx`), so a page of one project's
//! issues of one status reads only the rows it returns.

use super::prepared::prepared;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bpchar, Integer, Jsonb, Nullable, Text, Timestamptz};
use serde_json::Value;

/// An organization.
#[derive(Debug, Clone, QueryableByName)]
pub struct Organization {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub slug: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Timestamptz)]
    pub date_added: DateTime<Utc>,
}

/// A project.
#[derive(Debug, Clone, QueryableByName)]
pub struct Project {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub slug: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub platform: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub date_added: DateTime<Utc>,
}

const PROJECT_COLUMNS: &str = "p.id, p.slug, COALESCE(p.name, p.slug) AS name, \
    p.options->>'platform' AS platform, p.date_added";

/// The organization `id`.
pub fn organization(conn: &mut PgConnection, id: i64) -> QueryResult<Option<Organization>> {
    prepared(
        "SELECT id, slug, COALESCE(name, slug) AS name, date_added FROM organizations WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .optional()
}

/// The projects of the organization `org_id`, by slug.
pub fn projects(conn: &mut PgConnection, org_id: i64) -> QueryResult<Vec<Project>> {
    diesel::sql_query(format!(
        "SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.organization_id = $1 ORDER BY p.slug"
    ))
    .bind::<BigInt, _>(org_id)
    .load(conn)
}

/// The project `slug` of the organization `org_id`.
pub fn project(conn: &mut PgConnection, org_id: i64, slug: &str) -> QueryResult<Option<Project>> {
    diesel::sql_query(format!(
        "SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.organization_id = $1 AND p.slug = $2"
    ))
    .bind::<BigInt, _>(org_id)
    .bind::<Text, _>(slug)
    .get_result(conn)
    .optional()
}

/// A group as the API shows it.
#[derive(Debug, Clone, QueryableByName)]
pub struct Group {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = Text)]
    pub project_slug: String,
    #[diesel(sql_type = Text)]
    pub project_name: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub project_platform: Option<String>,
    #[diesel(sql_type = Integer, column_name = "type")]
    pub group_type: i32,
    #[diesel(sql_type = Integer)]
    pub status: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    pub substatus: Option<i32>,
    #[diesel(sql_type = Integer)]
    pub priority: i32,
    #[diesel(sql_type = Integer)]
    pub level: i32,
    #[diesel(sql_type = Text)]
    pub title: String,
    #[diesel(sql_type = Text)]
    pub culprit: String,
    #[diesel(sql_type = BigInt)]
    pub times_seen: i64,
    #[diesel(sql_type = Timestamptz)]
    pub first_seen: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub last_seen: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    pub first_release: Option<String>,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
    /// The order's score of the row (for the next cursor).
    #[diesel(sql_type = BigInt)]
    pub score: i64,
}

/// The order of an issue list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Last seen, newest first.
    Date,
    /// First seen, newest first.
    New,
    /// Event count, highest first.
    Freq,
}

impl Sort {
    fn score(self) -> &'static str {
        match self {
            Sort::Date => "floor(extract(epoch FROM g.last_seen) * 1000)::bigint",
            Sort::New => "floor(extract(epoch FROM g.first_seen) * 1000)::bigint",
            Sort::Freq => "g.times_seen",
        }
    }

    /// The ORDER BY that the order's index serves.
    fn order(self) -> &'static str {
        match self {
            Sort::Date => "g.last_seen DESC, g.id DESC",
            Sort::New => "g.first_seen DESC, g.id DESC",
            Sort::Freq => "g.times_seen DESC, g.id DESC",
        }
    }

    /// The condition "at or after the cursor's score" in the column's own terms ($ placeholder).
    fn at_most(self, n: usize) -> String {
        match self {
            Sort::Date => format!("g.last_seen < to_timestamp((${n} + 1) / 1000.0)"),
            Sort::New => format!("g.first_seen < to_timestamp((${n} + 1) / 1000.0)"),
            Sort::Freq => format!("g.times_seen <= ${n}"),
        }
    }
}

/// A search over issues.
#[derive(Debug, Clone)]
pub struct IssueFilter {
    pub organization_id: i64,
    /// Only these projects (none: every project of the organization).
    pub project_ids: Option<Vec<i64>>,
    /// Only these statuses (none: any).
    pub statuses: Option<Vec<i32>>,
    /// Only these group types (none: any).
    pub types: Option<Vec<i32>>,
    /// Words that must all appear in the title (case-insensitive).
    pub text: Vec<String>,
    /// Only these group ids.
    pub ids: Option<Vec<i64>>,
    pub sort: Sort,
}

/// A page position: rows whose score is at most `score` (all when `None`), skipping `offset`
/// rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub score: Option<i64>,
    pub offset: i64,
}

const GROUP_COLUMNS: &str = "g.id, g.project_id, p.slug AS project_slug, \
    COALESCE(p.name, p.slug) AS project_name, p.options->>'platform' AS project_platform, \
    g.type, g.status, g.substatus, g.priority, g.level, g.title, g.culprit, g.times_seen, \
    g.first_seen, g.last_seen, g.first_release, g.data";

/// One page of issues (`limit` rows at most) matching `filter`, from `at`.
pub fn issues(
    conn: &mut PgConnection,
    filter: &IssueFilter,
    at: Position,
    limit: i64,
) -> QueryResult<Vec<Group>> {
    let mut cond = vec!["p.organization_id = $1".to_owned()];
    let mut n = 1;
    let mut next = || {
        n += 1;
        n
    };
    let projects_at = filter.project_ids.as_ref().map(|_| next());
    if let (Some(i), Some(p)) = (projects_at, &filter.project_ids) {
        // One project is an equality too: with the status, the index then yields rows in the
        // order asked for and a page reads only its rows (ANY would make the planner sort
        // every matching row).
        cond.push(if p.len() == 1 {
            format!("g.project_id = (${i})[1]")
        } else {
            format!("g.project_id = ANY (${i})")
        });
    }
    let statuses_at = filter.statuses.as_ref().map(|_| next());
    if let (Some(i), Some(s)) = (statuses_at, &filter.statuses) {
        // One status is an equality, so the (project, status, order) index gives rows in order.
        cond.push(if s.len() == 1 {
            format!("g.status = (${i})[1]")
        } else {
            format!("g.status = ANY (${i})")
        });
    }
    let types_at = filter.types.as_ref().map(|_| next());
    if let Some(i) = types_at {
        cond.push(format!("g.type = ANY (${i})"));
    }
    let text_at = (!filter.text.is_empty()).then(&mut next);
    if let Some(i) = text_at {
        cond.push(format!(
            "NOT EXISTS (SELECT 1 FROM unnest(${i}::text[]) w WHERE strpos(lower(g.title), lower(w)) = 0)"
        ));
    }
    let ids_at = filter.ids.as_ref().map(|_| next());
    if let Some(i) = ids_at {
        cond.push(format!("g.id = ANY (${i})"));
    }
    let score_at = at.score.map(|_| next());
    if let Some(i) = score_at {
        cond.push(filter.sort.at_most(i));
    }
    let (limit_at, offset_at) = (next(), next());
    let sql = format!(
        "SELECT {GROUP_COLUMNS}, {score} AS score FROM groups g JOIN projects p ON p.id = g.project_id \
         WHERE {cond} ORDER BY {order} LIMIT ${limit_at} OFFSET ${offset_at}",
        score = filter.sort.score(),
        cond = cond.join(" AND "),
        order = filter.sort.order(),
    );
    let mut q = diesel::sql_query(sql)
        .into_boxed::<Pg>()
        .bind::<BigInt, _>(filter.organization_id);
    if let Some(p) = &filter.project_ids {
        q = q.bind::<Array<BigInt>, _>(p.clone());
    }
    if let Some(s) = &filter.statuses {
        q = q.bind::<Array<Integer>, _>(s.clone());
    }
    if let Some(t) = &filter.types {
        q = q.bind::<Array<Integer>, _>(t.clone());
    }
    if text_at.is_some() {
        q = q.bind::<Array<Text>, _>(filter.text.clone());
    }
    if let Some(ids) = &filter.ids {
        q = q.bind::<Array<BigInt>, _>(ids.clone());
    }
    if let Some(s) = at.score {
        q = q.bind::<BigInt, _>(s);
    }
    q.bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(at.offset)
        .load(conn)
}

/// The groups `ids` of the organization `org_id` (those that exist), in id order.
pub fn groups(conn: &mut PgConnection, org_id: i64, ids: &[i64]) -> QueryResult<Vec<Group>> {
    diesel::sql_query(format!(
        "SELECT {GROUP_COLUMNS}, 0::bigint AS score FROM groups g JOIN projects p ON p.id = g.project_id \
         WHERE p.organization_id = $1 AND g.id = ANY ($2) ORDER BY g.id"
    ))
    .bind::<BigInt, _>(org_id)
    .bind::<Array<BigInt>, _>(ids)
    .load(conn)
}

/// The group `id` of the organization `org_id`.
pub fn group(conn: &mut PgConnection, org_id: i64, id: i64) -> QueryResult<Option<Group>> {
    Ok(groups(conn, org_id, &[id])?.pop())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many user reports the group has.
pub fn user_report_count(conn: &mut PgConnection, group_id: i64) -> QueryResult<i64> {
    prepared("SELECT count(*) AS n FROM user_reports WHERE group_id = $1")
        .bind::<BigInt, _>(group_id)
        .get_result::<Count>(conn)
        .map(|c| c.n)
}

/// An activity of a group.
#[derive(Debug, Clone, QueryableByName)]
pub struct Activity {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text, column_name = "type")]
    pub kind: String,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
    #[diesel(sql_type = Timestamptz)]
    pub datetime: DateTime<Utc>,
}

/// The group's activities, newest first (at most 100).
pub fn activities(conn: &mut PgConnection, group_id: i64) -> QueryResult<Vec<Activity>> {
    prepared(
        "SELECT id, type, data, datetime FROM activities WHERE group_id = $1 \
         ORDER BY datetime DESC, id DESC LIMIT 100",
    )
    .bind::<BigInt, _>(group_id)
    .load(conn)
}

/// A stored event.
#[derive(Debug, Clone, QueryableByName)]
pub struct Event {
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub group_id: Option<i64>,
    #[diesel(sql_type = Timestamptz)]
    pub date_added: DateTime<Utc>,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
}

const EVENT_COLUMNS: &str =
    "e.project_id, e.event_id::text AS event_id, e.group_id, e.date_added, ep.data";
const EVENT_JOIN: &str = "events e JOIN event_payloads ep ON ep.project_id = e.project_id \
    AND ep.event_id = e.event_id AND ep.expires_at = e.expires_at";

/// Which end of an issue's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Latest,
    Oldest,
}

/// The latest or oldest event of a group.
pub fn group_event(
    conn: &mut PgConnection,
    group_id: i64,
    which: Which,
) -> QueryResult<Option<Event>> {
    let order = match which {
        Which::Latest => "DESC",
        Which::Oldest => "ASC",
    };
    diesel::sql_query(format!(
        "SELECT {EVENT_COLUMNS} FROM {EVENT_JOIN} WHERE e.group_id = $1 \
         ORDER BY e.date_added {order}, e.event_id {order} LIMIT 1"
    ))
    .bind::<BigInt, _>(group_id)
    .get_result(conn)
    .optional()
}

/// Whose events a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsOf {
    Group(i64),
    Project(i64),
}

/// A page of a group's or a project's events, newest first: `limit` rows after skipping
/// `offset`.
pub fn events(
    conn: &mut PgConnection,
    of: EventsOf,
    offset: i64,
    limit: i64,
) -> QueryResult<Vec<Event>> {
    let (column, id) = match of {
        EventsOf::Group(id) => ("e.group_id", id),
        EventsOf::Project(id) => ("e.project_id", id),
    };
    diesel::sql_query(format!(
        "SELECT {EVENT_COLUMNS} FROM {EVENT_JOIN} WHERE {column} = $1 \
         ORDER BY e.date_added DESC, e.event_id DESC LIMIT $2 OFFSET $3"
    ))
    .bind::<BigInt, _>(id)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(offset)
    .load(conn)
}

/// The event `event_id` of the project.
pub fn event(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
) -> QueryResult<Option<Event>> {
    diesel::sql_query(format!(
        "SELECT {EVENT_COLUMNS} FROM {EVENT_JOIN} WHERE e.project_id = $1 AND e.event_id = $2::bpchar"
    ))
    .bind::<BigInt, _>(project_id)
    .bind::<Text, _>(event_id)
    .get_result(conn)
    .optional()
}

/// The event ids just before and after `event_id` within its group (by time).
pub fn neighbours(
    conn: &mut PgConnection,
    group_id: i64,
    date_added: DateTime<Utc>,
    event_id: &str,
) -> QueryResult<(Option<String>, Option<String>)> {
    #[derive(QueryableByName)]
    struct Pair {
        #[diesel(sql_type = Nullable<Text>)]
        prev: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        next: Option<String>,
    }
    let p: Pair = prepared(
        "SELECT (SELECT event_id::text FROM events WHERE group_id = $1 AND (date_added, event_id) < ($2, $3::bpchar) \
                 ORDER BY date_added DESC, event_id DESC LIMIT 1) AS prev, \
                (SELECT event_id::text FROM events WHERE group_id = $1 AND (date_added, event_id) > ($2, $3::bpchar) \
                 ORDER BY date_added, event_id LIMIT 1) AS next",
    )
    .bind::<BigInt, _>(group_id)
    .bind::<Timestamptz, _>(date_added)
    .bind::<Text, _>(event_id)
    .get_result(conn)?;
    Ok((p.prev, p.next))
}

/// A user report.
#[derive(Debug, Clone, QueryableByName)]
pub struct UserReport {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub group_id: Option<i64>,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Text)]
    pub comments: String,
    #[diesel(sql_type = Timestamptz)]
    pub date_added: DateTime<Utc>,
}

const REPORT_COLUMNS: &str = "r.id, r.project_id, r.event_id::text AS event_id, r.group_id, \
    r.name, r.email, r.comments, r.date_added";

/// A page of a project's user reports, newest first; `unresolved_only` keeps the reports whose
/// issue is unresolved (or that have none yet).
pub fn user_reports(
    conn: &mut PgConnection,
    project_id: i64,
    unresolved_only: bool,
    offset: i64,
    limit: i64,
) -> QueryResult<Vec<UserReport>> {
    diesel::sql_query(format!(
        "SELECT {REPORT_COLUMNS} FROM user_reports r LEFT JOIN groups g ON g.id = r.group_id \
         WHERE r.project_id = $1 AND (NOT $2 OR g.status IS NULL OR g.status = 0) \
         ORDER BY r.date_added DESC, r.id DESC LIMIT $3 OFFSET $4"
    ))
    .bind::<BigInt, _>(project_id)
    .bind::<diesel::sql_types::Bool, _>(unresolved_only)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(offset)
    .load(conn)
}

/// The user report `id`.
pub fn user_report(conn: &mut PgConnection, id: i64) -> QueryResult<Option<UserReport>> {
    diesel::sql_query(format!(
        "SELECT {REPORT_COLUMNS} FROM user_reports r WHERE r.id = $1"
    ))
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .optional()
}

/// An attachment of an event.
#[derive(Debug, Clone, QueryableByName)]
pub struct Attachment {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Text, column_name = "type")]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub content_type: String,
    #[diesel(sql_type = BigInt)]
    pub size: i64,
    #[diesel(sql_type = Bpchar)]
    pub sha1: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub blob_path: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub date_added: DateTime<Utc>,
}

const ATTACHMENT_COLUMNS: &str = "id, event_id::text AS event_id, type, name, content_type, size, \
    sha1, blob_path, date_added";

/// The attachments of an event, in id order.
pub fn attachments(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
) -> QueryResult<Vec<Attachment>> {
    diesel::sql_query(format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM event_attachments \
         WHERE project_id = $1 AND event_id = $2::bpchar ORDER BY id"
    ))
    .bind::<BigInt, _>(project_id)
    .bind::<Text, _>(event_id)
    .load(conn)
}

/// The attachment `id` of an event.
pub fn attachment(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
    id: i64,
) -> QueryResult<Option<Attachment>> {
    diesel::sql_query(format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM event_attachments \
         WHERE project_id = $1 AND event_id = $2::bpchar AND id = $3"
    ))
    .bind::<BigInt, _>(project_id)
    .bind::<Text, _>(event_id)
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .optional()
}

/// Events per group in buckets of `bucket_secs` since `since`: (group id, bucket start in
/// epoch seconds, count), from the events still stored.
pub fn event_counts(
    conn: &mut PgConnection,
    group_ids: &[i64],
    since: DateTime<Utc>,
    bucket_secs: i64,
) -> QueryResult<Vec<(i64, i64, i64)>> {
    #[derive(QueryableByName)]
    struct Bucket {
        #[diesel(sql_type = BigInt)]
        group_id: i64,
        #[diesel(sql_type = BigInt)]
        bucket: i64,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    if group_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Bucket> = prepared(
        "SELECT group_id, (floor(extract(epoch FROM date_added) / $3) * $3)::bigint AS bucket, \
                count(*) AS n \
         FROM events WHERE group_id = ANY ($1) AND date_added >= $2 GROUP BY 1, 2",
    )
    .bind::<Array<BigInt>, _>(group_ids)
    .bind::<Timestamptz, _>(since)
    .bind::<BigInt, _>(bucket_secs)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|b| (b.group_id, b.bucket, b.n))
        .collect())
}

/// The organization of the project `project_id`.
pub fn organization_of_project(
    conn: &mut PgConnection,
    project_id: i64,
) -> QueryResult<Option<Organization>> {
    prepared(
        "SELECT o.id, o.slug, COALESCE(o.name, o.slug) AS name, o.date_added \
         FROM projects p JOIN organizations o ON o.id = p.organization_id WHERE p.id = $1",
    )
    .bind::<BigInt, _>(project_id)
    .get_result(conn)
    .optional()
}
