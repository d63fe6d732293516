//! `sluice run` on PostgreSQL alone: one process (SDK endpoints, web API, stages, webhooks,
//! cleanup) on the embedded transport. Real SDK traffic (the Python `sentry-sdk` and
//! `sentry-cli`) becomes issues, attachments and user reports that the web API lists on the same
//! listener; a SIGTERM drains cleanly, a SIGKILL loses nothing, and re-reading every topic from
//! offset 0 changes no row.

mod support;

use serde_json::Value;
use sluice_testkit::db::{assert_same_rows, count, issue_snapshot};
use sluice_testkit::http;
use sluice_testkit::paths::existing_bin;
use sluice_testkit::process::{free_port, wait_for, Proc};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

fn start(db: &str, addr: &str, objects: &str) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(existing_bin("sluice")?);
    cmd.env_clear()
        .env("DATABASE_URL", db)
        .args(["run", "--listen", addr, "--object-store-url", objects])
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("STAGE_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    let proc = Proc::spawn("sluice run", cmd)?;
    wait_for("sluice run ready", Duration::from_secs(60), || {
        http::get(addr, "/health/ready").filter(|(s, _)| *s == 200)
    })?;
    Ok(proc)
}

/// An empty database (`sluice run` applies the migrations itself), an objects directory, and
/// `sluice run` on a free port: (database, directory, object store URL, address, process).
fn started() -> anyhow::Result<(
    sluice_testkit::TestDb,
    tempfile::TempDir,
    String,
    String,
    Proc,
)> {
    let db = sluice_testkit::TestDb::new()?;
    let dir = tempfile::tempdir()?;
    let objects = format!("file://{}", dir.path().display());
    let addr = format!("127.0.0.1:{}", free_port()?);
    let proc = start(&db.url, &addr, &objects)?;
    Ok((db, dir, objects, addr, proc))
}

/// Every partition's messages read and committed by each group that reads it.
fn caught_up(db: &str) -> anyhow::Result<bool> {
    let behind = count(
        db,
        "SELECT count(*) AS n FROM queue_partitions p \
         JOIN (VALUES ('ingest-events', 'ingest-consumer'), ('ingest-attachments', 'ingest-consumer'), \
                      ('ingest-feedback-events', 'feedback-worker'), \
                      ('ingest-occurrences', 'occurrence-consumer')) AS r(topic, grp) \
           ON r.topic = p.topic \
         LEFT JOIN queue_offsets o ON o.consumer_group = r.grp AND o.topic = p.topic \
           AND o.partition = p.partition \
         WHERE p.next_offset > coalesce(o.next_offset, 0)",
    )?;
    Ok(behind == 0)
}

#[test]
fn one_process_on_postgres_alone_turns_sdk_traffic_into_issues() -> anyhow::Result<()> {
    let python = std::env::var("SENTRY_PYTHON").map_err(|_| {
        anyhow::anyhow!("SENTRY_PYTHON is not set: run scripts/services up and source .local/env")
    })?;
    let cli = std::env::var("SENTRY_CLI_BIN").map_err(|_| {
        anyhow::anyhow!("SENTRY_CLI_BIN is not set: run scripts/services up and source .local/env")
    })?;
    let (db, _dir, objects, addr, mut proc) = started()?;

    sluice(&db.url, &["org", "create", "acme"])?;
    // Crash reports are kept (Sentry stores none unless the project asks).
    let project = sluice(
        &db.url,
        &[
            "project",
            "create",
            "acme",
            "web",
            "--option",
            "store_crash_reports=-1",
        ],
    )?;
    let dsn = sluice(
        &db.url,
        &[
            "key",
            "create",
            "acme",
            "web",
            "--public-url",
            &format!("http://{addr}"),
        ],
    )?;
    let token = sluice(&db.url, &["token", "create", "acme"])?;

    let out = Command::new(&python)
        .arg(format!(
            "{}/tests/clients/send_with_sdk.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(&dsn)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "sentry-sdk script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Value = serde_json::from_slice(&out.stdout)?;
    let error = sent["error"].as_str().unwrap_or_default().to_owned();
    let cli_out = Command::new(&cli)
        .env_clear()
        .env("SENTRY_DISABLE_UPDATE_CHECK", "1")
        .env("SENTRY_DSN", &dsn)
        .args(["send-event", "-m", "cron job missed its window"])
        .output()?;
    anyhow::ensure!(
        cli_out.status.success(),
        "sentry-cli: {}",
        String::from_utf8_lossy(&cli_out.stderr)
    );

    let q = |sql: &str| count(&db.url, sql);
    wait_for(
        "issues, attachment and report",
        Duration::from_secs(60),
        || {
            (q("SELECT count(*) AS n FROM events WHERE group_id IS NOT NULL").ok()? >= 6
            && q("SELECT count(*) AS n FROM groups WHERE type = 6001").ok()? == 2
            && q("SELECT count(*) AS n FROM event_attachments WHERE blob_path IS NOT NULL").ok()? == 1
            && q(&format!(
                "SELECT count(*) AS n FROM user_reports WHERE event_id = '{error}' AND group_id IS NOT NULL"
            ))
            .ok()?
                == 1)
            .then_some(())
        },
    )?;

    // The web API on the same listener lists them.
    let auth = format!("Bearer {token}");
    let issues = http::request(
        "GET",
        &addr,
        "/api/0/projects/acme/web/issues/?query=",
        &[("authorization", auth.as_str())],
        b"",
    )
    .ok_or_else(|| anyhow::anyhow!("no API answer"))?;
    assert_eq!(issues.status, 200, "{}", issues.body);
    let list: Value = serde_json::from_str(&issues.body)?;
    let titles: Vec<&str> = list
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["title"].as_str()).collect())
        .unwrap_or_default();
    for t in [
        "ZeroDivisionError: division by zero",
        "checkout took too long",
        "cron job missed its window",
    ] {
        assert!(titles.contains(&t), "{t} in {titles:?}");
    }

    // Native crash reports: a minidump alone, and an Apple crash report beside an event, each
    // become a fatal native error event with Relay's placeholder, grouped, the report stored
    // as the event's attachment.
    let key = sluice_acceptance::dsn_key(&dsn);
    let auth = format!("Sentry sentry_key={key}, sentry_version=7");
    let minidump: Vec<u8> = [b"MDMP".as_slice(), &[7u8; 2044]].concat();
    let report = b"Incident Identifier: 1\nException Type:  EXC_CRASH (SIGABRT)\n".to_vec();
    let crashes: [(&str, Vec<u8>); 2] = [
        (
            "c0000000000000000000000000000001",
            [
                b"{\"event_id\":\"c0000000000000000000000000000001\"}\n".as_slice(),
                format!(
                    "{{\"type\":\"attachment\",\"length\":{},\"filename\":\"crash.dmp\",\
                     \"attachment_type\":\"event.minidump\"}}\n",
                    minidump.len()
                )
                .as_bytes(),
                &minidump,
                b"\n",
            ]
            .concat(),
        ),
        (
            "c0000000000000000000000000000002",
            [
                b"{\"event_id\":\"c0000000000000000000000000000002\"}\n".as_slice(),
                b"{\"type\":\"event\"}\n{\"message\":\"app crashed\",\"platform\":\"cocoa\"}\n",
                format!(
                    "{{\"type\":\"attachment\",\"length\":{},\"filename\":\"crash.crash\",\
                     \"attachment_type\":\"event.applecrashreport\"}}\n",
                    report.len()
                )
                .as_bytes(),
                &report,
            ]
            .concat(),
        ),
    ];
    for (_, body) in &crashes {
        let a = http::request(
            "POST",
            &addr,
            &format!("/api/{project}/envelope/"),
            &[("x-sentry-auth", auth.as_str())],
            body,
        )
        .ok_or_else(|| anyhow::anyhow!("no answer"))?;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    for ((id, _), (ty, value, attachment, size)) in crashes.iter().zip([
        (
            "Minidump",
            "Invalid Minidump",
            "event.minidump",
            minidump.len(),
        ),
        (
            "AppleCrashReport",
            "Invalid Apple Crash Report",
            "event.applecrashreport",
            report.len(),
        ),
    ]) {
        wait_for(
            &format!("crash {id} grouped"),
            Duration::from_secs(60),
            || {
                (q(&format!(
                "SELECT count(*) AS n FROM events e JOIN event_payloads p USING (project_id, event_id) \
                 JOIN groups g ON g.id = e.group_id \
                 JOIN event_attachments a ON a.project_id = e.project_id AND a.event_id = e.event_id \
                 WHERE e.event_id = '{id}' AND p.data->>'platform' = 'native' AND p.data->>'level' = 'fatal' \
                   AND p.data->'exception'->'values'->0->>'type' = '{ty}' \
                   AND p.data->'exception'->'values'->0->>'value' = '{value}' \
                   AND (p.data->'exception'->'values'->0->'mechanism'->>'synthetic')::boolean \
                   AND g.title = '<unknown>' AND a.type = '{attachment}' AND a.size = {size} \
                   AND a.blob_path IS NOT NULL AND a.group_id = e.group_id"
            ))
            .ok()?
                == 1)
                .then_some(())
            },
        )?;
    }
    assert_eq!(
        q("SELECT count(DISTINCT group_id) AS n FROM events WHERE event_id LIKE 'c000000000000000000000000000000%'")?,
        2,
        "a minidump and an Apple crash report group apart, by the placeholder's value"
    );

    wait_for("every topic read", Duration::from_secs(30), || {
        caught_up(&db.url).ok()?.then_some(())
    })?;
    stop_cleanly(&mut proc)?;
    let before = issue_snapshot(&db.url)?;

    // SIGKILL with traffic in flight, then a restart: nothing lost.
    let mut proc = start(&db.url, &addr, &objects)?;
    let envelope = |i: u32| {
        format!(
            "{{\"event_id\":\"{:032x}\"}}\n{{\"type\":\"event\"}}\n{{\"message\":\"burst {i}\",\"fingerprint\":[\"burst\"]}}\n",
            0xb000_0000u64 + u64::from(i)
        )
    };
    for i in 0..50 {
        let a = http::request(
            "POST",
            &addr,
            &format!("/api/{project}/envelope/"),
            &[("x-sentry-auth", auth.as_str())],
            envelope(i).as_bytes(),
        )
        .ok_or_else(|| anyhow::anyhow!("no answer"))?;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    proc.kill();
    let _proc = start(&db.url, &addr, &objects)?;
    wait_for("the burst grouped", Duration::from_secs(60), || {
        (q("SELECT times_seen AS n FROM groups WHERE title LIKE 'burst%'").ok()? == 50)
            .then_some(())
    })?;
    wait_for("every topic read", Duration::from_secs(30), || {
        caught_up(&db.url).ok()?.then_some(())
    })?;
    let after_burst = issue_snapshot(&db.url)?;
    assert!(after_burst.len() > before.len());

    // Replay: every group reads every topic again from offset 0; no row changes.
    drop(_proc);
    let replayed_from = q("SELECT count(*) AS n FROM queue_messages")?;
    assert!(replayed_from > 50);
    diesel_exec(&db.url, "UPDATE queue_offsets SET next_offset = 0")?;
    let mut proc = start(&db.url, &addr, &objects)?;
    wait_for("the replay read", Duration::from_secs(60), || {
        caught_up(&db.url).ok()?.then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(1));
    assert_same_rows(
        &issue_snapshot(&db.url)?,
        &after_burst,
        "after replaying every topic",
    );
    stop_cleanly(&mut proc)?;
    Ok(())
}

/// The stages' health is the listener's: a stage that lost its database connection makes
/// `/health/ready` answer 503 naming it, and it is ready again once it reconnected.
#[test]
fn a_stage_without_its_database_makes_the_process_not_ready() -> anyhow::Result<()> {
    let (db, _dir, _, addr, mut proc) = started()?;
    assert_eq!(http::get(&addr, "/health/live").map(|(s, _)| s), Some(200));
    let (status, body) = http::get(&addr, "/health/ready").unwrap_or_default();
    assert_eq!((status, body.as_str()), (200, "ready"));

    // New connections are refused and the stages' transport connections are cut; the web
    // API's pooled connection stays, so the database itself still answers.
    let (base, name) = db
        .url
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("no database name in {}", db.url))?;
    let admin = format!("{base}/postgres");
    diesel_exec(
        &admin,
        &format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND application_name = 'sluice-queue'"
        ),
    )?;
    const STAGES: [&str; 3] = ["ingest-consumer", "feedback-worker", "occurrence-consumer"];
    let not_ready = wait_for(
        "every stage reported not ready",
        Duration::from_secs(30),
        || {
            http::get(&addr, "/health/ready")
                .filter(|(s, b)| *s == 503 && STAGES.iter().all(|stage| b.contains(stage)))
        },
    );
    // Connections allowed again before anything can fail, so the database can be dropped.
    diesel_exec(
        &admin,
        &format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"),
    )?;
    let (_, body) = not_ready?;
    assert!(body.starts_with("not ready: "), "{body:?}");
    wait_for("ready again", Duration::from_secs(60), || {
        http::get(&addr, "/health/ready").filter(|(s, b)| *s == 200 && b == "ready")
    })?;
    stop_cleanly(&mut proc)?;
    Ok(())
}

/// Dead letters on the embedded transport: the stage's own (a value that is not msgpack) and
/// letters left by an incident are listed, filtered and shown by `sluice dlq` from the database
/// alone (no KAFKA_BROKERS), replayed to `ingest-events` (never the truncated one) and
/// processed by the running `sluice run`; a second replay changes no row.
#[test]
fn dead_letters_on_postgres_alone_are_listed_and_replayed_exactly_once() -> anyhow::Result<()> {
    use sluice_core::queue::{Outgoing, Publisher};
    let (db, _dir, _, _, mut proc) = started()?;
    diesel_exec(
        &db.url,
        "INSERT INTO organizations (id, slug) VALUES (1, 'o'); \
         INSERT INTO projects (id, organization_id, slug) VALUES (7, 1, 'a'), (8, 1, 'b');",
    )?;
    let mut letters: Vec<Outgoing> = (0..30)
        .map(|n| (n, if n < 20 { 7 } else { 8 }, "retry_exhausted"))
        .chain([(98, 7, "too_large"), (99, 7, "too_large")])
        .map(|(n, project, reason)| {
            let mut headers: Vec<(String, Vec<u8>)> = provenance(n as usize, reason)
                .into_iter()
                .map(|(k, v)| match (n, k.as_str()) {
                    // A letter naming a topic this DLQ does not belong to.
                    (98, "original_topic") => (k, b"ingest-evnts".to_vec()),
                    _ => (k, v.into_bytes()),
                })
                .collect();
            if n == 99 {
                headers.push(("truncated_from".into(), b"70000000".to_vec()));
            }
            Outgoing {
                topic: "ingest-events-dlq".into(),
                key: Some(eid(n).into_bytes()),
                payload: event(n, project),
                headers,
            }
        })
        .collect();
    let sent = letters.len() - 2;
    letters.push(Outgoing {
        topic: "ingest-events".into(),
        key: Some(b"bad".to_vec()),
        payload: b"not msgpack at all".to_vec(),
        headers: Vec::new(),
    });
    let url = db.url.clone();
    tokio::runtime::Runtime::new()?
        .block_on(async move {
            let publisher = Publisher::start(sluice_core::storage::Db::new(&url, 1));
            publisher.send_many(letters).await
        })
        .map_err(|e| anyhow::anyhow!("publishing the letters: {e}"))?;
    let q = |sql: &str| count(&db.url, sql);
    let dead = "SELECT count(*) AS n FROM queue_messages WHERE topic = 'ingest-events-dlq'";
    wait_for(
        "the stage's own dead letter",
        Duration::from_secs(30),
        || (q(dead).ok()? == sent as i64 + 3).then_some(()),
    )?;

    let dlq = |args: &[&str]| sluice_dlq(args, &[("DATABASE_URL", &db.url)]);
    let (out, err) = dlq(&["list", "ingest-events"])?;
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), sent + 3, "{out}");
    assert!(
        err.contains(&format!("{} of {} dead letters", sent + 3, sent + 3)),
        "{err}"
    );
    let undecodable: Vec<&&str> = rows.iter().filter(|l| l.contains("undecodable")).collect();
    assert_eq!(undecodable.len(), 1, "{out}");
    assert!(undecodable[0].contains("ingest-events/"), "{out}");
    assert!(undecodable[0].contains("not msgpack"), "{out}");

    let (out, _) = dlq(&[
        "list",
        "ingest-events-dlq",
        "--reason",
        "retry_exhausted",
        "--project",
        "8",
        "--json",
    ])?;
    let json: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(json.len(), 10, "{out}");
    assert!(json
        .iter()
        .all(|j| j["project_id"] == 8 && j["reason"] == "retry_exhausted"));
    let at = format!("{}:{}", json[0]["partition"], json[0]["offset"]);
    let (out, _) = dlq(&["show", "ingest-events", "--at", &at, "--json"])?;
    let shown: Value = serde_json::from_str(&out)?;
    assert_eq!(shown["headers"]["sentry-trace"], "abc-def", "{out}");
    assert_eq!(shown["error_detail"], "database statement timeout");
    assert_eq!(shown["project_id"], 8);

    let inputs = "SELECT count(*) AS n FROM queue_messages WHERE topic = 'ingest-events'";
    let before = q(inputs)?;
    let (out, _) = dlq(&[
        "replay",
        "ingest-events",
        "--reason",
        "retry_exhausted",
        "--reason",
        "too_large",
        "--dry-run",
    ])?;
    assert!(
        out.contains(&format!(
            "{sent} of {} dead letters in ingest-events-dlq would be replayed, 2 skipped",
            sent + 3
        )),
        "{out}"
    );
    assert_eq!(q(inputs)?, before);
    assert_eq!(q("SELECT count(*) AS n FROM events")?, 0);

    let (out, err) = dlq(&[
        "replay",
        "ingest-events",
        "--reason",
        "retry_exhausted",
        "--reason",
        "too_large",
    ])?;
    assert!(
        out.contains(&format!("replayed to ingest-events: {sent}")),
        "{out}"
    );
    assert!(!out.contains("ingest-evnts"), "{out}");
    assert!(
        err.contains("original_topic \"ingest-evnts\" is not \"ingest-events\""),
        "{err}"
    );
    assert_eq!(
        q("SELECT count(*) AS n FROM queue_partitions WHERE topic = 'ingest-evnts'")?,
        0,
        "a replay never creates a topic"
    );
    assert_eq!(q(inputs)?, before + sent as i64);
    let marked = q(
        "SELECT count(*) AS n FROM queue_messages WHERE topic = 'ingest-events' \
         AND position(convert_to('sluice_replayed_from', 'UTF8') IN headers) > 0 \
         AND position(convert_to('original_offset', 'UTF8') IN headers) = 0",
    )?;
    assert_eq!(
        marked, sent as i64,
        "each replay names its letter, without provenance"
    );
    wait_for("replayed events grouped", Duration::from_secs(60), || {
        (q("SELECT count(*) AS n FROM events WHERE group_id IS NOT NULL").ok()? == sent as i64)
            .then_some(())
    })?;
    wait_for("every topic read", Duration::from_secs(30), || {
        caught_up(&db.url).ok()?.then_some(())
    })?;
    let first = issue_snapshot(&db.url)?;

    dlq(&["replay", "ingest-events", "--reason", "retry_exhausted"])?;
    assert_eq!(q(inputs)?, before + 2 * sent as i64);
    wait_for("every topic read again", Duration::from_secs(30), || {
        caught_up(&db.url).ok()?.then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(q("SELECT count(*) AS n FROM events")?, sent as i64);
    assert_same_rows(&issue_snapshot(&db.url)?, &first, "after a second replay");
    stop_cleanly(&mut proc)?;
    Ok(())
}

fn diesel_exec(url: &str, sql: &str) -> anyhow::Result<()> {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    diesel::PgConnection::establish(url)?.batch_execute(sql)?;
    Ok(())
}
