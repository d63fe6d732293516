//! Property tests of every decoder: arbitrary and mutated input never panics, and what is
//! accepted obeys the bounds of `messages::validate`; valid messages survive a round trip, with
//! NUL characters turned into U+FFFD.

use proptest::prelude::*;
use serde_json::{json, Value};
use sluice_core::messages::issue_platform::split_items;
use sluice_core::messages::validate::{self, normalise_json_text};
use sluice_core::messages::{
    AttachmentChunk, ChunkedAttachment, DlqHeaders, EventMessage, IngestMessage,
    IssuePlatformMessage, Timestamp,
};

fn ts(secs: u32) -> Timestamp {
    Timestamp::from_epoch_secs(f64::from(secs)).unwrap_or_else(|e| panic!("{e}"))
}

/// Checks the bounds every accepted ingest message must satisfy.
fn assert_bounded(m: &IngestMessage) {
    assert!(m.project_id() >= 1 && m.project_id() <= i64::MAX as u64);
    let check_att = |a: &ChunkedAttachment| {
        assert!(!a.id.is_empty() && a.id.len() <= validate::MAX_ID_BYTES);
        assert!(a.id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert!(a.name.len() <= validate::MAX_NAME_BYTES && !a.name.contains('\0'));
        if let Some(c) = &a.content_type {
            assert!(validate::is_header_value(c));
        }
    };
    match m {
        IngestMessage::Event(e) => {
            assert!(e.attachments.len() <= validate::MAX_ATTACHMENTS_PER_EVENT);
            e.attachments.iter().for_each(check_att);
            assert!(
                !e.payload.windows(6).any(|w| w == b"\\u0000") || {
                    // Only as an escaped backslash followed by text.
                    e.payload.windows(7).any(|w| w == b"\\\\u0000")
                }
            );
        }
        IngestMessage::Attachment(a) => check_att(&a.attachment),
        IngestMessage::AttachmentChunk(c) => {
            assert!(!c.id.is_empty() && c.id.len() <= validate::MAX_ID_BYTES);
            assert!(c.chunk_index < validate::MAX_CHUNKS);
        }
        IngestMessage::UserReport(_) => {}
    }
}

fn id_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

fn event_strategy() -> impl Strategy<Value = EventMessage> {
    (
        any::<String>(),
        1u64..=i64::MAX as u64,
        0u32..4_000_000_000,
        prop::collection::vec(
            (id_strategy(), any::<String>(), any::<Option<String>>()),
            0..4,
        ),
        any::<[u8; 16]>(),
    )
        .prop_map(|(message, project_id, secs, atts, id)| {
            let event_id = hex::encode(id);
            EventMessage {
                payload: json!({"event_id": event_id, "message": message})
                    .to_string()
                    .into_bytes(),
                start_time: ts(secs),
                event_id,
                project_id,
                remote_addr: None,
                attachments: atts
                    .into_iter()
                    .map(|(id, name, content_type)| ChunkedAttachment {
                        id,
                        name,
                        content_type,
                        attachment_type: "event.attachment".into(),
                        chunks: Some(1),
                        data: None,
                        stored_id: None,
                        size: None,
                        rate_limited: false,
                        retention_days: None,
                    })
                    .collect(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ingest_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = IngestMessage::decode(&bytes) {
            assert_bounded(&m);
        }
        let _ = IngestMessage::project_of(&bytes);
    }

    #[test]
    fn events_round_trip_with_nul_made_safe(e in event_strategy()) {
        let decoded = IngestMessage::decode(&IngestMessage::Event(e.clone()).encode());
        let Ok(IngestMessage::Event(d)) = decoded else {
            return Err(TestCaseError::fail(format!("{decoded:?}")));
        };
        assert_bounded(&IngestMessage::Event(d.clone()));
        let original: Value = serde_json::from_slice(&e.payload).unwrap_or_default();
        let back: Value = serde_json::from_slice(&d.payload).unwrap_or_default();
        let want = original["message"].as_str().unwrap_or_default().replace('\0', "\u{fffd}");
        prop_assert_eq!(back["message"].as_str(), Some(want.as_str()));
        prop_assert_eq!(d.event_id, e.event_id);
        prop_assert_eq!(d.project_id, e.project_id);
        prop_assert_eq!(d.attachments.len(), e.attachments.len());
        for (a, b) in d.attachments.iter().zip(&e.attachments) {
            prop_assert_eq!(&a.id, &b.id);
            prop_assert_eq!(validate::clean_text(&b.name, validate::MAX_NAME_BYTES)
                .unwrap_or_else(|| b.name.clone()), a.name.clone());
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        e in event_strategy(),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        truncate in any::<prop::sample::Index>(),
    ) {
        let mut bytes = IngestMessage::Event(e).encode();
        for (at, value) in cuts {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let keep = truncate.index(bytes.len() + 1);
        bytes.truncate(keep);
        if let Ok(m) = IngestMessage::decode(&bytes) {
            assert_bounded(&m);
        }
    }

    #[test]
    fn chunks_round_trip(id in id_strategy(), index in 0u32..1000, payload in prop::collection::vec(any::<u8>(), 0..64), eid in any::<[u8; 16]>()) {
        let c = AttachmentChunk { payload, event_id: hex::encode(eid), project_id: 42, id, chunk_index: index };
        let back = IngestMessage::decode(&IngestMessage::AttachmentChunk(c.clone()).encode());
        prop_assert_eq!(back, Ok(IngestMessage::AttachmentChunk(c)));
    }

    #[test]
    fn issue_platform_decoder_never_panics(text in ".{0,300}") {
        let _ = IssuePlatformMessage::decode(text.as_bytes());
        let _ = IssuePlatformMessage::project_of(text.as_bytes());
        if let Ok(items) = split_items(text.as_bytes()) {
            for item in items {
                let _ = IssuePlatformMessage::decode(item.to_string().as_bytes());
            }
        }
    }

    #[test]
    fn occurrences_keep_their_text_with_nul_made_safe(title in "[a-z\\x00é ]{1,40}", project_id in any::<u64>(), detect in any::<f64>()) {
        let o = json!({"id": "a".repeat(32), "project_id": project_id, "event_id": "b".repeat(32),
            "fingerprint": ["fp"], "issue_title": title, "subtitle": "s", "type": 1001,
            "detection_time": detect, "level": "error",
            "event": {"event_id": "b".repeat(32), "project_id": project_id, "platform": "python", "timestamp": 1}});
        match IssuePlatformMessage::decode(o.to_string().as_bytes()) {
            Ok(IssuePlatformMessage::Occurrence(occ)) => {
                prop_assert!(project_id >= 1 && project_id <= i64::MAX as u64);
                prop_assert_eq!(occ.issue_title, title.replace('\0', "\u{fffd}"));
                prop_assert!((1..=9999).contains(&chrono::Datelike::year(&occ.detection_time.0)));
            }
            Ok(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
            Err(_) => prop_assert!(project_id == 0 || project_id > i64::MAX as u64 || !detect.is_finite()
                || !(-62_135_596_800.0..253_402_300_800.0).contains(&detect)),
        }
    }

    #[test]
    fn json_text_normalisation_keeps_valid_json(s in any::<String>(), n in any::<f64>()) {
        let text = json!({"s": s, "n": n}).to_string();
        let mut bytes = text.clone().into_bytes();
        let fix = normalise_json_text(&mut bytes);
        prop_assert_eq!(bytes.len(), text.len());
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = s.replace('\0', "\u{fffd}");
        prop_assert_eq!(v["s"].as_str(), Some(want.as_str()));
        prop_assert_eq!(fix.nul, s.matches('\0').count());
    }

    #[test]
    fn dlq_headers_never_panic(pairs in prop::collection::vec((".{0,16}", prop::collection::vec(any::<u8>(), 0..32)), 0..8)) {
        let _ = DlqHeaders::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    }

    #[test]
    fn timestamps_are_bounded(secs in any::<f64>(), text in ".{0,40}") {
        for t in [Timestamp::from_epoch_secs(secs).ok(), Timestamp::parse_str(&text).ok()].into_iter().flatten() {
            prop_assert!((1..=9999).contains(&chrono::Datelike::year(&t.0)));
        }
    }
}
