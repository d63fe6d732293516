//! `sluice cleanup`: removes what has expired (the rules are in
//! `sluice_core::storage::retention`), once or every `--interval-secs`.
//!
//! A round, as of its clock (`--now`, else the current time):
//! 1. creates the day partitions of payloads from today to the longest retention ahead;
//! 2. deletes expired rows in batches of `--batch-size`, pausing between batches so that deleting
//!    takes at most `--duty-percent` of the time and the stages beside it keep their pace;
//! 3. drops payload partitions whose day has ended;
//! 4. deletes queued objects from the object store, a batch at a time; an object-store outage
//!    stops this step and leaves the objects queued for the next round.
//!
//! Two cleanups at once are safe: a round runs only while it holds an advisory lock, and a
//! second one reports that another is running and does nothing.

use anyhow::Context as _;
use chrono::{DateTime, Days, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use prometheus::{IntCounterVec, IntGauge, Opts};
use sluice_core::failure::{Classify, Failure};
use sluice_core::health::Health;
use sluice_core::objects::Objects;
use sluice_core::storage::migrate::{schema_status, SchemaStatus};
use sluice_core::storage::retention::{self, Partition, PARTITIONED, STEPS};
use sluice_core::storage::{Db, DbError};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Print what would be removed, remove nothing.
    #[arg(long)]
    dry_run: bool,

    /// Run one round and exit (default: a round every --interval-secs until SIGTERM).
    #[arg(long)]
    once: bool,

    /// Run as of this time (RFC 3339) instead of now, to see retention take effect without waiting.
    #[arg(long, value_parser = parse_time)]
    now: Option<DateTime<Utc>>,

    /// Seconds between rounds when looping.
    #[arg(long, env = "CLEANUP_INTERVAL_SECS", default_value_t = 3600)]
    interval_secs: u64,

    /// Rows deleted per statement.
    #[arg(long, env = "CLEANUP_BATCH_SIZE", default_value_t = 5000)]
    batch_size: i64,

    /// Share of the time cleanup may spend deleting, in percent: after a batch that took t, it
    /// pauses t × (100 / percent − 1), so the stages beside it keep most of the database.
    /// 100 deletes without pausing.
    #[arg(long, env = "CLEANUP_DUTY_PERCENT", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    duty_percent: u32,

    /// How long idempotency records and idle counters are kept, in hours. Must be at least the
    /// retention of the input topics in Kafka: a replay older than this would bill again.
    #[arg(long, env = "CLEANUP_REPLAY_WINDOW_HOURS", default_value_t = 168)]
    replay_window_hours: u64,

    /// Longest wait for a table lock (partition attach and detach), in milliseconds; a round
    /// that cannot get one tries again next time.
    #[arg(long, env = "CLEANUP_LOCK_TIMEOUT_MS", default_value_t = 2000)]
    lock_timeout_ms: u64,

    /// Attachment storage: s3://bucket/prefix (AWS_* variables configure the client) or file:///dir.
    #[arg(
        long,
        env = "OBJECT_STORE_URL",
        default_value = "file://./data/objects"
    )]
    object_store_url: String,

    /// Where a looping cleanup serves /metrics and /health/*.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9105")]
    metrics_addr: SocketAddr,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2027-03-01T00:00:00Z: {e}"))
}

struct Metrics {
    removed: IntCounterVec,
    rounds: IntCounterVec,
    last_success: IntGauge,
    queued_objects: IntGauge,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        removed: sluice_core::metrics::counter_vec(
            Opts::new(
                "sluice_cleanup_removed_total",
                "What cleanup removed: rows by step, partitions, objects, bytes of dropped partitions; also partitions created and deferred.",
            ),
            &["step"],
        ),
        rounds: sluice_core::metrics::counter_vec(
            Opts::new(
                "sluice_cleanup_rounds_total",
                "Cleanup rounds, by result (ok, partial, failed, skipped).",
            ),
            &["result"],
        ),
        last_success: sluice_core::metrics::gauge_vec(
            Opts::new(
                "sluice_cleanup_last_success_timestamp_seconds",
                "When the last complete cleanup round ended (epoch seconds).",
            ),
            &[],
        )
        .with_label_values::<&str>(&[]),
        queued_objects: sluice_core::metrics::gauge_vec(
            Opts::new(
                "sluice_cleanup_queued_objects",
                "Objects of removed attachments still waiting for deletion.",
            ),
            &[],
        )
        .with_label_values::<&str>(&[]),
    })
}

/// What a round did (or, dry, would do).
#[derive(Debug, Default)]
struct Report {
    rows: Vec<(String, u64)>,
    partitions_created: u64,
    partitions_dropped: Vec<Partition>,
    objects_deleted: u64,
    objects_queued: u64,
    /// Why the object step stopped early, if it did.
    objects_paused: Option<String>,
    skipped: bool,
}

pub async fn run(url: &str, args: &Args) -> anyhow::Result<()> {
    let db = Db::new(url, 1);
    let status = db
        .run(|c| schema_status(c).map_err(|e| DbError::Unavailable(e.to_string())))
        .await?;
    if let SchemaStatus::Behind { have, need } = status {
        anyhow::bail!(
            "the database schema is at {}, cleanup needs {need}: run `sluice migrate` first",
            have.as_deref().unwrap_or("none")
        );
    }
    let objects = Objects::from_url(&args.object_store_url)
        .with_context(|| format!("--object-store-url {}", args.object_store_url))?;
    if args.once || args.dry_run {
        let report = round(&db, &objects, args).await?;
        print(&report, args);
        return match &report.objects_paused {
            Some(why) => Err(anyhow::anyhow!(
                "object deletions paused ({why}); {} objects stay queued for the next run",
                report.objects_queued
            )),
            None => Ok(()),
        };
    }
    let health = Health::new(Duration::from_secs(args.interval_secs.max(60) * 3));
    let addr = sluice_core::health::serve(args.metrics_addr, health.clone()).await?;
    let shutdown = sluice_core::shutdown::install(health.clone());
    tracing::info!(metrics = %addr, interval_secs = args.interval_secs, "cleanup started");
    rounds(&db, &objects, args, &health, &shutdown).await;
    Ok(())
}

/// Cleanup with its default settings for `object_store_url` (`sluice run`'s).
pub fn default_args(object_store_url: &str) -> Args {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: Args,
    }
    let mut args = Wrapper::parse_from(["cleanup"]).args;
    args.object_store_url = object_store_url.to_owned();
    args
}

/// A round every `--interval-secs` until `shutdown`.
pub async fn rounds(
    db: &Db,
    objects: &Objects,
    args: &Args,
    health: &Health,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    loop {
        match round(db, objects, args).await {
            Ok(report) => {
                health.set_dependencies_ok(report.objects_paused.is_none());
                print(&report, args);
            }
            Err(e) => {
                health.set_dependencies_ok(false);
                metrics().rounds.with_label_values(&["failed"]).inc();
                tracing::error!(
                    error = format!("{e:#}"),
                    "cleanup round failed; next round retries"
                );
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(args.interval_secs.max(1))) => {}
        }
    }
    tracing::info!("cleanup stopped");
}

/// One round; `Err` when the database failed (nothing is lost: the next round goes on).
async fn round(db: &Db, objects: &Objects, args: &Args) -> anyhow::Result<Report> {
    let now = args.now.unwrap_or_else(Utc::now);
    let lock_timeout = args.lock_timeout_ms;
    let locked = db
        .run(move |c| {
            retention::set_lock_timeout(c, lock_timeout)?;
            Ok::<_, DbError>(retention::try_lock(c)?)
        })
        .await?;
    if !locked {
        tracing::warn!("another cleanup is running; this round does nothing");
        metrics().rounds.with_label_values(&["skipped"]).inc();
        return Ok(Report {
            skipped: true,
            ..Report::default()
        });
    }
    let result = if args.dry_run {
        plan(db, now, args).await
    } else {
        remove(db, objects, now, args).await
    };
    // Released on disconnect too.
    let _ = db.run(|c| Ok::<_, DbError>(retention::unlock(c)?)).await;
    let report = result?;
    if !args.dry_run {
        let label = if report.objects_paused.is_some() {
            "partial"
        } else {
            metrics().last_success.set(Utc::now().timestamp());
            "ok"
        };
        metrics().rounds.with_label_values(&[label]).inc();
        metrics().queued_objects.set(report.objects_queued as i64);
    }
    Ok(report)
}

fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} rows ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The partitions of every partitioned table whose day ended by `now`.
async fn ended_partitions(db: &Db, now: DateTime<Utc>) -> anyhow::Result<Vec<Partition>> {
    let all = db
        .run(|c| {
            let mut all = Vec::new();
            for table in PARTITIONED {
                all.extend(retention::partitions(c, table)?);
            }
            Ok::<_, DbError>(all)
        })
        .await?;
    Ok(all
        .into_iter()
        .filter(|p| {
            p.day
                .checked_add_days(Days::new(1))
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .is_some_and(|end| end.and_utc() <= now)
        })
        .collect())
}

async fn horizon(db: &Db) -> anyhow::Result<(chrono::NaiveDate, chrono::NaiveDate)> {
    let days = db
        .run(|c| Ok::<_, DbError>(retention::longest_retention_days(c)?))
        .await?;
    let today = Utc::now().date_naive();
    let last = today
        .checked_add_days(Days::new(days.max(1) as u64 + 1))
        .unwrap_or(today);
    Ok((today, last))
}

/// The dry run: counts, nothing changes.
async fn plan(db: &Db, now: DateTime<Utc>, args: &Args) -> anyhow::Result<Report> {
    let window = args.replay_window_hours as f64 * 3600.0;
    let mut report = Report::default();
    for step in STEPS {
        let n = db
            .run(move |c| Ok::<_, DbError>(step.count(c, now, window)?))
            .await?;
        report.rows.push((step.name.to_owned(), n));
    }
    let (attachments, groups, queued) = db
        .run(move |c| {
            Ok::<_, DbError>((
                retention::expired_attachments(c, now)?,
                retention::expired_groups(c, now)?,
                retention::queued_object_count(c)?,
            ))
        })
        .await?;
    report.rows.push(("event_attachments".into(), attachments));
    report.rows.push(("groups".into(), groups));
    report.objects_queued = queued + attachments;
    report.partitions_dropped = ended_partitions(db, now).await?;
    let (from, to) = horizon(db).await?;
    let present = db
        .run(move |c| {
            let mut n = 0u64;
            for table in PARTITIONED {
                n += retention::partitions(c, table)?
                    .iter()
                    .filter(|p| p.day >= from && p.day <= to)
                    .count() as u64;
            }
            Ok::<_, DbError>(n)
        })
        .await?;
    let span = (to - from).num_days().max(0) as u64 + 1;
    report.partitions_created = (span * PARTITIONED.len() as u64).saturating_sub(present);
    Ok(report)
}

/// Deletes one step's expired rows batch by batch; returns how many.
async fn drain<F>(db: &Db, name: &str, args: &Args, delete: F) -> anyhow::Result<u64>
where
    F: Fn(&mut diesel::PgConnection) -> diesel::QueryResult<u64> + Clone + Send + 'static,
{
    let bar = spinner(format!("removing {name}:"));
    let started = Instant::now();
    let mut total = 0;
    loop {
        let f = delete.clone();
        let batch = Instant::now();
        let n = db.run(move |c| Ok::<_, DbError>(f(c)?)).await?;
        total += n;
        bar.inc(n);
        metrics().removed.with_label_values(&[name]).inc_by(n);
        if n < args.batch_size as u64 {
            break;
        }
        let pause = batch
            .elapsed()
            .mul_f64(100.0 / f64::from(args.duty_percent) - 1.0);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    bar.finish_and_clear();
    if total > 0 {
        tracing::info!(
            step = name,
            rows = total,
            seconds = started.elapsed().as_secs_f64(),
            "removed"
        );
    }
    Ok(total)
}

async fn remove(
    db: &Db,
    objects: &Objects,
    now: DateTime<Utc>,
    args: &Args,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let (from, to) = horizon(db).await?;
    for table in PARTITIONED {
        let ensured = db
            .run(move |c| Ok::<_, DbError>(retention::ensure_partitions(c, table, from, to)?))
            .await?;
        report.partitions_created += ensured.created;
        // Days whose locks were not had within the lock timeout (a long transaction on the
        // table): their rows wait in the default partition and the next round creates them.
        if ensured.deferred > 0 {
            tracing::warn!(
                table,
                days = ensured.deferred,
                lock_timeout_ms = args.lock_timeout_ms,
                "partitions not created this round: a lock was not had in time"
            );
            metrics()
                .removed
                .with_label_values(&["partitions_deferred"])
                .inc_by(ensured.deferred);
        }
    }
    metrics()
        .removed
        .with_label_values(&["partitions_created"])
        .inc_by(report.partitions_created);

    let window = args.replay_window_hours as f64 * 3600.0;
    let limit = args.batch_size.max(1);
    for step in STEPS {
        let n = drain(db, step.name, args, move |c| {
            step.delete(c, now, window, limit)
        })
        .await?;
        report.rows.push((step.name.to_owned(), n));
    }
    let n = drain(db, "event_attachments", args, move |c| {
        retention::delete_attachments(c, now, limit)
    })
    .await?;
    report.rows.push(("event_attachments".into(), n));
    let n = drain(db, "groups", args, move |c| {
        retention::delete_groups(c, now, limit)
    })
    .await?;
    report.rows.push(("groups".into(), n));

    for partition in ended_partitions(db, now).await? {
        let p = partition.clone();
        match db
            .run(move |c| Ok::<_, DbError>(retention::drop_partition(c, &p)?))
            .await
        {
            Ok(()) => {
                metrics()
                    .removed
                    .with_label_values(&["partitions_dropped"])
                    .inc();
                metrics()
                    .removed
                    .with_label_values(&["partition_bytes"])
                    .inc_by(partition.bytes.max(0) as u64);
                tracing::info!(partition = %partition.name, bytes = partition.bytes, "dropped");
                report.partitions_dropped.push(partition);
            }
            // A lock that could not be had in time: the next round drops it.
            Err(e) => {
                tracing::warn!(partition = %partition.name, error = %e, "not dropped this round")
            }
        }
    }

    delete_objects(db, objects, &mut report).await?;
    Ok(report)
}

/// Empties the object queue a batch at a time; stops at the first object-store failure.
async fn delete_objects(db: &Db, objects: &Objects, report: &mut Report) -> anyhow::Result<()> {
    const BATCH: i64 = 1000;
    let bar = spinner("deleting objects:".into());
    loop {
        let keys = db
            .run(|c| Ok::<_, DbError>(retention::queued_objects(c, BATCH)?))
            .await?;
        if keys.is_empty() {
            break;
        }
        match objects.delete_many(&keys).await {
            Ok(_) => {}
            Err(e) => {
                let class = match e.failure() {
                    Failure::Outage(_) => "object store unavailable",
                    _ => "object store refused a deletion",
                };
                report.objects_paused = Some(format!("{class}: {e}"));
                break;
            }
        }
        let forgotten = keys.clone();
        db.run(move |c| Ok::<_, DbError>(retention::forget_objects(c, &forgotten)?))
            .await?;
        let n = keys.len() as u64;
        report.objects_deleted += n;
        bar.inc(n);
        metrics().removed.with_label_values(&["objects"]).inc_by(n);
        if (keys.len() as i64) < BATCH {
            break;
        }
    }
    bar.finish_and_clear();
    report.objects_queued = db
        .run(|c| Ok::<_, DbError>(retention::queued_object_count(c)?))
        .await?;
    Ok(())
}

fn print(report: &Report, args: &Args) {
    if report.skipped {
        println!("another cleanup is running; nothing done");
        return;
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let when = args
        .now
        .map(|t| format!(" as of {}", t.to_rfc3339()))
        .unwrap_or_default();
    println!("cleanup{when}: {verb}");
    for (name, n) in &report.rows {
        println!("  {name:<42} {n:>12} rows");
    }
    let bytes: i64 = report.partitions_dropped.iter().map(|p| p.bytes).sum();
    println!(
        "  {:<42} {:>12} ({} MiB)",
        "payload partitions ended",
        report.partitions_dropped.len(),
        bytes / (1024 * 1024)
    );
    for p in &report.partitions_dropped {
        println!("    {} ({} KiB)", p.name, p.bytes / 1024);
    }
    let created = if args.dry_run {
        "payload partitions to create"
    } else {
        "payload partitions created"
    };
    println!("  {created:<42} {:>12}", report.partitions_created);
    if !args.dry_run {
        println!("  {:<42} {:>12}", "objects deleted", report.objects_deleted);
    }
    println!(
        "  {:<42} {:>12}",
        "objects queued for deletion", report.objects_queued
    );
    if let Some(why) = &report.objects_paused {
        println!("  object deletions paused: {why}");
    }
}
