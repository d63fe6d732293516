//! Helpers of the benchmark binaries (`src/bin/bench-*`) and the demo's stream (`stream`); the
//! acceptance tests live in `tests/`.

pub mod stream;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::Duration;

/// Drops and re-creates database `name` next to `admin`'s, migrates it, runs `setup`; returns its URL.
pub fn fresh_database(admin: &str, name: &str, setup: &str) -> anyhow::Result<String> {
    let mut c = PgConnection::establish(admin)?;
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
    c.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let url = format!(
        "{}/{name}",
        admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin)
    );
    sluice_core::storage::migrate(&url)?;
    if !setup.trim().is_empty() {
        PgConnection::establish(&url)?.batch_execute(setup)?;
    }
    Ok(url)
}

/// Watches consumer group `group`'s committed offsets on every partition of `topic`.
pub struct CommitWatch {
    consumer: BaseConsumer,
    topic: String,
    partitions: TopicPartitionList,
}

impl CommitWatch {
    pub fn new(brokers: &str, group: &str, topic: &str) -> anyhow::Result<CommitWatch> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .create()?;
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut partitions = TopicPartitionList::new();
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            partitions.add_partition(topic, p.id());
            // Connects to the partition's leader now: a first look at a broker costs tens of
            // milliseconds, which would otherwise be timed as the stage's.
            consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        }
        Ok(CommitWatch {
            consumer,
            topic: topic.to_owned(),
            partitions,
        })
    }

    /// Whether every partition is committed up to its high watermark.
    pub fn done(&self) -> anyhow::Result<bool> {
        let committed = self
            .consumer
            .committed_offsets(self.partitions.clone(), Duration::from_secs(10))?;
        for e in committed.elements() {
            let (_, high) = self.consumer.fetch_watermarks(
                &self.topic,
                e.partition(),
                Duration::from_secs(10),
            )?;
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            if at < high && high > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Whether consumer group `group` has committed every partition of `topic` up to its high watermark.
pub fn committed_all(brokers: &str, group: &str, topic: &str) -> anyhow::Result<bool> {
    CommitWatch::new(brokers, group, topic)?.done()
}

/// Waits until [`committed_all`] holds, looking every 10 ms through one client, and returns
/// when it was seen: a bench's end is timed within a few milliseconds of the last commit, not
/// after the client's shutdown.
pub async fn wait_committed(
    brokers: &str,
    group: &str,
    topic: &str,
) -> anyhow::Result<std::time::Instant> {
    let watch = CommitWatch::new(brokers, group, topic)?;
    while !watch.done()? {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(std::time::Instant::now())
}

/// The sum of every series of metric `name` in a Prometheus text exposition.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (up to a minute) until the consumer serving metrics on `metrics` has partitions assigned
/// and its group has settled: every member it runs (`CONSUMERS` in this environment, passed on
/// to the stages it starts; 1 when unset) holds partitions, and neither the partitions nor the
/// rebalances counted have changed for 1.5 s (members of one process may join the group one
/// after the other).
pub fn wait_assigned(metrics: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let wanted: f64 = std::env::var("CONSUMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let (mut last, mut since) = (None, std::time::Instant::now());
    loop {
        let now = sluice_testkit::http::get(metrics, "/metrics").map(|(_, body)| {
            (
                metric_sum(&body, "sluice_consumer_assigned_partitions"),
                metric_sum(&body, "sluice_consumer_rebalances_total"),
                metric_sum(&body, "sluice_consumer_members"),
            )
        });
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
        if last.is_some_and(|(assigned, _, members)| assigned > 0.0 && members >= wanted)
            && since.elapsed() >= Duration::from_millis(1500)
        {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "consumer got no partitions"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Peak resident memory of process `pid` in MiB (`VmHWM`), 0 when unknown.
pub fn peak_rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

/// The public key of a DSN (`http://KEY@host/PROJECT`), empty when it has none.
pub fn dsn_key(dsn: &str) -> String {
    dsn.split("//")
        .nth(1)
        .and_then(|s| s.split('@').next())
        .unwrap_or_default()
        .to_owned()
}

/// Wall-clock time in epoch milliseconds (comparable with PostgreSQL's timestamps on this host).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Latency percentiles from produce to effect: `produced` maps a key to when its message was
/// produced (epoch ms); `sql` returns `key` (text) and `ms` (bigint, epoch ms of the effect, e.g.
/// a row's `date_added`) per effect. Returns `{"p50_ms", "p99_ms", "max_ms", "samples"}`.
pub fn latencies(
    produced: &std::collections::HashMap<String, i64>,
    url: &str,
    sql: &str,
) -> anyhow::Result<serde_json::Value> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        key: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        ms: i64,
    }
    let rows: Vec<Row> = diesel::sql_query(sql).load(&mut PgConnection::establish(url)?)?;
    // (produced at, latency), in the order produced.
    let mut timed: Vec<(i64, i64)> = rows
        .iter()
        .filter_map(|r| produced.get(r.key.trim()).map(|&p| (p, (r.ms - p).max(0))))
        .collect();
    timed.sort_unstable();
    let p99 = |part: &[(i64, i64)]| {
        let mut v: Vec<i64> = part.iter().map(|t| t.1).collect();
        v.sort_unstable();
        quantile(&v, 0.99)
    };
    // The p99 of each sixth of the run, by produce time: a tail that grows over the run (a
    // queue building up somewhere) shows as a rising series, a spike as one high value.
    let sixth = timed.len().div_ceil(6).max(1);
    let by_sixth: Vec<i64> = timed.chunks(sixth).map(p99).collect();
    let mut v: Vec<i64> = timed.iter().map(|t| t.1).collect();
    v.sort_unstable();
    Ok(serde_json::json!({
        "p50_ms": quantile(&v, 0.5), "p99_ms": quantile(&v, 0.99),
        "max_ms": v.last().copied().unwrap_or(0), "samples": v.len(),
        "p99_ms_by_sixth": by_sixth,
    }))
}

/// The `q` quantile of `sorted` (0 when empty).
fn quantile(sorted: &[i64], q: f64) -> i64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// Paces a producer at a steady `rate` messages per second (0: as fast as it can): `wait(n)`
/// returns when message `n` (from 0) is due. Steady-load runs measure the latency a user sees
/// when the stage is not behind, which a burst cannot show.
pub struct Pace {
    start: std::time::Instant,
    rate: u32,
}

impl Pace {
    pub fn new(rate: u32) -> Pace {
        Pace {
            start: std::time::Instant::now(),
            rate,
        }
    }

    pub fn wait(&self, n: usize) {
        if self.rate == 0 {
            return;
        }
        let due = self.start + Duration::from_secs_f64(n as f64 / f64::from(self.rate));
        let now = std::time::Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }

    /// The producer's `linger.ms` for this pace: batching on a burst, none on a steady load.
    pub fn linger_ms(&self) -> &'static str {
        if self.rate == 0 {
            "20"
        } else {
            "0"
        }
    }
}

/// CPU seconds per 1,000 messages, to three decimals.
pub fn cpu_per_1k(cpu_secs: f64, messages: u32) -> f64 {
    (cpu_secs / f64::from(messages.max(1)) * 1e6).round() / 1000.0
}

/// With `BENCH_METRICS` set, prints the metrics the process at `addr` serves to stderr.
pub fn dump_metrics_if_asked(addr: &str) {
    if std::env::var_os("BENCH_METRICS").is_some() {
        if let Some((_, body)) = sluice_testkit::http::get(addr, "/metrics") {
            eprintln!("{body}");
        }
    }
}

/// CPU time (user + system) process `pid` has used so far, in seconds (0 when unknown).
pub fn cpu_secs(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start at ") ".
            let rest = s.rsplit_once(") ")?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    ticks as f64 / 100.0
}

/// Sends SIGTERM to `child` and waits for it.
pub fn stop(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Where a consumer benchmark runs: the broker, the Postgres admin URL (benchmark databases are
/// created next to it) and the directory of the binaries under test.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    #[arg(long)]
    pub brokers: String,
    #[arg(long)]
    pub admin_url: String,
    /// Directory holding the stage binaries.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: String,
}

impl Target {
    /// `<bin> run` against this broker and `db` in consumer group `group`, logging warnings only,
    /// stdout discarded; callers add flags (at least `--metrics-addr`) and spawn it.
    pub fn stage(&self, bin: &str, db: &str, group: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(format!("{}/{bin}", self.bin_dir));
        cmd.env("KAFKA_BROKERS", &self.brokers)
            .env("DATABASE_URL", db)
            .args(["run", "--consumer-group", group, "--log-level", "warn"])
            .stdout(std::process::Stdio::null());
        cmd
    }

    /// The producer a baseline sends its records with.
    pub fn baseline_producer(
        &self,
    ) -> anyhow::Result<std::sync::Arc<sluice_core::kafka::producer::Producer>> {
        Ok(std::sync::Arc::new(baseline_producer(&self.brokers)?))
    }

    /// Spawns `cmd` (from [`Target::stage`]) with metrics on a free port and waits until it has
    /// joined its group and got partitions; returns the process and its metrics address.
    pub fn start_joined(
        &self,
        mut cmd: std::process::Command,
    ) -> anyhow::Result<(std::process::Child, String)> {
        let metrics = format!("127.0.0.1:{}", sluice_testkit::process::free_port()?);
        let child = cmd.args(["--metrics-addr", &metrics]).spawn()?;
        wait_assigned(&metrics)?;
        Ok((child, metrics))
    }

    /// Spawns `cmd` (from [`Target::stage`]) on a topic that already holds its load and returns
    /// when the consumer first holds partitions (looked for every 5 ms): a backlog's clock
    /// starts there, leaving out the process start and the group join, and the bench's own
    /// producing of the load. With several members (`CONSUMERS`), it starts at the first one's
    /// assignment, so the others joining is inside the window.
    pub fn start_on_backlog(
        &self,
        mut cmd: std::process::Command,
    ) -> anyhow::Result<(std::process::Child, String, std::time::Instant)> {
        let metrics = format!("127.0.0.1:{}", sluice_testkit::process::free_port()?);
        let mut child = cmd.args(["--metrics-addr", &metrics]).spawn()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let assigned = sluice_testkit::http::get(&metrics, "/metrics")
                .map(|(_, body)| metric_sum(&body, "sluice_consumer_assigned_partitions"));
            if assigned.is_some_and(|n| n > 0.0) {
                return Ok((child, metrics, std::time::Instant::now()));
            }
            if std::time::Instant::now() >= deadline {
                stop(&mut child);
                anyhow::bail!("consumer got no partitions");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Ends a measured consumer: its metrics to stderr when `BENCH_METRICS` is set, then its peak
/// RSS (MiB) and CPU seconds, then it is stopped.
pub fn finish(child: &mut std::process::Child, metrics: &str) -> (u64, f64) {
    dump_metrics_if_asked(metrics);
    let usage = (peak_rss_mb(child.id()), cpu_secs(child.id()));
    stop(child);
    usage
}

/// The producer a baseline sends its records with: the core producer, acknowledged sends.
pub fn baseline_producer(brokers: &str) -> anyhow::Result<sluice_core::kafka::producer::Producer> {
    Ok(sluice_core::kafka::producer::Producer::new(
        &sluice_core::kafka::producer::ProducerConfig {
            brokers: brokers.to_owned(),
            client_id: "bench-baseline".into(),
            message_timeout: Duration::from_secs(30),
        },
    )?)
}

/// Fills the database at `url` with `events` events (with ~400-byte payloads) that expired
/// over the last ten days, `attachments` expired attachment rows whose objects are
/// `bench/expired/<n>`, and 10,000 groups last seen 200 days ago, all in project 43 (the
/// benchmarks' own traffic uses project 42). Returns the object keys.
pub fn seed_expired(url: &str, events: u32, attachments: u32) -> anyhow::Result<Vec<String>> {
    let mut c = PgConnection::establish(url)?;
    c.batch_execute(&format!(
        "SELECT sluice_ensure_partition('event_payloads', (now() - d * interval '1 day')::date) \
           FROM generate_series(0, 11) d;
         INSERT INTO groups (id, project_id, type, last_seen, first_seen)
           SELECT g, 43, 1, now() - interval '200 days', now() - interval '300 days'
           FROM generate_series(1000000001, 1000010000) g;
         INSERT INTO group_hashes (project_id, hash, group_id)
           SELECT 43, md5(g::text), g FROM generate_series(1000000001, 1000010000) g;
         INSERT INTO events (project_id, event_id, group_id, date_added, expires_at)
           SELECT 43, lpad(to_hex(i), 32, '0'), 1000000001 + i % 10000, now() - interval '100 days',
                  now() - (1 + i % 10) * interval '1 day' - (i % 86400) * interval '1 second'
           FROM generate_series(1, {events}) i;
         INSERT INTO event_payloads (project_id, event_id, expires_at, data)
           SELECT project_id, event_id, expires_at,
                  jsonb_build_object('event_id', event_id, 'message', repeat('expired event ', 20),
                                     'platform', 'python', 'tags', jsonb_build_object('n', event_id))
           FROM events WHERE project_id = 43;
         INSERT INTO event_attachments (project_id, event_id, attachment_id, type, name, content_type,
                                        size, sha1, blob_path, expires_at)
           SELECT 43, lpad(to_hex(i), 32, '0'), 'a', 'event.attachment', 'a.txt', 'text/plain', 16,
                  repeat('0', 40), 'bench/expired/' || i, now() - interval '1 day'
           FROM generate_series(1, {attachments}) i;
         ANALYZE;"
    ))?;
    Ok((1..=attachments)
        .map(|i| format!("bench/expired/{i}"))
        .collect())
}
