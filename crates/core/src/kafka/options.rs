//! The librdkafka passthrough: any librdkafka property for every Kafka client of the process
//! (the consumers, the producers, the start-up topic check, `sluice dlq`). Sources, later ones
//! winning: the `[kafka]` table of the settings file, then `--kafka-option KEY=VALUE`
//! (repeatable) or `KAFKA_OPTIONS` (comma-separated). TLS (`security.protocol=ssl`,
//! `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`, …) and SASL (`PLAIN`,
//! `SCRAM-SHA-256`, `SCRAM-SHA-512`) are compiled in.
//!
//! The options are applied last, over what sluice derives from its own flags, except for the
//! keys the delivery guarantees rest on ([`PROTECTED`]), which are refused at start-up. Values
//! of keys that hold secrets ([`is_secret`]) never reach logs or error messages.

use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::sync::RwLock;

/// Keys sluice sets itself and a user may not change: the broker list has its own flag, and
/// the rest carry the delivery guarantees (manual commits after effects, acknowledged and
/// idempotent produces, the Java partitioner other producers agree with).
pub const PROTECTED: [&str; 8] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "acks",
    "enable.idempotence",
    "partitioner",
];

/// An option that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionError {
    #[error("Kafka option {0:?}: expected KEY=VALUE")]
    Malformed(String),
    #[error("Kafka option {0} cannot be changed: {1}")]
    Protected(String, &'static str),
}

/// Whether the value of `key` is a secret (passwords, private keys, OAuth configuration).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k == "ssl.key.pem"
        || k == "ssl_key"
        || k.starts_with("sasl.oauthbearer.config")
        || k == "sasl.username"
}

/// Parses `KEY=VALUE` pairs (surrounding spaces trimmed), refusing malformed and protected ones.
pub fn parse<S: AsRef<str>>(pairs: &[S]) -> Result<BTreeMap<String, String>, OptionError> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let pair = pair.as_ref().trim();
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                // The text may hold a secret: show only what comes before a `=`.
                OptionError::Malformed(pair.split('=').next().unwrap_or_default().to_owned())
            })?;
        check(k)?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Refuses a protected key.
pub fn check(key: &str) -> Result<(), OptionError> {
    if PROTECTED.contains(&key) {
        let why = if key.contains("broker") || key == "bootstrap.servers" {
            "use --kafka-brokers"
        } else if key == "group.id" {
            "use --consumer-group"
        } else {
            "sluice's delivery guarantees depend on it"
        };
        return Err(OptionError::Protected(key.to_owned(), why));
    }
    Ok(())
}

/// `key=value, …` with secret values replaced by `***`.
pub fn redacted(options: &BTreeMap<String, String>) -> String {
    options
        .iter()
        .map(|(k, v)| {
            if is_secret(k) {
                format!("{k}=***")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

static INSTALLED: RwLock<BTreeMap<String, String>> = RwLock::new(BTreeMap::new());

/// Makes `options` the ones every client created from now on gets.
pub fn install(options: BTreeMap<String, String>) {
    if !options.is_empty() {
        tracing::info!(options = %redacted(&options), "Kafka client options");
    }
    if let Ok(mut o) = INSTALLED.write() {
        *o = options;
    }
}

/// Applies the installed options to `config` (call it last, after sluice's own settings).
pub fn apply(config: &mut ClientConfig) {
    if let Ok(o) = INSTALLED.read() {
        for (k, v) in o.iter() {
            config.set(k, v);
        }
    }
}

/// The settings file's `[kafka]` table, then `flags` over it; refused keys are errors.
pub fn merge<S: AsRef<str>>(
    file: &BTreeMap<String, String>,
    flags: &[S],
) -> Result<BTreeMap<String, String>, OptionError> {
    let mut out = BTreeMap::new();
    for (k, v) in file {
        check(k)?;
        out.insert(k.clone(), v.clone());
    }
    out.extend(parse(flags)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_merges_and_refuses() {
        let file = BTreeMap::from([
            ("security.protocol".to_owned(), "ssl".to_owned()),
            ("linger.ms".to_owned(), "5".to_owned()),
        ]);
        let m = merge(&file, &[" linger.ms = 50 ", "sasl.password=a=b", ""]).unwrap_or_default();
        assert_eq!(m["linger.ms"], "50", "flags win over the file");
        assert_eq!(m["sasl.password"], "a=b", "a value may hold '='");
        assert_eq!(m["security.protocol"], "ssl");
        assert_eq!(
            parse(&["novalue"]),
            Err(OptionError::Malformed("novalue".into()))
        );
        assert_eq!(parse(&["=x"]), Err(OptionError::Malformed(String::new())));
        assert!(matches!(
            parse(&["enable.auto.commit=true"]),
            Err(OptionError::Protected(..))
        ));
        assert!(matches!(
            merge(
                &BTreeMap::from([("acks".to_owned(), "1".to_owned())]),
                &[] as &[&str]
            ),
            Err(OptionError::Protected(..))
        ));
    }

    #[test]
    fn secrets_never_show() {
        let m = parse(&[
            "sasl.password=hunter2",
            "ssl.key.password=k",
            "ssl.key.pem=PEM",
            "sasl.oauthbearer.config=principal=x secret=y",
            "sasl.mechanism=SCRAM-SHA-512",
        ])
        .unwrap_or_default();
        let shown = redacted(&m);
        for secret in ["hunter2", "=k", "PEM", "secret=y"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sasl.mechanism=SCRAM-SHA-512"));
        let err = parse(&["sasl.password"]).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("Kafka option \"sasl.password\": expected KEY=VALUE")
        );
    }
}
