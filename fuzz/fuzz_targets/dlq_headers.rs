//! Dead-letter provenance headers read back (`sluice dlq` and replays rely on them): never a
//! panic, and what parses writes back to the same headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::messages::DlqHeaders;

fuzz_target!(|data: &[u8]| {
    // Pairs separated by 0xff, key and value by 0xfe.
    let pairs: Vec<(String, Vec<u8>)> = data
        .split(|b| *b == 0xff)
        .map(|p| {
            let mut it = p.splitn(2, |b| *b == 0xfe);
            let k = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
            (k, it.next().unwrap_or_default().to_vec())
        })
        .collect();
    if let Some(h) = DlqHeaders::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice()))) {
        let again = h.to_pairs();
        let back = DlqHeaders::from_pairs(again.iter().map(|(k, v)| (*k, v.as_slice())));
        assert_eq!(back.as_ref().map(|b| (&b.original_topic, b.original_offset, b.reason)),
            Some((&h.original_topic, h.original_offset, h.reason)));
    }
});
