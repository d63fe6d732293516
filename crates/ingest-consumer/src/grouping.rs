//! How an error or default event becomes an issue: a deterministic fingerprint, a
//! title and a culprit, all computed from the event JSON alone, so every replica and every replay
//! derives the same values.
//!
//! Fingerprint components, first rule that applies:
//! 1. An explicit `fingerprint` list: its entries, with `{{ default }}` (any spacing) replaced
//!    by the components of the rules below.
//!    `["{{ default }}", "checkout"]` on a `KeyError` in `cart.py` → the default components
//!    followed by `checkout`.
//! 2. Exceptions with in-app frames: for every exception in `exception.values`, its `type`, then
//!    `module` (else `filename`) and `function` of each in-app frame. Line numbers and values are
//!    left out, so a new deploy or another input keeps the group.
//!    `ValueError` raised in `app.views.checkout` ← `app.views.dispatch` →
//!    `["ValueError", "app.views|dispatch", "app.views|checkout"]`.
//! 3. Exceptions without in-app frames: `type` and `value` of every exception.
//!    `ZeroDivisionError: division by zero` with only library frames →
//!    `["ZeroDivisionError", "division by zero"]`.
//! 4. The log message (`logentry.formatted`, else `logentry.message`, else `message`).
//! 5. Otherwise the single component `<unlabeled event>`.
//!
//! The components, joined with a newline under a version tag, are hashed with MD5: that hex
//! digest is the occurrence's `fingerprint[0]` (and its Kafka key prefix).
//!
//! Bounds: at most [`MAX_COMPONENTS`] components count, each cut to [`MAX_COMPONENT_CHARS`] characters, so
//! an event repeating `{{ default }}` thousands of times over a deep stack costs no more memory
//! than a large ordinary one.

use serde_json::Value;
use sluice_core::ids::md5_hex;

/// Version tag of the rules above: changing the rules means a new tag (and new groups).
const RULES_VERSION: &str = "sluice-grouping:1";
const MAX_TITLE: usize = 1024;
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
    pub title: String,
    pub culprit: String,
}

/// Groups `event` (an error or default event's JSON).
pub fn group(event: &Value) -> Grouping {
    let default = default_components(event);
    let components = match explicit_fingerprint(event) {
        Some(parts) => {
            let mut out = Vec::new();
            for p in parts {
                if out.len() >= MAX_COMPONENTS {
                    break;
                }
                let room = MAX_COMPONENTS - out.len();
                if is_default_marker(&p) {
                    out.extend(default.iter().take(room).cloned());
                } else {
                    out.push(p);
                }
            }
            out
        }
        None => default,
    };
    let components: Vec<String> = components
        .into_iter()
        .take(MAX_COMPONENTS)
        .map(|c| truncate(&c, MAX_COMPONENT_CHARS))
        .collect();
    let mut joined = String::from(RULES_VERSION);
    for c in &components {
        joined.push('\n');
        joined.push_str(c);
    }
    Grouping {
        fingerprint: md5_hex(&joined),
        components,
        title: title(event),
        culprit: culprit(event),
    }
}

fn is_default_marker(part: &str) -> bool {
    let inner: String = part.chars().filter(|c| !c.is_whitespace()).collect();
    inner == "{{default}}"
}

fn explicit_fingerprint(event: &Value) -> Option<Vec<String>> {
    let parts: Vec<String> = event
        .get("fingerprint")?
        .as_array()?
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then_some(parts)
}

/// `exception.values`, also accepting a bare list (older SDKs).
fn exceptions(event: &Value) -> Vec<&Value> {
    let exc = event.get("exception");
    let values = exc
        .and_then(|e| e.get("values"))
        .or(exc)
        .and_then(Value::as_array);
    values
        .map(|v| v.iter().filter(|e| e.is_object()).collect())
        .unwrap_or_default()
}

fn frames(exception: &Value) -> Vec<&Value> {
    exception
        .get("stacktrace")
        .and_then(|s| s.get("frames"))
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|f| f.is_object()).collect())
        .unwrap_or_default()
}

fn in_app(frame: &Value) -> bool {
    frame.get("in_app").and_then(Value::as_bool) == Some(true)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn frame_location(frame: &Value) -> String {
    str_of(frame, "module")
        .or_else(|| str_of(frame, "filename"))
        .or_else(|| str_of(frame, "abs_path"))
        .unwrap_or("?")
        .to_owned()
}

fn default_components(event: &Value) -> Vec<String> {
    let excs = exceptions(event);
    if excs.iter().any(|e| frames(e).into_iter().any(in_app)) {
        let mut out = Vec::new();
        for e in &excs {
            out.push(str_of(e, "type").unwrap_or("Error").to_owned());
            for f in frames(e).into_iter().filter(|f| in_app(f)) {
                let function = str_of(f, "function").unwrap_or("?");
                out.push(format!("{}|{}", frame_location(f), function));
            }
        }
        return out;
    }
    if !excs.is_empty() {
        let mut out = Vec::new();
        for e in &excs {
            out.push(str_of(e, "type").unwrap_or("Error").to_owned());
            if let Some(v) = str_of(e, "value") {
                out.push(v.to_owned());
            }
        }
        return out;
    }
    match log_message(event) {
        Some(m) => vec![m.to_owned()],
        None => vec!["<unlabeled event>".to_owned()],
    }
}

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

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// `"{type}: {value}"` of the main (last) exception, else the first line of the log message.
fn title(event: &Value) -> String {
    if let Some(main) = exceptions(event).last() {
        let ty = str_of(main, "type");
        let value = str_of(main, "value").map(|v| v.lines().next().unwrap_or_default());
        let t = match (ty, value) {
            (Some(t), Some(v)) => format!("{t}: {v}"),
            (Some(t), None) => t.to_owned(),
            (None, Some(v)) => v.to_owned(),
            (None, None) => "Error".to_owned(),
        };
        return truncate(&t, MAX_TITLE);
    }
    match log_message(event) {
        Some(m) => truncate(m.lines().next().unwrap_or_default(), MAX_TITLE),
        None => "<unlabeled event>".to_owned(),
    }
}

/// `"{module} in {function}"` of the innermost in-app frame of the main exception, else the
/// event's `transaction`, else empty.
fn culprit(event: &Value) -> String {
    let top = exceptions(event)
        .last()
        .and_then(|e| frames(e).into_iter().rev().find(|f| in_app(f)));
    if let Some(f) = top {
        let location = frame_location(f);
        return match str_of(f, "function") {
            Some(func) => truncate(&format!("{location} in {func}"), 200),
            None => truncate(&location, 200),
        };
    }
    str_of(event, "transaction")
        .map(|t| truncate(t, 200))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(ty: &str, value: &str, frames: Value) -> Value {
        json!({"exception": {"values": [
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
            ["ValueError", "app.views|dispatch", "app.views|checkout"]
        );
        assert_eq!(a.title, "ValueError: bad cart 1");
        assert_eq!(a.culprit, "app.views in checkout");
        let c = group(&error("KeyError", "bad cart 1", app_frames((10, 20))));
        assert_ne!(a.fingerprint, c.fingerprint, "another type, another group");
    }

    #[test]
    fn without_in_app_frames_type_and_value_decide() {
        let lib = json!([{"module": "lib", "function": "f", "in_app": false}]);
        let a = group(&error("ZeroDivisionError", "division by zero", lib.clone()));
        assert_eq!(a.components, ["ZeroDivisionError", "division by zero"]);
        assert_eq!(a.culprit, "");
        let b = group(&error("ZeroDivisionError", "other", lib));
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn log_messages_and_explicit_fingerprints() {
        let m =
            group(&json!({"logentry": {"formatted": "disk full\nmore"}, "transaction": "/upload"}));
        assert_eq!(m.components, ["disk full\nmore"]);
        assert_eq!(m.title, "disk full");
        assert_eq!(m.culprit, "/upload");
        let plain = group(&json!({"message": "hello"}));
        assert_eq!(plain.components, ["hello"]);

        let mut e = error("KeyError", "x", app_frames((1, 2)));
        e["fingerprint"] = json!(["{{ default }}", "checkout"]);
        let g = group(&e);
        assert_eq!(
            g.components,
            [
                "KeyError",
                "app.views|dispatch",
                "app.views|checkout",
                "checkout"
            ]
        );
        let explicit = group(&json!({"fingerprint": ["db-down"], "message": "a"}));
        let explicit2 = group(&json!({"fingerprint": ["db-down"], "message": "b"}));
        assert_eq!(explicit.fingerprint, explicit2.fingerprint);
        assert_eq!(group(&json!({})).title, "<unlabeled event>");
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
    fn fingerprint_is_pinned() {
        // A change of the rules or of the hashing changes every group: it must be deliberate.
        let g = group(&json!({"message": "hello"}));
        assert_eq!(g.fingerprint, md5_hex("sluice-grouping:1\nhello"));
        assert_eq!(g.fingerprint.len(), 32);
    }
}
