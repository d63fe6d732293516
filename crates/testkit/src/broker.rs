//! A Kafka broker per test: the `mock-broker` binary (librdkafka's mock cluster) with its stdin
//! control channel, or the real cluster in `KAFKA_BROKERS` (topics then get unique names and
//! fault injection is unavailable).

use crate::process::Proc;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// A broker for one test.
pub struct Broker {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    control: Option<(Proc, ChildStdin, BufReader<ChildStdout>)>,
    names: HashMap<String, String>,
    suffix: Option<String>,
}

impl Broker {
    /// Starts a broker with `topics` (`(name, partitions)`). With `KAFKA_BROKERS` set, creates the
    /// topics there with a unique suffix instead; [`Broker::topic`] maps names either way.
    pub fn start(topics: &[(&str, i32)]) -> anyhow::Result<Broker> {
        match std::env::var("KAFKA_BROKERS") {
            Ok(b) if !b.is_empty() => Self::real(&b, topics),
            _ => Self::mock(topics),
        }
    }

    /// A broker someone else runs at `bootstrap`, topics under their own names (no fault
    /// injection).
    pub fn existing(bootstrap: &str) -> Broker {
        Broker {
            bootstrap: bootstrap.to_owned(),
            control: None,
            names: HashMap::new(),
            suffix: None,
        }
    }

    fn mock(topics: &[(&str, i32)]) -> anyhow::Result<Broker> {
        let mut cmd = Command::new(crate::paths::existing_bin("mock-broker")?);
        cmd.args(topics.iter().map(|(t, p)| format!("{t}:{p}")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut proc = Proc::spawn("mock-broker", cmd)?;
        let stdin = proc
            .child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let mut stdout = BufReader::new(
            proc.child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
        );
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let bootstrap = line.trim().to_owned();
        anyhow::ensure!(!bootstrap.is_empty(), "mock-broker printed no address");
        let names = topics
            .iter()
            .map(|(t, _)| (t.to_string(), t.to_string()))
            .collect();
        Ok(Broker {
            bootstrap,
            control: Some((proc, stdin, stdout)),
            names,
            suffix: None,
        })
    }

    fn real(bootstrap: &str, topics: &[(&str, i32)]) -> anyhow::Result<Broker> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let suffix = crate::unique("t");
        let names: HashMap<String, String> = topics
            .iter()
            .map(|(t, _)| (t.to_string(), format!("{t}-{suffix}")))
            .collect();
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|(t, p)| NewTopic::new(&names[*t], *p, TopicReplication::Fixed(1)))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let results = rt.block_on(admin.create_topics(&new, &AdminOptions::new()))?;
        for r in results {
            r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
        }
        Ok(Broker {
            bootstrap: bootstrap.to_owned(),
            control: None,
            names,
            suffix: Some(suffix),
        })
    }

    /// The real name of topic `name` on this broker.
    pub fn topic(&self, name: &str) -> String {
        self.names
            .get(name)
            .cloned()
            .unwrap_or_else(|| match &self.suffix {
                Some(s) => format!("{name}-{s}"),
                None => name.to_owned(),
            })
    }

    /// Whether fault injection (`down`, `up`, `errors`) is available.
    pub fn is_mock(&self) -> bool {
        self.control.is_some()
    }

    fn command(&mut self, cmd: &str) -> anyhow::Result<String> {
        let (_, stdin, stdout) = self
            .control
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("{cmd}: only the mock broker takes commands"))?;
        writeln!(stdin, "{cmd}")?;
        stdin.flush()?;
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        anyhow::ensure!(
            line.starts_with("ok"),
            "mock-broker answered {line:?} to {cmd:?}"
        );
        Ok(line.trim().to_owned())
    }

    /// Takes the broker down: clients see connection failures until [`Broker::up`].
    pub fn down(&mut self) -> anyhow::Result<()> {
        self.command("down").map(|_| ())
    }

    /// Brings the broker back.
    pub fn up(&mut self) -> anyhow::Result<()> {
        self.command("up").map(|_| ())
    }

    /// The next `count` requests of `api_key` fail with broker error `err`.
    pub fn errors(&mut self, api_key: i16, err: i32, count: usize) -> anyhow::Result<()> {
        self.command(&format!("errors {api_key} {err} {count}"))
            .map(|_| ())
    }

    /// Creates a topic (mock only).
    pub fn create_topic(&mut self, name: &str, partitions: i32) -> anyhow::Result<()> {
        self.command(&format!("create {name} {partitions}"))?;
        self.names.insert(name.to_owned(), name.to_owned());
        Ok(())
    }

    /// A producer configured like the pipeline's (lz4, acks=all).
    pub fn producer(&self) -> anyhow::Result<rdkafka::producer::FutureProducer> {
        Ok(rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "10000")
            .create()?)
    }

    /// A consumer in a fresh group reading from the beginning.
    pub fn consumer(&self) -> anyhow::Result<rdkafka::consumer::BaseConsumer> {
        Ok(rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", crate::unique("test-group"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()?)
    }

    /// Messages currently stored in `topic` (sum of high minus low watermarks).
    pub fn stored(&self, topic: &str) -> anyhow::Result<usize> {
        use rdkafka::consumer::Consumer;
        let consumer = self.consumer()?;
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut total = 0;
        for t in md.topics() {
            for p in t.partitions() {
                let (low, high) =
                    consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
                total += (high - low).max(0) as usize;
            }
        }
        Ok(total)
    }

    /// The `reason` header of every message now in the dead-letter topic `topic`, in order (empty
    /// for a message without one).
    pub fn dlq_reasons(&self, topic: &str) -> anyhow::Result<Vec<String>> {
        use rdkafka::message::{Headers, Message};
        Ok(self
            .read_all(topic, usize::MAX, Duration::from_secs(20))?
            .iter()
            .map(|m| {
                m.headers()
                    .and_then(|h| h.iter().find(|h| h.key == "reason").and_then(|h| h.value))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Reads up to `n` messages of `topic` from the beginning within `timeout`, never waiting
    /// for more than the topic holds when the read starts.
    pub fn read_all(
        &self,
        topic: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
        use rdkafka::consumer::Consumer;
        let n = n.min(self.stored(topic)?);
        let consumer = self.consumer()?;
        consumer.subscribe(&[topic])?;
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                out.push(m.detach());
            }
        }
        Ok(out)
    }
}
