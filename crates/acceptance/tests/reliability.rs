//! Reliability: the three consumer stages as separate processes under faults, fed a closed-loop
//! load over every input topic (`sluice_acceptance::stream::load`, so the mock broker's retention
//! never truncates unread messages). Each scenario's final state, compared by natural keys,
//! equals a clean single pass of the same load:
//! - kill -9 of a random stage at random moments, then a restart;
//! - the broker down mid-run;
//! - a private PostgreSQL cluster restarted mid-run, and the S3 server stopped and restarted;
//! - malformed messages of many kinds mixed into the good traffic: each one in its DLQ with a
//!   reason, every good one processed, no process exits (no panic, no tripped breaker).
//!
//! CI runs the reduced profile. The full one (20k messages, ≥ 10 kills, a 20 s broker outage,
//! 5k malformed messages): `RELIABILITY_PROFILE=full cargo nextest run -p sluice-acceptance
//! --test reliability` (or `scripts/reliability`).

mod support;

use diesel::connection::SimpleConnection;
use diesel::Connection;
use sluice_acceptance::stream::{self, Addressed};
use sluice_testkit::db::{assert_same_rows, issue_snapshot};
use sluice_testkit::process::Proc;
use sluice_testkit::{Broker, S3Server};
use std::time::{Duration, Instant};
use support::*;

const TOPICS: [(&str, i32); 9] = [
    ("ingest-events", 4),
    ("ingest-events-dlq", 1),
    ("ingest-attachments", 4),
    ("ingest-attachments-dlq", 1),
    ("ingest-feedback-events", 2),
    ("ingest-feedback-events-dlq", 1),
    ("ingest-occurrences", 4),
    ("ingest-occurrences-dlq", 1),
    ("outcomes", 1),
];

/// (consumer group, input topic) of every stage, in pipeline order.
const INPUTS: [(&str, &str); 4] = [
    ("ingest-consumer", "ingest-events"),
    ("ingest-consumer", "ingest-attachments"),
    ("feedback-worker", "ingest-feedback-events"),
    ("occurrence-consumer", "ingest-occurrences"),
];
const STAGES: [&str; 3] = ["ingest-consumer", "feedback-worker", "occurrence-consumer"];

struct Profile {
    messages: usize,
    kills: usize,
    broker_down: Duration,
    malformed: usize,
    /// Messages produced before waiting for the consumers to catch up.
    window: usize,
}

fn profile() -> Profile {
    if std::env::var("RELIABILITY_PROFILE").as_deref() == Ok("full") {
        Profile {
            messages: 20_000,
            kills: 12,
            broker_down: Duration::from_secs(20),
            malformed: 5_000,
            window: 1_000,
        }
    } else {
        Profile {
            messages: 1_500,
            kills: 3,
            broker_down: Duration::from_secs(6),
            malformed: 300,
            window: 300,
        }
    }
}

/// A small deterministic generator (seeded from the clock; the seed is printed).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        eprintln!("reliability seed {seed}");
        Rng(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The pipeline under test: broker, S3, database and the three consumer stages.
struct Pipeline {
    broker: Broker,
    s3: S3Server,
    db: String,
    env: Vec<(String, String)>,
    procs: Vec<Option<Proc>>,
    /// Metrics port of each stage (kept across restarts).
    ports: Vec<u16>,
}

impl Pipeline {
    fn start(db: String) -> anyhow::Result<Pipeline> {
        let broker = Broker::start(&TOPICS)?;
        anyhow::ensure!(broker.is_mock(), "uses the default topic names");
        let s3 = S3Server::start("sluice")?;
        sluice_core::storage::migrate(&db)?;
        diesel::PgConnection::establish(&db)?.batch_execute(stream::SETUP)?;
        let mut env = s3.env();
        env.push(("OBJECT_STORE_URL".into(), s3.url("attachments")));
        let mut p = Pipeline {
            broker,
            s3,
            db,
            env,
            procs: Vec::new(),
            ports: (0..STAGES.len())
                .map(|_| sluice_testkit::process::free_port())
                .collect::<Result<_, _>>()?,
        };
        for i in 0..STAGES.len() {
            let proc = p.spawn(i)?;
            p.procs.push(Some(proc));
        }
        Ok(p)
    }

    fn spawn(&self, i: usize) -> anyhow::Result<Proc> {
        stage_at(
            STAGES[i],
            &self.broker,
            &self.db,
            STAGES[i],
            &[],
            &self.env,
            self.ports[i],
        )
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill();
        }
    }

    fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.procs[i] = Some(self.spawn(i)?);
        Ok(())
    }

    /// Asserts every stage is still running (none panicked, none tripped its breaker).
    fn assert_alive(&mut self) -> anyhow::Result<()> {
        for (i, p) in self.procs.iter_mut().enumerate() {
            if let Some(p) = p {
                let status = p.child.try_wait()?;
                anyhow::ensure!(status.is_none(), "{} exited: {status:?}", STAGES[i]);
            }
        }
        Ok(())
    }

    /// Messages not yet committed by their stage, over every input topic.
    fn lag(&self) -> i64 {
        INPUTS
            .iter()
            .map(|(group, topic)| {
                committed_vs_high(&self.broker, group, topic)
                    .map(|v| v.iter().map(|(c, h)| (h - (*c).max(0)).max(0)).sum::<i64>())
                    .unwrap_or(i64::MAX / 8)
            })
            .sum()
    }

    /// (committed, high) per partition of every input, and each stage's runtime metrics, for
    /// failure messages.
    fn lags(&self) -> String {
        let lags = INPUTS.iter().map(|(group, topic)| {
            format!(
                "{topic}: {:?}",
                committed_vs_high(&self.broker, group, topic)
            )
        });
        let metrics = self.ports.iter().zip(STAGES).map(|(port, stage)| {
            let body = sluice_testkit::http::get(&format!("127.0.0.1:{port}"), "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default();
            let lines: Vec<&str> = body
                .lines()
                .filter(|l| {
                    l.starts_with("sluice_consumer_retries")
                        || l.starts_with("sluice_consumer_paused")
                        || l.starts_with("sluice_consumer_messages_total")
                })
                .collect();
            format!("{stage}: {lines:?}")
        });
        lags.chain(metrics).collect::<Vec<_>>().join("\n")
    }

    /// Produces `msgs` in windows, waiting after each until the stages have caught up to within a
    /// window (closed loop); `between` runs after each window (fault injection).
    fn feed(
        &mut self,
        msgs: &[Addressed],
        window: usize,
        mut between: impl FnMut(&mut Pipeline, usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        for (w, part) in msgs.chunks(window.max(1)).enumerate() {
            produce_addressed(&self.broker, part)?;
            between(self, w)?;
            let deadline = Instant::now() + Duration::from_secs(180);
            while self.lag() > window as i64 {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the stages stopped catching up: {}",
                    self.lags()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Waits until every stage has committed all of its input, twice in a row.
    fn settle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut quiet = 0;
        while quiet < 2 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the pipeline did not settle: {}",
                self.lags()
            );
            std::thread::sleep(Duration::from_millis(500));
            quiet = if self.lag() == 0 { quiet + 1 } else { 0 };
        }
        Ok(())
    }
}

fn produce_addressed(broker: &Broker, msgs: &[Addressed]) -> anyhow::Result<()> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("compression.type", "lz4")
        .set("message.max.bytes", "20000000")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "120000")
        .create()?;
    for (topic, k, v) in msgs {
        loop {
            match p.send(BaseRecord::to(topic).key(k).payload(v)) {
                Ok(()) => break,
                Err((e, _)) if e.to_string().contains("Queue full") => {
                    p.poll(Duration::from_millis(50));
                }
                Err((e, _)) => anyhow::bail!("produce to {topic}: {e}"),
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(120))?;
    Ok(())
}

/// The state one clean pass of `msgs` leaves.
fn clean_pass(msgs: &[Addressed], window: usize) -> anyhow::Result<Vec<String>> {
    let db = sluice_testkit::TestDb::new()?;
    let mut p = Pipeline::start(db.url.clone())?;
    p.feed(msgs, window, |_, _| Ok(()))?;
    p.settle()?;
    p.assert_alive()?;
    issue_snapshot(&db.url)
}

fn expect_clean(p: &Pipeline, clean: &[String], what: &str) -> anyhow::Result<()> {
    let got = issue_snapshot(&p.db)?;
    assert_same_rows(&got, clean, what);
    // The load is not trivial: groups, attachments and shimmed reports are all there.
    for table in ["0:", "7:", "8:"] {
        assert!(
            got.iter().any(|r| r.starts_with(table)),
            "{what}: no {table} rows"
        );
    }
    // ... and so are the status changes: one group ignored, resolved ones regressed.
    for state in [
        "\"status\":2,\"substatus\":5",
        "\"status\":0,\"substatus\":6",
    ] {
        assert!(
            got.iter().any(|r| r.starts_with("0:") && r.contains(state)),
            "{what}: no group with {state}"
        );
    }
    Ok(())
}

#[test]
fn kill_9_at_random_moments_equals_a_clean_pass() -> anyhow::Result<()> {
    let prof = profile();
    let load = stream::load(prof.messages);
    let clean = clean_pass(&load, prof.window)?;

    let db = sluice_testkit::TestDb::new()?;
    let mut p = Pipeline::start(db.url.clone())?;
    let windows = load.len().div_ceil(prof.window);
    let mut rng = Rng::new();
    let mut kills = 0;
    p.feed(&load, prof.window, |p, w| {
        // Spread the kills over the run; the last windows get what is left.
        let left = prof.kills.saturating_sub(kills);
        let windows_left = windows - w;
        let per_window = left.div_ceil(windows_left.max(1));
        for _ in 0..per_window {
            std::thread::sleep(Duration::from_millis(rng.below(800)));
            let i = rng.below(STAGES.len() as u64) as usize;
            p.kill(i);
            kills += 1;
            std::thread::sleep(Duration::from_millis(rng.below(500)));
            p.restart(i)?;
        }
        Ok(())
    })?;
    p.settle()?;
    assert!(kills >= prof.kills, "{kills} kills");
    expect_clean(&p, &clean, "after kill -9 and restarts")?;
    p.assert_alive()
}

#[test]
fn broker_down_mid_run_loses_nothing() -> anyhow::Result<()> {
    let prof = profile();
    let load = stream::load(prof.messages);
    let clean = clean_pass(&load, prof.window)?;

    let db = sluice_testkit::TestDb::new()?;
    let mut p = Pipeline::start(db.url.clone())?;
    let half = load.len().div_ceil(prof.window) / 2;
    p.feed(&load, prof.window, |p, w| {
        if w == half {
            p.broker.down()?;
            std::thread::sleep(prof.broker_down);
            p.broker.up()?;
        }
        Ok(())
    })?;
    p.settle()?;
    p.assert_alive()?;
    expect_clean(&p, &clean, "after a broker outage")
}

#[test]
fn postgres_restart_and_s3_restart_lose_nothing() -> anyhow::Result<()> {
    let prof = profile();
    let load = stream::load(prof.messages);
    let clean = clean_pass(&load, prof.window)?;

    let pg = sluice_testkit::pg::PrivatePostgres::start()?;
    let mut p = Pipeline::start(pg.url())?;
    let windows = load.len().div_ceil(prof.window);
    p.feed(&load, prof.window, |p, w| {
        if w == windows / 3 {
            pg.stop_server()?;
            std::thread::sleep(Duration::from_secs(5));
            pg.start_server()?;
        }
        if w == 2 * windows / 3 {
            p.s3.stop();
            std::thread::sleep(Duration::from_secs(5));
            p.s3.restart()?;
        }
        Ok(())
    })?;
    p.settle()?;
    p.assert_alive()?;
    expect_clean(&p, &clean, "after Postgres and S3 restarts")?;

    // Every stored attachment's object is in S3.
    let objects =
        sluice_core::objects::Objects::from_url_with(&p.s3.url("attachments"), p.s3.env())?;
    let rt = tokio::runtime::Runtime::new()?;
    let paths: Vec<String> = issue_snapshot(&p.db)?
        .iter()
        .filter(|r| r.starts_with("7:"))
        .filter_map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r[2..]).ok()?;
            v["blob_path"].as_str().map(str::to_owned)
        })
        .collect();
    assert!(!paths.is_empty());
    for path in &paths {
        assert!(
            rt.block_on(objects.get(path))?.is_some(),
            "object {path} is stored"
        );
    }
    Ok(())
}

#[test]
fn malformed_messages_go_to_their_dlqs_and_good_ones_are_processed() -> anyhow::Result<()> {
    let prof = profile();
    let load = stream::load(prof.messages);
    let clean = clean_pass(&load, prof.window)?;

    let bad = stream::malformed(prof.malformed);
    // Interleave: one bad message after every few good ones, the rest at the end.
    let every = (load.len() / bad.len().max(1)).max(1);
    let mut mixed: Vec<Addressed> = Vec::with_capacity(load.len() + bad.len());
    let mut bad_iter = bad.iter().cloned();
    for (i, m) in load.iter().cloned().enumerate() {
        mixed.push(m);
        if i % every == every - 1 {
            mixed.extend(bad_iter.next());
        }
    }
    mixed.extend(bad_iter);

    let db = sluice_testkit::TestDb::new()?;
    let mut p = Pipeline::start(db.url.clone())?;
    p.feed(&mixed, prof.window, |_, _| Ok(()))?;
    p.settle()?;
    p.assert_alive()?;
    expect_clean(&p, &clean, "good traffic among malformed messages")?;
    for (topic, _) in TOPICS
        .iter()
        .filter(|(t, _)| t.starts_with("ingest-") && !t.ends_with("-dlq"))
    {
        let want = bad.iter().filter(|(t, _, _)| t == topic).count();
        let reasons = p.broker.dlq_reasons(&format!("{topic}-dlq"))?;
        assert_eq!(
            reasons.len(),
            want,
            "{topic}: one dead letter per bad message"
        );
        assert!(
            reasons.iter().all(|r| !r.is_empty()),
            "{topic}: every dead letter has a reason: {reasons:?}"
        );
    }
    Ok(())
}

#[test]
fn the_loads_reach_every_stage() {
    let load = stream::load(1_500);
    let bad = stream::malformed(20);
    for (_, topic) in INPUTS {
        // Feedback reaches its topic through ingest-consumer.
        assert!(
            topic == "ingest-feedback-events" || load.iter().any(|(t, _, _)| *t == topic),
            "{topic} gets traffic"
        );
        assert!(
            bad.iter().any(|(t, _, _)| *t == topic),
            "{topic} gets bad input"
        );
    }
}
