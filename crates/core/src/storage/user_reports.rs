//! `user_reports`: one report per (project, event). A legacy report (`legacy_report`) is shimmed
//! into a feedback event at most once: `feedback_event_id` records that it was. A row written for
//! a new feedback naming the event is not a legacy report and is never shimmed, unless a legacy
//! report for the same event updates it.

use super::prepared::prepared;
use super::EventKey;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text};

/// A report's fields.
pub struct Report<'a> {
    pub project_id: i64,
    pub event_id: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub comments: &'a str,
    /// The environment of the report's event (or of the feedback that wrote it), when known.
    pub environment: Option<&'a str>,
}

/// The stored report after [`upsert`].
#[derive(QueryableByName)]
pub struct Upserted {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub feedback_event_id: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub group_id: Option<i64>,
    /// When the stored report was first received, epoch seconds.
    #[diesel(sql_type = Double)]
    pub received: f64,
}

/// Inserts the report received at `received` (epoch seconds) with its event's group, or updates
/// the stored one when that was first received at most 5 minutes earlier. A row a new feedback
/// wrote is always taken over (it becomes this legacy report, received now). `None` when a
/// stored legacy report is older (it may no longer be modified).
pub fn upsert(
    conn: &mut PgConnection,
    r: &Report<'_>,
    received: f64,
) -> QueryResult<Option<Upserted>> {
    let row = prepared(
        "INSERT INTO user_reports (project_id, event_id, group_id, name, email, comments, date_added, environment) \
         VALUES ($1, $2::bpchar, (SELECT group_id FROM events WHERE project_id = $1 AND event_id = $2::bpchar), \
                 $3, $4, $5, to_timestamp($6), $7) \
         ON CONFLICT (project_id, event_id) DO UPDATE \
           SET name = EXCLUDED.name, email = EXCLUDED.email, comments = EXCLUDED.comments, \
               group_id = COALESCE(user_reports.group_id, EXCLUDED.group_id), legacy_report = true, \
               environment = COALESCE(user_reports.environment, EXCLUDED.environment), \
               date_added = CASE WHEN user_reports.legacy_report THEN user_reports.date_added \
                                 ELSE EXCLUDED.date_added END \
           WHERE NOT user_reports.legacy_report \
              OR user_reports.date_added >= EXCLUDED.date_added - interval '5 minutes' \
         RETURNING id, project_id, feedback_event_id, group_id, extract(epoch FROM date_added)::float8 AS received",
    )
    .bind::<BigInt, _>(r.project_id)
    .bind::<Text, _>(r.event_id)
    .bind::<Text, _>(r.name)
    .bind::<Text, _>(r.email)
    .bind::<Text, _>(r.comments)
    .bind::<Double, _>(received)
    .bind::<Nullable<Text>, _>(r.environment)
    .get_result::<Upserted>(conn)
    .optional()?;
    if let Some(u) = &row {
        if let Some(g) = u.group_id {
            notify_grouped(conn, &[(u.id, u.project_id, g)])?;
        }
    }
    Ok(row)
}

/// Queues the notification of reports that have their issue: once per report, whether it had
/// the issue when it was saved or got it later (Sentry notifies when a report is created for a
/// grouped event; a report that came first is notified when its event is grouped).
pub(crate) fn notify_grouped(
    conn: &mut PgConnection,
    reports: &[(i64, i64, i64)],
) -> QueryResult<()> {
    let notices: Vec<super::webhooks::Notice> = reports
        .iter()
        .map(|&(id, project_id, group_id)| super::webhooks::Notice {
            project_id,
            group_id: Some(group_id),
            event: super::webhooks::event::USER_REPORT_CREATED,
            cause: format!("user_report:{id}"),
            data: serde_json::json!({ "report_id": id }),
        })
        .collect();
    super::webhooks::enqueue(conn, &notices)?;
    Ok(())
}

/// (id, project id, group id) of reports a statement grouped.
#[derive(QueryableByName)]
pub(crate) struct Grouped {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = BigInt)]
    pub group_id: i64,
}

impl Grouped {
    pub(crate) fn key(&self) -> (i64, i64, i64) {
        (self.id, self.project_id, self.group_id)
    }
}

/// A report a new feedback makes for the event it names.
#[derive(Debug, Clone)]
pub struct FeedbackReport {
    pub project_id: i64,
    pub event_id: String,
    pub name: String,
    pub email: String,
    pub comments: String,
    pub environment: Option<String>,
    /// When the feedback was received (epoch seconds).
    pub received: f64,
}

/// Inserts the reports new feedback make for the events they name, in one statement, each with
/// its event's group when it has one (otherwise the group is filled in when the event gets it);
/// not legacy reports, so never shimmed. An existing report is left as it is (the first of the
/// same event in `reports` wins). Then fills the groups of events grouped meanwhile and queues
/// the notifications of the reports that have a group.
pub fn insert_for_feedback(conn: &mut PgConnection, reports: &[FeedbackReport]) -> QueryResult<()> {
    #[derive(QueryableByName)]
    struct MaybeGrouped {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Nullable<BigInt>)]
        group_id: Option<i64>,
    }
    if reports.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&FeedbackReport) -> String| reports.iter().map(f).collect::<Vec<String>>();
    // The rows and their notifications commit together: a retry finds the rows and returns
    // none, so notifications written apart from them could be lost.
    conn.transaction(|conn| {
        let rows = prepared(
            "INSERT INTO user_reports (project_id, event_id, group_id, name, email, comments, legacy_report, environment, date_added) \
             SELECT t.p, t.e::bpchar, (SELECT ev.group_id FROM events ev WHERE ev.project_id = t.p AND ev.event_id = t.e::bpchar), \
                    t.n, t.m, t.c, false, t.env, to_timestamp(t.r) \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[]) \
                  WITH ORDINALITY AS t(p, e, n, m, c, env, r, i) \
             ORDER BY t.i \
             ON CONFLICT (project_id, event_id) DO NOTHING \
             RETURNING id, project_id, group_id",
        )
        .bind::<Array<BigInt>, _>(reports.iter().map(|r| r.project_id).collect::<Vec<i64>>())
        .bind::<Array<Text>, _>(col(|r| r.event_id.clone()))
        .bind::<Array<Text>, _>(col(|r| r.name.clone()))
        .bind::<Array<Text>, _>(col(|r| r.email.clone()))
        .bind::<Array<Text>, _>(col(|r| r.comments.clone()))
        .bind::<Array<Nullable<Text>>, _>(
            reports
                .iter()
                .map(|r| r.environment.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind::<Array<Double>, _>(reports.iter().map(|r| r.received).collect::<Vec<f64>>())
        .load::<MaybeGrouped>(conn)?;
        let grouped: Vec<_> = rows
            .iter()
            .filter_map(|r| r.group_id.map(|g| (r.id, r.project_id, g)))
            .collect();
        notify_grouped(conn, &grouped)
    })?;
    // The events may have been grouped while the rows were written.
    let keys: Vec<EventKey> = reports
        .iter()
        .map(|r| (r.project_id, r.event_id.clone()))
        .collect();
    super::linking::fill_groups(conn, super::linking::Linked::Reports, &keys)
}

/// Which of the events of `keys` have reports not shimmed yet.
pub fn with_waiting(conn: &mut PgConnection, keys: &[EventKey]) -> QueryResult<Vec<EventKey>> {
    #[derive(QueryableByName)]
    struct W {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Text)]
        event_id: String,
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (projects, events) = super::split_keys(keys);
    let rows: Vec<W> = prepared(
        // One probe of the index of waiting reports per key (see `outcomes::emitted`).
        "SELECT DISTINCT t.p AS project_id, t.e AS event_id FROM unnest($1::bigint[], $2::text[]) AS t(p, e) \
         CROSS JOIN LATERAL (SELECT 1 FROM user_reports u WHERE u.project_id = t.p AND u.event_id = t.e::bpchar \
                             AND u.feedback_event_id IS NULL AND u.legacy_report LIMIT 1) w",
    )
    .bind::<Array<BigInt>, _>(projects)
    .bind::<Array<Text>, _>(events)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|w| (w.project_id, w.event_id))
        .collect())
}

/// A report not shimmed yet.
#[derive(QueryableByName)]
pub struct Waiting {
    /// When it was first received, epoch seconds.
    #[diesel(sql_type = Double)]
    pub received: f64,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Text)]
    pub comments: String,
}

/// The reports of one event not shimmed yet.
pub fn waiting(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
) -> QueryResult<Vec<Waiting>> {
    prepared(
        "SELECT name, email, comments, extract(epoch FROM date_added)::float8 AS received \
         FROM user_reports \
         WHERE project_id = $1 AND event_id = $2::bpchar AND feedback_event_id IS NULL AND legacy_report",
    )
    .bind::<BigInt, _>(project_id)
    .bind::<Text, _>(event_id)
    .load(conn)
}

/// Records that the report of an event was shimmed as `feedback_event_id`.
pub fn mark_shimmed(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
    feedback_event_id: &str,
) -> QueryResult<()> {
    prepared(
        "UPDATE user_reports SET feedback_event_id = $3::bpchar \
         WHERE project_id = $1 AND event_id = $2::bpchar AND feedback_event_id IS NULL",
    )
    .bind::<BigInt, _>(project_id)
    .bind::<Text, _>(event_id)
    .bind::<Text, _>(feedback_event_id)
    .execute(conn)?;
    Ok(())
}

/// Records the environment of the event of reports that arrived before it.
pub fn set_environment(
    conn: &mut PgConnection,
    project_id: i64,
    event_id: &str,
    environment: &str,
) -> QueryResult<()> {
    prepared(
        "UPDATE user_reports SET environment = $3 \
         WHERE project_id = $1 AND event_id = $2::bpchar AND environment IS NULL",
    )
    .bind::<BigInt, _>(project_id)
    .bind::<Text, _>(event_id)
    .bind::<Text, _>(environment)
    .execute(conn)?;
    Ok(())
}
