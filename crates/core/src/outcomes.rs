//! Outcomes: produced and acknowledged before the input offset is committed, and
//! only when the effect was newly applied. Each outcome has a natural key recorded in
//! `emitted_outcomes` after the broker acknowledged it, so a replay does not bill twice. (A crash
//! between the acknowledgement and the record can repeat one outcome; nothing is ever lost.)

use crate::kafka::producer::{ProduceError, Producer};
use crate::messages::enums::Outcome;
use crate::messages::OutcomeMessage;
use crate::storage::{self, Db, DbError};

/// Longest natural key stored as written; longer keys (or keys holding NUL) are stored as
/// their md5, so no id a message carries can exceed the index's row size.
const MAX_KEY_BYTES: usize = 200;

fn storable_key(key: String) -> String {
    if key.len() <= MAX_KEY_BYTES && !key.contains('\0') {
        key
    } else {
        format!("md5:{}", crate::ids::md5_hex(&key))
    }
}

/// Where outcomes go.
#[derive(Clone)]
pub struct Outcomes {
    pub producer: Producer,
    pub topic: String,
    /// Billing outcomes (ACCEPTED, RATE_LIMITED) go here when set.
    pub billing_topic: Option<String>,
    pub db: Db,
}

/// A failed emission.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl Outcomes {
    /// Outcomes to the topics named by the common flags.
    pub fn new(producer: Producer, topics: &crate::cli::TopicArgs, db: Db) -> Outcomes {
        Outcomes {
            producer,
            topic: topics.outcomes_topic.clone(),
            billing_topic: topics.outcomes_billing_topic.clone(),
            db,
        }
    }

    /// Emits `outcome` unless one with `key` was emitted before; returns whether it was emitted.
    pub async fn emit_once(
        &self,
        key: &str,
        outcome: &OutcomeMessage,
    ) -> Result<bool, OutcomeError> {
        let n = self
            .emit_once_many(vec![(key.to_owned(), outcome.clone())])
            .await?;
        Ok(n == 1)
    }

    /// Emits each outcome whose key was not emitted before (a key repeated in `items` counts
    /// once): one lookup, the sends concurrently, one insert of the keys acknowledged. Returns
    /// how many were emitted. When a send fails, the keys that were acknowledged are still
    /// recorded before the error is returned, so a retry emits only the missing ones.
    pub async fn emit_once_many(
        &self,
        items: Vec<(String, OutcomeMessage)>,
    ) -> Result<usize, OutcomeError> {
        let mut wanted: Vec<(String, OutcomeMessage)> = Vec::with_capacity(items.len());
        let mut keys = std::collections::HashSet::with_capacity(items.len());
        for (k, o) in items {
            let k = storable_key(k);
            if keys.insert(k.clone()) {
                wanted.push((k, o));
            }
        }
        if wanted.is_empty() {
            return Ok(0);
        }
        let lookup: Vec<String> = wanted.iter().map(|(k, _)| k.clone()).collect();
        let seen = self
            .db
            .run(move |c| Ok::<_, DbError>(storage::outcomes::emitted(c, &lookup)?))
            .await?;
        wanted.retain(|(k, _)| !seen.contains(k));
        if wanted.is_empty() {
            return Ok(0);
        }
        let sends = futures::future::join_all(wanted.iter().map(|(_, o)| {
            let billing = Outcome::from_u8(o.outcome).is_some_and(Outcome::is_billing);
            let topic = match (&self.billing_topic, billing) {
                (Some(t), true) => t.as_str(),
                _ => self.topic.as_str(),
            };
            let payload = o.encode();
            async move { self.producer.send(topic, None, &payload, &[]).await }
        }))
        .await;
        let mut first_error = None;
        let mut acked = Vec::with_capacity(wanted.len());
        for ((k, _), sent) in wanted.into_iter().zip(sends) {
            match sent {
                Ok(_) => acked.push(k),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let emitted = acked.len();
        if !acked.is_empty() {
            self.db
                .run(move |c| Ok::<_, DbError>(storage::outcomes::record(c, &acked)?))
                .await?;
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(emitted),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_keys_are_stored_as_their_digest() {
        assert_eq!(
            super::storable_key("attachment:1:abc".into()),
            "attachment:1:abc"
        );
        let long = super::storable_key("x".repeat(3000));
        assert!(long.starts_with("md5:") && long.len() == 36, "{long}");
        assert_ne!(super::storable_key("a\0b".into()), "a\0b");
    }
}
