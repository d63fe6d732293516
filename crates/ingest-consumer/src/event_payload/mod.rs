//! Reading an event payload. The whole payload is checked exactly as a full parse would check
//! it (UTF-8, escapes and surrogates, numbers in range, nesting at most serde_json's limit), so
//! what is accepted can be stored as JSONB and parsed again by every reader; but only the
//! top-level fields this stage reads ([`wanted`]) are built into JSON values, and of their stack
//! frames only the keys grouping reads ([`stacks`]). The rest of an event (breadcrumbs,
//! contexts, extra, SDK details, frames' variables and source lines) is walked without being
//! copied: building and dropping it was the larger part of an error event's cost.

mod stacks;

use crate::context::{reject, Step};
use crate::grouping;
use serde::de::{DeserializeSeed, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_core::ids;
use sluice_core::json;
use sluice_core::messages::{DlqReason, EventMessage};
use stacks::Stack;

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
    let data = match json::object_fields_with(&m.payload, field_seed(grouping::FRAME_FIELDS)) {
        Ok(map) => map,
        Err(json::Refused::NotAnObject) => {
            return Err(reject(
                DlqReason::InvalidEvent,
                "event payload is not a JSON object",
            ))
        }
        Err(json::Refused::Invalid(e)) => {
            return Err(reject(
                DlqReason::Undecodable,
                format!("event payload: {e}"),
            ))
        }
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

/// How each top-level field is read: stacks keeping their frames' `frame_keys`, the other
/// wanted fields whole, the rest not kept.
fn field_seed<'k>(frame_keys: &'k [&'k str]) -> impl Fn(&str) -> Option<Field<'k>> {
    move |key| {
        if grouping::STACK_FIELDS.contains(&key) {
            Some(Field::Stack(Stack::new(frame_keys)))
        } else if wanted(key) {
            Some(Field::Whole)
        } else {
            None
        }
    }
}

/// How a kept top-level field is read: a stack keeps only its frames' wanted keys, the other
/// fields are kept whole.
enum Field<'k> {
    Stack(Stack<'k>),
    Whole,
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self {
            Field::Stack(stack) => stack.deserialize(d),
            Field::Whole => Value::deserialize(d),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sluice_core::kafka::consumer::Verdict;
    use sluice_core::messages::Timestamp;

    /// The fields `parse` keeps, read without its fallback to a full parse: an error for
    /// anything a full parse into a [`Value`] would refuse, and for a non-object.
    fn fields(bytes: &[u8]) -> serde_json::Result<Map<String, Value>> {
        fields_keeping(bytes, grouping::FRAME_FIELDS)
    }

    /// [`fields`], the frames keeping the keys `frame_keys`.
    fn fields_keeping(bytes: &[u8], frame_keys: &[&str]) -> serde_json::Result<Map<String, Value>> {
        json::fields_with(bytes, field_seed(frame_keys))
    }

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
            // The same inside stacks, where frames keep only some keys.
            r#""stacktrace":{"frames":[{"function":"f","vars":{"s":"\ud800"}}]}"#.to_owned(),
            r#""stacktrace":{"frames":[{"function":"f","n":1e999}]}"#.to_owned(),
            r#""stacktrace":{"frames":[["\q"]]}"#.to_owned(),
            r#""stacktrace":{"frames":[{"function":"f"},]}"#.to_owned(),
            r#""stacktrace":{"frames":[{"$serde_json::private::RawValue":"1","b":2}]}"#.to_owned(),
            r#""exception":{"$serde_json::private::RawValue":"x"}"#.to_owned(),
            r#""threads":{"values":[{"stacktrace":{"frames":[{"pre_context":["\udc00"]}]}}]}"#
                .to_owned(),
            format!(
                r#""exception":{{"values":[{{"stacktrace":{{"frames":[{{"vars":{deep}}}]}}}}]}}"#
            ),
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
        let in_frame = format!(
            r#"{{{ID},"stacktrace":{{"frames":[{{"$serde_json::private::RawValue":"1"}}]}}}}"#
        );
        for payload in [embedded, &in_frame] {
            if serde_json::from_str::<Value>(payload).is_ok() {
                assert!(parse(&msg(payload)).is_ok(), "{payload}");
            } else {
                assert_eq!(reason(parse(&msg(payload))), Some(DlqReason::Undecodable));
            }
        }
    }

    /// Events whose grouping depends on a frame key the corpus does not exercise: the column
    /// (recursion), the line (recursion), a sourcemap, a frame's own platform, a native
    /// symbol, and a nameless native frame placed by its image and package.
    fn frame_cases() -> Vec<Value> {
        use serde_json::json;
        let js = |frames: Value| {
            json!({"platform": "javascript", "exception": {"values": [
                {"type": "TypeError", "value": "x is undefined", "stacktrace": {"frames": frames}}]}})
        };
        let py = |frames: Value| {
            json!({"platform": "python", "exception": {"values": [
                {"type": "RecursionError", "stacktrace": {"frames": frames}}]}})
        };
        let native = |frames: Value| {
            json!({"platform": "native", "exception": {"values": [
                {"type": "SIGSEGV", "stacktrace": {"frames": frames}}]}})
        };
        vec![
            js(json!([
                {"abs_path": "app.js", "function": "walk", "lineno": 1, "colno": 5, "in_app": true},
                {"abs_path": "app.js", "function": "walk", "lineno": 1, "colno": 9, "in_app": true}])),
            py(json!([
                {"module": "app.tree", "function": "visit", "lineno": 10, "in_app": true},
                {"module": "app.tree", "function": "visit", "lineno": 12, "in_app": true}])),
            js(
                json!([{"abs_path": "app.js", "filename": "app.js", "function": "handleClick",
                "context_line": "go()", "data": {"sourcemap": "app.js.map"}, "in_app": true}]),
            ),
            py(
                json!([{"module": "app.ui", "function": "Object.render", "platform": "javascript",
                "in_app": true}]),
            ),
            native(json!([{"symbol": "_ZN3app4mainEv", "in_app": true}])),
            native(
                json!([{"instruction_addr": "0x1a2b", "image_addr": "0x1000",
                "package": "/usr/lib/libcrash.so", "in_app": true}]),
            ),
        ]
    }

    /// The corpus and [`frame_cases`], each with fields and frame keys no rule reads added.
    fn grouping_cases() -> serde_json::Result<Vec<Value>> {
        let corpus: Vec<Value> = serde_json::from_str(include_str!("../grouping/corpus.json"))?;
        assert!(corpus.len() >= 60);
        let mut events: Vec<Value> = corpus.iter().map(|c| c["event"].clone()).collect();
        // A culprit from the request's URL, which no corpus event relies on.
        events.push(serde_json::json!({"message": "m",
            "request": {"url": "https://shop.example/checkout"}}));
        events.extend(frame_cases());
        for event in &mut events {
            // Fields no rule reads, which must not matter either way.
            event["breadcrumbs"] = serde_json::json!({"values": [{"message": "x"}]});
            event["contexts"] = serde_json::json!({"os": {"name": "Linux"}});
            add_unread_frame_keys(event);
        }
        Ok(events)
    }

    /// Adds local variables and source lines to every frame of `v`.
    fn add_unread_frame_keys(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    if let (true, Value::Array(frames)) = (key == "frames", &mut *value) {
                        for frame in frames.iter_mut().filter_map(Value::as_object_mut) {
                            frame.insert("vars".into(), serde_json::json!({"x": "1"}));
                            frame.insert("pre_context".into(), serde_json::json!(["a"]));
                        }
                    } else {
                        add_unread_frame_keys(value);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(add_unread_frame_keys),
            _ => {}
        }
    }

    #[test]
    fn the_corpus_groups_the_same_from_the_fields_read() -> serde_json::Result<()> {
        // Grouping reads nothing outside `FIELDS`, nor outside `FRAME_FIELDS` in a frame.
        for event in grouping_cases()? {
            let partial = fields(serde_json::to_string(&event)?.as_bytes())?;
            assert_eq!(
                grouping::group(&event),
                grouping::group(&Value::Object(partial)),
                "{event}"
            );
        }
        Ok(())
    }

    #[test]
    fn every_frame_key_kept_is_one_grouping_reads() -> serde_json::Result<()> {
        let events = grouping_cases()?;
        for key in grouping::FRAME_FIELDS {
            let fewer: Vec<&str> = grouping::FRAME_FIELDS
                .iter()
                .copied()
                .filter(|k| k != key)
                .collect();
            let mut changed = false;
            for event in &events {
                let partial = fields_keeping(serde_json::to_string(event)?.as_bytes(), &fewer)?;
                changed |= grouping::group(event) != grouping::group(&Value::Object(partial));
            }
            assert!(
                changed,
                "no event groups differently without the frame's `{key}`"
            );
        }
        Ok(())
    }

    #[test]
    fn frames_keep_only_the_keys_read_and_their_places() -> serde_json::Result<()> {
        let payload = format!(
            r#"{{{ID},"stacktrace":{{"frames":[7,{{"function":"f","vars":{{"a":1}},"in_app":false,
                "post_context":["x"],"in_app":true}},[{{"function":"g"}}]]}},
                "threads":{{"values":[{{"id":1,"stacktrace":{{"frames":[{{"module":"m","raw_function":"r","extra":1}}]}}}}]}}}}"#
        );
        let data = fields(payload.as_bytes())?;
        assert_eq!(
            data["stacktrace"],
            serde_json::json!({"frames": [null, {"function": "f", "in_app": true}, null]})
        );
        assert_eq!(
            data["threads"],
            serde_json::json!({"values": [{"id": 1, "stacktrace": {"frames": [{"module": "m", "raw_function": "r"}]}}]})
        );
        Ok(())
    }
}
