//! Native crash reports sent as attachments (`event.minidump`, `event.applecrashreport`)
//! become error events, as Relay makes them: the envelope's event (or an empty one when the
//! envelope has none) gets a placeholder exception that says a crash report is attached and
//! was not processed. The report itself is kept as the event's attachment.
//!
//! The placeholder is the first exception (type `Minidump` or `AppleCrashReport`, value
//! `Invalid Minidump` or `Invalid Apple Crash Report`, mechanism of the same name, unhandled and
//! synthetic); exceptions the SDK sent stay after it. The platform becomes `native`, the type
//! `error`, and a missing or unknown level `fatal`. A minidump wins over an Apple crash report in the same envelope.
//! Crash reports are not symbolicated: grouping ignores the synthetic type, so unprocessed
//! reports of a project group by the placeholder's value.

use crate::envelope::{Item, ItemType};
use serde_json::{json, Map, Value};

/// The kind of crash report an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    Minidump,
    AppleCrashReport,
}

impl Crash {
    fn placeholder(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Crash::Minidump => ("Minidump", "Invalid Minidump", "minidump"),
            Crash::AppleCrashReport => (
                "AppleCrashReport",
                "Invalid Apple Crash Report",
                "applecrashreport",
            ),
        }
    }
}

/// Whether `item` is a crash report, which makes its envelope an error event.
pub fn is_crash_report(item: &Item) -> bool {
    item.ty == ItemType::Attachment
        && matches!(
            item.attachment_type.as_deref(),
            Some("event.minidump" | "event.applecrashreport")
        )
}

/// The crash report among `items` that decides the placeholder, if any.
pub fn kind<'a>(items: impl IntoIterator<Item = &'a Item> + Clone) -> Option<Crash> {
    let has = |ty: &str| {
        items
            .clone()
            .into_iter()
            .any(|i| i.ty == ItemType::Attachment && i.attachment_type.as_deref() == Some(ty))
    };
    if has("event.minidump") {
        Some(Crash::Minidump)
    } else if has("event.applecrashreport") {
        Some(Crash::AppleCrashReport)
    } else {
        None
    }
}

/// `event` (JSON) with the placeholder of `crash` written in. A payload that is not a JSON
/// object is returned unchanged: normalizing it refuses it with the usual reason.
pub fn with_placeholder(event: &[u8], crash: Crash) -> Vec<u8> {
    let Ok(Value::Object(mut e)) = serde_json::from_slice::<Value>(event) else {
        return event.to_vec();
    };
    write_placeholder(&mut e, crash);
    serde_json::to_vec(&Value::Object(e)).unwrap_or_else(|_| event.to_vec())
}

fn write_placeholder(e: &mut Map<String, Value>, crash: Crash) {
    let (ty, value, mechanism) = crash.placeholder();
    e.insert("platform".into(), json!("native"));
    // A crash is an error event whatever the SDK called it.
    e.remove("type");
    let level = crate::normalize::level(e.get("level"), "fatal");
    e.insert("level".into(), json!(level));
    let mut values = match e.remove("exception") {
        Some(Value::Array(values)) => values,
        Some(Value::Object(mut o)) => match o.remove("values") {
            Some(Value::Array(values)) => values,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    values.insert(
        0,
        json!({
            "type": ty,
            "value": value,
            "mechanism": {"type": mechanism, "handled": false, "synthetic": true},
        }),
    );
    e.insert("exception".into(), json!({ "values": values }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(ty: &str) -> Item {
        Item {
            ty: ItemType::Attachment,
            filename: None,
            content_type: None,
            attachment_type: Some(ty.to_owned()),
            payload: bytes::Bytes::new(),
        }
    }

    #[test]
    fn a_minidump_wins_over_an_apple_crash_report() {
        let items = [
            attachment("event.applecrashreport"),
            attachment("event.minidump"),
        ];
        assert_eq!(kind(items.iter()), Some(Crash::Minidump));
        assert_eq!(kind(items[..1].iter()), Some(Crash::AppleCrashReport));
        assert_eq!(kind([attachment("event.attachment")].iter()), None);
        assert!(is_crash_report(&items[0]));
        assert!(!is_crash_report(&attachment("event.view_hierarchy")));
    }

    #[test]
    fn the_placeholder_goes_first_and_keeps_what_the_sdk_sent() {
        let sent = json!({"level": "error", "platform": "cocoa",
            "exception": [{"type": "NSException", "value": "boom"}]});
        let out: Value = serde_json::from_slice(&with_placeholder(
            sent.to_string().as_bytes(),
            Crash::AppleCrashReport,
        ))
        .unwrap_or_default();
        assert_eq!(out["platform"], "native");
        assert_eq!(out["level"], "error");
        assert_eq!(out["exception"]["values"][0]["type"], "AppleCrashReport");
        assert_eq!(
            out["exception"]["values"][0]["value"],
            "Invalid Apple Crash Report"
        );
        assert_eq!(
            out["exception"]["values"][0]["mechanism"],
            json!({"type": "applecrashreport", "handled": false, "synthetic": true})
        );
        assert_eq!(out["exception"]["values"][1]["type"], "NSException");

        let empty: Value =
            serde_json::from_slice(&with_placeholder(b"{}", Crash::Minidump)).unwrap_or_default();
        assert_eq!(empty["level"], "fatal");
        let odd: Value = serde_json::from_slice(&with_placeholder(
            br#"{"type": "transaction", "level": "loud", "exception": {"values": "x"}}"#,
            Crash::Minidump,
        ))
        .unwrap_or_default();
        assert_eq!(odd["level"], "fatal");
        assert!(odd.get("type").is_none());
        assert_eq!(odd["exception"]["values"].as_array().map(Vec::len), Some(1));
        assert_eq!(empty["exception"]["values"][0]["value"], "Invalid Minidump");
        assert_eq!(with_placeholder(b"[1]", Crash::Minidump), b"[1]".to_vec());
    }
}
