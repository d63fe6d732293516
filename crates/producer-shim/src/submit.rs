//! Validation and delivery shared by the HTTP API and `send`: items are checked with the
//! occurrence consumer's own parser, then produced to Kafka (success = the broker acknowledged)
//! or, when Kafka is not configured or refuses / times out, processed directly through the
//! occurrence module (success = committed to PostgreSQL). Ordering between the two paths is not
//! guaranteed while the fallback is active.

use serde_json::Value;
use sluice_core::issues::{self, payload};
use sluice_core::kafka::producer::Producer;
use sluice_core::messages::IssuePlatformMessage;
use sluice_core::storage::Db;

/// What the items are expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Occurrences,
    StatusChanges,
    /// `payload_type` decides (absent = occurrence).
    Any,
}

/// What happened to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Acknowledged by the broker.
    Sent,
    /// Processed directly and committed.
    Processed,
    /// Neither path worked.
    Failed(String),
}

sluice_core::counter_vec!(
    fn items_metric = "sluice_shim_items_total",
    "Items handled by producer-shim, by path (kafka, direct) and result.",
    ["path", "result"]
);

/// Splits a body into items: one JSON object, a JSON array, or NDJSON.
pub fn split_items(body: &[u8]) -> Result<Vec<Value>, String> {
    sluice_core::messages::issue_platform::split_items(body)
}

/// Validates one item; the error is the reason to report.
pub fn validate(kind: Kind, item: Value) -> Result<payload::Record, String> {
    let Value::Object(mut map) = item else {
        return Err("item is not a JSON object".into());
    };
    let declared = map
        .get("payload_type")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let payload_type = match (kind, declared.as_deref()) {
        (Kind::Occurrences, None | Some("occurrence")) | (Kind::Any, None) => "occurrence",
        (Kind::StatusChanges, None | Some("status_change")) => "status_change",
        (Kind::Any, Some(t)) => match t {
            "occurrence" | "status_change" => t,
            other => {
                return Err(payload::PayloadError::UnknownPayloadType(other.to_owned()).to_string())
            }
        },
        (Kind::Occurrences, Some(t)) | (Kind::StatusChanges, Some(t)) => {
            return Err(format!(
                "payload_type {t:?} does not belong on this endpoint"
            ))
        }
    };
    map.insert("payload_type".into(), Value::from(payload_type));
    if payload_type == "status_change"
        && map
            .get("id")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        map.insert(
            "id".into(),
            Value::from(uuid::Uuid::new_v4().simple().to_string()),
        );
    }
    let bytes = serde_json::to_vec(&Value::Object(map)).map_err(|e| e.to_string())?;
    let message =
        IssuePlatformMessage::decode(&bytes).map_err(|r| format!("{}: {}", r.reason, r.detail))?;
    if let IssuePlatformMessage::Occurrence(o) = &message {
        issues::parse::parse(o).map_err(|r| format!("{}: {}", r.reason, r.detail))?;
    }
    Ok(payload::record(message))
}

/// Delivers validated records.
#[derive(Clone)]
pub struct Submitter {
    pub producer: Option<Producer>,
    pub topic: String,
    pub db: Option<Db>,
    /// The optional issue limits the direct path applies, as the occurrence consumer does.
    pub issue_settings: sluice_core::config::IssueSettings,
}

impl Submitter {
    /// Produces every record (in order), then processes directly, in order, those Kafka did not
    /// take. One status per record.
    pub async fn submit(&self, records: Vec<payload::Record>) -> Vec<Status> {
        let m = items_metric();
        let mut statuses: Vec<Option<Status>> = vec![None; records.len()];
        if let Some(producer) = &self.producer {
            let sends = records.iter().map(|r| r.send(producer, &self.topic));
            for (i, result) in futures::future::join_all(sends)
                .await
                .into_iter()
                .enumerate()
            {
                match result {
                    Ok(_) => {
                        m.with_label_values(&["kafka", "ok"]).inc();
                        statuses[i] = Some(Status::Sent);
                    }
                    Err(e) => {
                        m.with_label_values(&["kafka", "error"]).inc();
                        tracing::warn!(error = %e, "produce failed; falling back to direct processing");
                    }
                }
            }
        }
        for (i, record) in records.into_iter().enumerate() {
            if statuses[i].is_some() {
                continue;
            }
            statuses[i] = Some(match &self.db {
                None => Status::Failed("Kafka unavailable and no database configured".into()),
                Some(db) => match issues::process(db, &self.issue_settings, record.message).await {
                    Ok(applied) => {
                        m.with_label_values(&["direct", applied.label()]).inc();
                        Status::Processed
                    }
                    Err(e) => {
                        m.with_label_values(&["direct", "error"]).inc();
                        Status::Failed(e.to_string())
                    }
                },
            });
        }
        statuses
            .into_iter()
            .map(|s| s.unwrap_or(Status::Failed("not processed".into())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn occ() -> Value {
        json!({"id": "55f1e8a08d9c4b6b9a440f4d7c5b0d11", "project_id": 42, "event_id": "606f3c2bc036486eac417841ebfbf7f0",
               "fingerprint": ["fp"], "issue_title": "t", "subtitle": "s", "type": 6001, "detection_time": 1795432200})
    }

    #[test]
    fn bodies_split_into_items() {
        assert_eq!(
            split_items(occ().to_string().as_bytes()).map(|v| v.len()),
            Ok(1)
        );
        assert_eq!(
            split_items(json!([occ(), occ()]).to_string().as_bytes()).map(|v| v.len()),
            Ok(2)
        );
        let nd = format!("{}\n\n{}\n", occ(), occ());
        assert_eq!(split_items(nd.as_bytes()).map(|v| v.len()), Ok(2));
        assert!(split_items(b"{oops").is_err());
        assert!(split_items(b"42").is_err());
    }

    #[test]
    fn validation_mirrors_the_consumer() {
        assert!(validate(Kind::Occurrences, occ()).is_ok());
        let mut bad = occ();
        bad["id"] = json!("hi");
        assert!(validate(Kind::Occurrences, bad).is_err_and(|e| e.starts_with("invalid_field")));
        let mut mismatch = occ();
        mismatch["event"] = json!({"event_id": "00000000000000000000000000000001", "project_id": 42, "platform": "x"});
        assert!(validate(Kind::Occurrences, mismatch).is_err_and(|e| e.contains("id_mismatch")));
        let mut unknown = occ();
        unknown["payload_type"] = json!("bogus");
        assert_eq!(
            validate(Kind::Any, unknown).err(),
            Some("Unknown payload type: bogus".into())
        );
        let sc = json!({"project_id": 1, "fingerprint": ["g"], "new_status": 1});
        let r = validate(Kind::StatusChanges, sc).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(r.message, IssuePlatformMessage::StatusChange(ref s) if s.id.len() == 32));
        assert!(
            validate(Kind::StatusChanges, occ()).is_err(),
            "an occurrence is missing status fields"
        );
        assert!(validate(Kind::Occurrences, json!({"payload_type": "status_change"})).is_err());
    }
}
