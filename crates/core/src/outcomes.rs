//! Outcomes (design §3): produced and acknowledged before the input offset is committed, and
//! only when the effect was newly applied. Each outcome has a natural key recorded in
//! `emitted_outcomes` after the broker acknowledged it, so a replay does not bill twice. (A crash
//! between the acknowledgement and the record can repeat one outcome; nothing is ever lost.)

use crate::kafka::producer::{ProduceError, Producer};
use crate::messages::enums::Outcome;
use crate::messages::OutcomeMessage;
use crate::storage::{Db, DbError};
use diesel::prelude::*;
use diesel::sql_types::Text;

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
        let k = key.to_owned();
        let seen = self
            .db
            .run(move |c| {
                #[derive(QueryableByName)]
                struct One {
                    #[diesel(sql_type = diesel::sql_types::Integer)]
                    _one: i32,
                }
                let found =
                    diesel::sql_query("SELECT 1 AS _one FROM emitted_outcomes WHERE key = $1")
                        .bind::<Text, _>(&k)
                        .get_result::<One>(c)
                        .optional()?;
                Ok::<_, DbError>(found.is_some())
            })
            .await?;
        if seen {
            return Ok(false);
        }
        let billing = Outcome::from_u8(outcome.outcome).is_some_and(Outcome::is_billing);
        let topic = match (&self.billing_topic, billing) {
            (Some(t), true) => t.as_str(),
            _ => self.topic.as_str(),
        };
        self.producer
            .send(topic, None, &outcome.encode(), &[])
            .await?;
        let k = key.to_owned();
        self.db
            .run(move |c| {
                diesel::sql_query(
                    "INSERT INTO emitted_outcomes (key) VALUES ($1) ON CONFLICT DO NOTHING",
                )
                .bind::<Text, _>(&k)
                .execute(c)?;
                Ok::<_, DbError>(())
            })
            .await?;
        Ok(true)
    }
}
