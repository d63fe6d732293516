//! Dead-letter producer: the original key, value and headers plus provenance headers, sent to
//! `<input topic>-dlq` and acknowledged before the input offset is committed.

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
    let provenance = DlqHeaders {
        original_topic: msg.topic.to_string(),
        original_partition: msg.partition,
        original_offset: msg.offset,
        reason: rejection.reason,
        error_detail: rejection.detail.clone(),
    }
    .to_pairs();
    let mut headers: Vec<(&str, &[u8])> = msg
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    headers.extend(provenance.iter().map(|(k, v)| (*k, v.as_slice())));
    producer
        .send(
            &dlq_topic(&msg.topic),
            msg.key.as_deref(),
            msg.payload(),
            &headers,
        )
        .await
        .map(|_| ())
}
