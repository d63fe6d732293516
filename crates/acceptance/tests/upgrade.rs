//! Upgrades through the binaries: a database at the previous version's schema, then the new
//! binaries. A stage started before `migrate` stays up, live and not ready, processes nothing
//! and says why; once `sluice migrate` has run (converting the stored data), it becomes ready
//! without a restart and processes what waited. `sluice cleanup` refuses to run on the old
//! schema with the same advice.

mod support;

use serde_json::json;
use sluice_testkit::db::count;
use sluice_testkit::paths::existing_bin;
use sluice_testkit::process::{free_port, wait_for};
use sluice_testkit::{http, unique, Broker, TestDb};
use std::process::Command;
use std::time::Duration;
use support::*;

/// The newest migration of the previous release.
const PREVIOUS: &str = "20261202000001";

#[test]
fn new_binaries_wait_for_the_migration_then_run() -> anyhow::Result<()> {
    let broker = Broker::start(&[
        ("ingest-occurrences", 1),
        ("ingest-occurrences-dlq", 1),
        ("outcomes", 1),
    ])?;
    let db = TestDb::new()?;
    sluice_core::storage::migrate::migrate_until(&db.url, PREVIOUS)?;
    {
        use diesel::connection::SimpleConnection;
        db.connect()?.batch_execute(
            "INSERT INTO organizations (id, slug) VALUES (1, 'o');
             INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'p');
             INSERT INTO events (project_id, event_id, data) VALUES (42, repeat('a', 32), '{\"message\": \"before\"}');",
        )?;
    }

    // The old schema: cleanup refuses with the advice.
    let out = Command::new(existing_bin("sluice")?)
        .args(["cleanup", "--once", "--database-url", &db.url])
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sluice migrate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let event_id = format!("{:032x}", 0xe1u64);
    let occurrence = json!({
        "id": format!("{:032x}", 1), "project_id": 42, "event_id": event_id, "fingerprint": ["upgrade"],
        "issue_title": "after the upgrade", "subtitle": "sub", "culprit": "c", "type": 1001,
        "detection_time": 1_795_432_000.0, "level": "error",
        "event": {"event_id": event_id, "project_id": 42, "platform": "python", "timestamp": 1_795_432_000.0},
    })
    .to_string();
    produce(
        &broker,
        "ingest-occurrences",
        &[("upgrade-42".into(), occurrence, vec![])],
    )?;

    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let group = unique("occ");
    let mut occ = stage_at(
        "occurrence-consumer",
        &broker,
        &db.url,
        &group,
        &[],
        &[],
        port,
    )?;
    // Up and live, not ready, nothing processed.
    wait_for("the health endpoint", Duration::from_secs(20), || {
        http::get(&addr, "/health/live").filter(|(s, _)| *s == 200)
    })?;
    std::thread::sleep(Duration::from_secs(4));
    assert_ne!(http::get(&addr, "/health/ready").map(|(s, _)| s), Some(200));
    assert_eq!(count(&db.url, "SELECT count(*) AS n FROM groups")?, 0);

    let out = Command::new(existing_bin("sluice")?)
        .args(["migrate", "--database-url", &db.url])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied 20261203000001"));

    // Ready without a restart; the waiting occurrence is processed; the old event kept its data.
    wait_for("ready after migrate", Duration::from_secs(30), || {
        http::get(&addr, "/health/ready").filter(|(s, _)| *s == 200)
    })?;
    wait_for_rows(&db.url)?;
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) AS n FROM events e JOIN event_payloads p USING (project_id, event_id, expires_at) \
             WHERE p.data->>'message' = 'before'"
        )?,
        1,
        "stored data converted"
    );
    stop_cleanly(&mut occ)?;
    Ok(())
}

fn wait_for_rows(url: &str) -> anyhow::Result<()> {
    wait_for("the occurrence and its group", Duration::from_secs(30), || {
        count(
            url,
            "SELECT count(*) AS n FROM occurrences o JOIN occurrence_payloads p USING (id, expires_at) \
             JOIN groups g ON g.id = o.group_id",
        )
        .ok()
        .filter(|n| *n == 1)
    })
    .map(|_| ())
}
