//! The NUL and number normalisation of JSON text: same length, and text that parsed still parses
//! with no NUL left in its strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::messages::validate::normalise_json_text;

fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(has_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    let mut copy = data.to_vec();
    normalise_json_text(&mut copy);
    assert_eq!(copy.len(), data.len());
    if parsed {
        let v: serde_json::Value = serde_json::from_slice(&copy).expect("normalised text parses");
        assert!(!has_nul(&v));
    }
});
