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

/// One entry of an event's fingerprint.
pub enum Entry {
    Default,
    Value(String),
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The event's fingerprint entries, `None` when it has none (or an empty one).
pub fn entries(event: &Value) -> Option<Vec<Entry>> {
    let raw = event.get("fingerprint")?.as_array()?;
    let out: Vec<Entry> = raw
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(resolve(event, s)),
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

fn resolve(event: &Value, entry: &str) -> Entry {
    let Some(name) = variable(entry) else {
        return Entry::Value(entry.to_owned());
    };
    let main = super::main_exception(event);
    let frame = crash_frame(event);
    let frame_field =
        |keys: &[&str]| frame.and_then(|f| keys.iter().find_map(|k| s(f, k)).map(str::to_owned));
    let value = match name {
        "default" => return Entry::Default,
        "type" | "error.type" => main
            .and_then(|e| s(e, "type"))
            .map(str::to_owned)
            .ok_or("<no-type>"),
        "value" | "error.value" => main
            .and_then(|e| s(e, "value"))
            .map(str::to_owned)
            .ok_or("<no-value>"),
        "message" => super::log_message(event)
            .or_else(|| main.and_then(|e| s(e, "value")))
            .map(str::to_owned)
            .ok_or("<no-message>"),
        "function" | "stack.function" => frame_field(&["function"]).ok_or("<no-function>"),
        "module" | "stack.module" => frame_field(&["module"]).ok_or("<no-module>"),
        "path" | "stack.abs_path" => frame_field(&["abs_path", "filename"]).ok_or("<no-abs-path>"),
        "stack.filename" => frame_field(&["filename", "abs_path"]).ok_or("<no-filename>"),
        "package" | "stack.package" => frame_field(&["package"])
            .map(|p| p.rsplit(['/', '\\']).next().unwrap_or(&p).to_owned())
            .ok_or("<no-package>"),
        "transaction" => s(event, "transaction")
            .map(str::to_owned)
            .ok_or("<no-transaction>"),
        "level" => s(event, "level").map(str::to_owned).ok_or("<no-level>"),
        "logger" => s(event, "logger").map(str::to_owned).ok_or("<no-logger>"),
        _ => match name.strip_prefix("tags.") {
            Some(tag) => {
                return Entry::Value(
                    tag_value(event, tag).unwrap_or_else(|| format!("<no-value-for-tag-{tag}>")),
                )
            }
            None => return Entry::Value(entry.to_owned()),
        },
    };
    Entry::Value(value.unwrap_or_else(|missing| missing.to_owned()))
}

/// The value of tag `name`: tags as `[[key, value], …]` or as an object.
fn tag_value(event: &Value, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
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
