//! Deterministic identifiers: every id the pipeline derives is a uuid5 in one fixed
//! namespace, so replaying a topic derives the same ids and dedupes by them. Ids are rendered as
//! 32 lowercase hex characters without hyphens, like Sentry's event ids.

use md5::{Digest, Md5};
use uuid::Uuid;

/// The fixed namespace of every derived id. Changing it changes every derived id: never do that.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x5c1d_7a0e_2f4b_4e8a_9d3c_6b1e_0a7f_4c21);

/// An id string that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a UUID: {0:?}")]
pub struct InvalidUuid(pub String);

/// Parses a UUID written with or without hyphens, in any case, and renders it as 32 lowercase hex
/// characters (Sentry's `uuid_hex`).
pub fn uuid_hex(value: &str) -> Result<String, InvalidUuid> {
    Uuid::try_parse(value.trim())
        .map(|u| u.simple().to_string())
        .map_err(|_| InvalidUuid(value.to_owned()))
}

/// Lowercase hex MD5 of the UTF-8 bytes of `value` (Sentry's `md5hex`), used for fingerprint hashes.
pub fn md5_hex(value: &str) -> String {
    hex::encode(Md5::digest(value.as_bytes()))
}

/// Lowercase hex MD5 of raw bytes; the id of a legacy status change that carries none.
pub fn md5_hex_bytes(value: &[u8]) -> String {
    hex::encode(Md5::digest(value))
}

fn derive(name: &str) -> String {
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
        .simple()
        .to_string()
}

/// Id of the error occurrence produced for an error/default event: `err:{project_id}:{event_id}`.
pub fn error_occurrence_id(project_id: u64, event_id: &str) -> String {
    derive(&format!("err:{project_id}:{event_id}"))
}

/// Id of the feedback event shimmed from a user report: `ur:{project_id}:{report event_id}`.
/// Never the report's own event id, so the feedback event cannot collide with the error event.
pub fn shimmed_feedback_event_id(project_id: u64, report_event_id: &str) -> String {
    derive(&format!("ur:{project_id}:{report_event_id}"))
}

/// Occurrence id (also used as the fingerprint) of the issue created for one feedback event:
/// `fb:{project_id}:{feedback event_id}`. One issue per feedback, stable across replays.
pub fn feedback_occurrence_id(project_id: u64, feedback_event_id: &str) -> String {
    derive(&format!("fb:{project_id}:{feedback_event_id}"))
}

/// Id of the status change that ignores a spam feedback issue: `spam:{feedback occurrence id}`.
pub fn spam_status_change_id(feedback_occurrence_id: &str) -> String {
    derive(&format!("spam:{feedback_occurrence_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_hex_normalises_case_and_hyphens() {
        assert_eq!(
            uuid_hex("145A873A-D148-45F8-8370-B13BC3A3FFB4").as_deref(),
            Ok("145a873ad14845f88370b13bc3a3ffb4")
        );
        assert_eq!(
            uuid_hex("606f3c2bc036486eac417841ebfbf7f0").as_deref(),
            Ok("606f3c2bc036486eac417841ebfbf7f0")
        );
        assert!(uuid_hex("not-a-uuid").is_err());
        assert!(uuid_hex("").is_err());
    }

    #[test]
    fn md5_matches_sentry_fingerprint_hashes() {
        assert_eq!(md5_hex("touch-id"), "85345ea2b9abf72d3d7a39737524235c");
        assert_eq!(md5_hex("group-1"), "1bbe946fd26759c742d7642ba8474397");
    }

    #[test]
    fn derived_ids_are_stable_distinct_and_versioned() {
        let event = "606f3c2bc036486eac417841ebfbf7f0";
        let err = error_occurrence_id(42, event);
        assert_eq!(err, error_occurrence_id(42, event));
        assert_eq!(err.len(), 32);
        assert_ne!(err, error_occurrence_id(43, event));
        let ur = shimmed_feedback_event_id(42, event);
        let fb = feedback_occurrence_id(42, event);
        assert_ne!(ur, err);
        assert_ne!(ur, event);
        assert_ne!(fb, ur);
        let spam = spam_status_change_id(&fb);
        assert_ne!(spam, fb);
        for id in [&err, &ur, &fb, &spam] {
            let parsed = Uuid::try_parse(id).map(|u| u.get_version_num());
            assert_eq!(parsed, Ok(5), "{id} is a uuid5");
        }
        // Pinned (computed independently): a change of namespace or name format fails here,
        // because it would change every id already stored.
        assert_eq!(err, "f01dae84bf9553df9fbc9c13c1d79331");
    }
}
