//! Dead-letter messages: the original key, value and headers, plus headers that say
//! where the message came from and why it was rejected.

use std::fmt;

/// Header: the topic the message was read from.
pub const ORIGINAL_TOPIC: &str = "original_topic";
/// Header: its partition, decimal.
pub const ORIGINAL_PARTITION: &str = "original_partition";
/// Header: its offset, decimal.
pub const ORIGINAL_OFFSET: &str = "original_offset";
/// Header: one of the [`DlqReason`] strings.
pub const REASON: &str = "reason";
/// Header: a human-readable detail, at most [`MAX_DETAIL_BYTES`] bytes.
pub const ERROR_DETAIL: &str = "error_detail";
/// Upper bound of the `error_detail` header.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// Why a message was dead-lettered. The strings are a contract and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DlqReason {
    /// Not msgpack/JSON, or truncated.
    Undecodable,
    /// A `type` or `payload_type` this pipeline does not handle.
    UnsupportedType,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or an invalid value.
    InvalidField,
    /// The embedded or stored event is not acceptable.
    InvalidEvent,
    /// Ids that must agree do not (event id vs. payload, project vs. event).
    IdMismatch,
    /// The occurrence names a group type that is not registered or not allowed.
    UnknownGroupType,
    /// The event an occurrence refers to never appeared within the retry budget.
    EventNotFound,
    /// A per-message failure persisted through every attempt.
    RetryExhausted,
    /// A value too large to store, index or produce (an id longer than an index row, a message
    /// over the broker's limit).
    TooLarge,
}

impl DlqReason {
    /// Every reason, for metric pre-registration and docs.
    pub const ALL: [DlqReason; 10] = [
        Self::Undecodable,
        Self::UnsupportedType,
        Self::MissingField,
        Self::InvalidField,
        Self::InvalidEvent,
        Self::IdMismatch,
        Self::UnknownGroupType,
        Self::EventNotFound,
        Self::RetryExhausted,
        Self::TooLarge,
    ];

    /// The wire string of the `reason` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::UnsupportedType => "unsupported_type",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::InvalidEvent => "invalid_event",
            Self::IdMismatch => "id_mismatch",
            Self::UnknownGroupType => "unknown_group_type",
            Self::EventNotFound => "event_not_found",
            Self::RetryExhausted => "retry_exhausted",
            Self::TooLarge => "too_large",
        }
    }

    /// Parses a `reason` header value.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }
}

impl fmt::Display for DlqReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message judged bad input: the reason and a short detail for the DLQ.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// Why.
    pub reason: DlqReason,
    /// What exactly (truncated to [`MAX_DETAIL_BYTES`] when written).
    pub detail: String,
}

impl Rejection {
    /// A rejection with a reason and detail.
    pub fn new(reason: DlqReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// The provenance headers the DLQ adds to a message, in wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqHeaders {
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    pub reason: DlqReason,
    pub error_detail: String,
}

impl DlqHeaders {
    /// Header pairs to append after the original headers; `error_detail` is cut to at most
    /// [`MAX_DETAIL_BYTES`] on a character boundary.
    pub fn to_pairs(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (ORIGINAL_TOPIC, self.original_topic.as_bytes().to_vec()),
            (
                ORIGINAL_PARTITION,
                self.original_partition.to_string().into_bytes(),
            ),
            (
                ORIGINAL_OFFSET,
                self.original_offset.to_string().into_bytes(),
            ),
            (REASON, self.reason.as_str().as_bytes().to_vec()),
            (
                ERROR_DETAIL,
                truncate_utf8(&self.error_detail, MAX_DETAIL_BYTES)
                    .as_bytes()
                    .to_vec(),
            ),
        ]
    }

    /// Reads the provenance headers back from a DLQ message's headers (last value wins).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<Self> {
        let (mut topic, mut partition, mut offset, mut reason, mut detail) =
            (None, None, None, None, None);
        for (k, v) in pairs {
            let text = std::str::from_utf8(v).ok();
            match k {
                ORIGINAL_TOPIC => topic = text.map(str::to_owned),
                ORIGINAL_PARTITION => partition = text.and_then(|t| t.parse().ok()),
                ORIGINAL_OFFSET => offset = text.and_then(|t| t.parse().ok()),
                REASON => reason = text.and_then(DlqReason::parse),
                ERROR_DETAIL => detail = text.map(str::to_owned),
                _ => {}
            }
        }
        Some(DlqHeaders {
            original_topic: topic?,
            original_partition: partition?,
            original_offset: offset?,
            reason: reason?,
            error_detail: detail.unwrap_or_default(),
        })
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for r in DlqReason::ALL {
            assert_eq!(DlqReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(DlqReason::parse("bogus"), None);
    }

    #[test]
    fn headers_round_trip_and_detail_is_bounded() {
        let h = DlqHeaders {
            original_topic: "ingest-events".into(),
            original_partition: 3,
            original_offset: 12345,
            reason: DlqReason::MissingField,
            error_detail: "é".repeat(700),
        };
        let pairs = h.to_pairs();
        let detail = &pairs
            .iter()
            .find(|(k, _)| *k == ERROR_DETAIL)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(detail.len() <= MAX_DETAIL_BYTES && detail.len() >= MAX_DETAIL_BYTES - 1);
        assert!(std::str::from_utf8(detail).is_ok());
        let back = DlqHeaders::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_slice())));
        let back = back.unwrap_or_else(|| panic!("headers parse"));
        assert_eq!(back.original_partition, 3);
        assert_eq!(back.original_offset, 12345);
        assert_eq!(back.reason, DlqReason::MissingField);
        assert_eq!(back.original_topic, "ingest-events");
    }
}
