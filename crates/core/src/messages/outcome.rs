//! The outcomes topic's JSON.

use super::enums::Outcome;
use super::time::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One outcome. Serialized with Sentry's key set and timestamp format
/// (`%Y-%m-%dT%H:%M:%S.%fZ`, UTC); decoding tolerates Relay's extra keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeMessage {
    #[serde(serialize_with = "ser_ts", deserialize_with = "de_ts")]
    pub timestamp: Timestamp,
    #[serde(default)]
    pub org_id: u64,
    #[serde(default)]
    pub project_id: u64,
    #[serde(default)]
    pub key_id: Option<u64>,
    pub outcome: u8,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub category: Option<u16>,
    #[serde(default = "one")]
    pub quantity: u64,
}

fn one() -> u64 {
    1
}

fn ser_ts<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts.0.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

fn de_ts<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    Timestamp::deserialize(d)
}

impl OutcomeMessage {
    /// An outcome now, quantity 1, no key id.
    pub fn new(org_id: u64, project_id: u64, outcome: Outcome, category: u16) -> Self {
        OutcomeMessage {
            timestamp: Timestamp::now(),
            org_id,
            project_id,
            key_id: None,
            outcome: outcome.as_u8(),
            reason: None,
            event_id: None,
            category: Some(category),
            quantity: 1,
        }
    }

    /// JSON bytes, the Kafka value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_outcomes_decode() {
        for name in ["outcomes/000.bin", "outcomes/001.bin"] {
            let path = format!(
                "{}/tests/fixtures/relay-26.9.0/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let o: OutcomeMessage =
                serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((o.org_id, o.project_id, o.key_id), (1, 42, Some(4201)));
            assert!(o.reason.is_some());
        }
    }

    #[test]
    fn round_trip_in_sentry_format() {
        let mut o = OutcomeMessage::new(
            1,
            42,
            Outcome::Invalid,
            super::super::enums::data_category::ATTACHMENT,
        );
        o.timestamp =
            Timestamp::parse_str("2026-11-23T11:10:00.5Z").unwrap_or_else(|e| panic!("{e}"));
        o.reason = Some("missing_chunks".into());
        o.event_id = Some("606f3c2bc036486eac417841ebfbf7f0".into());
        let json: serde_json::Value = serde_json::from_slice(&o.encode()).unwrap_or_default();
        assert_eq!(json["timestamp"], "2026-11-23T11:10:00.500000Z");
        assert_eq!(json["outcome"], 3);
        assert_eq!(json["category"], 4);
        assert_eq!(json["quantity"], 1);
        assert_eq!(json["key_id"], serde_json::Value::Null);
        let back: OutcomeMessage = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, o);
    }
}
