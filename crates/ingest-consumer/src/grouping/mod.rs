//! How an error or default event becomes an issue: a deterministic fingerprint, a title, a
//! culprit, metadata and a priority, all computed from the event JSON alone, so every replica
//! and every replay derives the same values. The rules follow Sentry's grouping for platforms
//! without symbolication (its `newstyle:2023-01-11` configuration); each event records which
//! rule grouped it ([`Grouping::rule`], kept in its occurrence's `evidence_data.grouping`).
//!
//! The first rule that yields components decides:
//!
//! 1. **`custom-fingerprint`**: the event's own `fingerprint` without `{{ default }}`; its
//!    entries, variables resolved ([`fingerprint`]). `["payment-timeout"]` → every such event
//!    is one issue, whatever its stack. Stable across rule versions.
//! 2. **`fingerprint+…`**: a `fingerprint` with `{{ default }}`: the built-in components (the
//!    rules below, named after the `+`) in its place. `["{{ default }}", "{{ tags.region }}"]`
//!    → the usual issue, split by region.
//! 3. **`in-app-stacktrace`**: when any exception has an application frame ([`frames::in_app`]):
//!    per exception, its type and its application frames' parts ([`frames`]); the value is
//!    ignored when that exception has such frames. `ValueError("bad cart 1")` and
//!    `ValueError("bad cart 2")` raised in `app.views.checkout` are one issue, whatever the line
//!    numbers; a `KeyError` there is another.
//! 4. **`system-stacktrace`**: no application frame anywhere, but frames that contribute: the
//!    same with every frame. Two `ZeroDivisionError`s raised inside one library function are
//!    one issue, whatever their values.
//! 5. **`exception`**: exceptions without contributing frames: type and normalized value
//!    ([`parameterize`]). `TimeoutError: after 3012 ms` and `TimeoutError: after 2988 ms` →
//!    one issue (`after <int> ms`).
//! 6. The same two stack rules for an event without exceptions that carries a stack trace
//!    (`stacktrace`, or the crashed, current or only thread's): a logged message with
//!    `attach_stacktrace` groups by where it was logged.
//! 7. **`message`**: the log message (the template `logentry.message` when the SDK sent one,
//!    else the formatted text), normalized. `Timeout after 3012 ms for 10.0.0.7` and
//!    `Timeout after 2988 ms for 10.0.0.9` → one issue.
//! 8. **`fallback`**: nothing to group by: one issue per project for such events.
//!
//! Exceptions marked `mechanism.synthetic` (the placeholder Relay writes for a native crash)
//! do not contribute their type. Native frames count by function, else symbol, else image and
//! offset, so crashes without symbols split by where they crashed; a crash report that was
//! never processed has no frames and groups by its placeholder value.
//!
//! The components, joined with a newline under a version tag, are hashed with MD5: that hex
//! digest is the occurrence's `fingerprint[0]` (and its Kafka key prefix). Changing the rules
//! means a new tag: events grouped by the new rules open new issues.
//!
//! Bounds: at most [`MAX_EXCEPTIONS`] exceptions (the last ones) and [`frames::MAX_FRAMES`]
//! frames per stack (the innermost) are read, each field to 1,024 characters; at most
//! [`MAX_COMPONENTS`] components count, each cut to [`MAX_COMPONENT_CHARS`] characters when it
//! is made; fingerprint entries are read up to [`MAX_COMPONENTS`] and each variable is resolved
//! once; normalized text is cut first ([`parameterize::MAX_INPUT_CHARS`]) and an event
//! normalizes at most 16 times that. An event repeating `{{ default }}` thousands of times over
//! a deep stack costs no more than a large ordinary one.

mod fields;
mod fingerprint;
mod frames;
mod parameterize;

use fingerprint::Entry;
use serde_json::{Map, Value};
use sluice_core::ids::md5_hex;

pub use fields::priority;

/// Version tag of the built-in rules above: changing them means a new tag (and new groups).
const RULES_VERSION: &str = "sluice-grouping:2";
/// Version tag of custom fingerprints: they group as their entries say, whatever the rules.
const CUSTOM_VERSION: &str = "sluice-grouping:1";
/// The top-level fields of an event the rules read (the request only for its URL, the tags only
/// for fingerprint variables): the rest of an event does not change its issue and need not be
/// parsed to group it.
pub const FIELDS: &[&str] = &[
    "culprit",
    "debug_meta",
    "exception",
    "fingerprint",
    "level",
    "logentry",
    "logger",
    "message",
    "platform",
    "request",
    "stacktrace",
    "tags",
    "threads",
    "transaction",
];
/// Of [`FIELDS`], those holding stack traces: their frames (the objects of an array under a
/// `frames` key) are read only for [`FRAME_FIELDS`].
pub const STACK_FIELDS: &[&str] = &["exception", "stacktrace", "threads"];
pub use frames::FIELDS as FRAME_FIELDS;
/// Components that count towards the fingerprint; the rest are ignored.
pub const MAX_COMPONENTS: usize = 4096;
/// Longest component, in characters; longer ones are cut.
pub const MAX_COMPONENT_CHARS: usize = 1024;

/// What an event contributes to its issue.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// MD5 hex of the fingerprint components.
    pub fingerprint: String,
    /// The components, for logs and tests.
    pub components: Vec<String>,
    /// The rule that produced the components (see the module docs).
    pub rule: String,
    pub title: String,
    pub culprit: String,
    /// `type`, `value`, `filename`, `function`, `in_app_frame_mix`.
    pub metadata: Map<String, Value>,
}

/// The version tag of the built-in rules, recorded with each event's grouping.
pub const fn config() -> &'static str {
    RULES_VERSION
}

/// Groups `event` (an error or default event's JSON).
pub fn group(event: &Value) -> Grouping {
    let (default, default_rule) = default_components(event);
    let (components, rule, version) = match fingerprint::entries(event) {
        Some(entries) => {
            let hybrid = entries.iter().any(|e| matches!(e, Entry::Default));
            let mut out = Vec::new();
            for e in entries {
                if out.len() >= MAX_COMPONENTS {
                    break;
                }
                match e {
                    Entry::Default => {
                        let room = MAX_COMPONENTS - out.len();
                        out.extend(default.iter().take(room).cloned());
                    }
                    Entry::Value(v) => out.push(v),
                }
            }
            if hybrid {
                (out, format!("fingerprint+{default_rule}"), RULES_VERSION)
            } else {
                (out, "custom-fingerprint".to_owned(), CUSTOM_VERSION)
            }
        }
        None => (default, default_rule.to_owned(), RULES_VERSION),
    };
    let components: Vec<String> = components
        .into_iter()
        .take(MAX_COMPONENTS)
        .map(|c| truncate(&c, MAX_COMPONENT_CHARS))
        .collect();
    let mut joined = String::from(version);
    for c in &components {
        joined.push('\n');
        joined.push_str(c);
    }
    Grouping {
        fingerprint: md5_hex(&joined),
        components,
        rule,
        title: fields::title(event),
        culprit: fields::culprit(event),
        metadata: fields::metadata(event),
    }
}

/// Exceptions of a chain that count, the last ones (the main exception is the last).
pub const MAX_EXCEPTIONS: usize = 64;

/// `exception.values`, also accepting a bare list (older SDKs); at most [`MAX_EXCEPTIONS`].
fn exceptions(event: &Value) -> Vec<&Value> {
    let exc = event.get("exception");
    let Some(values) = exc
        .and_then(|e| e.get("values"))
        .or(exc)
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let skip = values.len().saturating_sub(MAX_EXCEPTIONS);
    values[skip..].iter().filter(|e| e.is_object()).collect()
}

/// The exception an issue is named after: the last one (the one raised last).
fn main_exception(event: &Value) -> Option<&Value> {
    exceptions(event).last().copied()
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// The message as shown: `logentry.formatted`, else `logentry.message`, else `message`.
fn log_message(event: &Value) -> Option<&str> {
    let entry = event.get("logentry");
    entry
        .and_then(|e| str_of(e, "formatted"))
        .or_else(|| entry.and_then(|e| str_of(e, "message")))
        .or_else(|| str_of(event, "message"))
        .or_else(|| {
            event
                .get("message")
                .and_then(|m| str_of(m, "formatted").or_else(|| str_of(m, "message")))
        })
}

/// The message as grouped: the template (`logentry.message`) before the formatted text, so
/// the parameters of `"Hello %s"` do not split issues.
fn grouping_message(event: &Value) -> Option<&str> {
    event
        .get("logentry")
        .and_then(|e| str_of(e, "message"))
        .or_else(|| log_message(event))
}

fn synthetic(exception: &Value) -> bool {
    exception
        .get("mechanism")
        .and_then(|m| m.get("synthetic"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// The components of one stack, each with whether its frame is the application's: both stack
/// rules read from one pass over the frames.
fn stack_components(
    stack: &[&Value],
    images: &frames::Images,
    platform: &str,
) -> Vec<(bool, String)> {
    // A lone nameless JavaScript frame in a URL file says nothing about the error.
    if let [only] = stack {
        let js = ["javascript", "node"].contains(&frames::platform(only, platform));
        let url =
            str_of(only, "abs_path").is_some_and(|p| p.contains("://") || p.starts_with("blob:"));
        if js && str_of(only, "function").is_none() && url {
            return Vec::new();
        }
    }
    let mut out = Vec::new();
    let mut previous: Option<frames::Frame<'_>> = None;
    for f in stack {
        let frame = frames::Frame::of(f);
        let repeated = previous.as_ref().is_some_and(|p| p.same_call(&frame));
        if !repeated {
            if let Some(c) = frames::component(&frame, images, platform, "frame:") {
                let c = if c.len() > MAX_COMPONENT_CHARS {
                    truncate(&c, MAX_COMPONENT_CHARS)
                } else {
                    c
                };
                out.push((frame.in_app(), c));
            }
        }
        previous = Some(frame);
    }
    out
}

/// The components a stack rule takes from one stack: its application frames' for
/// `in-app-stacktrace`, all of them for `system-stacktrace`.
fn take_stack(stack: Vec<(bool, String)>, rule: &str) -> Vec<String> {
    match rule {
        "in-app-stacktrace" => stack
            .into_iter()
            .filter_map(|(app, c)| app.then_some(c))
            .collect(),
        "system-stacktrace" => stack.into_iter().map(|(_, c)| c).collect(),
        _ => Vec::new(),
    }
}

/// The stack rule that applies to `stacks`: `in-app-stacktrace` when any frame is the
/// application's, else `system-stacktrace` when any frame contributes.
fn stack_rule(stacks: &[Vec<(bool, String)>]) -> Option<&'static str> {
    if stacks.iter().flatten().any(|(app, _)| *app) {
        Some("in-app-stacktrace")
    } else if stacks.iter().any(|s| !s.is_empty()) {
        Some("system-stacktrace")
    } else {
        None
    }
}

/// The stack of an event without exceptions: `stacktrace`, else the crashed, current or only
/// thread's.
fn event_stack(event: &Value) -> Vec<&Value> {
    let own = frames::of(event.get("stacktrace"));
    if !own.is_empty() {
        return own;
    }
    let threads: Vec<&Value> = event
        .get("threads")
        .and_then(|t| t.get("values").or(Some(t)))
        .and_then(Value::as_array)
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    let flagged = |key: &str| {
        let hits: Vec<&&Value> = threads
            .iter()
            .filter(|t| t.get(key).and_then(Value::as_bool) == Some(true))
            .collect();
        (hits.len() == 1).then(|| *hits[0])
    };
    let thread = flagged("crashed")
        .or_else(|| flagged("current"))
        .or_else(|| (threads.len() == 1).then(|| threads[0]));
    thread
        .map(|t| frames::of(t.get("stacktrace")))
        .unwrap_or_default()
}

/// Characters of exception values and messages normalized per event; values beyond it count
/// cut but not normalized, so a chain of long values costs a bounded amount of matching.
const NORMALIZE_BUDGET: usize = 16 * parameterize::MAX_INPUT_CHARS;

/// The built-in components (rules 3 to 8) and the rule that produced them.
fn default_components(event: &Value) -> (Vec<String>, &'static str) {
    let platform = str_of(event, "platform").unwrap_or("other");
    let images = frames::Images::of(event);
    let mut budget = NORMALIZE_BUDGET;
    let mut normalize = |text: &str| {
        let cut = truncate(text, parameterize::MAX_INPUT_CHARS);
        if budget >= cut.len() {
            budget -= cut.len();
            parameterize::normalize(&cut)
        } else {
            cut
        }
    };
    let excs = exceptions(event);
    if !excs.is_empty() {
        let stacks: Vec<Vec<(bool, String)>> = excs
            .iter()
            .map(|e| stack_components(&frames::of(e.get("stacktrace")), &images, platform))
            .collect();
        let rule = stack_rule(&stacks).unwrap_or("exception");
        let mut out = Vec::new();
        for (e, stack) in excs.iter().zip(stacks) {
            if !synthetic(e) {
                if let Some(ty) = str_of(e, "type") {
                    out.push(format!("type:{}", truncate(ty, MAX_COMPONENT_CHARS)));
                }
            }
            let stack = take_stack(stack, rule);
            if stack.is_empty() {
                if let Some(v) = str_of(e, "value") {
                    out.push(format!("value:{}", normalize(v)));
                }
            }
            out.extend(stack);
            if out.len() >= MAX_COMPONENTS {
                break;
            }
        }
        if !out.is_empty() {
            return (out, rule);
        }
    }
    let stack = stack_components(&event_stack(event), &images, platform);
    if let Some(rule) = stack_rule(std::slice::from_ref(&stack)) {
        return (take_stack(stack, rule), rule);
    }
    if let Some(m) = grouping_message(event) {
        return (vec![format!("message:{}", normalize(m))], "message");
    }
    (Vec::new(), "fallback")
}

/// The first `max` characters of `s` (all of it when shorter).
fn prefix(s: &str, max: usize) -> &str {
    // No more bytes than `max` is no more characters: most texts end here, without counting.
    if s.len() <= max {
        return s;
    }
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn truncate(s: &str, max: usize) -> String {
    prefix(s, max).to_owned()
}

#[cfg(test)]
mod corpus_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prefix_counts_characters_not_bytes() {
        assert_eq!(prefix("abc", 3), "abc");
        assert_eq!(prefix("abcd", 3), "abc");
        assert_eq!(prefix("ab", 5), "ab");
        assert_eq!(prefix("ééé", 2), "éé");
        assert_eq!(prefix("éé", 3), "éé");
        assert_eq!(prefix("日本語テキスト", 3), "日本語");
    }

    fn error(ty: &str, value: &str, frames: Value) -> Value {
        json!({"platform": "python", "exception": {"values": [
            {"type": ty, "value": value, "stacktrace": {"frames": frames}}
        ]}})
    }

    fn app_frames(lines: (u32, u32)) -> Value {
        json!([
            {"module": "app.views", "function": "dispatch", "in_app": true, "lineno": lines.0},
            {"module": "django.core", "function": "handle", "in_app": false},
            {"module": "app.views", "function": "checkout", "in_app": true, "lineno": lines.1}
        ])
    }

    #[test]
    fn same_type_and_in_app_stack_groups_together_whatever_the_value_and_lines() {
        let a = group(&error("ValueError", "bad cart 1", app_frames((10, 20))));
        let b = group(&error("ValueError", "bad cart 2", app_frames((11, 25))));
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(
            a.components,
            [
                "type:ValueError",
                "frame:module=app.views|function=dispatch",
                "frame:module=app.views|function=checkout"
            ]
        );
        assert_eq!(a.rule, "in-app-stacktrace");
        assert_eq!(a.title, "ValueError: bad cart 1");
        assert_eq!(a.culprit, "app.views in checkout");
        assert_eq!(a.metadata["value"], "bad cart 1");
        assert_eq!(a.metadata["in_app_frame_mix"], "mixed");
        let c = group(&error("KeyError", "bad cart 1", app_frames((10, 20))));
        assert_ne!(a.fingerprint, c.fingerprint, "another type, another group");
    }

    #[test]
    fn without_in_app_frames_the_library_stack_decides() {
        let lib = json!([{"module": "lib", "function": "f", "in_app": false}]);
        let a = group(&error("ZeroDivisionError", "division by zero", lib.clone()));
        assert_eq!(
            a.components,
            ["type:ZeroDivisionError", "frame:module=lib|function=f"]
        );
        assert_eq!(a.rule, "system-stacktrace");
        assert_eq!(a.culprit, "lib in f");
        let b = group(&error("ZeroDivisionError", "other", lib));
        assert_eq!(a.fingerprint, b.fingerprint);
        let bare = group(&json!({"exception": {"values": [
            {"type": "TimeoutError", "value": "after 3012 ms"}]}}));
        let bare2 = group(&json!({"exception": {"values": [
            {"type": "TimeoutError", "value": "after 2988 ms"}]}}));
        assert_eq!(bare.rule, "exception");
        assert_eq!(
            bare.components,
            ["type:TimeoutError", "value:after <int> ms"]
        );
        assert_eq!(bare.fingerprint, bare2.fingerprint);
    }

    #[test]
    fn log_messages_and_explicit_fingerprints() {
        let m =
            group(&json!({"logentry": {"formatted": "disk full\nmore"}, "transaction": "/upload"}));
        assert_eq!(m.components, ["message:disk full\nmore"]);
        assert_eq!(m.rule, "message");
        assert_eq!(m.title, "disk full");
        assert_eq!(m.culprit, "/upload");
        let plain = group(&json!({"message": "hello"}));
        assert_eq!(plain.components, ["message:hello"]);

        let mut e = error("KeyError", "x", app_frames((1, 2)));
        e["fingerprint"] = json!(["{{ default }}", "checkout"]);
        let g = group(&e);
        assert_eq!(g.rule, "fingerprint+in-app-stacktrace");
        assert_eq!(g.components.last().map(String::as_str), Some("checkout"));
        assert_eq!(g.components.len(), 4);
        let explicit = group(&json!({"fingerprint": ["db-down"], "message": "a"}));
        let explicit2 = group(&json!({"fingerprint": ["db-down"], "message": "b"}));
        assert_eq!(explicit.fingerprint, explicit2.fingerprint);
        assert_eq!(explicit.rule, "custom-fingerprint");
        let empty = group(&json!({}));
        assert_eq!(empty.title, "<unlabeled event>");
        assert_eq!(empty.rule, "fallback");
    }

    #[test]
    fn fingerprint_expansion_is_bounded() {
        let mut frames = Vec::new();
        for i in 0..800 {
            frames.push(json!({"module": format!("m{i}"), "function": "f", "in_app": true}));
        }
        let mut e = error("E", "v", Value::Array(frames));
        e["fingerprint"] = json!(vec!["{{ default }}"; 20_000]);
        let g = group(&e);
        assert_eq!(g.components.len(), MAX_COMPONENTS);
        e["fingerprint"] = json!(["x".repeat(5000)]);
        assert_eq!(group(&e).components[0].len(), MAX_COMPONENT_CHARS);
    }

    #[test]
    fn hostile_events_cost_a_bounded_amount() {
        // Each case would take gigabytes or minutes if a variable, a component or an image
        // lookup were not bounded; each must end with bounded components.
        let long = "m".repeat(600_000);
        let mut many_vars = json!({"message": long, "exception": {"values": [
            {"type": "E", "value": "v", "stacktrace": {"frames": vec![json!({}); 200_000]}}]}});
        let mut entries = vec![json!("{{ message }}"); 30_000];
        entries.extend(vec![json!("{{ function }}"); 30_000]);
        many_vars["fingerprint"] = Value::Array(entries);
        let g = group(&many_vars);
        assert_eq!(g.components.len(), MAX_COMPONENTS);
        assert!(g
            .components
            .iter()
            .all(|c| c.chars().count() <= MAX_COMPONENT_CHARS));

        let huge_type = json!({"exception": {"values": [{"type": "T".repeat(900_000)}]},
                               "fingerprint": vec!["{{ default }}"; 4096]});
        let g = group(&huge_type);
        assert_eq!(g.components.len(), MAX_COMPONENTS);
        assert!(g.components.iter().all(|c| c.len() <= MAX_COMPONENT_CHARS));

        let images: Vec<Value> = (0..30_000)
            .map(|i| json!({"code_file": format!("lib{i}.so"), "image_addr": i * 0x10000, "image_size": 0x1000}))
            .collect();
        let frames: Vec<Value> = (0..13_000)
            .map(|i| json!({"instruction_addr": (i % 4000) * 0x10000 + 0x10, "in_app": true}))
            .collect();
        let native = json!({"platform": "native", "debug_meta": {"images": images},
            "exception": {"values": [{"type": "SIGSEGV", "stacktrace": {"frames": frames}}]}});
        let g = group(&native);
        assert_eq!(g.rule, "in-app-stacktrace");
        assert_eq!(
            g.components.len(),
            1 + frames::MAX_FRAMES,
            "the innermost frames"
        );

        let chain: Vec<Value> = (0..5_000)
            .map(|i| json!({"type": "E", "value": format!("{}{i}", "a".repeat(2_000))}))
            .collect();
        let g = group(&json!({"exception": {"values": chain}}));
        assert_eq!(
            g.components.len(),
            2 * MAX_EXCEPTIONS,
            "the last exceptions"
        );
    }

    #[test]
    fn fingerprints_are_pinned() {
        // A change of the rules or of the hashing changes every group: it must be deliberate.
        let g = group(&json!({"message": "hello"}));
        assert_eq!(g.fingerprint, md5_hex("sluice-grouping:2\nmessage:hello"));
        // Custom fingerprints keep the groups they had before the rules changed.
        let c = group(&json!({"fingerprint": ["db-down"]}));
        assert_eq!(c.fingerprint, md5_hex("sluice-grouping:1\ndb-down"));
    }
}
