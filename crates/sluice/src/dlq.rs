//! `sluice dlq list|show|replay <topic>`: dead letters of a topic, read from the start of its
//! DLQ to the end as it is when the command starts (the command never waits for more).
//!
//! `<topic>` is the DLQ (`ingest-events-dlq`) or the topic it serves (`ingest-events`).
//! Filters: `--reason`, `--project`, `--since`/`--until` (the dead letter's timestamp) and
//! `--at PARTITION:OFFSET`. `replay` sends each selected letter to its original topic with its
//! key, value and original headers, plus a `sluice_replayed_from` header naming the letter
//! (`<dlq topic>/<partition>/<offset>`); the provenance headers are left out. Letters cut short
//! when they were dead-lettered (`truncated_from`) are never replayed: they cannot succeed.
//! Replaying is safe: every stage is idempotent by natural keys, so a letter replayed twice, or
//! a letter whose message was processed after all, changes nothing the second time.

use crate::resend::Resender;
use anyhow::Context as _;
use chrono::{DateTime, TimeZone, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::kafka::dlq::TRUNCATED_FROM;
use sluice_core::messages::dlq::{
    ERROR_DETAIL, ORIGINAL_OFFSET, ORIGINAL_PARTITION, ORIGINAL_TOPIC, REASON,
};
use sluice_core::messages::{IngestMessage, IssuePlatformMessage};
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

    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, env = "KAFKA_BROKERS")]
    kafka_brokers: String,

    /// A librdkafka property, KEY=VALUE (repeatable; in KAFKA_OPTIONS, comma-separated), e.g.
    /// security.protocol=sasl_ssl.
    #[arg(
        long = "kafka-option",
        env = "KAFKA_OPTIONS",
        value_delimiter = ',',
        value_name = "KEY=VALUE",
        hide_env_values = true
    )]
    kafka_options: Vec<String>,

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

/// Reads the DLQ from the start to its end at the time of the call and sends the letters that
/// match to `out`, one at a time (memory stays bounded whatever the DLQ holds); returns how many
/// letters it read. Blocking: runs on a blocking thread.
fn read(sel: &Selection, out: &mpsc::Sender<Vec<Letter>>) -> anyhow::Result<u64> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let topic = sel.dlq_topic();
    let mut config = sluice_core::kafka::base_config(&sel.kafka_brokers, "sluice-dlq");
    config
        .set("group.id", "sluice-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    sluice_core::kafka::options::apply(&mut config);
    let consumer: BaseConsumer = config.create().context("Kafka client")?;
    let md = consumer
        .fetch_metadata(Some(&topic), TIMEOUT)
        .with_context(|| format!("cannot read Kafka metadata from {}", sel.kafka_brokers))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        anyhow::bail!("no topic {topic} on {}", sel.kafka_brokers);
    }
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&topic, *p, TIMEOUT)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        if high > low {
            ends.insert(*p, high);
            assignment.add_partition_offset(&topic, *p, Offset::Offset(low))?;
        }
    }
    let total: i64 = ends.values().sum::<i64>();
    let mut selected = 0usize;
    let mut scanned = 0u64;
    let (mut chunk, mut chunk_bytes) = (Vec::new(), 0usize);
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&assignment)?;
    let bar = ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template("reading {msg} {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(topic.clone());
    let mut idle = 0;
    while !ends.is_empty() {
        let Some(res) = consumer.poll(Duration::from_millis(500)) else {
            // Offsets may have gaps (compaction, transaction markers): a partition whose
            // position reached its end is done even if its last offset never arrives.
            if let Ok(positions) = consumer.position() {
                for e in positions.elements_for_topic(&topic) {
                    if let (Offset::Offset(o), Some(end)) = (e.offset(), ends.get(&e.partition())) {
                        if o >= *end {
                            ends.remove(&e.partition());
                        }
                    }
                }
            }
            idle += 1;
            if idle > 60 {
                anyhow::bail!("no progress reading {topic} for 30 s");
            }
            continue;
        };
        idle = 0;
        let m = res.with_context(|| format!("reading {topic}"))?;
        let (p, o) = (m.partition(), m.offset());
        let Some(end) = ends.get(&p).copied() else {
            continue;
        };
        if o >= end - 1 {
            ends.remove(&p);
        }
        if o >= end {
            continue;
        }
        scanned += 1;
        bar.inc(1);
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let letter = Letter {
            partition: p,
            offset: o,
            timestamp: m
                .timestamp()
                .to_millis()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        };
        if sel.matches(&letter) {
            chunk_bytes += letter.value.len();
            chunk.push(letter);
            selected += 1;
            if chunk.len() >= CHUNK_LETTERS || chunk_bytes >= CHUNK_BYTES {
                chunk_bytes = 0;
                out.blocking_send(std::mem::take(&mut chunk))
                    .map_err(|_| anyhow::anyhow!("the reader's consumer stopped"))?;
            }
            if sel.limit.is_some_and(|n| selected >= n) {
                break;
            }
        }
    }
    if !chunk.is_empty() {
        out.blocking_send(chunk)
            .map_err(|_| anyhow::anyhow!("the reader's consumer stopped"))?;
    }
    bar.finish_and_clear();
    Ok(scanned)
}

/// Letters are handed over in chunks of at most this many, or this many value bytes.
const CHUNK_LETTERS: usize = 512;
const CHUNK_BYTES: usize = 4 << 20;

/// The selected letters as they are read, and the reader (which returns how many it read).
fn letters(sel: &Selection) -> (mpsc::Receiver<Vec<Letter>>, JoinHandle<anyhow::Result<u64>>) {
    let (tx, rx) = mpsc::channel(4);
    let s = sel.clone();
    (rx, tokio::task::spawn_blocking(move || read(&s, &tx)))
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

pub async fn run(command: &Command) -> anyhow::Result<()> {
    let (Command::List(sel)
    | Command::Show { selection: sel, .. }
    | Command::Replay { selection: sel, .. }) = command;
    sluice_core::kafka::options::install(sluice_core::kafka::options::parse(&sel.kafka_options)?);
    match command {
        Command::List(sel) => {
            let dlq = sel.dlq_topic();
            if !sel.json {
                println!(
                    "{:<16} {:<25} {:<18} {:<34} {:>10}  value",
                    "letter", "dead-lettered at", "reason", "original", "project"
                );
            }
            let (mut rx, reader) = letters(sel);
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
            let (mut rx, reader) = letters(selection);
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
        Command::Replay { selection, dry_run } => replay(selection, *dry_run).await?,
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

/// Sends `l` back to its original topic, without its provenance headers and with one naming
/// the letter.
fn send_back(resender: &Resender, dlq: &str, l: &Letter) -> anyhow::Result<()> {
    let from = format!("{dlq}/{}/{}", l.partition, l.offset);
    let mut headers: Vec<(&str, &[u8])> = l
        .headers
        .iter()
        .filter(|(k, _)| !PROVENANCE.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    headers.push((REPLAYED_FROM, from.as_bytes()));
    let topic = l.original_topic().unwrap_or_default();
    resender.send(&topic, l.key.as_deref(), &l.value, &headers)
}

async fn replay(sel: &Selection, dry_run: bool) -> anyhow::Result<()> {
    let dlq = sel.dlq_topic();
    let resender = if dry_run {
        None
    } else {
        Some(Resender::new(&sel.kafka_brokers)?)
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("replaying {pos} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let (mut rx, reader) = letters(sel);
    let (mut skipped, mut queued) = (0usize, 0usize);
    while let Some(chunk) = rx.recv().await {
        let mut sendable = Vec::with_capacity(chunk.len());
        for l in chunk {
            if l.truncated() || l.original_topic().is_none() {
                skipped += 1;
                eprintln!(
                    "skipping {dlq}/{}:{}: {}",
                    l.partition,
                    l.offset,
                    if l.truncated() {
                        "its value was truncated when it was dead-lettered"
                    } else {
                        "no original_topic header"
                    }
                );
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
                sendable.push(l);
            }
        }
        if let Some(r) = &resender {
            // Sending may wait for librdkafka's queue: off the async threads.
            let n = sendable.len();
            let (r, d) = (r.clone(), dlq.clone());
            tokio::task::spawn_blocking(move || {
                sendable.iter().try_for_each(|l| send_back(&r, &d, l))
            })
            .await??;
            queued += n;
            bar.inc(n as u64);
        }
    }
    let scanned = reader.await??;
    let Some(resender) = resender else {
        println!(
            "dry run: {queued} of {scanned} dead letters in {dlq} would be replayed, {skipped} skipped"
        );
        return Ok(());
    };
    let delivered =
        tokio::task::spawn_blocking(move || resender.finish(Duration::from_secs(120))).await??;
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
