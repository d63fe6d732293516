//! What a Sentry user sees, through the binaries (ingest-consumer, feedback-worker,
//! occurrence-consumer) against Postgres, the mock broker and `s3s-fs`:
//! - an ACCEPTED outcome (category error, quantity 1) per stored error event, once across a
//!   replay;
//! - error issues with the priority of their level, Sentry's metadata (`type`, `value`,
//!   `filename`, `function`, `in_app_frame_mix`) and culprit, and the grouping rule recorded;
//! - a new feedback that names an event writes a user report with the event's group;
//! - a legacy user report and a new feedback for the same event become two feedback issues in
//!   either order (feedback first for one event, the legacy report first for the other);
//! - crash reports follow `store_crash_reports` (default 0: none stored, FILTERED
//!   `crash-report-limit`; 1: one per issue), and an attachment Relay stored itself
//!   (`stored_id`) with no `relay_objectstore_url` gets INVALID `stored_attachment_unavailable`
//!   instead of an empty row.

mod support;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Jsonb, Nullable, Text};
use rdkafka::Message;
use serde_json::{json, Value};
use sluice_core::messages::{
    ChunkedAttachment, EventMessage, IngestMessage, Timestamp, UserReportMessage,
};
use sluice_testkit::process::wait_for;
use sluice_testkit::{unique, Broker, S3Server};
use std::time::Duration;
use support::*;

const TOPICS: [(&str, i32); 9] = [
    ("ingest-events", 2),
    ("ingest-events-dlq", 1),
    ("ingest-attachments", 2),
    ("ingest-attachments-dlq", 1),
    ("ingest-feedback-events", 2),
    ("ingest-feedback-events-dlq", 1),
    ("ingest-occurrences", 2),
    ("ingest-occurrences-dlq", 1),
    ("outcomes", 1),
];
const START: f64 = 1_795_432_200.0;
const P: u64 = 42;

fn ts(secs: f64) -> Timestamp {
    Timestamp::from_epoch_secs(secs).unwrap_or_else(|e| panic!("{e}"))
}

fn eid(n: u32) -> String {
    format!("{:032x}", 0xf1d0_0000u64 + u64::from(n))
}

fn event(n: u32, body: Value) -> (Vec<u8>, Vec<u8>) {
    event_in(P, n, body, vec![])
}

fn event_in(
    project: u64,
    n: u32,
    body: Value,
    attachments: Vec<ChunkedAttachment>,
) -> (Vec<u8>, Vec<u8>) {
    let id = eid(n);
    let mut body = body;
    body["event_id"] = json!(id);
    body["timestamp"] = json!(START - 5.0);
    let msg = IngestMessage::Event(EventMessage {
        payload: body.to_string().into_bytes(),
        start_time: ts(START),
        event_id: id.clone(),
        project_id: project,
        remote_addr: None,
        attachments,
    });
    (id.into_bytes(), msg.encode())
}

fn attachment(
    id: &str,
    ty: &str,
    data: Option<&[u8]>,
    stored_id: Option<&str>,
) -> ChunkedAttachment {
    ChunkedAttachment {
        id: id.into(),
        name: format!("{id}.bin"),
        content_type: None,
        attachment_type: ty.into(),
        chunks: None,
        data: data.map(<[u8]>::to_vec),
        stored_id: stored_id.map(str::to_owned),
        size: Some(data.map_or(2048, <[u8]>::len) as u64),
        rate_limited: false,
        retention_days: None,
    }
}

/// A native crash as Relay describes one it could not process, with its crash report.
fn crash(project: u64, n: u32, attachments: Vec<ChunkedAttachment>) -> (Vec<u8>, Vec<u8>) {
    event_in(
        project,
        n,
        json!({"type": "error", "platform": "native", "level": "fatal",
               "exception": {"values": [{"type": "Minidump", "value": "Invalid Minidump",
                   "mechanism": {"type": "minidump", "synthetic": true, "handled": false}}]}}),
        attachments,
    )
}

fn outcome_lines(broker: &Broker, category: u64) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = broker
        .read_all("outcomes", usize::MAX, Duration::from_secs(10))?
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(m.payload()?).ok())
        .filter(|o| o["category"] == category)
        .map(|o| {
            format!(
                "{}/{}/{}/{}",
                o["event_id"].as_str().unwrap_or("-"),
                o["outcome"],
                o["reason"].as_str().unwrap_or("-"),
                o["quantity"]
            )
        })
        .collect();
    v.sort();
    Ok(v)
}

fn attachment_rows(c: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    #[derive(QueryableByName)]
    struct A {
        #[diesel(sql_type = Text)]
        line: String,
    }
    Ok(diesel::sql_query(
        "SELECT event_id::text || '/' || attachment_id || '/' || type AS line FROM event_attachments ORDER BY 1",
    )
    .load::<A>(c)?
    .into_iter()
    .map(|a| a.line)
    .collect())
}

/// A Python error raised in `app.payments.charge`, called from a library frame.
fn error(n: u32, level: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
    event(
        n,
        json!({"type": "error", "platform": "python", "level": level,
               "release": "shop@1.2.0", "environment": "production",
               "exception": {"values": [{"type": "PaymentError", "value": value,
                   "stacktrace": {"frames": [
                       {"module": "flask.app", "filename": "flask/app.py", "function": "dispatch",
                        "abs_path": "/venv/lib/python3.12/site-packages/flask/app.py", "in_app": false},
                       {"module": "app.payments", "filename": "app/payments.py", "function": "charge",
                        "abs_path": "/srv/app/payments.py", "lineno": n, "in_app": true}]}}]}}),
    )
}

/// A legacy user report; the one of event 1 comes 10 minutes after the feedback about it (more
/// than the 5 minutes within which a report may be changed: a feedback's row is not a report
/// that rule protects).
fn report(n: u32, name: &str) -> (Vec<u8>, Vec<u8>) {
    let after = if n == 1 { 600.0 } else { 1.0 };
    let msg = IngestMessage::UserReport(UserReportMessage {
        project_id: P,
        start_time: ts(START + after),
        payload: json!({"event_id": eid(n), "name": name,
                        "email": format!("{}@example.com", name.to_lowercase()),
                        "comments": format!("{name} says the payment failed")})
        .to_string()
        .into_bytes(),
        event_id: None,
    });
    (eid(n).into_bytes(), msg.encode())
}

/// A new feedback (its own event) naming event `about`.
fn feedback(n: u32, about: u32) -> (Vec<u8>, Vec<u8>) {
    event(
        n,
        json!({"type": "feedback", "platform": "javascript", "level": "info",
               "contexts": {"feedback": {"contact_email": "fay@example.com", "name": "Fay",
                   "message": format!("Feedback about the payment {about}"),
                   "associated_event_id": eid(about)}}}),
    )
}

#[derive(QueryableByName, Debug)]
struct ErrorGroup {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = Text)]
    culprit: String,
    #[diesel(sql_type = Integer)]
    priority: i32,
    #[diesel(sql_type = Jsonb)]
    data: Value,
    #[diesel(sql_type = BigInt)]
    times_seen: i64,
}

#[derive(QueryableByName, Debug, PartialEq)]
struct ReportRow {
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    group_id: Option<i64>,
    #[diesel(sql_type = Bool)]
    legacy_report: bool,
    #[diesel(sql_type = Bool)]
    shimmed: bool,
    #[diesel(sql_type = Nullable<Text>)]
    environment: Option<String>,
}

fn event_group(c: &mut PgConnection, n: u32) -> anyhow::Result<Option<i64>> {
    #[derive(QueryableByName)]
    struct G {
        #[diesel(sql_type = Nullable<BigInt>)]
        group_id: Option<i64>,
    }
    let rows: Vec<G> = diesel::sql_query(format!(
        "SELECT group_id FROM events WHERE event_id = '{}'",
        eid(n)
    ))
    .load(c)?;
    Ok(rows.into_iter().next().and_then(|g| g.group_id))
}

fn feedback_issues(c: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    #[derive(QueryableByName)]
    struct F {
        #[diesel(sql_type = Text)]
        message: String,
    }
    let mut v: Vec<String> = diesel::sql_query(
        "SELECT coalesce(data->'metadata'->>'message', '') AS message FROM groups WHERE type = 6001",
    )
    .load::<F>(c)?
    .into_iter()
    .map(|f| f.message)
    .collect();
    v.sort();
    Ok(v)
}

fn error_outcomes(broker: &Broker) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = broker
        .read_all("outcomes", usize::MAX, Duration::from_secs(10))?
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(m.payload()?).ok())
        .filter(|o| o["category"] == 1)
        .map(|o| {
            format!(
                "{}/{}/{}",
                o["event_id"].as_str().unwrap_or("-"),
                o["outcome"],
                o["quantity"]
            )
        })
        .collect();
    v.sort();
    Ok(v)
}

#[test]
fn issues_outcomes_and_reports_as_sentry_users_know_them() -> anyhow::Result<()> {
    let broker = Broker::start(&TOPICS)?;
    anyhow::ensure!(broker.is_mock(), "uses the default topic names");
    let s3 = S3Server::start("sluice")?;
    let db = migrated_db(
        "ingest-consumer",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o');
         INSERT INTO projects (id, organization_id, slug, options) VALUES (42, 1, 'shop', '{}'),
           (43, 1, 'native', '{\"store_crash_reports\": 1}');",
    )?;
    let mut env = s3.env();
    env.push(("OBJECT_STORE_URL".into(), s3.url("attachments")));
    let groups_of = [unique("ingest"), unique("fb"), unique("occ")];
    let _ingest = stage_env(
        "ingest-consumer",
        &broker,
        &db.url,
        &groups_of[0],
        &[],
        &env,
    )?;
    let _fb = stage("feedback-worker", &broker, &db.url, &groups_of[1], &[])?;
    let _occ = stage("occurrence-consumer", &broker, &db.url, &groups_of[2], &[])?;
    let settle = || -> anyhow::Result<()> {
        for (group, topic) in [
            (&groups_of[0], "ingest-events"),
            (&groups_of[0], "ingest-attachments"),
            (&groups_of[1], "ingest-feedback-events"),
            (&groups_of[2], "ingest-occurrences"),
        ] {
            wait_committed_all(&broker, group, topic)?;
        }
        Ok(())
    };
    let mut c = db.connect()?;
    let wait_grouped = |n: u32| {
        wait_for(
            &format!("event {n} grouped"),
            Duration::from_secs(60),
            || event_group(&mut db.connect().ok()?, n).ok()?,
        )
    };
    // The messages sent twice (the second time as a replay).
    let error_events = [
        error(1, "warning", "card 4242 declined"),
        error(2, "warning", "card 1881 declined"),
    ];
    let feedbacks = [feedback(11, 1), feedback(12, 2)];
    let crash_23 = [crash(
        43,
        23,
        vec![attachment(
            "dump-23",
            "event.minidump",
            Some(b"MDMP-23"),
            None,
        )],
    )];

    // Events 1 and 2 (warnings): one issue (same in-app stack, values differ). The legacy
    // report of event 2 arrives before its event.
    send_keyed(&broker, "ingest-attachments", &[report(2, "Bob")])?;
    send_keyed(&broker, "ingest-events", &error_events)?;
    wait_grouped(1)?;
    wait_grouped(2)?;
    settle()?;
    // Event 3: an info-level message, its own issue.
    send_keyed(
        &broker,
        "ingest-events",
        &[event(
            3,
            json!({"type": "default", "platform": "python", "level": "info",
                           "logentry": {"formatted": "Retrying payment 77 after 250ms"}}),
        )],
    )?;
    // Feedback about event 1 (after its event), and about event 2 (after its legacy report).
    send_keyed(&broker, "ingest-feedback-events", &feedbacks)?;
    wait_grouped(3)?;
    settle()?;
    // Then the legacy report of event 1: after its feedback.
    send_keyed(&broker, "ingest-attachments", &[report(1, "Ann")])?;
    let want_feedback = {
        let mut v = vec![
            "Ann says the payment failed".to_owned(),
            "Bob says the payment failed".to_owned(),
            "Feedback about the payment 1".to_owned(),
            "Feedback about the payment 2".to_owned(),
        ];
        v.sort();
        v
    };
    let got = wait_for("four feedback issues", Duration::from_secs(60), || {
        feedback_issues(&mut db.connect().ok()?)
            .ok()
            .filter(|v| *v == want_feedback)
    });
    settle()?;
    assert_eq!(feedback_issues(&mut c)?, want_feedback, "{got:?}");

    // The error issue: priority from the level (warning: medium), Sentry's
    // metadata and culprit, the rule recorded on each occurrence.
    let errors: Vec<ErrorGroup> = diesel::sql_query(
        "SELECT id, title, culprit, priority, data, times_seen FROM groups WHERE type = 1 ORDER BY id",
    )
    .load(&mut c)?;
    assert_eq!(errors.len(), 2, "{errors:?}");
    let payment = &errors[0];
    assert_eq!(payment.times_seen, 2);
    assert!(
        payment.title.starts_with("PaymentError: card "),
        "{}",
        payment.title
    );
    assert_eq!(payment.culprit, "app.payments in charge");
    assert_eq!(payment.priority, 50, "warning: medium");
    let meta = &payment.data["metadata"];
    assert_eq!(meta["type"], "PaymentError");
    assert!(
        meta["value"]
            .as_str()
            .is_some_and(|v| v.starts_with("card ")),
        "{meta}"
    );
    assert_eq!(meta["function"], "charge");
    assert_eq!(meta["filename"], "app/payments.py");
    assert_eq!(meta["in_app_frame_mix"], "mixed");
    let message = &errors[1];
    assert_eq!(message.title, "Retrying payment 77 after 250ms");
    assert_eq!(message.priority, 25, "info: low");
    #[derive(QueryableByName)]
    struct Rule {
        #[diesel(sql_type = Text)]
        rule: String,
    }
    let mut rules: Vec<String> = diesel::sql_query(
        "SELECT p.data->'evidence_data'->'grouping'->>'rule' AS rule FROM occurrences o \
         JOIN occurrence_payloads p ON p.id = o.id AND p.expires_at = o.expires_at \
         JOIN groups g ON g.id = o.group_id WHERE g.type = 1",
    )
    .load::<Rule>(&mut c)?
    .into_iter()
    .map(|r| r.rule)
    .collect();
    rules.sort();
    assert_eq!(rules, ["in-app-stacktrace", "in-app-stacktrace", "message"]);

    // Releases and environments: the first release, and per release and environment.
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Seen {
        #[diesel(sql_type = Nullable<Text>)]
        first_release: Option<String>,
        #[diesel(sql_type = Text)]
        release: String,
        #[diesel(sql_type = Text)]
        environment: String,
        #[diesel(sql_type = BigInt)]
        release_times: i64,
        #[diesel(sql_type = BigInt)]
        environment_times: i64,
        #[diesel(sql_type = Nullable<Text>)]
        environment_first_release: Option<String>,
    }
    let seen: Vec<Seen> = diesel::sql_query(format!(
        "SELECT g.first_release, r.release, r.environment, r.times_seen AS release_times, \
                e.times_seen AS environment_times, e.first_release AS environment_first_release \
         FROM groups g JOIN group_releases r ON r.group_id = g.id \
         JOIN group_environments e ON e.group_id = g.id AND e.environment = r.environment \
         WHERE g.id = {}",
        payment.id
    ))
    .load(&mut c)?;
    let release = Some("shop@1.2.0".to_owned());
    assert_eq!(
        seen,
        vec![Seen {
            first_release: release.clone(),
            release: "shop@1.2.0".into(),
            environment: "production".into(),
            release_times: 2,
            environment_times: 2,
            environment_first_release: release,
        }]
    );

    // The reports: each with its event's group; both are legacy reports now (each was shimmed).
    let reports: Vec<ReportRow> = diesel::sql_query(
        "SELECT event_id::text AS event_id, group_id, legacy_report, \
                feedback_event_id IS NOT NULL AS shimmed, environment FROM user_reports ORDER BY event_id",
    )
    .load(&mut c)?;
    let g = Some(payment.id);
    assert_eq!(
        reports,
        vec![
            ReportRow {
                event_id: eid(1),
                group_id: g,
                legacy_report: true,
                shimmed: true,
                environment: Some("production".into())
            },
            ReportRow {
                event_id: eid(2),
                group_id: g,
                legacy_report: true,
                shimmed: true,
                environment: Some("production".into())
            },
        ]
    );

    // Crash reports: none kept by default; one per issue where the project says 1. An
    // attachment stored by Relay is refused with its reason, not kept as an empty row.
    send_keyed(
        &broker,
        "ingest-attachments",
        &[
            crash(
                P,
                21,
                vec![
                    attachment("dump-21", "event.minidump", Some(b"MDMP-21"), None),
                    attachment(
                        "crash-21",
                        "event.applecrashreport",
                        Some(b"Incident Identifier"),
                        None,
                    ),
                    attachment("log-21", "event.attachment", None, Some("b4f1c0de")),
                ],
            ),
            crash(
                43,
                22,
                vec![attachment(
                    "dump-22",
                    "event.minidump",
                    Some(b"MDMP-22"),
                    None,
                )],
            ),
        ],
    )?;
    wait_grouped(22)?;
    settle()?;
    send_keyed(&broker, "ingest-attachments", &crash_23)?;
    wait_grouped(23)?;
    settle()?;
    assert_eq!(
        attachment_rows(&mut c)?,
        [format!("{}/dump-22/event.minidump", eid(22))],
        "only the first crash report of the issue in the project that keeps one"
    );
    let mut want_attachments = vec![
        format!("{}/1/crash-report-limit/7", eid(21)),
        format!("{}/1/crash-report-limit/19", eid(21)),
        format!("{}/3/stored_attachment_unavailable/2048", eid(21)),
        format!("{}/0/-/7", eid(22)),
        format!("{}/1/crash-report-limit/7", eid(23)),
    ];
    want_attachments.sort();
    assert_eq!(outcome_lines(&broker, 4)?, want_attachments);
    assert_eq!(
        event_group(&mut c, 22)?,
        event_group(&mut c, 23)?,
        "one issue"
    );

    // One ACCEPTED error outcome per stored event.
    let want_outcomes: Vec<String> = [1, 2, 3, 21, 22, 23]
        .iter()
        .map(|n| format!("{}/0/1", eid(*n)))
        .collect();
    assert_eq!(error_outcomes(&broker)?, want_outcomes);

    // Replaying everything changes nothing and emits no second outcome.
    let before = sluice_testkit::db::issue_snapshot(&db.url)?;
    let outcome_count = broker.stored("outcomes")?;
    send_keyed(
        &broker,
        "ingest-attachments",
        &[report(2, "Bob"), report(1, "Ann")],
    )?;
    send_keyed(&broker, "ingest-events", &error_events)?;
    send_keyed(&broker, "ingest-feedback-events", &feedbacks)?;
    send_keyed(&broker, "ingest-attachments", &crash_23)?;
    settle()?;
    sluice_testkit::db::assert_same_rows(
        &sluice_testkit::db::issue_snapshot(&db.url)?,
        &before,
        "a replay",
    );
    assert_eq!(
        broker.stored("outcomes")?,
        outcome_count,
        "no outcome twice"
    );
    Ok(())
}
