//! Dead-letter producer: the original key, value and headers plus provenance headers, sent to
//! `<input topic>-dlq` and acknowledged before the input offset is committed. A message the
//! broker refuses whole is sent truncated ([`send_truncated`]).

use super::consumer::Msg;
use super::producer::{ProduceError, Producer};
use crate::cli::dlq_topic;
use crate::messages::{DlqHeaders, Rejection};

/// Sends `msg` to its topic's DLQ with `rejection` as the reason.
pub async fn send(
    producer: &Producer,
    msg: &Msg,
    rejection: &Rejection,
) -> Result<(), ProduceError> {
    send_cut(producer, msg, rejection, None).await
}

/// Header of a truncated dead letter: the original value's length in bytes, decimal.
pub const TRUNCATED_FROM: &str = "truncated_from";
/// How much of the value a truncated dead letter keeps.
pub const TRUNCATED_VALUE_BYTES: usize = 64 * 1024;
/// Original headers are kept on a truncated dead letter only up to this size in all.
const TRUNCATED_HEADER_BYTES: usize = 16 * 1024;

/// Sends `msg` to its DLQ cut to its first [`TRUNCATED_VALUE_BYTES`], with the provenance
/// headers, a [`TRUNCATED_FROM`] header, and the original headers when they are small.
pub async fn send_truncated(
    producer: &Producer,
    msg: &Msg,
    rejection: &Rejection,
) -> Result<(), ProduceError> {
    send_cut(producer, msg, rejection, Some(TRUNCATED_VALUE_BYTES)).await
}

async fn send_cut(
    producer: &Producer,
    msg: &Msg,
    rejection: &Rejection,
    cut: Option<usize>,
) -> Result<(), ProduceError> {
    let provenance = DlqHeaders {
        original_topic: msg.topic.to_string(),
        original_partition: msg.partition,
        original_offset: msg.offset,
        reason: rejection.reason,
        error_detail: rejection.detail.clone(),
    }
    .to_pairs();
    let original_bytes: usize = msg.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    let keep_headers = cut.is_none() || original_bytes <= TRUNCATED_HEADER_BYTES;
    let mut headers: Vec<(&str, &[u8])> = if keep_headers {
        msg.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect()
    } else {
        Vec::new()
    };
    headers.extend(provenance.iter().map(|(k, v)| (*k, v.as_slice())));
    let payload = msg.payload();
    let length = payload.len().to_string();
    let (value, key) = match cut {
        Some(max) => {
            headers.push((TRUNCATED_FROM, length.as_bytes()));
            let key = msg.key.as_deref().map(|k| &k[..k.len().min(max)]);
            (&payload[..payload.len().min(max)], key)
        }
        None => (payload, msg.key.as_deref()),
    };
    producer
        .send(&dlq_topic(&msg.topic), key, value, &headers)
        .await
        .map(|_| ())
}
