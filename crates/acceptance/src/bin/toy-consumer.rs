//! A toy stage on the real consumer runtime, for the runtime's acceptance tests. It writes one
//! row per message into `toy_rows` (natural key: the message key) and reads the payload as
//! instructions:
//!   `ok`            insert the row
//!   `poison`        bad input (DLQ `invalid_field`)
//!   `flaky`         fails twice (per-message retry), then inserted
//!   `never`         always "not found yet" (DLQ `event_not_found` after the retries)
//!   `slow:<ms>`     sleeps, then inserted (a long batch)
//! An unreachable database is a dependency-wide failure.

use clap::Parser;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};
use sluice_core::app::{self, Context, Needs};
use sluice_core::cli::{CommonArgs, StageDefaults};
use sluice_core::failure::Classify;
use sluice_core::kafka::consumer::{self, Msg, RuntimeConfig, Stage, Verdict};
use sluice_core::messages::{DlqReason, Rejection};
use sluice_core::storage::{Db, DbError};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOY: StageDefaults = StageDefaults::new(
    "toy-consumer",
    "127.0.0.1:9199",
    "A consumer of the test bed: it writes rows and fails on demand.",
);

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Input topic.
    #[arg(long, env = "TOY_TOPIC", default_value = "toy")]
    topic: String,
    /// Circuit breaker: consecutive rejections that trip it.
    #[arg(long, env = "TOY_BREAKER", default_value_t = 1000)]
    breaker: u64,
}

struct Toy {
    db: Db,
    flaky: Mutex<HashMap<String, u32>>,
    /// Batches being processed now, and the most seen at once.
    in_flight: AtomicI64,
}

sluice_core::gauge_vec!(
    fn most_in_flight = "toy_batches_in_flight_max",
    "The most batches the toy stage has processed at once.",
    ["stage"]
);

enum Action {
    Insert,
    Verdict(Verdict),
}

impl Stage for Toy {
    async fn process(&self, batch: Vec<Arc<Msg>>) -> Vec<Verdict> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let most = most_in_flight().with_label_values(&["toy"]);
        if now > most.get() {
            most.set(now);
        }
        // Counted down however the batch ends (a panicking message unwinds through here).
        struct Done<'a>(&'a AtomicI64);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _done = Done(&self.in_flight);
        self.process_batch(batch).await
    }
}

impl Toy {
    async fn process_batch(&self, batch: Vec<Arc<Msg>>) -> Vec<Verdict> {
        let mut actions = Vec::with_capacity(batch.len());
        let mut sleep = 0u64;
        for m in &batch {
            let key = String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned();
            let payload = String::from_utf8_lossy(m.payload()).into_owned();
            actions.push(match payload.as_str() {
                p if p.starts_with("poison") => Action::Verdict(Verdict::Reject(Rejection::new(
                    DlqReason::InvalidField,
                    "poison",
                ))),
                // A bug that this one message triggers.
                "panic" => panic!("toy-consumer: a message that panics"),
                // A message the stage cannot get past although its dependencies answer.
                "stuck" => Action::Verdict(Verdict::Unavailable("always".into())),
                "never" => Action::Verdict(Verdict::Retry {
                    reason: DlqReason::EventNotFound,
                    detail: "never".into(),
                }),
                "flaky" => {
                    let mut f = self.flaky.lock().unwrap_or_else(|p| p.into_inner());
                    let n = f.entry(key).or_default();
                    *n += 1;
                    if *n <= 2 {
                        Action::Verdict(Verdict::Retry {
                            reason: DlqReason::RetryExhausted,
                            detail: "flaky".into(),
                        })
                    } else {
                        Action::Insert
                    }
                }
                p => {
                    if let Some(ms) = p.strip_prefix("slow:").and_then(|v| v.parse().ok()) {
                        sleep = sleep.max(ms);
                    }
                    Action::Insert
                }
            });
        }
        if sleep > 0 {
            tokio::time::sleep(Duration::from_millis(sleep)).await;
        }
        let rows: Vec<(String, i32, i64, String)> = batch
            .iter()
            .zip(&actions)
            .filter(|(_, a)| matches!(a, Action::Insert))
            .map(|(m, _)| {
                let key =
                    String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned();
                (m.topic.to_string(), m.partition, m.offset, key)
            })
            .collect();
        let written = if rows.is_empty() {
            Ok(())
        } else {
            self.db
                .run(move |c| {
                    c.transaction(|c| {
                        for (topic, partition, offset, key) in rows {
                            diesel::sql_query(
                                "INSERT INTO toy_rows (key, topic, partition, \"offset\") VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (key) DO UPDATE SET times = toy_rows.times + 1",
                            )
                            .bind::<Text, _>(key)
                            .bind::<Text, _>(topic)
                            .bind::<Integer, _>(partition)
                            .bind::<BigInt, _>(offset)
                            .execute(c)?;
                        }
                        Ok::<_, diesel::result::Error>(())
                    })?;
                    Ok::<_, DbError>(())
                })
                .await
        };
        let db_outcome = match written {
            Ok(()) => Verdict::Done,
            Err(e) if e.failure().is_outage() || matches!(e, DbError::Query(_)) => {
                Verdict::Unavailable(e.to_string())
            }
            Err(e) => Verdict::Retry {
                reason: DlqReason::RetryExhausted,
                detail: e.to_string(),
            },
        };
        actions
            .into_iter()
            .map(|a| match a {
                Action::Insert => db_outcome.clone(),
                Action::Verdict(o) => o,
            })
            .collect()
    }
}

fn main() -> ExitCode {
    let cli: Cli = sluice_core::cli::parse(&TOY);
    app::block_on(async move {
        let brokers = cli.common.kafka_brokers.clone().unwrap_or_default();
        let topics = vec![cli.topic.clone(), sluice_core::cli::dlq_topic(&cli.topic)];
        let mut config = RuntimeConfig::from_args(&cli.common, &brokers, vec![cli.topic.clone()]);
        config.breaker.max_consecutive = cli.breaker;
        let ctx = Context::start(
            TOY,
            cli.common,
            Needs {
                kafka: true,
                database: true,
                topics,
                // Its table is its own.
                schema: false,
            },
        )
        .await?;
        let db = ctx
            .db
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no database"))?;
        let toy = Toy {
            db,
            flaky: Mutex::new(HashMap::new()),
            in_flight: AtomicI64::new(0),
        };
        consumer::run(toy, config, ctx.health.clone(), ctx.shutdown.clone()).await?;
        Ok(())
    })
}
