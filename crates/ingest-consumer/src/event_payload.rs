//! Reading an event payload. The whole payload is checked exactly as a full parse would check
//! it (UTF-8, escapes and surrogates, numbers in range, nesting at most serde_json's limit), so
//! what is accepted can be stored as JSONB and parsed again by every reader; but only the
//! top-level fields this stage reads ([`wanted`]) are built into JSON values. The rest of an
//! event (breadcrumbs, contexts, extra, SDK details) is walked without being copied: building
//! and dropping it was the larger part of an error event's cost.

use crate::context::{reject, Step};
use crate::grouping;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sluice_core::ids;
use sluice_core::messages::{DlqReason, EventMessage};
use std::fmt;

/// Top-level fields the stage reads besides the grouping's: the id checked against the
/// message's, the type that routes the event, the key that receives its outcome, and the time
/// and level of its occurrence.
const STAGE_FIELDS: &[&str] = &["event_id", "type", "key_id", "timestamp", "level"];

/// Whether the top-level field `key` is read by this stage (and so parsed).
fn wanted(key: &str) -> bool {
    STAGE_FIELDS.contains(&key) || grouping::FIELDS.contains(&key)
}

/// Parses the event JSON: an object whose `event_id` matches the message's. Only the fields
/// the stage reads are returned.
pub fn parse(m: &EventMessage) -> Step<Map<String, Value>> {
    // Escaped NUL characters were replaced when the message was decoded
    // (`messages::validate`), so every event that parses can be stored.
    let data = match fields(&m.payload) {
        Ok(map) => map,
        // Whatever the partial reading refused, the full parse names it as it always has.
        Err(_) => match serde_json::from_slice::<Value>(&m.payload) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(reject(
                    DlqReason::InvalidEvent,
                    "event payload is not a JSON object",
                ))
            }
            Err(e) => {
                return Err(reject(
                    DlqReason::Undecodable,
                    format!("event payload: {e}"),
                ))
            }
        },
    };
    let Some(id) = data.get("event_id") else {
        return Err(reject(
            DlqReason::MissingField,
            "event payload without `event_id`",
        ));
    };
    match id.as_str().map(ids::uuid_hex) {
        Some(Ok(id)) if id == m.event_id => Ok(data),
        Some(Ok(id)) => Err(reject(
            DlqReason::IdMismatch,
            format!(
                "payload event_id {id} differs from the message's {}",
                m.event_id
            ),
        )),
        _ => Err(reject(
            DlqReason::InvalidField,
            "payload `event_id` is not a UUID",
        )),
    }
}

/// The wanted top-level fields of a JSON object, every byte of it checked; an error for
/// anything a full parse into a [`Value`] would refuse, and for a non-object.
fn fields(bytes: &[u8]) -> serde_json::Result<Map<String, Value>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let map = de.deserialize_map(Fields)?;
    de.end()?;
    Ok(map)
}

/// Reads an object, keeping the wanted fields (the last of duplicates, as a full parse does).
struct Fields;

impl<'de> Visitor<'de> for Fields {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        let mut first = true;
        while let Some(key) = map.next_key_seed(Key)? {
            special_first_key(&key, std::mem::take(&mut first))?;
            if wanted(&key) {
                out.insert(key.into_owned(), map.next_value()?);
            } else {
                map.next_value_seed(Check)?;
            }
        }
        Ok(out)
    }
}

/// The key serde_json reads, as an object's first key, as an embedded raw JSON text rather than
/// an object.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// Refuses an object that starts with [`RAW_VALUE_KEY`]: a full parse treats it specially
/// (mostly refuses it), and it decides.
fn special_first_key<E: de::Error>(key: &str, first: bool) -> Result<(), E> {
    if first && key == RAW_VALUE_KEY {
        return Err(E::custom("an object read specially by a full parse"));
    }
    Ok(())
}

/// An object key, borrowed from the payload when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_owned()))
    }
}

/// Walks any JSON value through the same parsing a [`Value`] gets (strings decoded, numbers
/// converted, nesting counted), keeping nothing. (`IgnoredAny` would only skip: it lets lone
/// surrogates and out-of-range numbers through, which PostgreSQL or a later parse refuses.)
struct Check;

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Check)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut first = true;
        while let Some(key) = map.next_key_seed(Key)? {
            special_first_key(&key, std::mem::take(&mut first))?;
            map.next_value_seed(Check)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sluice_core::kafka::consumer::Verdict;
    use sluice_core::messages::Timestamp;

    /// An event message of project 42 whose payload is `payload`.
    pub(crate) fn msg(payload: &str) -> EventMessage {
        EventMessage {
            payload: payload.as_bytes().to_vec(),
            start_time: Timestamp::now(),
            event_id: "606f3c2bc036486eac417841ebfbf7f0".into(),
            project_id: 42,
            remote_addr: None,
            attachments: Vec::new(),
        }
    }

    fn reason(r: Step<Map<String, Value>>) -> Option<DlqReason> {
        match r {
            Err(Verdict::Reject(r)) => Some(r.reason),
            _ => None,
        }
    }

    #[test]
    fn payload_checks() {
        assert_eq!(reason(parse(&msg("{}"))), Some(DlqReason::MissingField));
        assert_eq!(reason(parse(&msg("nope"))), Some(DlqReason::Undecodable));
        assert_eq!(reason(parse(&msg("[1]"))), Some(DlqReason::InvalidEvent));
        assert_eq!(
            reason(parse(&msg(
                r#"{"event_id":"00000000000000000000000000000001"}"#
            ))),
            Some(DlqReason::IdMismatch)
        );
        // A literal backslash before `u0000` is plain text.
        assert!(parse(&msg(
            r#"{"event_id":"606f3c2b-c036-486e-ac41-7841ebfbf7f0","message":"a\\u0000"}"#
        ))
        .is_ok());
        assert!(parse(&msg(
            r#"{"event_id":"606F3C2B-C036-486E-AC41-7841EBFBF7F0"}"#
        ))
        .is_ok());
    }

    const ID: &str = r#""event_id":"606f3c2bc036486eac417841ebfbf7f0""#;

    #[test]
    fn only_the_fields_read_are_kept_and_the_last_duplicate_wins() {
        let data = parse(&msg(&format!(
            r#"{{{ID},"level":"info","extra":{{"big":[1,2,3]}},"breadcrumbs":{{"values":[]}},
                "platform":"python","level":"warning","exception":{{"values":[]}}}}"#
        )))
        .map_err(|_| "refused")
        .unwrap_or_default();
        let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["event_id", "exception", "level", "platform"]);
        assert_eq!(data["level"], "warning");
    }

    #[test]
    fn what_a_full_parse_refuses_in_a_field_not_read_is_refused() {
        // Each would be stored, then fail PostgreSQL's JSONB or a reader's parse, if the fields
        // not read were only skipped.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let cases = [
            r#""extra":{"s":"\ud800"}"#.to_owned(),
            r#""extra":{"s":"\udc00x"}"#.to_owned(),
            r#""extra":{"n":1e999}"#.to_owned(),
            r#""extra":{"s":"\q"}"#.to_owned(),
            r#""extra":{"s":"tab	here"}"#.to_owned(),
            format!(r#""extra":{deep}"#),
            r#""extra":{"a":1,}"#.to_owned(),
            r#""extra":{"$serde_json::private::RawValue":"x"}"#.to_owned(),
            r#""extra":{"$serde_json::private::RawValue":"1","b":2}"#.to_owned(),
        ];
        for case in cases {
            let payload = format!("{{{ID},{case}}}");
            assert!(
                serde_json::from_str::<Value>(&payload).is_err(),
                "a full parse refuses {case}"
            );
            assert_eq!(
                reason(parse(&msg(&payload))),
                Some(DlqReason::Undecodable),
                "{case}"
            );
        }
        let mut bad_utf8 = format!("{{{ID},\"extra\":\"").into_bytes();
        bad_utf8.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
        let mut m = msg("");
        m.payload = bad_utf8;
        assert_eq!(reason(parse(&m)), Some(DlqReason::Undecodable));
        assert_eq!(
            reason(parse(&msg(&format!("{{{ID}}} trailing")))),
            Some(DlqReason::Undecodable)
        );
        // An object a full parse reads as embedded JSON text decides as it always has.
        let embedded = r#"{"$serde_json::private::RawValue":"{\"event_id\":\"606f3c2bc036486eac417841ebfbf7f0\"}"}"#;
        if serde_json::from_str::<Value>(embedded).is_ok() {
            assert!(parse(&msg(embedded)).is_ok());
        } else {
            assert_eq!(reason(parse(&msg(embedded))), Some(DlqReason::Undecodable));
        }
    }

    #[test]
    fn the_corpus_groups_the_same_from_the_fields_read() -> serde_json::Result<()> {
        // Events across platforms and rules: grouping reads nothing outside `FIELDS`.
        let cases: Vec<Value> = serde_json::from_str(include_str!("grouping/corpus.json"))?;
        assert!(cases.len() >= 60);
        // A culprit from the request's URL, which no corpus event relies on.
        let request = serde_json::json!({"case": "request", "event": {
            "message": "m", "request": {"url": "https://shop.example/checkout"}}});
        for c in cases.iter().chain([&request]) {
            let mut event = c["event"].clone();
            // Fields no rule reads, which must not matter either way.
            event["breadcrumbs"] = serde_json::json!({"values": [{"message": "x"}]});
            event["contexts"] = serde_json::json!({"os": {"name": "Linux"}});
            let partial = fields(serde_json::to_string(&event)?.as_bytes())?;
            assert_eq!(
                grouping::group(&event),
                grouping::group(&Value::Object(partial)),
                "{}",
                c["case"]
            );
        }
        Ok(())
    }
}
