//! Timestamps as they appear on the wire: epoch seconds (integer or float) or RFC 3339 strings
//! with or without an offset (no offset means UTC).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A point in time accepted as epoch seconds or an RFC 3339 / ISO 8601 string; serialized as
/// epoch seconds (float), Sentry's `to_dict` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

/// A timestamp that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp: {0}")]
pub struct InvalidTimestamp(pub String);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Timestamp(Utc::now())
    }

    /// From epoch seconds; rejects NaN, infinities and values outside chrono's range.
    pub fn from_epoch_secs(secs: f64) -> Result<Self, InvalidTimestamp> {
        if !secs.is_finite() {
            return Err(InvalidTimestamp(secs.to_string()));
        }
        let whole = secs.floor();
        let nanos = ((secs - whole) * 1e9).round().min(999_999_999.0) as u32;
        if whole < i64::MIN as f64 || whole > i64::MAX as f64 {
            return Err(InvalidTimestamp(secs.to_string()));
        }
        DateTime::from_timestamp(whole as i64, nanos)
            .map(Timestamp)
            .ok_or_else(|| InvalidTimestamp(secs.to_string()))
            .and_then(Timestamp::bounded)
    }

    /// Years 1 to 9999 only: what every store and format downstream can hold (PostgreSQL's
    /// `timestamptz` and RFC 3339 included).
    fn bounded(self) -> Result<Self, InvalidTimestamp> {
        use chrono::Datelike;
        if (1..=9999).contains(&self.0.year()) {
            Ok(self)
        } else {
            Err(InvalidTimestamp(format!(
                "{} is outside years 1 to 9999",
                self.0
            )))
        }
    }

    /// From an RFC 3339 string, or an ISO 8601 date-time without offset (taken as UTC).
    pub fn parse_str(value: &str) -> Result<Self, InvalidTimestamp> {
        let v = value.trim();
        if let Ok(dt) = DateTime::parse_from_rfc3339(v) {
            return Timestamp(dt.with_timezone(&Utc)).bounded();
        }
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
            if let Ok(naive) = NaiveDateTime::parse_from_str(v, fmt) {
                return Timestamp(Utc.from_utc_datetime(&naive)).bounded();
            }
        }
        Err(InvalidTimestamp(value.to_owned()))
    }

    /// Epoch seconds with sub-second precision.
    pub fn epoch_secs(&self) -> f64 {
        self.0.timestamp() as f64 + f64::from(self.0.timestamp_subsec_nanos()) / 1e9
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.epoch_secs())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("epoch seconds or an RFC 3339 date-time string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Timestamp::from_epoch_secs(v as f64).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                Timestamp::from_epoch_secs(v as f64).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                Timestamp::from_epoch_secs(v).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_str(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// When an event happened: its `timestamp` (epoch seconds or RFC 3339), else `fallback`.
pub fn event_time(data: &serde_json::Value, fallback: Timestamp) -> Timestamp {
    use serde_json::Value;
    match data.get("timestamp") {
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(|s| Timestamp::from_epoch_secs(s).ok())
            .unwrap_or(fallback),
        Some(Value::String(s)) => Timestamp::parse_str(s).unwrap_or(fallback),
        _ => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_numbers_and_strings() {
        let expected = Timestamp::from_epoch_secs(1_795_432_200.0).map(|t| t.0);
        for json in [
            "1795432200",
            "1795432200.0",
            "\"2026-11-23T11:10:00Z\"",
            "\"2026-11-23T11:10:00+00:00\"",
            "\"2026-11-23T12:10:00+01:00\"",
            "\"2026-11-23T11:10:00\"",
            "\"2026-11-23T11:10:00.000000\"",
        ] {
            let ts: Timestamp =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(Ok(ts.0), expected, "{json}");
        }
    }

    #[test]
    fn keeps_fractions_and_rejects_garbage() {
        let ts: Result<Timestamp, _> = serde_json::from_str("1795432200.041384");
        let secs = ts.map(|t| t.epoch_secs()).unwrap_or_default();
        assert!((secs - 1_795_432_200.041_384).abs() < 1e-6);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("true").is_err());
        assert!(Timestamp::from_epoch_secs(f64::NAN).is_err());
        assert!(Timestamp::from_epoch_secs(f64::INFINITY).is_err());
        // Beyond what PostgreSQL's timestamptz holds.
        assert!(Timestamp::from_epoch_secs(1e13).is_err());
        assert!(Timestamp::from_epoch_secs(-1e12).is_err());
        assert!(Timestamp::parse_str("+100000-01-01T00:00:00Z").is_err());
    }
}
