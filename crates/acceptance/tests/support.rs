//! Shared helpers of the runtime acceptance tests.
#![allow(dead_code)]

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_testkit::paths::existing_bin;
use sluice_testkit::process::{free_port, wait_for, Proc};
use sluice_testkit::{http, Broker};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every topic `ingest-consumer` reads or writes (its start-up check), one partition each.
pub const INGEST_TOPICS: [(&str, i32); 9] = [
    ("ingest-events", 1),
    ("ingest-events-dlq", 1),
    ("ingest-attachments", 1),
    ("ingest-attachments-dlq", 1),
    ("ingest-feedback-events", 1),
    ("ingest-occurrences", 1),
    ("ingest-occurrences-dlq", 1),
    ("outcomes", 1),
    ("outcomes-billing", 1),
];

/// One message to produce: key, payload, headers.
pub type Out = (String, String, Vec<(String, String)>);

pub fn ok(key: impl ToString) -> Out {
    (key.to_string(), "ok".into(), vec![])
}

pub fn produce(broker: &Broker, topic: &str, msgs: &[Out]) -> anyhow::Result<()> {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    for (k, v, hs) in msgs {
        let headers = hs.iter().fold(OwnedHeaders::new(), |h, (hk, hv)| {
            h.insert(Header {
                key: hk,
                value: Some(hv),
            })
        });
        let mut rec = BaseRecord::to(topic).key(k).payload(v);
        if !hs.is_empty() {
            rec = rec.headers(headers);
        }
        p.send(rec).map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

pub fn create_toy_table(db: &sluice_testkit::TestDb) -> anyhow::Result<()> {
    let mut c = db.connect()?;
    diesel::sql_query(
        "CREATE TABLE toy_rows (key TEXT PRIMARY KEY, topic TEXT NOT NULL, partition INT NOT NULL, \
         \"offset\" BIGINT NOT NULL, times INT NOT NULL DEFAULT 1)",
    )
    .execute(&mut c)?;
    Ok(())
}

#[derive(QueryableByName, Debug, PartialEq)]
pub struct RowStats {
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    #[diesel(sql_type = BigInt)]
    pub times: i64,
}

pub fn row_stats(url: &str) -> Option<RowStats> {
    let mut c = PgConnection::establish(url).ok()?;
    diesel::sql_query(
        "SELECT count(*) AS rows, coalesce(sum(times), 0)::bigint AS times FROM toy_rows",
    )
    .get_result(&mut c)
    .ok()
}

pub fn wait_rows(url: &str, n: i64, timeout: Duration) -> anyhow::Result<RowStats> {
    wait_for(&format!("{n} rows"), timeout, || {
        row_stats(url).filter(|s| s.rows >= n)
    })
}

/// A running toy consumer and its metrics address.
pub struct Toy {
    pub proc: Proc,
    pub metrics: String,
}

/// Sends SIGTERM and asserts a clean exit (status 0) within 30 s.
pub fn stop_cleanly(p: &mut Proc) -> anyhow::Result<()> {
    p.signal("TERM")?;
    let status = p.wait_timeout(Duration::from_secs(30))?;
    assert_eq!(status.code(), Some(0), "exit status: {status:?}");
    Ok(())
}

/// Group timings short enough for tests, the `extra` flags, and the process's logs on stderr
/// when the environment variable `logs` is set.
fn quick_consumer(cmd: &mut Command, extra: &[&str], logs: &str) {
    cmd.args([
        "--session-timeout-ms",
        "6000",
        "--heartbeat-interval-ms",
        "500",
    ])
    .args(extra)
    .stdout(Stdio::null())
    .stderr(if std::env::var_os(logs).is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
}

pub fn toy(
    broker: &Broker,
    db_url: &str,
    group: &str,
    topic: &str,
    extra: &[&str],
) -> anyhow::Result<Toy> {
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(existing_bin("toy-consumer")?);
    cmd.env("KAFKA_BROKERS", &broker.bootstrap)
        .env("DATABASE_URL", db_url)
        .args([
            "--topic",
            topic,
            "--consumer-group",
            group,
            "--metrics-addr",
            &metrics,
        ]);
    quick_consumer(&mut cmd, extra, "TOY_LOGS");
    Ok(Toy {
        proc: Proc::spawn("toy-consumer", cmd)?,
        metrics,
    })
}

/// The sum of a metric's samples whose line starts with `prefix` (name plus optional labels).
pub fn metric(addr: &str, prefix: &str) -> Option<f64> {
    let (_, body) = http::get(addr, "/metrics")?;
    let values: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

pub fn partitions(broker: &Broker, topic: &str) -> anyhow::Result<Vec<i32>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default())
}

/// (committed offset, high watermark) per partition.
pub fn committed_vs_high(
    broker: &Broker,
    group: &str,
    topic: &str,
) -> anyhow::Result<Vec<(i64, i64)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let parts = partitions(broker, topic)?;
    for p in &parts {
        tpl.add_partition(topic, *p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut out = Vec::new();
    for p in parts {
        let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let off = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        };
        out.push((off, high));
    }
    Ok(out)
}

pub fn wait_committed_all(
    broker: &Broker,
    group: &str,
    topic: &str,
) -> anyhow::Result<Vec<(i64, i64)>> {
    wait_for(
        "committed offsets = high watermarks",
        Duration::from_secs(30),
        || {
            committed_vs_high(broker, group, topic)
                .ok()
                // An empty partition has nothing to commit.
                .filter(|v| v.iter().all(|(c, h)| c == h || (*h == 0 && *c < 0)))
        },
    )
}

/// DLQ messages as (key, partition header, offset header, reason, all headers).
pub fn dlq(
    broker: &Broker,
    topic: &str,
    n: usize,
) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    broker.read_all(topic, n, Duration::from_secs(20))
}

/// A fresh database migrated by `<bin> migrate`, then set up with `setup` (SQL statements).
pub fn migrated_db(bin: &str, setup: &str) -> anyhow::Result<sluice_testkit::TestDb> {
    use diesel::connection::SimpleConnection;
    let db = sluice_testkit::TestDb::new()?;
    let out = Command::new(existing_bin(bin)?)
        .args(["migrate", "--database-url", &db.url])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.connect()?.batch_execute(setup)?;
    Ok(db)
}

/// `<bin> run` against `broker` and `db` in consumer group `group`, on a free metrics port, with
/// short group timeouts and `extra` flags. Logs go to stderr when `STAGE_LOGS` is set.
pub fn stage(
    bin: &str,
    broker: &Broker,
    db: &str,
    group: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    stage_env(bin, broker, db, group, extra, &[])
}

/// [`stage`] with extra environment variables (e.g. the S3 server's `AWS_*`).
pub fn stage_env(
    bin: &str,
    broker: &Broker,
    db: &str,
    group: &str,
    extra: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<Proc> {
    stage_metered(bin, broker, db, group, extra, env).map(|(stage, _)| stage)
}

/// [`stage_env`] serving its metrics on 127.0.0.1:`metrics_port`.
pub fn stage_at(
    bin: &str,
    broker: &Broker,
    db: &str,
    group: &str,
    extra: &[&str],
    env: &[(String, String)],
    metrics_port: u16,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(existing_bin(bin)?);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.env("KAFKA_BROKERS", &broker.bootstrap)
        .env("DATABASE_URL", db)
        .args([
            "run",
            "--consumer-group",
            group,
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .args(["--max-batch-time-ms", "200"]);
    quick_consumer(&mut cmd, extra, "STAGE_LOGS");
    Proc::spawn(bin, cmd)
}

/// [`stage_env`], also returning the address its metrics are served on (the free port it
/// picked).
pub fn stage_metered(
    bin: &str,
    broker: &Broker,
    db: &str,
    group: &str,
    extra: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let stage = stage_at(bin, broker, db, group, extra, env, port)?;
    Ok((stage, format!("127.0.0.1:{port}")))
}

/// Produces (key, value) pairs to `topic` in order, accepting values up to 20 MB; a large value
/// is flushed on its own (the mock broker bounds the batches it keeps).
pub fn send_keyed(broker: &Broker, topic: &str, msgs: &[(Vec<u8>, Vec<u8>)]) -> anyhow::Result<()> {
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("message.max.bytes", "20000000")
        // The mock broker keeps 5 MiB of stored batches per partition: compress.
        .set("compression.type", "lz4")
        .create()?;
    for (k, v) in msgs {
        p.send(BaseRecord::to(topic).key(k).payload(v))
            .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
        if v.len() > 64 * 1024 {
            p.flush(Duration::from_secs(10))?;
        } else {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

/// `sluice ARGS` against `db`; the last line of stdout.
pub fn sluice(db: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(existing_bin("sluice")?)
        .env_clear()
        .env("DATABASE_URL", db)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// The event id of dead letter `n`.
pub fn eid(n: u32) -> String {
    format!("{:032x}", 0xd1e7_0000u64 + u64::from(n))
}

/// An `ingest-events` message of project `project`, as dead letter `n`.
pub fn event(n: u32, project: u64) -> Vec<u8> {
    let body = serde_json::json!({"event_id": eid(n), "type": "error", "platform": "python", "level": "error",
        "timestamp": 1_795_432_000.0,
        "exception": {"values": [{"type": format!("Error{}", n % 3), "value": "boom",
            "stacktrace": {"frames": [{"module": "app", "function": "f", "in_app": true}]}}]}});
    sluice_core::messages::IngestMessage::Event(sluice_core::messages::EventMessage {
        payload: body.to_string().into_bytes(),
        start_time: sluice_core::messages::Timestamp::from_epoch_secs(1_795_432_000.0)
            .unwrap_or_else(|e| panic!("{e}")),
        event_id: eid(n),
        project_id: project,
        remote_addr: None,
        attachments: Vec::new(),
    })
    .encode()
}

/// Headers of a dead letter of `ingest-events` at `offset`, as the runtime writes them.
pub fn provenance(offset: usize, reason: &str) -> Vec<(String, String)> {
    [
        ("original_topic", "ingest-events".to_owned()),
        ("original_partition", "0".to_owned()),
        ("original_offset", offset.to_string()),
        ("reason", reason.to_owned()),
        ("error_detail", "database statement timeout".to_owned()),
        ("sentry-trace", "abc-def".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `sluice dlq <args>` with only `env` in its environment; its (stdout, stderr) when it
/// succeeded.
pub fn sluice_dlq(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(String, String)> {
    let out = Command::new(existing_bin("sluice")?)
        .env_clear()
        .envs(env.iter().copied())
        .arg("dlq")
        .args(args)
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    anyhow::ensure!(
        out.status.success(),
        "sluice dlq {args:?}: {stdout}{stderr}"
    );
    Ok((stdout, stderr))
}
