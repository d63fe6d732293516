//! What an error issue shows, computed like Sentry's error events: title, culprit, metadata and
//! the priority it starts with.
//!
//! - **Title**: `"{type}: {value}"` of the main exception, the value's first line cut to 100
//!   characters (`ValueError: invalid literal for int() with base 10: 'x'`); only the type when
//!   there is no value; for a synthetic exception (a native crash Relay described), the crashing
//!   function, else `<unknown>`. Without exceptions, the log message's first line (100
//!   characters), else `<unlabeled event>`.
//! - **Culprit**: the event's own `culprit`, else its `transaction`, else from the innermost
//!   application frame of the main exception (`app.views in checkout`; JavaScript
//!   `handleClick(app/cart)`; native the function alone), else the innermost frame, else the
//!   request URL; at most 200 characters.
//! - **Metadata**: `type` (not for synthetic exceptions), `value` (1,024 characters),
//!   `filename` and `function` of the crashing frame, and `in_app_frame_mix`: `in-app-only`,
//!   `system-only` or `mixed` over every stack trace of the event.
//! - **Priority**: from the level: `fatal` and `error` high (75), `warning` medium (50), `info`
//!   and `debug` low (25).

use super::{exceptions, frames, log_message, main_exception, str_of as s, synthetic};
use serde_json::{json, Map, Value};
use sluice_core::messages::enums::priority;

const TITLE_VALUE_CHARS: usize = 100;
const CULPRIT_CHARS: usize = 200;
const VALUE_CHARS: usize = 1024;
const TYPE_CHARS: usize = 128;
const FRAME_FIELD_CHARS: usize = 1024;

/// At most `max` characters: longer text keeps `max - 3` and ends in `...`.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{kept}...")
}

/// The crashing frame for display: innermost application frame with a usable function, else
/// the innermost such frame.
fn crash_location(exception: &Value) -> Option<&Value> {
    let usable: Vec<&Value> = frames::of(exception.get("stacktrace"))
        .into_iter()
        .filter(|f| {
            !matches!(
                s(f, "function"),
                None | Some("<redacted>") | Some("<unknown>")
            )
        })
        .collect();
    usable
        .iter()
        .rev()
        .find(|f| frames::in_app(f))
        .or_else(|| usable.last())
        .copied()
}

pub fn title(event: &Value) -> String {
    if let Some(main) = main_exception(event) {
        let ty = s(main, "type").filter(|_| !synthetic(main));
        let value = s(main, "value").map(|v| v.lines().next().unwrap_or_default());
        return match (ty, value) {
            (Some(t), Some(v)) => format!(
                "{}: {}",
                truncate_chars(t, TYPE_CHARS),
                truncate_chars(v, TITLE_VALUE_CHARS)
            ),
            (Some(t), None) => truncate_chars(t, TYPE_CHARS),
            (None, _) => crash_location(main)
                .and_then(|f| s(f, "function"))
                .map(|f| truncate_chars(f, TITLE_VALUE_CHARS))
                .unwrap_or_else(|| "<unknown>".to_owned()),
        };
    }
    match log_message(event) {
        Some(m) => truncate_chars(
            m.trim().lines().next().unwrap_or_default(),
            TITLE_VALUE_CHARS,
        ),
        None => "<unlabeled event>".to_owned(),
    }
}

fn frame_culprit(frame: &Value, event_platform: &str) -> String {
    let platform = frames::platform(frame, event_platform);
    let function = s(frame, "function").unwrap_or("?");
    if ["objc", "cocoa", "native"].contains(&platform) {
        return function.to_owned();
    }
    let location = s(frame, "module")
        .or_else(|| s(frame, "filename"))
        .unwrap_or("");
    if location.is_empty() {
        return String::new();
    }
    if platform == "javascript" || platform == "node" {
        format!("{function}({location})")
    } else {
        format!("{location} in {function}")
    }
}

fn generated_culprit(event: &Value) -> String {
    let platform = s(event, "platform").unwrap_or("other");
    let excs = exceptions(event);
    if excs.last().is_some_and(|e| synthetic(e)) {
        return String::new();
    }
    let mut stack = excs
        .iter()
        .rev()
        .map(|e| frames::of(e.get("stacktrace")))
        .find(|f| !f.is_empty())
        .unwrap_or_default();
    if stack.is_empty() {
        stack = frames::of(event.get("stacktrace"));
    }
    let mut fallback: Option<String> = None;
    for f in stack.iter().rev() {
        let c = frame_culprit(f, platform);
        if frames::in_app(f) {
            if !c.is_empty() {
                return c;
            }
        } else if fallback.is_none() {
            fallback = Some(c);
        }
    }
    match fallback.filter(|c| !c.is_empty()) {
        Some(c) => c,
        None => event
            .get("request")
            .and_then(|r| s(r, "url"))
            .unwrap_or_default()
            .to_owned(),
    }
}

pub fn culprit(event: &Value) -> String {
    let c = s(event, "culprit")
        .or_else(|| s(event, "transaction"))
        .map(str::to_owned)
        .unwrap_or_else(|| generated_culprit(event));
    truncate_chars(&c, CULPRIT_CHARS)
}

/// Every stack trace of the event: exceptions', the event's own, threads'.
fn all_stacks(event: &Value) -> Vec<Vec<&Value>> {
    let mut out: Vec<Vec<&Value>> = exceptions(event)
        .iter()
        .map(|e| frames::of(e.get("stacktrace")))
        .collect();
    out.push(frames::of(event.get("stacktrace")));
    if let Some(threads) = event
        .get("threads")
        .and_then(|t| t.get("values").or(Some(t)))
        .and_then(Value::as_array)
    {
        out.extend(
            threads
                .iter()
                .take(super::MAX_EXCEPTIONS)
                .map(|t| frames::of(t.get("stacktrace"))),
        );
    }
    out.retain(|f| !f.is_empty());
    out
}

fn in_app_frame_mix(event: &Value) -> Option<&'static str> {
    let mixes: Vec<&str> = all_stacks(event)
        .iter()
        .map(|stack| {
            let app = stack.iter().filter(|f| frames::in_app(f)).count();
            if app == stack.len() {
                "in-app-only"
            } else if app == 0 {
                "system-only"
            } else {
                "mixed"
            }
        })
        .collect();
    let first = *mixes.first()?;
    Some(if mixes.iter().all(|m| *m == first) && first != "mixed" {
        first
    } else {
        "mixed"
    })
}

/// `type`, `value`, `filename`, `function`, `in_app_frame_mix` (each only when known).
pub fn metadata(event: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(main) = main_exception(event) {
        if !synthetic(main) {
            let ty = s(main, "type").unwrap_or("Error");
            m.insert("type".into(), json!(truncate_chars(ty, TYPE_CHARS)));
        }
        let value = s(main, "value").unwrap_or_default();
        m.insert("value".into(), json!(truncate_chars(value, VALUE_CHARS)));
        if let Some(f) = crash_location(main) {
            if let Some(file) = s(f, "filename").or_else(|| s(f, "abs_path")) {
                m.insert(
                    "filename".into(),
                    json!(truncate_chars(file, FRAME_FIELD_CHARS)),
                );
            }
            if let Some(func) = s(f, "function") {
                m.insert(
                    "function".into(),
                    json!(truncate_chars(func, FRAME_FIELD_CHARS)),
                );
            }
        }
    }
    if let Some(mix) = in_app_frame_mix(event) {
        m.insert("in_app_frame_mix".into(), json!(mix));
    }
    m
}

/// Sentry's priority for a new error issue at `level`.
pub fn priority(level: &str) -> i32 {
    match level {
        "fatal" | "error" => priority::HIGH,
        "info" | "debug" => priority::LOW,
        _ => priority::MEDIUM,
    }
}
