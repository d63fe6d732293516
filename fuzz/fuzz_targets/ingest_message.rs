//! Relay's msgpack ingest messages: never a panic; what decodes obeys the bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::messages::validate::{is_header_value, MAX_ATTACHMENTS_PER_EVENT, MAX_ID_BYTES};
use sluice_core::messages::IngestMessage;

fuzz_target!(|data: &[u8]| {
    let _ = IngestMessage::project_of(data);
    let Ok(m) = IngestMessage::decode(data) else {
        return;
    };
    assert!(m.project_id() >= 1 && m.project_id() <= i64::MAX as u64);
    let attachments = match &m {
        IngestMessage::Event(e) => {
            assert!(e.attachments.len() <= MAX_ATTACHMENTS_PER_EVENT);
            e.attachments.iter().collect()
        }
        IngestMessage::Attachment(a) => vec![&a.attachment],
        IngestMessage::AttachmentChunk(c) => {
            assert!(!c.id.is_empty() && c.id.len() <= MAX_ID_BYTES);
            Vec::new()
        }
        IngestMessage::UserReport(_) => Vec::new(),
    };
    for a in attachments {
        assert!(!a.id.is_empty() && a.id.len() <= MAX_ID_BYTES);
        assert!(!a.name.contains('\0'));
        assert!(a.content_type.as_deref().is_none_or(is_header_value));
    }
    // What decodes encodes and decodes again.
    assert!(IngestMessage::decode(&m.encode()).is_ok());
});
