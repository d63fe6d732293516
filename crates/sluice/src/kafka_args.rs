//! The Kafka flags of the subcommands that talk to Kafka (`edge`, `run`, `dlq`).

/// `--kafka-brokers` / `KAFKA_BROKERS` and the librdkafka passthrough.
#[derive(clap::Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port,...). `edge` needs them; without them `run` and `dlq`
    /// use the embedded transport in the database.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// A librdkafka property, KEY=VALUE (repeatable; in KAFKA_OPTIONS, comma-separated), e.g.
    /// security.protocol=sasl_ssl.
    #[arg(
        long = "kafka-option",
        env = "KAFKA_OPTIONS",
        value_delimiter = ',',
        value_name = "KEY=VALUE",
        hide_env_values = true
    )]
    pub kafka_options: Vec<String>,
}

impl KafkaArgs {
    /// Applies the librdkafka properties to every Kafka client the process creates.
    pub fn install_options(&self) -> anyhow::Result<()> {
        sluice_core::kafka::options::install(sluice_core::kafka::options::parse(
            &self.kafka_options,
        )?);
        Ok(())
    }
}
