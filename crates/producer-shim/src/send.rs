//! `producer-shim send FILE|-`: NDJSON occurrences and status changes (`payload_type` decides;
//! absent = occurrence), delivered like the HTTP API. Shows progress on a terminal, prints a
//! summary, and exits non-zero if anything was rejected or failed.

use crate::submit::{self, Kind, Status, Submitter};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};

/// Items delivered per round.
const CHUNK: usize = 500;

/// Counts of a run.
#[derive(Debug, Default)]
pub struct Summary {
    pub sent: usize,
    pub processed: usize,
    pub rejected: BTreeMap<String, usize>,
    pub failed: BTreeMap<String, usize>,
}

impl Summary {
    /// Whether everything was delivered.
    pub fn ok(&self) -> bool {
        self.rejected.is_empty() && self.failed.is_empty()
    }
}

fn reason_key(e: &str) -> String {
    e.split(':').next().unwrap_or(e).chars().take(60).collect()
}

/// Reads `path` (`-` = stdin) and delivers every line.
pub async fn run(path: &str, submitter: &Submitter) -> anyhow::Result<Summary> {
    let reader: Box<dyn BufRead> = if path == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?,
        ))
    };
    let lines: Vec<String> = reader.lines().collect::<Result<_, _>>()?;
    let lines: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(lines.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut summary = Summary::default();
    for chunk in lines.chunks(CHUNK) {
        let mut records = Vec::with_capacity(chunk.len());
        for line in chunk {
            let item = serde_json::from_str(line).map_err(|e| format!("undecodable: {e}"));
            match item.and_then(|v| submit::validate(Kind::Any, v)) {
                Ok(r) => records.push(r),
                Err(e) => *summary.rejected.entry(reason_key(&e)).or_default() += 1,
            }
        }
        for status in submitter.submit(records).await {
            match status {
                Status::Sent => summary.sent += 1,
                Status::Processed => summary.processed += 1,
                Status::Failed(e) => *summary.failed.entry(reason_key(&e)).or_default() += 1,
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Prints the summary on stdout.
pub fn print(summary: &Summary) {
    println!("sent: {}", summary.sent);
    println!("processed directly: {}", summary.processed);
    println!("rejected: {}", summary.rejected.values().sum::<usize>());
    for (reason, n) in &summary.rejected {
        println!("  {reason}: {n}");
    }
    println!("failed: {}", summary.failed.values().sum::<usize>());
    for (reason, n) in &summary.failed {
        println!("  {reason}: {n}");
    }
}
