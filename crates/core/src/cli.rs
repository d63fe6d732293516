//! The command line every binary shares: every flag has an environment variable and
//! is accepted before or after the subcommand. Per-binary defaults (metrics address, consumer
//! group) are filled in by [`parse`].

use clap::{Args, CommandFactory, FromArgMatches, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags common to all four binaries.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Kafka bootstrap servers (host:port,...). Required by the consumers on the Kafka transport;
    /// optional for producer-shim.
    #[arg(long, env = "KAFKA_BROKERS", global = true)]
    pub kafka_brokers: Option<String>,

    /// Where the topics are: `kafka` (KAFKA_BROKERS), or `postgres`, the embedded transport in
    /// the database of DATABASE_URL (small installations without Kafka).
    #[arg(long, env = "TRANSPORT", global = true, value_enum, default_value_t = Transport::Kafka)]
    pub transport: Transport,

    /// A librdkafka property for every Kafka client, KEY=VALUE (repeatable; in KAFKA_OPTIONS,
    /// comma-separated), e.g. security.protocol=sasl_ssl. Overrides the settings file's [kafka].
    #[arg(
        long = "kafka-option",
        env = "KAFKA_OPTIONS",
        global = true,
        value_delimiter = ',',
        value_name = "KEY=VALUE",
        hide_env_values = true
    )]
    pub kafka_options: Vec<String>,

    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/sluice.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Attachment storage: s3://bucket/prefix (AWS_* variables configure the client) or file:///dir.
    #[arg(
        long,
        env = "OBJECT_STORE_URL",
        global = true,
        default_value = "file://./data/objects"
    )]
    pub object_store_url: String,

    /// TOML file with the global settings (SLUICE_<SECTION>__<KEY> variables override it).
    #[arg(long = "config", env = "CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Kafka consumer group.
    #[arg(long, env = "CONSUMER_GROUP", global = true)]
    pub consumer_group: Option<String>,

    /// Where to start when the group has no committed offset, or its offset is out of range.
    #[arg(long, env = "AUTO_OFFSET_RESET", global = true, value_enum, default_value_t = OffsetReset::Earliest)]
    pub auto_offset_reset: OffsetReset,

    /// Largest batch handed to a stage.
    #[arg(long, env = "MAX_BATCH_SIZE", global = true, default_value_t = 1000)]
    pub max_batch_size: usize,

    /// Payload bytes at which a batch is cut even before `--max-batch-size` messages: with one
    /// batch in flight and one filling, a stage buffers at most twice this (plus librdkafka's
    /// 8 MiB prefetch), whatever the message sizes, and a stage that prepares the next batch
    /// (feedback, ingest) holds a decoded copy of it besides.
    #[arg(long, env = "MAX_BATCH_BYTES", global = true, default_value_t = 3 * 1024 * 1024)]
    pub max_batch_bytes: usize,

    /// Members of the consumer group this process runs on Kafka, each with its own partitions,
    /// batch in flight and prefetch (the byte budgets below and the prefetch are divided between
    /// them, so memory stays bounded as with one): one member's batch is processed while
    /// another's waits on the database, the object store or the broker. Ordering per partition
    /// is unchanged. The embedded transport runs one.
    #[arg(long, env = "CONSUMERS", global = true, default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub consumers: u16,

    /// Longest time a batch may wait to fill, in milliseconds.
    #[arg(long, env = "MAX_BATCH_TIME_MS", global = true, default_value_t = 1000)]
    pub max_batch_time_ms: u64,

    /// How long a buffer waits for more messages when the stage is idle (no batch in flight),
    /// in milliseconds: 0 hands it over at once, so light load is not delayed by the batch time.
    #[arg(long, env = "BATCH_LINGER_MS", global = true, default_value_t = 0)]
    pub batch_linger_ms: u64,

    /// Kafka max.poll.interval.ms.
    #[arg(
        long,
        env = "MAX_POLL_INTERVAL_MS",
        global = true,
        default_value_t = 300_000
    )]
    pub max_poll_interval_ms: u64,

    /// Kafka session.timeout.ms.
    #[arg(
        long,
        env = "SESSION_TIMEOUT_MS",
        global = true,
        default_value_t = 45_000
    )]
    pub session_timeout_ms: u64,

    /// Kafka heartbeat.interval.ms.
    #[arg(
        long,
        env = "HEARTBEAT_INTERVAL_MS",
        global = true,
        default_value_t = 3_000
    )]
    pub heartbeat_interval_ms: u64,

    /// Seconds a consumer may hold the same batch while its dependencies answer before it reports
    /// itself stuck: `/health/live` then fails so the orchestrator restarts it (an outage alone
    /// never does). 0 = never.
    #[arg(long, env = "STUCK_AFTER_SECS", global = true, default_value_t = 300)]
    pub stuck_after_secs: u64,

    /// File touched on every loop iteration while the process is alive and not stuck.
    #[arg(long, env = "HEALTHCHECK_FILE_PATH", global = true)]
    pub healthcheck_file_path: Option<PathBuf>,

    /// Address serving /metrics, /health/live and /health/ready.
    #[arg(long, env = "METRICS_ADDR", global = true)]
    pub metrics_addr: Option<SocketAddr>,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing directives, e.g. "info" or "info,sluice_core=debug").
    #[arg(long, env = "LOG_LEVEL", global = true, default_value = "info")]
    pub log_level: String,

    #[command(flatten)]
    pub topics: TopicArgs,
}

/// Topic names; every one can be overridden. DLQs are `<input topic>-dlq`.
#[derive(Args, Debug, Clone)]
pub struct TopicArgs {
    /// Relay's events topic.
    #[arg(
        long,
        env = "EVENTS_TOPIC",
        global = true,
        default_value = "ingest-events"
    )]
    pub events_topic: String,
    /// Relay's attachments topic (chunks, attachments, user reports, events with attachments).
    #[arg(
        long,
        env = "ATTACHMENTS_TOPIC",
        global = true,
        default_value = "ingest-attachments"
    )]
    pub attachments_topic: String,
    /// Feedback events (Relay's and user reports shimmed by ingest-consumer).
    #[arg(
        long,
        env = "FEEDBACK_TOPIC",
        global = true,
        default_value = "ingest-feedback-events"
    )]
    pub feedback_topic: String,
    /// Issue-platform occurrences and status changes.
    #[arg(
        long,
        env = "OCCURRENCES_TOPIC",
        global = true,
        default_value = "ingest-occurrences"
    )]
    pub occurrences_topic: String,
    /// Outcomes.
    #[arg(
        long,
        env = "OUTCOMES_TOPIC",
        global = true,
        default_value = "outcomes"
    )]
    pub outcomes_topic: String,
    /// Separate topic for billing outcomes (ACCEPTED, RATE_LIMITED); unset = the outcomes topic.
    #[arg(long, env = "OUTCOMES_BILLING_TOPIC", global = true)]
    pub outcomes_billing_topic: Option<String>,
}

/// The DLQ of an input topic.
pub fn dlq_topic(input: &str) -> String {
    format!("{input}-dlq")
}

/// `--auto-offset-reset`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail instead of resetting.
    Error,
}

impl OffsetReset {
    /// The librdkafka `auto.offset.reset` value.
    pub fn as_kafka(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
            OffsetReset::Error => "error",
        }
    }
}

/// `--transport`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Kafka,
    Postgres,
}

/// `--log-format`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What differs between the binaries' command lines.
#[derive(Debug, Clone, Copy)]
pub struct StageDefaults {
    /// Binary name.
    pub name: &'static str,
    /// Default `--metrics-addr`.
    pub metrics_addr: &'static str,
    /// Default `--consumer-group`.
    pub consumer_group: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
}

impl StageDefaults {
    /// A binary whose consumer group is its name.
    pub const fn new(name: &'static str, metrics_addr: &'static str, about: &'static str) -> Self {
        StageDefaults {
            name,
            metrics_addr,
            consumer_group: name,
            about,
        }
    }
}

/// Parses the process arguments into `T`, with the binary's defaults shown in `--help`.
/// Exits with clap's message and status on bad input, as clap does.
pub fn parse<T: CommandFactory + FromArgMatches>(defaults: &StageDefaults) -> T {
    parse_from(defaults, std::env::args_os())
}

/// [`parse`] over explicit arguments (tests).
pub fn parse_from<T, I, S>(defaults: &StageDefaults, args: I) -> T
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    try_parse_from(defaults, args).unwrap_or_else(|e| e.exit())
}

/// [`parse_from`] returning clap's error instead of exiting.
pub fn try_parse_from<T, I, S>(defaults: &StageDefaults, args: I) -> Result<T, clap::Error>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let cmd = command::<T>(defaults);
    let matches = cmd.try_get_matches_from(args)?;
    T::from_arg_matches(&matches)
}

/// The clap command of `T` with the binary's name and defaults (also used by docs checks).
pub fn command<T: CommandFactory>(defaults: &StageDefaults) -> clap::Command {
    T::command()
        .name(defaults.name)
        .bin_name(defaults.name)
        .about(defaults.about)
        .mut_arg("metrics_addr", |a| a.default_value(defaults.metrics_addr))
        .mut_arg("consumer_group", |a| {
            a.default_value(defaults.consumer_group)
        })
}

impl CommonArgs {
    /// The metrics address (always set after [`parse`]).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9100)))
    }
    /// The consumer group (always set after [`parse`]).
    pub fn consumer_group(&self) -> &str {
        self.consumer_group.as_deref().unwrap_or("sluice")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: Option<Cmd>,
    }
    #[derive(Subcommand, Debug, PartialEq)]
    enum Cmd {
        Run,
        Migrate,
    }

    const D: StageDefaults = StageDefaults {
        name: "test-stage",
        metrics_addr: "127.0.0.1:9199",
        consumer_group: "test-group",
        about: "A test stage.",
    };

    #[test]
    fn defaults_per_binary_and_flags_after_subcommand() {
        let cli: Cli = try_parse_from(
            &D,
            [
                "x",
                "run",
                "--max-batch-size",
                "7",
                "--kafka-brokers",
                "k:1",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.cmd, Some(Cmd::Run));
        assert_eq!(cli.common.max_batch_size, 7);
        assert_eq!(cli.common.kafka_brokers.as_deref(), Some("k:1"));
        assert_eq!(cli.common.metrics_addr().to_string(), "127.0.0.1:9199");
        assert_eq!(cli.common.consumer_group(), "test-group");
        assert_eq!(cli.common.auto_offset_reset, OffsetReset::Earliest);
        assert_eq!(cli.common.topics.feedback_topic, "ingest-feedback-events");
        assert_eq!(
            dlq_topic(&cli.common.topics.events_topic),
            "ingest-events-dlq"
        );
        let bad: Result<Cli, _> = try_parse_from(&D, ["x", "--metrics-addr", "nope"]);
        assert!(bad.is_err());
    }

    #[test]
    fn every_flag_has_an_env_var() {
        let cmd = command::<Cli>(&D);
        for arg in cmd.get_arguments() {
            if arg.get_long().is_some() && !matches!(arg.get_id().as_str(), "help" | "version") {
                assert!(
                    arg.get_env().is_some(),
                    "--{:?} has no env var",
                    arg.get_long()
                );
            }
        }
    }
}
