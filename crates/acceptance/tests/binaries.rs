//! The four binaries as an operator runs them: `migrate`, start-up checks, default ports,
//! health endpoints, SIGTERM.

use sluice_testkit::http;
use sluice_testkit::paths::existing_bin;
use sluice_testkit::process::{wait_for, Proc};
use sluice_testkit::{Broker, TestDb};
use std::process::{Command, Stdio};
use std::time::Duration;

const STAGES: [(&str, &str); 4] = [
    ("ingest-consumer", "127.0.0.1:9101"),
    ("feedback-worker", "127.0.0.1:9102"),
    ("occurrence-consumer", "127.0.0.1:9103"),
    ("producer-shim", "127.0.0.1:9104"),
];

const ALL_TOPICS: [&str; 9] = [
    "ingest-events",
    "ingest-attachments",
    "ingest-feedback-events",
    "ingest-occurrences",
    "outcomes",
    "ingest-events-dlq",
    "ingest-attachments-dlq",
    "ingest-feedback-events-dlq",
    "ingest-occurrences-dlq",
];

fn stage(
    name: &str,
    broker: &Broker,
    db: &TestDb,
    objects: &std::path::Path,
) -> anyhow::Result<Command> {
    stage_at(&existing_bin(name)?, broker, db, objects)
}

fn stage_at(
    program: &std::path::Path,
    broker: &Broker,
    db: &TestDb,
    objects: &std::path::Path,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KAFKA_BROKERS", &broker.bootstrap)
        .env("DATABASE_URL", &db.url)
        .env("OBJECT_STORE_URL", format!("file://{}", objects.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Ok(cmd)
}

fn migrate(db: &TestDb) -> anyhow::Result<()> {
    let out = Command::new(existing_bin("occurrence-consumer")?)
        .args(["migrate", "--database-url", &db.url])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn concurrent_migrate_processes_both_succeed() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    let bins = ["ingest-consumer", "producer-shim", "feedback-worker"];
    let children: Vec<_> = bins
        .iter()
        .map(|b| {
            Command::new(existing_bin(b)?)
                .arg("migrate")
                .env("DATABASE_URL", &db.url)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(anyhow::Error::from)
        })
        .collect::<Result<_, _>>()?;
    for child in children {
        let out = child.wait_with_output()?;
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every table is there, and a further run is a no-op that still succeeds.
    migrate(&db)?;
    use diesel::RunQueryDsl;
    let mut c = db.connect()?;
    diesel::sql_query("INSERT INTO organizations (id, slug) VALUES (1, 'o')").execute(&mut c)?;
    diesel::sql_query("INSERT INTO projects (id, organization_id, slug) VALUES (2, 1, 'p')")
        .execute(&mut c)?;
    Ok(())
}

/// The four stages as the container image runs them: links named after each stage to the one
/// `sluice` binary, which then is that stage (same flags, same behaviour).
#[test]
fn all_four_start_together_with_default_ports_and_stop_on_sigterm() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    migrate(&db)?;
    let topics: Vec<(&str, i32)> = ALL_TOPICS.iter().map(|t| (*t, 2)).collect();
    let broker = Broker::start(&topics)?;
    anyhow::ensure!(broker.is_mock(), "this test uses the default topic names");
    let objects = tempfile::tempdir()?;
    let links = tempfile::tempdir()?;
    let sluice = existing_bin("sluice")?;
    let mut procs = Vec::new();
    for (name, _) in STAGES {
        let link = links.path().join(name);
        std::os::unix::fs::symlink(&sluice, &link)?;
        let help = |program: &std::path::Path| -> anyhow::Result<String> {
            let out = Command::new(program).arg("--help").output()?;
            anyhow::ensure!(
                out.status.success(),
                "{} --help: {}",
                program.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let standalone = help(&existing_bin(name)?)?;
        assert!(standalone.contains("--kafka-brokers"), "{standalone}");
        assert_eq!(help(&link)?, standalone, "`sluice` as {name} is {name}");
        procs.push(Proc::spawn(
            name,
            stage_at(&link, &broker, &db, objects.path())?,
        )?);
    }
    for (name, addr) in STAGES {
        let ready = wait_for(
            &format!("{name} ready on {addr}"),
            Duration::from_secs(30),
            || http::get(addr, "/health/ready").filter(|(s, _)| *s == 200),
        );
        ready?;
        let (status, _) =
            http::get(addr, "/health/live").ok_or_else(|| anyhow::anyhow!("{name}: no live"))?;
        assert_eq!(status, 200, "{name} live");
        let (_, metrics) =
            http::get(addr, "/metrics").ok_or_else(|| anyhow::anyhow!("{name}: no metrics"))?;
        assert!(
            metrics.contains(&format!("sluice_build_info{{stage=\"{name}\"")),
            "{name} metrics: {metrics}"
        );
    }
    for p in &procs {
        p.signal("TERM")?;
    }
    for p in &mut procs {
        let status = p.wait_timeout(Duration::from_secs(15))?;
        assert_eq!(status.code(), Some(0), "{} exits 0 on SIGTERM", p.name);
    }
    Ok(())
}

#[test]
fn start_up_fails_clearly() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    migrate(&db)?;
    // Only some of the topics exist.
    let broker = Broker::start(&[("ingest-events", 1), ("outcomes", 1)])?;
    anyhow::ensure!(broker.is_mock(), "this test uses the default topic names");
    let objects = tempfile::tempdir()?;
    let port = sluice_testkit::process::free_port()?.to_string();
    let out = stage("ingest-consumer", &broker, &db, objects.path())?
        .args(["run", "--metrics-addr", &format!("127.0.0.1:{port}")])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for t in [
        "ingest-attachments",
        "ingest-events-dlq",
        "ingest-occurrences",
        "ingest-feedback-events",
    ] {
        assert!(err.contains(t), "names missing topic {t}: {err}");
    }
    assert!(
        !err.contains("ingest-events,") && !err.contains("outcomes,"),
        "only missing topics are named: {err}"
    );

    // Kafka not configured.
    let out = Command::new(existing_bin("feedback-worker")?)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KAFKA_BROKERS"));

    // The metrics port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let out = stage("occurrence-consumer", &broker, &db, objects.path())?
        .args(["--metrics-addr", &addr])
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--metrics-addr"),
        "names the flag"
    );

    // A config file with a typo.
    let cfg = objects.path().join("bad.toml");
    std::fs::write(&cfg, "[feedback]\nmesage_max_size = 3\n")?;
    let out = stage("producer-shim", &broker, &db, objects.path())?
        .args([
            "--config",
            cfg.to_str().unwrap_or_default(),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mesage_max_size"));
    Ok(())
}

#[test]
fn not_ready_while_the_database_is_unreachable() -> anyhow::Result<()> {
    let topics: Vec<(&str, i32)> = ALL_TOPICS.iter().map(|t| (*t, 1)).collect();
    let broker = Broker::start(&topics)?;
    let objects = tempfile::tempdir()?;
    let db_port = sluice_testkit::process::free_port()?;
    let addr = format!("127.0.0.1:{}", sluice_testkit::process::free_port()?);
    let mut cmd = Command::new(existing_bin("occurrence-consumer")?);
    cmd.env("KAFKA_BROKERS", &broker.bootstrap)
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{db_port}/x"),
        )
        .env(
            "OBJECT_STORE_URL",
            format!("file://{}", objects.path().display()),
        )
        .args(["run", "--metrics-addr", &addr])
        .stderr(Stdio::null());
    let _p = Proc::spawn("occurrence-consumer", cmd)?;
    wait_for("live", Duration::from_secs(20), || {
        http::get(&addr, "/health/live").filter(|(s, _)| *s == 200)
    })?;
    std::thread::sleep(Duration::from_secs(6));
    let (status, body) =
        http::get(&addr, "/health/ready").ok_or_else(|| anyhow::anyhow!("no answer"))?;
    assert_eq!(status, 503, "{body}");
    Ok(())
}
