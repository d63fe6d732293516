//! Issue-platform JSON, as the occurrence consumer reads it and as producer-shim splits a request
//! body into items: never a panic; what decodes has a storable project id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::messages::issue_platform::split_items;
use sluice_core::messages::IssuePlatformMessage;

fn check(bytes: &[u8]) {
    let _ = IssuePlatformMessage::project_of(bytes);
    if let Ok(m) = IssuePlatformMessage::decode(bytes) {
        let project_id = match &m {
            IssuePlatformMessage::Occurrence(o) => o.project_id,
            IssuePlatformMessage::StatusChange(s) => s.project_id,
        };
        assert!(project_id >= 1 && project_id <= i64::MAX as u64);
        assert!(IssuePlatformMessage::decode(&m.encode()).is_ok());
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(items) = split_items(data) {
        for item in items {
            check(item.to_string().as_bytes());
        }
    }
});
