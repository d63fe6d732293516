//! `sluice dlq list|show|replay <topic>`: dead letters of a topic, read from the start of its
//! DLQ to the end as it is when the command starts (the command never waits for more).
//!
//! `<topic>` is the DLQ (`ingest-events-dlq`) or the topic it serves (`ingest-events`). The DLQ
//! is read from Kafka when `KAFKA_BROKERS` is set, and otherwise from the embedded transport in
//! `DATABASE_URL` (where `sluice run` without Kafka keeps its topics).
//! Filters: `--reason`, `--project`, `--since`/`--until` (the dead letter's timestamp) and
//! `--at PARTITION:OFFSET`. `replay` sends each selected letter to its original topic with its
//! key, value and original headers, plus a `sluice_replayed_from` header naming the letter
//! (`<dlq topic>/<partition>/<offset>`); the provenance headers are left out. Letters cut short
//! when they were dead-lettered (`truncated_from`) are never replayed: they cannot succeed.
//! Replaying is safe: every stage is idempotent by natural keys, so a letter replayed twice, or
//! a letter whose message was processed after all, changes nothing the second time.

mod embedded;
mod kafka;

use crate::kafka_args::KafkaArgs;
use crate::resend::{Delivered, Resender};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_core::kafka::dlq::TRUNCATED_FROM;
use sluice_core::messages::dlq::{
    ERROR_DETAIL, ORIGINAL_OFFSET, ORIGINAL_PARTITION, ORIGINAL_TOPIC, REASON,
};
use sluice_core::messages::{IngestMessage, IssuePlatformMessage};
use sluice_core::queue::{Outgoing, Publisher};
use sluice_core::storage::Db;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Header a replayed message carries: the dead letter it came from.
pub const REPLAYED_FROM: &str = "sluice_replayed_from";

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// One line per dead letter: where it was, why, its project and the first bytes of its value.
    List(Selection),
    /// Every header and the value (escaped, cut to --bytes) of the selected dead letters.
    Show {
        #[command(flatten)]
        selection: Selection,
        /// Bytes of the value shown.
        #[arg(long, default_value_t = 4096)]
        bytes: usize,
    },
    /// Send the selected dead letters back to their original topic.
    Replay {
        #[command(flatten)]
        selection: Selection,
        /// Print what would be sent, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct Selection {
    /// The DLQ topic, or the topic whose DLQ to read.
    topic: String,

    #[command(flatten)]
    kafka: KafkaArgs,

    /// Only letters with this reason (repeatable), e.g. invalid_field, retry_exhausted.
    #[arg(long)]
    reason: Vec<String>,

    /// Only letters of this project.
    #[arg(long)]
    project: Option<u64>,

    /// Only letters dead-lettered at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,

    /// Only letters dead-lettered before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,

    /// Only the letter at PARTITION:OFFSET of the DLQ (repeatable).
    #[arg(long = "at", value_parser = parse_at)]
    at: Vec<(i32, i64)>,

    /// At most this many letters.
    #[arg(long)]
    limit: Option<usize>,

    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time: {e}"))
}

fn parse_at(s: &str) -> Result<(i32, i64), String> {
    let (p, o) = s.split_once(':').ok_or("expected PARTITION:OFFSET")?;
    Ok((
        p.parse().map_err(|e| format!("partition: {e}"))?,
        o.parse().map_err(|e| format!("offset: {e}"))?,
    ))
}

/// A dead letter as read from its DLQ.
#[derive(Debug, Clone)]
struct Letter {
    partition: i32,
    offset: i64,
    timestamp: Option<DateTime<Utc>>,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Letter {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    fn original_topic(&self) -> Option<String> {
        self.header(ORIGINAL_TOPIC).filter(|t| !t.is_empty())
    }

    fn project(&self) -> Option<u64> {
        let topic = self.original_topic().unwrap_or_default();
        if topic.starts_with("ingest-") {
            IngestMessage::project_of(&self.value)
        } else {
            IssuePlatformMessage::project_of(&self.value)
        }
    }

    fn truncated(&self) -> bool {
        self.header(TRUNCATED_FROM).is_some()
    }

    /// Why this letter cannot go back to `source`, the topic its DLQ belongs to.
    fn unreplayable(&self, source: &str) -> Option<String> {
        if self.truncated() {
            return Some("its value was truncated when it was dead-lettered".to_owned());
        }
        match self.original_topic() {
            None => Some("no original_topic header".to_owned()),
            Some(t) if t != source => Some(format!(
                "its original_topic {t:?} is not {source:?}, the topic this DLQ belongs to"
            )),
            Some(_) => None,
        }
    }

    fn json(&self, dlq: &str, bytes: usize) -> serde_json::Value {
        let headers: BTreeMap<&str, String> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        serde_json::json!({
            "topic": dlq,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.map(|t| t.to_rfc3339()),
            "reason": self.header(REASON),
            "error_detail": self.header(ERROR_DETAIL),
            "original_topic": self.original_topic(),
            "original_partition": self.header(ORIGINAL_PARTITION),
            "original_offset": self.header(ORIGINAL_OFFSET),
            "project_id": self.project(),
            "truncated_from": self.header(TRUNCATED_FROM),
            "key": self.key.as_deref().map(|k| escape(k, 256)),
            "value_bytes": self.value.len(),
            "value": escape(&self.value, bytes),
            "headers": headers,
        })
    }
}

/// `bytes` as text: printable ASCII as is, the rest as `\xNN`, cut to `max` input bytes.
fn escape(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for b in bytes.iter().take(max) {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(*b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        out.push('…');
    }
    out
}

impl Selection {
    fn dlq_topic(&self) -> String {
        if self.topic.ends_with("-dlq") {
            self.topic.clone()
        } else {
            sluice_core::cli::dlq_topic(&self.topic)
        }
    }

    fn matches(&self, l: &Letter) -> bool {
        (self.reason.is_empty() || l.header(REASON).is_some_and(|r| self.reason.contains(&r)))
            && self.project.is_none_or(|p| l.project() == Some(p))
            && self
                .since
                .is_none_or(|t| l.timestamp.is_some_and(|ts| ts >= t))
            && self
                .until
                .is_none_or(|t| l.timestamp.is_some_and(|ts| ts < t))
            && (self.at.is_empty() || self.at.contains(&(l.partition, l.offset)))
    }
}

/// The progress bar of reading `total` letters of `topic`.
fn reading_bar(topic: &str, total: i64) -> ProgressBar {
    let bar = ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template("reading {msg} {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(topic.to_owned());
    bar
}

/// Letters are handed over in chunks of at most this many, or this many value bytes.
const CHUNK_LETTERS: usize = 512;
const CHUNK_BYTES: usize = 4 << 20;

/// Where the dead letters are: a Kafka cluster, or the embedded transport's tables.
#[derive(Clone)]
enum Transport {
    Kafka(String),
    Embedded(Db),
}

impl Transport {
    fn of(sel: &Selection, database_url: Option<&str>) -> anyhow::Result<Transport> {
        match (&sel.kafka.kafka_brokers, database_url) {
            (Some(brokers), _) if !brokers.trim().is_empty() => {
                Ok(Transport::Kafka(brokers.clone()))
            }
            (_, Some(url)) => Ok(Transport::Embedded(Db::new(url, 2))),
            _ => anyhow::bail!(
                "no transport: set KAFKA_BROKERS (--kafka-brokers) for Kafka, or DATABASE_URL \
                 (--database-url) for the embedded transport of `sluice run`"
            ),
        }
    }
}

/// The selected letters as they are read, and the reader (which returns how many it read).
fn letters(
    sel: &Selection,
    transport: &Transport,
) -> (mpsc::Receiver<Vec<Letter>>, JoinHandle<anyhow::Result<u64>>) {
    let (tx, rx) = mpsc::channel(4);
    let s = sel.clone();
    let reader = match transport.clone() {
        Transport::Kafka(brokers) => {
            tokio::task::spawn_blocking(move || kafka::read(&s, &brokers, &tx))
        }
        Transport::Embedded(db) => tokio::spawn(async move { embedded::read(&s, &db, &tx).await }),
    };
    (rx, reader)
}

/// The next letter: from the chunk at hand, else from the next chunk.
async fn next(
    rx: &mut mpsc::Receiver<Vec<Letter>>,
    pending: &mut std::vec::IntoIter<Letter>,
) -> Option<Letter> {
    loop {
        if let Some(l) = pending.next() {
            return Some(l);
        }
        *pending = rx.recv().await?.into_iter();
    }
}

pub async fn run(command: &Command, database_url: Option<&str>) -> anyhow::Result<()> {
    let (Command::List(sel)
    | Command::Show { selection: sel, .. }
    | Command::Replay { selection: sel, .. }) = command;
    sel.kafka.install_options()?;
    let transport = Transport::of(sel, database_url)?;
    match command {
        Command::List(sel) => {
            let dlq = sel.dlq_topic();
            if !sel.json {
                println!(
                    "{:<16} {:<25} {:<18} {:<34} {:>10}  value",
                    "letter", "dead-lettered at", "reason", "original", "project"
                );
            }
            let (mut rx, reader) = letters(sel, &transport);
            let mut pending = Vec::new().into_iter();
            let mut selected = 0;
            while let Some(l) = next(&mut rx, &mut pending).await {
                selected += 1;
                if sel.json {
                    println!("{}", l.json(&dlq, 64));
                    continue;
                }
                println!(
                    "{:<16} {:<25} {:<18} {:<34} {:>10}  {}",
                    format!("{}:{}", l.partition, l.offset),
                    l.timestamp.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    l.header(REASON).unwrap_or_default(),
                    format!(
                        "{}/{}/{}",
                        l.original_topic().unwrap_or_default(),
                        l.header(ORIGINAL_PARTITION).unwrap_or_default(),
                        l.header(ORIGINAL_OFFSET).unwrap_or_default()
                    ),
                    l.project().map(|p| p.to_string()).unwrap_or_default(),
                    escape(&l.value, 64)
                );
            }
            let scanned = reader.await??;
            eprintln!("{selected} of {scanned} dead letters in {dlq} selected");
        }
        Command::Show { selection, bytes } => {
            let dlq = selection.dlq_topic();
            let (mut rx, reader) = letters(selection, &transport);
            let mut pending = Vec::new().into_iter();
            let mut selected = 0;
            while let Some(l) = next(&mut rx, &mut pending).await {
                selected += 1;
                let j = l.json(&dlq, *bytes);
                if selection.json {
                    println!("{j}");
                } else {
                    println!("{}", serde_json::to_string_pretty(&j)?);
                }
            }
            let scanned = reader.await??;
            eprintln!("{selected} of {scanned} dead letters in {dlq} selected");
        }
        Command::Replay { selection, dry_run } => replay(selection, &transport, *dry_run).await?,
    }
    Ok(())
}

/// Headers of a dead letter that say where it came from; a replay leaves them out.
const PROVENANCE: [&str; 7] = [
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    REASON,
    ERROR_DETAIL,
    TRUNCATED_FROM,
    REPLAYED_FROM,
];

/// `l` as it goes back to its original topic: without its provenance headers, with one naming
/// the letter.
fn returning(dlq: &str, l: Letter) -> Outgoing {
    let from = format!("{dlq}/{}/{}", l.partition, l.offset);
    let topic = l.original_topic().unwrap_or_default();
    let mut headers: Vec<(String, Vec<u8>)> = l
        .headers
        .into_iter()
        .filter(|(k, _)| !PROVENANCE.contains(&k.as_str()))
        .collect();
    headers.push((REPLAYED_FROM.to_owned(), from.into_bytes()));
    Outgoing {
        topic,
        key: l.key,
        payload: l.value,
        headers,
    }
}

/// Where replayed letters go.
enum Sink {
    /// Sends that are counted as the broker acknowledges them.
    Kafka(Resender),
    /// One transaction per chunk; the count of what committed, per topic.
    Embedded(Publisher, BTreeMap<String, usize>),
}

impl Sink {
    async fn send(&mut self, out: Vec<Outgoing>) -> anyhow::Result<()> {
        match self {
            Sink::Kafka(r) => {
                // Sending may wait for librdkafka's queue: off the async threads.
                let r = r.clone();
                tokio::task::spawn_blocking(move || {
                    out.iter().try_for_each(|o| {
                        let headers: Vec<(&str, &[u8])> = o
                            .headers
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_slice()))
                            .collect();
                        r.send(&o.topic, o.key.as_deref(), &o.payload, &headers)
                    })
                })
                .await?
            }
            Sink::Embedded(publisher, committed) => {
                let topics: Vec<String> = out.iter().map(|o| o.topic.clone()).collect();
                publisher.send_many(out).await.map_err(|e| {
                    anyhow::anyhow!(
                        "publishing to the embedded transport: {e} ({} letters replayed before \
                         this chunk are published; replaying them again changes nothing)",
                        committed.values().sum::<usize>()
                    )
                })?;
                for t in topics {
                    *committed.entry(t).or_default() += 1;
                }
                Ok(())
            }
        }
    }

    async fn finish(self) -> anyhow::Result<Delivered> {
        match self {
            Sink::Kafka(r) => {
                Ok(
                    tokio::task::spawn_blocking(move || r.finish(Duration::from_secs(120)))
                        .await??,
                )
            }
            Sink::Embedded(_, per_topic) => Ok(Delivered {
                per_topic,
                failed: 0,
                first_error: None,
            }),
        }
    }
}

async fn replay(sel: &Selection, transport: &Transport, dry_run: bool) -> anyhow::Result<()> {
    let dlq = sel.dlq_topic();
    // A DLQ holds the letters of one topic: a letter naming another one (hand-written, or
    // damaged) is not sent there, so a replay never writes to, or creates, a topic the
    // operator did not pick.
    let source = dlq.strip_suffix("-dlq").unwrap_or(&dlq).to_owned();
    let mut sink = match (dry_run, transport) {
        (true, _) => None,
        (false, Transport::Kafka(brokers)) => Some(Sink::Kafka(Resender::new(brokers)?)),
        (false, Transport::Embedded(db)) => Some(Sink::Embedded(
            Publisher::start(db.clone()),
            BTreeMap::new(),
        )),
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("replaying {pos} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let (mut rx, reader) = letters(sel, transport);
    let (mut skipped, mut queued) = (0usize, 0usize);
    while let Some(chunk) = rx.recv().await {
        let mut sendable = Vec::with_capacity(chunk.len());
        for l in chunk {
            if let Some(why) = l.unreplayable(&source) {
                skipped += 1;
                eprintln!("skipping {dlq}/{}:{}: {why}", l.partition, l.offset);
            } else if dry_run {
                println!(
                    "would replay {}:{} -> {} ({} bytes, reason {})",
                    l.partition,
                    l.offset,
                    l.original_topic().unwrap_or_default(),
                    l.value.len(),
                    l.header(REASON).unwrap_or_default()
                );
                queued += 1;
            } else {
                sendable.push(returning(&dlq, l));
            }
        }
        if let Some(sink) = &mut sink {
            let n = sendable.len();
            sink.send(sendable).await?;
            queued += n;
            bar.inc(n as u64);
        }
    }
    let scanned = reader.await??;
    let Some(sink) = sink else {
        println!(
            "dry run: {queued} of {scanned} dead letters in {dlq} would be replayed, {skipped} skipped"
        );
        return Ok(());
    };
    let delivered = sink.finish().await?;
    bar.finish_and_clear();
    for (topic, n) in &delivered.per_topic {
        println!("replayed to {topic}: {n}");
    }
    let replayed: usize = delivered.per_topic.values().sum();
    let unconfirmed = queued.saturating_sub(replayed + delivered.failed);
    println!(
        "{replayed} of {scanned} dead letters in {dlq} replayed, {skipped} skipped, {} failed",
        delivered.failed + unconfirmed
    );
    if delivered.failed + unconfirmed > 0 {
        anyhow::bail!(
            "{} replays failed or were not confirmed; first: {}",
            delivered.failed + unconfirmed,
            delivered
                .first_error
                .unwrap_or_else(|| "flush timed out".into())
        );
    }
    Ok(())
}
