//! Retention through the binaries: `ingest-consumer` and `occurrence-consumer` store events with
//! attachments in S3 (`s3s-fs`), then `sluice cleanup` runs with its clock moved forward
//! (`--now`) and removes exactly what expired: Relay's `retention_days` first, then the project's
//! option, then the organization's, then the default. Objects leave S3 with their rows, live
//! issues keep everything, payload partitions are created ahead and dropped, a dry run changes
//! nothing, idempotency records outlive cleanup for the replay window (a replay bills nothing
//! twice) and go after it, and an object-store outage leaves deletions queued, not lost.

mod support;

use chrono::{Duration as Days, Utc};
use serde_json::json;
use sluice_core::messages::{
    ChunkedAttachment, EventMessage, IngestMessage, Timestamp, UserReportMessage,
};
use sluice_testkit::db::{count, lines};
use sluice_testkit::paths::existing_bin;
use sluice_testkit::{unique, Broker, S3Server};
use std::process::{Command, Output};
use std::time::Duration;
use support::*;

fn eid(n: u32) -> String {
    format!("{:032x}", 0x7e7e_0000u64 + u64::from(n))
}

/// An error event of `project` (its own exception type, so its own issue), with an inline
/// attachment when `attachment_days` is given (`Some(None)`: an attachment without retention).
fn event(n: u32, project: u64, attachment: Option<Option<u16>>) -> (Vec<u8>, Vec<u8>) {
    let now = Utc::now().timestamp() as f64;
    let body = json!({"event_id": eid(n), "type": "error", "platform": "python", "level": "error",
        "timestamp": now,
        "exception": {"values": [{"type": format!("Error{n}"), "value": "boom",
            "stacktrace": {"frames": [{"module": "app", "function": "f", "in_app": true, "lineno": n}]}}]}});
    let attachments = attachment
        .map(|days| ChunkedAttachment {
            id: format!("att-{n}"),
            name: "log.txt".into(),
            content_type: Some("text/plain".into()),
            attachment_type: "event.attachment".into(),
            chunks: None,
            data: Some(format!("attachment of event {n}").into_bytes()),
            stored_id: None,
            size: None,
            rate_limited: false,
            retention_days: days,
        })
        .into_iter()
        .collect();
    let msg = IngestMessage::Event(EventMessage {
        payload: body.to_string().into_bytes(),
        start_time: Timestamp::from_epoch_secs(now).unwrap_or_else(|e| panic!("{e}")),
        event_id: eid(n),
        project_id: project,
        remote_addr: None,
        attachments,
    });
    (eid(n).into_bytes(), msg.encode())
}

/// A user report on event `n` of project 8.
fn report(n: u32) -> (Vec<u8>, Vec<u8>) {
    let msg = IngestMessage::UserReport(UserReportMessage {
        project_id: 8,
        start_time: Timestamp::from_epoch_secs(Utc::now().timestamp() as f64)
            .unwrap_or_else(|e| panic!("{e}")),
        payload: json!({"event_id": eid(n), "name": "Ann", "email": "ann@example.com", "comments": "it broke"})
            .to_string()
            .into_bytes(),
        event_id: None,
    });
    (eid(n).into_bytes(), msg.encode())
}

fn sluice(args: &[&str], env: &[(String, String)]) -> anyhow::Result<Output> {
    let out = Command::new(existing_bin("sluice")?)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?;
    Ok(out)
}

fn cleanup(
    db: &str,
    url: &str,
    env: &[(String, String)],
    extra: &[&str],
) -> anyhow::Result<String> {
    let mut args = vec![
        "cleanup",
        "--database-url",
        db,
        "--object-store-url",
        url,
        "--duty-percent",
        "100",
    ];
    args.extend_from_slice(extra);
    let out = sluice(&args, env)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "cleanup {extra:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

fn days_ahead(days: i64) -> String {
    (Utc::now() + Days::days(days)).to_rfc3339()
}

/// Rows left: (events, event payloads, attachments, groups).
fn left(db: &str) -> anyhow::Result<(i64, i64, i64, i64)> {
    Ok((
        count(db, "SELECT count(*) AS n FROM events")?,
        count(db, "SELECT count(*) AS n FROM event_payloads")?,
        count(db, "SELECT count(*) AS n FROM event_attachments")?,
        count(db, "SELECT count(*) AS n FROM groups")?,
    ))
}

fn has(db: &str, event: u32) -> anyhow::Result<bool> {
    Ok(count(
        db,
        &format!(
            "SELECT count(*) AS n FROM events e JOIN event_payloads p USING (project_id, event_id, expires_at) \
             WHERE e.event_id = '{}'",
            eid(event)
        ),
    )? == 1)
}

#[test]
fn cleanup_removes_what_expired_and_nothing_else() -> anyhow::Result<()> {
    let broker = Broker::start(&INGEST_TOPICS)?;
    let mut s3 = S3Server::start("sluice")?;
    // Project 7: its own 30 days. Project 8: its organization's 60 days. Project 9: the default.
    let db = migrated_db(
        "sluice",
        "INSERT INTO organizations (id, slug, options) VALUES (1, 'short', '{\"sluice:retention-days\": 60}'), (2, 'plain', '{}');
         INSERT INTO projects (id, organization_id, slug, options) VALUES
           (7, 1, 'thirty', '{\"sluice:retention-days\": \"30\"}'), (8, 1, 'sixty', '{}'), (9, 2, 'default', '{}');
         INSERT INTO webhook_subscriptions (id, organization_id, url, secret, events)
           VALUES (1, 1, 'http://127.0.0.1:9/', 's', '{issue.created}');
         INSERT INTO webhook_deliveries (subscription_id, project_id, event, cause, delivered_at, failed_at) VALUES
           (1, 7, 'issue.created', 'delivered', now(), NULL),
           (1, 7, 'issue.created', 'given-up', NULL, now()),
           (1, 7, 'issue.created', 'pending', NULL, NULL);",
    )?;
    let (env, url) = (s3.env(), s3.url("attachments"));

    // The operator's first cleanup creates the payload partitions ahead.
    cleanup(&db.url, &url, &env, &["--once"])?;
    let partitions = |table: &str| {
        count(
            &db.url,
            &format!(
                "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = '{table}'::regclass \
                 AND inhrelid::regclass::text ~ '_p[0-9]{{8}}$'"
            ),
        )
    };
    assert!(
        partitions("event_payloads")? >= 91,
        "a partition per day of the default retention"
    );
    assert!(partitions("occurrence_payloads")? >= 91);

    send_keyed(
        &broker,
        "ingest-attachments",
        &[
            event(1, 7, Some(None)),     // project option: 30 days
            event(2, 8, Some(Some(10))), // Relay says 10 days, over the organization's 60
            event(3, 8, None),           // organization option: 60 days
            event(4, 9, Some(None)),     // the default: 90 days
            report(3),
        ],
    )?;
    let (ing, occ) = (unique("ing"), unique("occ"));
    let mut ingest = stage_env(
        "ingest-consumer",
        &broker,
        &db.url,
        &ing,
        &["--object-store-url", &url],
        &env,
    )?;
    let mut occurrences = stage("occurrence-consumer", &broker, &db.url, &occ, &[])?;
    wait_committed_all(&broker, &ing, "ingest-attachments")?;
    sluice_testkit::process::wait_for("4 grouped events", Duration::from_secs(60), || {
        count(
            &db.url,
            "SELECT count(*) AS n FROM events WHERE group_id IS NOT NULL",
        )
        .ok()
        .filter(|n| *n == 4)
    })?;
    assert_eq!(left(&db.url)?, (4, 4, 3, 4));
    let object_files: Vec<String> = lines(
        &db.url,
        "SELECT blob_path AS line FROM event_attachments ORDER BY 1",
    )?;
    // Keys are relative to the bucket.
    let root = s3.file_of("");
    let file = |p: &str| root.join(p);
    assert_eq!(object_files.len(), 3);
    for p in &object_files {
        assert!(file(p).exists(), "object {p} stored");
    }
    let outcomes = count(&db.url, "SELECT count(*) AS n FROM emitted_outcomes")?;
    assert!(outcomes >= 3, "attachment outcomes recorded");

    // Today's cleanup removes nothing that lives; a replay of the topic afterwards, within the
    // replay window, bills nothing twice and changes no row.
    cleanup(&db.url, &url, &env, &["--once"])?;
    assert_eq!(left(&db.url)?, (4, 4, 3, 4));
    stop_cleanly(&mut ingest)?;
    let replay = unique("replay");
    let mut ingest = stage_env(
        "ingest-consumer",
        &broker,
        &db.url,
        &replay,
        &["--object-store-url", &url],
        &env,
    )?;
    wait_committed_all(&broker, &replay, "ingest-attachments")?;
    assert_eq!(left(&db.url)?, (4, 4, 3, 4));
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM emitted_outcomes")?,
        outcomes,
        "the replay found every outcome already emitted"
    );

    // A dry run 100 days ahead says what it would remove and removes nothing.
    let dry = cleanup(
        &db.url,
        &url,
        &env,
        &["--dry-run", "--now", &days_ahead(100)],
    )?;
    assert!(dry.contains("would remove"), "{dry}");
    assert!(
        dry.lines()
            .any(|l| l.trim_start().starts_with("events") && l.contains(" 4 rows")),
        "{dry}"
    );
    assert_eq!(left(&db.url)?, (4, 4, 3, 4));

    // 11 days on: only the event Relay gave 10 days is gone, with its attachment and object.
    cleanup(&db.url, &url, &env, &["--once", "--now", &days_ahead(11)])?;
    assert!(!has(&db.url, 2)? && has(&db.url, 1)? && has(&db.url, 3)? && has(&db.url, 4)?);
    assert_eq!(
        left(&db.url)?,
        (3, 3, 2, 4),
        "its issue stays until the project's retention"
    );
    let gone_2 = object_files.iter().find(|p| p.contains(&eid(2))).cloned();
    let gone_2 = gone_2.ok_or_else(|| anyhow::anyhow!("no object of event 2"))?;
    assert!(!file(&gone_2).exists(), "the object left S3 with its row");
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM object_deletions")?,
        0
    );
    for p in object_files.iter().filter(|p| !p.contains(&eid(2))) {
        assert!(file(p).exists(), "live objects stay: {p}");
    }

    assert_eq!(count(&db.url, "SELECT count(*) AS n FROM user_reports")?, 1);

    // 31 days on: project 7's event (30 days) goes, and with it its issue (hashes, activity);
    // the idempotency records are older than the replay window and go too.
    cleanup(&db.url, &url, &env, &["--once", "--now", &days_ahead(31)])?;
    assert!(!has(&db.url, 1)? && has(&db.url, 3)? && has(&db.url, 4)?);
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) AS n FROM groups WHERE project_id = 7"
        )?,
        0
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) AS n FROM group_hashes WHERE project_id = 7"
        )?,
        0
    );
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM activities a WHERE NOT EXISTS (SELECT 1 FROM groups g WHERE g.id = a.group_id)")?,
        0,
        "no activity of a removed group is left"
    );
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM emitted_outcomes")?,
        0
    );
    // (The issues raised above queued deliveries too; no deliverer runs here, so they are pending.)
    let deliveries = lines(
        &db.url,
        "SELECT cause || ' ' || (delivered_at IS NULL AND failed_at IS NULL) AS line FROM webhook_deliveries",
    )?;
    assert!(
        deliveries.contains(&"pending true".to_owned())
            && deliveries.iter().all(|d| d.ends_with(" true")),
        "settled webhook deliveries go after the replay window; pending ones stay: {deliveries:?}"
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) AS n FROM user_reports WHERE group_id IS NOT NULL"
        )?,
        1,
        "the report of a live issue keeps its group"
    );
    // Live issues keep their events' group.
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) AS n FROM events e JOIN groups g ON g.id = e.group_id"
        )?,
        2
    );

    // An object-store outage: the attachment row goes, its object stays queued, and the next
    // cleanup after the outage deletes it.
    s3.stop();
    let out = sluice(
        &[
            "cleanup",
            "--database-url",
            &db.url,
            "--object-store-url",
            &url,
            "--once",
            "--now",
            &days_ahead(91),
        ],
        &env,
    )?;
    assert!(!out.status.success(), "an outage is reported");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stay queued"), "{stderr}");
    assert_eq!(left(&db.url)?, (0, 0, 0, 0), "every row expired by day 91");
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM object_deletions")?,
        1
    );
    let last = object_files.iter().find(|p| p.contains(&eid(4))).cloned();
    let last = last.ok_or_else(|| anyhow::anyhow!("no object of event 4"))?;
    assert!(file(&last).exists(), "not deleted during the outage");
    s3.restart()?;
    cleanup(&db.url, &url, &env, &["--once", "--now", &days_ahead(91)])?;
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM object_deletions")?,
        0
    );
    assert!(!file(&last).exists(), "deleted once the store is back");

    // Partitions whose day ended by then were dropped; the ones ahead are there.
    assert_eq!(
        count(
            &db.url,
            &format!(
                "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'event_payloads'::regclass \
                 AND inhrelid::regclass::text ~ '_p[0-9]{{8}}$' \
                 AND to_date(right(inhrelid::regclass::text, 8), 'YYYYMMDD') < '{}'::date",
                (Utc::now() + Days::days(90)).date_naive()
            )
        )?,
        0,
        "day partitions up to day 90 dropped"
    );
    assert!(partitions("event_payloads")? >= 1);
    assert_eq!(count(&db.url, "SELECT count(*) AS n FROM user_reports")?, 0);

    stop_cleanly(&mut ingest)?;
    stop_cleanly(&mut occurrences)?;
    Ok(())
}

#[test]
fn two_cleanups_at_once_are_safe() -> anyhow::Result<()> {
    let db = migrated_db(
        "sluice",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o');
         INSERT INTO projects (id, organization_id, slug) VALUES (7, 1, 'p');
         INSERT INTO groups (project_id, type, last_seen) VALUES (7, 1, now() - interval '200 days');
         INSERT INTO events (project_id, event_id, expires_at)
           SELECT 7, lpad(to_hex(i), 32, '0'), now() - interval '1 day' FROM generate_series(1, 20000) i;
         INSERT INTO event_payloads (project_id, event_id, expires_at, data)
           SELECT project_id, event_id, expires_at, '{}' FROM events;",
    )?;
    let dir = tempfile::tempdir()?;
    let url = format!("file://{}", dir.path().display());
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (db, url) = (db.url.clone(), url.clone());
            std::thread::spawn(move || cleanup(&db, &url, &[], &["--once", "--batch-size", "500"]))
        })
        .collect();
    let mut outputs = Vec::new();
    for r in runs {
        outputs.push(
            r.join()
                .map_err(|_| anyhow::anyhow!("cleanup thread panicked"))??,
        );
    }
    assert_eq!(
        count(&db.url, "SELECT count(*) AS n FROM events")?
            + count(&db.url, "SELECT count(*) AS n FROM event_payloads")?
            + count(&db.url, "SELECT count(*) AS n FROM groups")?,
        0,
        "{outputs:?}"
    );
    Ok(())
}
