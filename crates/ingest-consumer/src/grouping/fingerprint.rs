//! An event's own `fingerprint`: each entry that is a variable (the whole entry is
//! `{{ name }}`, any spacing) is replaced by the event's value, others are kept as written.
//!
//! | variable | value | when missing |
//! |---|---|---|
//! | `{{ default }}` | the components of the built-in rules | — |
//! | `{{ type }}`, `{{ error.type }}` | type of the main exception | `<no-type>` |
//! | `{{ value }}`, `{{ error.value }}` | value of the main exception | `<no-value>` |
//! | `{{ message }}` | the log message, else the main exception's value | `<no-message>` |
//! | `{{ function }}`, `{{ stack.function }}` | function of the crashing frame | `<no-function>` |
//! | `{{ module }}`, `{{ stack.module }}` | module of the crashing frame | `<no-module>` |
//! | `{{ path }}`, `{{ stack.abs_path }}` | `abs_path` (else `filename`) of the crashing frame | `<no-abs-path>` |
//! | `{{ stack.filename }}` | `filename` (else `abs_path`) of the crashing frame | `<no-filename>` |
//! | `{{ package }}`, `{{ stack.package }}` | the crashing frame's package, last path segment | `<no-package>` |
//! | `{{ transaction }}` | the event's transaction | `<no-transaction>` |
//! | `{{ level }}`, `{{ logger }}` | the event's level, logger | `<no-level>`, `<no-logger>` |
//! | `{{ tags.NAME }}` | the value of tag NAME | `<no-value-for-tag-NAME>` |
//!
//! The crashing frame is the innermost application frame of the main exception's stack (else of
//! the event's stack, else of its only thread), else the innermost frame. An unknown variable is
//! kept as written. `["{{ type }}", "{{ tags.region }}"]` on a `TimeoutError` tagged
//! `region=eu` → `["TimeoutError", "eu"]`.

use super::frames;
use serde_json::Value;
use std::collections::HashMap;

/// One entry of an event's fingerprint.
pub enum Entry {
    Default,
    Value(String),
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The event's fingerprint entries (the first [`super::MAX_COMPONENTS`]), each value cut to
/// [`super::MAX_COMPONENT_CHARS`] characters; `None` when it has none (or an empty one). Each
/// variable is resolved once, however often it repeats.
pub fn entries(event: &Value) -> Option<Vec<Entry>> {
    let raw = event.get("fingerprint")?.as_array()?;
    let mut resolver = Resolver {
        event,
        resolved: HashMap::new(),
    };
    let out: Vec<Entry> = raw
        .iter()
        .take(super::MAX_COMPONENTS)
        .filter_map(|v| match v {
            Value::String(s) => Some(resolver.entry(s)),
            Value::Number(n) => Some(Entry::Value(n.to_string())),
            Value::Bool(b) => Some(Entry::Value(b.to_string())),
            _ => None,
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

/// The variable named by `entry`, when the whole entry is `{{ name }}`.
fn variable(entry: &str) -> Option<&str> {
    let inner = entry.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    (!inner.is_empty() && !inner.contains(char::is_whitespace)).then_some(inner)
}

fn cut(s: &str) -> String {
    super::truncate(s, super::MAX_COMPONENT_CHARS)
}

/// Resolves an event's fingerprint entries, each variable once.
struct Resolver<'a> {
    event: &'a Value,
    resolved: HashMap<String, Option<String>>,
}

impl Resolver<'_> {
    fn entry(&mut self, entry: &str) -> Entry {
        let Some(name) = variable(entry) else {
            return Entry::Value(cut(entry));
        };
        if name == "default" {
            return Entry::Default;
        }
        if let Some(v) = self.resolved.get(name) {
            return Entry::Value(v.clone().unwrap_or_else(|| cut(entry)));
        }
        let value = resolve(self.event, name);
        self.resolved.insert(cut(name), value.clone());
        Entry::Value(value.unwrap_or_else(|| cut(entry)))
    }
}

/// The value of variable `name`, its `<no-…>` placeholder when the event lacks it; `None` for
/// an unknown variable (kept as written).
fn resolve(event: &Value, name: &str) -> Option<String> {
    let main = super::main_exception(event);
    let frame = || crash_frame(event);
    let frame_field =
        |keys: &[&str]| frame().and_then(|f| keys.iter().find_map(|k| s(f, k)).map(cut));
    let or = |v: Option<String>, missing: &str| Some(v.unwrap_or_else(|| missing.to_owned()));
    match name {
        "type" | "error.type" => or(main.and_then(|e| s(e, "type")).map(cut), "<no-type>"),
        "value" | "error.value" => or(main.and_then(|e| s(e, "value")).map(cut), "<no-value>"),
        "message" => or(
            super::log_message(event)
                .or_else(|| main.and_then(|e| s(e, "value")))
                .map(cut),
            "<no-message>",
        ),
        "function" | "stack.function" => or(frame_field(&["function"]), "<no-function>"),
        "module" | "stack.module" => or(frame_field(&["module"]), "<no-module>"),
        "path" | "stack.abs_path" => or(frame_field(&["abs_path", "filename"]), "<no-abs-path>"),
        "stack.filename" => or(frame_field(&["filename", "abs_path"]), "<no-filename>"),
        "package" | "stack.package" => or(
            frame_field(&["package"])
                .map(|p| p.rsplit(['/', '\\']).next().unwrap_or(&p).to_owned()),
            "<no-package>",
        ),
        "transaction" => or(s(event, "transaction").map(cut), "<no-transaction>"),
        "level" => or(s(event, "level").map(cut), "<no-level>"),
        "logger" => or(s(event, "logger").map(cut), "<no-logger>"),
        _ => {
            let tag = name.strip_prefix("tags.")?;
            Some(
                tag_value(event, tag)
                    .map(|v| cut(&v))
                    .unwrap_or_else(|| cut(&format!("<no-value-for-tag-{tag}>"))),
            )
        }
    }
}

/// The value of tag `name`: tags as `[[key, value], …]` or as an object.
fn tag_value(event: &Value, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(cut(s)),
        Value::Null => None,
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        _ => None,
    };
    match event.get("tags")? {
        Value::Array(pairs) => pairs.iter().find_map(|p| {
            let p = p.as_array()?;
            (p.first()?.as_str()? == name)
                .then(|| text(p.get(1)?))
                .flatten()
        }),
        Value::Object(m) => m.get(name).and_then(text),
        _ => None,
    }
}

/// The innermost application frame of the crashing stack, else its innermost frame.
fn crash_frame(event: &Value) -> Option<&Value> {
    let mut stack = super::main_exception(event)
        .map(|e| frames::of(e.get("stacktrace")))
        .unwrap_or_default();
    if stack.is_empty() {
        stack = frames::of(event.get("stacktrace"));
    }
    if stack.is_empty() {
        let threads = event
            .get("threads")
            .and_then(|t| t.get("values").or(Some(t)))
            .and_then(Value::as_array);
        if let Some([only]) = threads.map(Vec::as_slice) {
            stack = frames::of(only.get("stacktrace"));
        }
    }
    stack
        .iter()
        .rev()
        .find(|f| frames::in_app(f))
        .or_else(|| stack.last())
        .copied()
}
