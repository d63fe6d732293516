//! Events as Sentry's API shows them: the list item (`SimpleEventSerializer`) and the detail
//! (`EventSerializer`) with its `entries`, built from the stored event payload (Relay's
//! normalized event, snake_case) into Sentry's external shapes (camelCase frames, `[key, value]`
//! pairs for headers, query and tags).

use crate::serialize::time;
use serde_json::{json, Map, Value};
use sluice_core::storage::read;

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The event's tags as `[{key, value}]` (stored as `[[k, v]]` or `{k: v}`).
pub fn tags(data: &Value) -> Vec<Value> {
    match data.get("tags") {
        Some(Value::Array(pairs)) => pairs
            .iter()
            .filter_map(|p| match p {
                Value::Array(kv) if kv.len() == 2 => Some(json!({
                    "key": kv[0].as_str()?, "value": scalar(&kv[1])?,
                })),
                _ => None,
            })
            .collect(),
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| Some(json!({"key": k, "value": scalar(v)?})))
            .collect(),
        _ => Vec::new(),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The user, with string-or-null fields only (clients read them as strings).
fn user(data: &Value) -> Value {
    let Some(u) = data.get("user").filter(|u| u.is_object()) else {
        return Value::Null;
    };
    let field = |k: &str| u.get(k).and_then(scalar).map_or(Value::Null, Value::from);
    json!({
        "id": field("id"),
        "email": field("email"),
        "username": field("username"),
        "ip_address": field("ip_address"),
        "name": field("name"),
        "data": u.get("data").cloned().unwrap_or(Value::Null),
    })
}

fn title(data: &Value) -> String {
    if let Some(t) =
        str_of(data, "title").or_else(|| data.get("metadata").and_then(|m| str_of(m, "title")))
    {
        return t.to_owned();
    }
    if let Some(e) = exceptions(data).last() {
        let ty = str_of(e, "type").unwrap_or("Error");
        return match str_of(e, "value") {
            Some(v) if !v.is_empty() => format!("{ty}: {v}"),
            _ => ty.to_owned(),
        };
    }
    message(data).unwrap_or_else(|| "<unlabeled event>".to_owned())
}

fn message(data: &Value) -> Option<String> {
    let logentry = data
        .get("logentry")
        .or_else(|| data.get("sentry.interfaces.Message"));
    if let Some(l) = logentry {
        if let Some(f) = str_of(l, "formatted").or_else(|| str_of(l, "message")) {
            return Some(f.to_owned());
        }
    }
    match data.get("message") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn exceptions(data: &Value) -> Vec<&Value> {
    match data.get("exception") {
        Some(Value::Object(m)) => m
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter(|e| e.is_object()).collect())
            .unwrap_or_default(),
        Some(Value::Array(v)) => v.iter().filter(|e| e.is_object()).collect(),
        _ => Vec::new(),
    }
}

/// A list item of an issue's or a project's events.
pub fn list_item(e: &read::Event) -> Value {
    let d = &e.data;
    let event_id = e.event_id.trim();
    json!({
        "id": event_id,
        "event.type": str_of(d, "type").unwrap_or("error"),
        "groupID": e.group_id.map(|g| g.to_string()),
        "eventID": event_id,
        "projectID": e.project_id.to_string(),
        "message": message(d).unwrap_or_default(),
        "title": title(d),
        "location": str_of(d, "culprit").or_else(|| str_of(d, "transaction")),
        "culprit": str_of(d, "culprit"),
        "user": user(d),
        "tags": tags(d),
        "platform": str_of(d, "platform"),
        "dateCreated": time(created(e)),
        "crashFile": null,
    })
}

/// When the event happened: its timestamp, else when it was stored.
fn created(e: &read::Event) -> chrono::DateTime<chrono::Utc> {
    e.data
        .get("timestamp")
        .and_then(|t| match t {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp_millis() as f64 / 1000.0),
            _ => None,
        })
        .and_then(|secs| chrono::DateTime::from_timestamp_millis((secs * 1000.0) as i64))
        .unwrap_or(e.date_added)
}

/// The detail of an event.
pub fn detail(e: &read::Event, prev: Option<String>, next: Option<String>) -> Value {
    let d = &e.data;
    let mut v = list_item(e);
    let extra = json!({
        "size": d.to_string().len(),
        "entries": entries(d),
        "dist": d.get("dist").cloned().unwrap_or(Value::Null),
        "contexts": d.get("contexts").cloned().unwrap_or_else(|| json!({})),
        "sdk": d.get("sdk").cloned().unwrap_or(Value::Null),
        "context": d.get("extra").cloned().unwrap_or_else(|| json!({})),
        "packages": d.get("modules").cloned().unwrap_or_else(|| json!({})),
        "type": str_of(d, "type").unwrap_or("error"),
        "metadata": d.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "dateReceived": time(e.date_added),
        "errors": d.get("errors").cloned().unwrap_or_else(|| json!([])),
        "occurrence": null,
        "_meta": {},
        "fingerprints": d.get("fingerprint").cloned().unwrap_or_else(|| json!([])),
        "groupingConfig": d.get("grouping_config").cloned().unwrap_or(Value::Null),
        "release": str_of(d, "release").map(|r| json!({"version": r})),
        "environment": str_of(d, "environment"),
        "userReport": null,
        "sdkUpdates": [],
        "resolvedWith": [],
        "nextEventID": next.map(|n| n.trim().to_owned()),
        "previousEventID": prev.map(|p| p.trim().to_owned()),
    });
    if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
        m.extend(x);
    }
    v
}

/// Sentry's `entries`: one per interface the event has, by Sentry's display score (message,
/// exception, stacktrace, threads, breadcrumbs, request).
pub fn entries(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(m) = message(d) {
        let raw = d
            .get("logentry")
            .and_then(|l| str_of(l, "message"))
            .filter(|raw| *raw != m);
        out.push(json!({"type": "message", "data": {"formatted": m, "message": raw}}));
    }
    let excs = exceptions(d);
    if !excs.is_empty() {
        let values: Vec<Value> = excs.iter().map(|e| exception(e)).collect();
        let has_system = values.iter().any(|v| {
            v["stacktrace"]["frames"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["inApp"] == Value::Bool(false)))
        });
        out.push(json!({"type": "exception", "data": {
            "values": values, "excOmitted": null, "hasSystemFrames": has_system,
        }}));
    }
    if let Some(st) = d.get("stacktrace").filter(|s| s.is_object()) {
        out.push(json!({"type": "stacktrace", "data": stacktrace(st)}));
    }
    if let Some(threads) = d
        .get("threads")
        .and_then(|t| t.get("values"))
        .and_then(Value::as_array)
    {
        let values: Vec<Value> = threads
            .iter()
            .map(|t| {
                json!({
                    "id": t.get("id").cloned().unwrap_or(Value::Null),
                    "name": t.get("name").cloned().unwrap_or(Value::Null),
                    "crashed": t.get("crashed").cloned().unwrap_or(Value::Bool(false)),
                    "current": t.get("current").cloned().unwrap_or(Value::Bool(false)),
                    "stacktrace": t.get("stacktrace").filter(|s| s.is_object()).map(stacktrace),
                })
            })
            .collect();
        out.push(json!({"type": "threads", "data": {"values": values}}));
    }
    let crumbs = match d.get("breadcrumbs") {
        Some(Value::Object(m)) => m.get("values").and_then(Value::as_array),
        Some(Value::Array(v)) => Some(v),
        _ => None,
    };
    if let Some(crumbs) = crumbs.filter(|c| !c.is_empty()) {
        let values: Vec<Value> = crumbs
            .iter()
            .map(|b| {
                json!({
                    "type": str_of(b, "type").unwrap_or("default"),
                    "category": b.get("category").cloned().unwrap_or(Value::Null),
                    "level": str_of(b, "level").unwrap_or("info"),
                    "message": b.get("message").cloned().unwrap_or(Value::Null),
                    "data": b.get("data").cloned().unwrap_or(Value::Null),
                    "timestamp": b.get("timestamp").cloned().unwrap_or(Value::Null),
                    "event_id": b.get("event_id").cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        out.push(json!({"type": "breadcrumbs", "data": {"values": values}}));
    }
    if let Some(r) = d.get("request").filter(|r| r.is_object()) {
        out.push(json!({"type": "request", "data": {
            "url": r.get("url").cloned().unwrap_or(Value::Null),
            "method": r.get("method").cloned().unwrap_or(Value::Null),
            "data": r.get("data").cloned().unwrap_or(Value::Null),
            "query": pairs(r.get("query_string")),
            "fragment": r.get("fragment").cloned().unwrap_or(Value::Null),
            "cookies": pairs(r.get("cookies")),
            "headers": pairs(r.get("headers")),
            "env": r.get("env").cloned().unwrap_or(Value::Null),
            "inferredContentType": r.get("inferred_content_type").cloned().unwrap_or(Value::Null),
            "apiTarget": r.get("api_target").cloned().unwrap_or(Value::Null),
        }}));
    }
    out
}

/// `[[key, value]]` from pairs or an object (a query string stays a string).
fn pairs(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Array(a)) => Value::Array(a.clone()),
        Some(Value::Object(m)) => Value::Array(m.iter().map(|(k, v)| json!([k, v])).collect()),
        Some(Value::String(s)) => Value::Array(
            url::form_urlencoded::parse(s.as_bytes())
                .map(|(k, v)| json!([k, v]))
                .collect(),
        ),
        _ => json!([]),
    }
}

fn exception(e: &Value) -> Value {
    json!({
        "type": e.get("type").cloned().unwrap_or(Value::Null),
        "value": e.get("value").cloned().unwrap_or(Value::Null),
        "mechanism": e.get("mechanism").cloned().unwrap_or(Value::Null),
        "threadId": e.get("thread_id").cloned().unwrap_or(Value::Null),
        "module": e.get("module").cloned().unwrap_or(Value::Null),
        "stacktrace": e.get("stacktrace").filter(|s| s.is_object()).map(stacktrace),
        "rawStacktrace": e.get("raw_stacktrace").filter(|s| s.is_object()).map(stacktrace),
    })
}

fn stacktrace(st: &Value) -> Value {
    let frames: Vec<Value> = st
        .get("frames")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|f| f.is_object()).map(frame).collect())
        .unwrap_or_default();
    let has_system = frames.iter().any(|f| f["inApp"] == Value::Bool(false));
    json!({
        "frames": frames,
        "framesOmitted": st.get("frames_omitted").cloned().unwrap_or(Value::Null),
        "registers": st.get("registers").cloned().unwrap_or(Value::Null),
        "hasSystemFrames": has_system,
    })
}

fn frame(f: &Value) -> Value {
    let get = |k: &str| f.get(k).cloned().unwrap_or(Value::Null);
    let line = f.get("lineno").and_then(Value::as_i64);
    let mut context = Vec::new();
    if let Some(n) = line {
        let pre = f.get("pre_context").and_then(Value::as_array);
        let post = f.get("post_context").and_then(Value::as_array);
        if let Some(pre) = pre {
            let start = n - pre.len() as i64;
            context.extend(
                pre.iter()
                    .enumerate()
                    .map(|(i, l)| json!([start + i as i64, l])),
            );
        }
        if let Some(l) = f.get("context_line") {
            context.push(json!([n, l]));
        }
        if let Some(post) = post {
            context.extend(
                post.iter()
                    .enumerate()
                    .map(|(i, l)| json!([n + 1 + i as i64, l])),
            );
        }
    }
    let mut m = Map::new();
    for (external, internal) in [
        ("filename", "filename"),
        ("absPath", "abs_path"),
        ("module", "module"),
        ("package", "package"),
        ("platform", "platform"),
        ("instructionAddr", "instruction_addr"),
        ("symbolAddr", "symbol_addr"),
        ("function", "function"),
        ("rawFunction", "raw_function"),
        ("symbol", "symbol"),
        ("lineNo", "lineno"),
        ("colNo", "colno"),
        ("trust", "trust"),
        ("lock", "lock"),
        ("vars", "vars"),
    ] {
        m.insert(external.to_owned(), get(internal));
    }
    m.insert("context".into(), Value::Array(context));
    m.insert(
        "inApp".into(),
        Value::Bool(f.get("in_app").and_then(Value::as_bool).unwrap_or(false)),
    );
    m.insert("errors".into(), Value::Null);
    m.insert("sourceLink".into(), Value::Null);
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_sentry_frames() {
        let d = json!({
            "exception": {"values": [{"type": "ValueError", "value": "bad", "stacktrace": {"frames": [
                {"filename": "app.py", "abs_path": "/srv/app.py", "function": "run", "lineno": 10,
                 "pre_context": ["a", "b"], "context_line": "c", "post_context": ["d"], "in_app": true},
                {"filename": "lib.py", "function": "call", "lineno": 3}
            ]}}]},
            "logentry": {"formatted": "hello"},
            "request": {"url": "http://x/", "method": "GET", "headers": [["Accept", "*/*"]], "query_string": "a=1&b=2"},
            "breadcrumbs": {"values": [{"message": "clicked", "category": "ui"}]},
            "tags": [["browser", "Firefox"], ["level", "error"]],
        });
        let e = entries(&d);
        let types: Vec<&str> = e.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types, ["message", "exception", "breadcrumbs", "request"]);
        let f = &e[1]["data"]["values"][0]["stacktrace"]["frames"][0];
        assert_eq!(f["absPath"], "/srv/app.py");
        assert_eq!(f["lineNo"], 10);
        assert_eq!(f["inApp"], true);
        assert_eq!(
            f["context"],
            json!([[8, "a"], [9, "b"], [10, "c"], [11, "d"]])
        );
        assert_eq!(e[1]["data"]["hasSystemFrames"], true);
        assert_eq!(e[3]["data"]["query"], json!([["a", "1"], ["b", "2"]]));
        assert_eq!(e[2]["data"]["values"][0]["level"], "info");
        assert_eq!(tags(&d)[0], json!({"key": "browser", "value": "Firefox"}));
        assert_eq!(title(&d), "ValueError: bad");
    }
}
