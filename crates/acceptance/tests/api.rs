//! `sluice api` end to end: provisioning with the `sluice` subcommands, issues raised through
//! `producer-shim send` (processed directly into PostgreSQL), then Sentry's API shapes field by
//! field, cursor paging, token isolation, status updates written as activity and history,
//! sentry-cli 3.8 against the server, and webhooks signed, delivered after a receiver outage,
//! and never sent twice when the input is replayed.

mod support;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use sluice_testkit::http::{self, Answer};
use sluice_testkit::paths::existing_bin;
use sluice_testkit::process::{free_port, wait_for, Proc};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::sluice;

/// An error event with a stack trace, a request, breadcrumbs, tags and a user.
fn event(event_id: &str, project_id: i64, n: u32) -> Value {
    json!({
        "event_id": event_id, "project_id": project_id, "platform": "python", "level": "error",
        "timestamp": 1795432200 + n, "release": "web@1.0.0", "environment": "production",
        "exception": {"values": [{"type": "ValueError", "value": format!("bad input {n}"),
            "stacktrace": {"frames": [
                {"filename": "app/views.py", "abs_path": "/srv/app/views.py", "function": "handle",
                 "module": "app.views", "lineno": 42, "pre_context": ["def handle(req):"],
                 "context_line": "    raise ValueError(req)", "post_context": [""], "in_app": true},
                {"filename": "django/core.py", "function": "dispatch", "lineno": 7, "in_app": false}
            ]}}]},
        "request": {"url": "https://example.com/checkout", "method": "POST",
                    "headers": [["Content-Type", "application/json"]], "query_string": "step=2"},
        "breadcrumbs": {"values": [{"timestamp": 1795432190, "category": "http", "message": "GET /cart"}]},
        "tags": [["browser", "Firefox"], ["server_name", "web-1"]],
        "user": {"id": 17, "email": "ada@example.com"},
    })
}

/// An error occurrence of group `fp`, its event embedded.
fn occurrence(n: u32, project_id: i64, fp: &str) -> Value {
    let event_id = format!("{:032x}", 0xe000_0000u64 + u64::from(n));
    json!({"id": format!("{:032x}", 0xa000_0000u64 + u64::from(n)), "project_id": project_id,
           "event_id": event_id, "fingerprint": [fp], "issue_title": format!("ValueError: bad input {fp}"),
           "subtitle": "bad input", "culprit": "app.views in handle", "type": 1, "level": "error",
           "detection_time": 1795432200.0 + f64::from(n), "event": event(&event_id, project_id, n)})
}

/// Delivers NDJSON items through `producer-shim send` (no Kafka: processed directly).
fn send(db: &str, items: &[Value]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("items.ndjson");
    let lines: Vec<String> = items.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n"))?;
    let out = Command::new(existing_bin("producer-shim")?)
        .env_clear()
        .env("DATABASE_URL", db)
        .args(["send", &file.to_string_lossy()])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "send: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A request the receiver took: its headers (lower-case names) and body.
type Received = (Vec<(String, String)>, Vec<u8>);

/// A webhook receiver: answers 503 while down, else 200, and keeps what it got while up.
struct Receiver {
    addr: String,
    up: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<usize>>,
}

impl Receiver {
    fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let up = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (u, g, r) = (up.clone(), got.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut s = stream;
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head, body) = loop {
                    let Ok(n) = s.read(&mut chunk) else {
                        break (String::new(), Vec::new());
                    };
                    if n == 0 {
                        break (String::new(), Vec::new());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..at]).into_owned();
                        let len: usize = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse().ok())
                            .unwrap_or(0);
                        let mut body = buf[at + 4..].to_vec();
                        while body.len() < len {
                            match s.read(&mut chunk) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => body.extend_from_slice(&chunk[..n]),
                            }
                        }
                        break (head, body);
                    }
                };
                let headers: Vec<(String, String)> = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let status = if u.load(Ordering::SeqCst) {
                    if let Ok(mut g) = g.lock() {
                        g.push((headers, body));
                    }
                    "200 OK"
                } else {
                    if let Ok(mut r) = r.lock() {
                        *r += 1;
                    }
                    "503 Service Unavailable"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Ok(Receiver {
            addr,
            up,
            got,
            refused,
        })
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

struct Api {
    _proc: Proc,
    addr: String,
}

impl Api {
    fn start(db: &str) -> anyhow::Result<Api> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(existing_bin("sluice")?);
        cmd.env_clear()
            .env("DATABASE_URL", db)
            .args(["api", "--listen", &addr, "--webhook-poll-ms", "100"])
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("STAGE_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let proc = Proc::spawn("sluice api", cmd)?;
        wait_for("api listening", Duration::from_secs(20), || {
            http::get(&addr, "/health/ready").filter(|(s, _)| *s == 200)
        })?;
        Ok(Api { _proc: proc, addr })
    }

    fn call(&self, method: &str, token: Option<&str>, path: &str, body: Option<Value>) -> Answer {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        http::request(method, &self.addr, path, &headers, body.as_bytes()).unwrap_or(Answer {
            status: 0,
            headers: Vec::new(),
            body: String::new(),
        })
    }

    fn get(&self, token: &str, path: &str) -> Answer {
        self.call("GET", Some(token), path, None)
    }
}

/// The `cursor` of the `rel="next"` link, when it has results.
fn next_cursor(a: &Answer) -> Option<String> {
    let link = a.header("link")?;
    let next = link.split(", <").find(|p| p.contains("rel=\"next\""))?;
    if !next.contains("results=\"true\"") {
        return None;
    }
    let c = next.split("cursor=\"").nth(1)?;
    Some(c.split('"').next()?.to_owned())
}

fn count(db: &str, sql: &str) -> anyhow::Result<i64> {
    sluice_testkit::db::count(db, sql)
}

#[test]
fn api_shapes_paging_isolation_updates_cli_and_webhooks() -> anyhow::Result<()> {
    let db = support::migrated_db("sluice", "SELECT 1")?;
    let url = db.url.clone();
    let acme = sluice(&url, &["org", "create", "acme"])?;
    let web: i64 = sluice(
        &url,
        &[
            "project",
            "create",
            "acme",
            "web",
            "--option",
            "platform=python",
        ],
    )?
    .parse()?;
    sluice(&url, &["org", "create", "other"])?;
    let other_project: i64 = sluice(&url, &["project", "create", "other", "svc"])?.parse()?;
    let token = sluice(&url, &["token", "create", "acme"])?;
    let other_token = sluice(&url, &["token", "create", "other"])?;
    assert!(token.starts_with("sntryu_") && token.len() == 71, "{token}");
    assert_eq!(
        count(&url, &format!("SELECT count(*) AS n FROM api_tokens WHERE token_hash = encode(sha256('{token}'::bytea), 'hex')"))?,
        1,
        "only the token's SHA-256 is stored"
    );

    let receiver = Receiver::start()?;
    let secret = "s3cret-hook";
    sluice(
        &url,
        &[
            "webhook",
            "add",
            "acme",
            "--url",
            &format!("http://{}/hook", receiver.addr),
            "--secret",
            secret,
        ],
    )?;

    // 30 issues in acme/web (two events in issue 0), one in the other organization.
    let mut items: Vec<Value> = (0..30)
        .map(|n| occurrence(n, web, &format!("fp-{n:02}")))
        .collect();
    items.push(occurrence(30, web, "fp-00"));
    items.push(occurrence(31, other_project, "fp-other"));
    send(&url, &items)?;
    assert_eq!(count(&url, "SELECT count(*) AS n FROM groups")?, 31);
    let queued = count(&url, "SELECT count(*) AS n FROM webhook_deliveries")?;
    assert_eq!(
        queued, 30,
        "one issue.created per acme issue, none for the other organization"
    );

    let api = Api::start(&url)?;

    // Authentication.
    let a = api.call("GET", None, "/api/0/", None);
    assert_eq!(
        (a.status, a.json()),
        (
            401,
            json!({"detail": "Authentication credentials were not provided."})
        )
    );
    let a = api.call("GET", Some("sntryu_0000"), "/api/0/organizations/", None);
    assert_eq!(
        (a.status, a.json()["detail"].clone()),
        (401, json!("Invalid token"))
    );
    let a = api.get(&token, "/api/0/");
    assert_eq!(a.status, 200);
    assert!(a.json()["auth"]["scopes"]
        .as_array()
        .is_some_and(|s| s.contains(&json!("event:write"))));

    // Organizations and projects.
    let a = api.get(&token, "/api/0/organizations/");
    let orgs = a.json();
    assert_eq!(orgs.as_array().map(Vec::len), Some(1), "{orgs}");
    assert_eq!(orgs[0]["id"], json!(acme));
    assert_eq!(orgs[0]["slug"], "acme");
    for k in ["isEarlyAdopter", "require2FA", "requireEmailVerification"] {
        assert_eq!(orgs[0][k], json!(false), "{k}");
    }
    assert!(orgs[0]["dateCreated"]
        .as_str()
        .is_some_and(|d| d.ends_with('Z')));
    assert!(a
        .header("link")
        .is_some_and(|l| l.contains("rel=\"next\"; results=\"false\"")));
    let p = api.get(&token, "/api/0/projects/acme/web/").json();
    assert_eq!(
        (p["id"].clone(), p["slug"].clone(), p["platform"].clone()),
        (json!(web.to_string()), json!("web"), json!("python"))
    );
    assert_eq!(p["organization"]["slug"], "acme");

    // Token isolation: another organization's token sees nothing of acme (404).
    for path in [
        "/api/0/organizations/acme/".to_owned(),
        "/api/0/projects/acme/web/issues/".to_owned(),
        "/api/0/organizations/acme/issues/".to_owned(),
    ] {
        assert_eq!(api.get(&other_token, &path).status, 404, "{path}");
    }
    let other_orgs = api.get(&other_token, "/api/0/organizations/").json();
    assert_eq!(other_orgs[0]["slug"], "other");

    // Paging over the 30 issues, 7 at a time, newest first.
    let mut seen = Vec::new();
    let mut path = "/api/0/projects/acme/web/issues/?query=is:unresolved&limit=7".to_owned();
    let mut pages = 0;
    loop {
        let a = api.get(&token, &path);
        assert_eq!(a.status, 200, "{}", a.body);
        pages += 1;
        seen.extend(a.json().as_array().cloned().unwrap_or_default());
        match next_cursor(&a) {
            Some(c) => {
                path = format!(
                    "/api/0/projects/acme/web/issues/?query=is:unresolved&limit=7&cursor={c}"
                )
            }
            None => break,
        }
    }
    assert_eq!(pages, 5);
    let ids: Vec<String> = seen
        .iter()
        .filter_map(|g| g["id"].as_str().map(str::to_owned))
        .collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!((ids.len(), distinct.len()), (30, 30), "every issue once");
    let last_seen: Vec<&str> = seen.iter().filter_map(|g| g["lastSeen"].as_str()).collect();
    assert!(
        last_seen.windows(2).all(|w| w[0] >= w[1]),
        "by last seen, newest first"
    );
    // Issue 0 was seen last (its second event); its shape, field by field.
    let g = &seen[0];
    assert_eq!(g["title"], "ValueError: bad input fp-00");
    assert_eq!(g["count"], json!("2"), "count is a string");
    assert_eq!(g["status"], "unresolved");
    assert_eq!(g["level"], "error");
    assert_eq!(g["issueCategory"], "error");
    assert_eq!(g["issueType"], "error");
    assert_eq!(
        g["project"],
        json!({"id": web.to_string(), "name": "web", "slug": "web", "platform": "python"})
    );
    assert!(g["shortId"].as_str().is_some_and(|s| s.starts_with("WEB-")));
    assert!(g["stats"]["24h"].as_array().is_some_and(|s| s.len() == 24));
    let issue0 = g["id"].as_str().unwrap_or_default().to_owned();

    // Free text, sort and category.
    let a = api.get(
        &token,
        "/api/0/projects/acme/web/issues/?query=bad%20input%20fp-07",
    );
    assert_eq!(a.json().as_array().map(Vec::len), Some(1), "{}", a.body);
    let a = api.get(&token, "/api/0/projects/acme/web/issues/?sort=freq&limit=1");
    assert_eq!(a.json()[0]["id"], json!(issue0));
    let a = api.get(
        &token,
        "/api/0/projects/acme/web/issues/?query=issue.category:feedback",
    );
    assert_eq!(a.json(), json!([]));
    assert_eq!(
        api.get(&token, "/api/0/projects/acme/web/issues/?query=is:nope")
            .status,
        400
    );

    // Issue detail, events and event detail with entries.
    let d = api
        .get(
            &token,
            &format!("/api/0/organizations/acme/issues/{issue0}/"),
        )
        .json();
    assert_eq!(d["firstRelease"]["version"], "web@1.0.0");
    assert_eq!(d["userReportCount"], 0);
    let evs = api
        .get(&token, &format!("/api/0/issues/{issue0}/events/"))
        .json();
    assert_eq!(evs.as_array().map(Vec::len), Some(2), "{evs}");
    assert_eq!(
        evs[0]["tags"][0],
        json!({"key": "browser", "value": "Firefox"})
    );
    assert_eq!(evs[0]["user"]["id"], "17");
    let latest = api
        .get(&token, &format!("/api/0/issues/{issue0}/events/latest/"))
        .json();
    let oldest = api
        .get(&token, &format!("/api/0/issues/{issue0}/events/oldest/"))
        .json();
    assert_ne!(latest["eventID"], oldest["eventID"]);
    assert_eq!(latest["previousEventID"], oldest["eventID"]);
    // The issue platform stores an occurrence's event as a generic event (its stack trace is
    // the grouping's business, not the event's); its other interfaces become entries.
    assert_eq!(latest["title"], "ValueError: bad input fp-00");
    let types: Vec<&str> = latest["entries"]
        .as_array()
        .map(|e| e.iter().filter_map(|x| x["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(types, ["breadcrumbs", "request"], "{latest}");
    assert_eq!(
        latest["entries"][1]["data"]["query"],
        json!([["step", "2"]])
    );
    assert_eq!(
        latest["entries"][1]["data"]["headers"],
        json!([["Content-Type", "application/json"]])
    );
    assert_eq!(
        latest["entries"][0]["data"]["values"][0]["message"],
        "GET /cart"
    );
    let pe = api.get(&token, "/api/0/projects/acme/web/events/?limit=5");
    assert_eq!(pe.json().as_array().map(Vec::len), Some(5));
    assert!(next_cursor(&pe).is_some());

    // Updates: one issue resolved, two ignored in bulk, through the issue platform.
    let target = ids[3].clone();
    let a = api.call(
        "PUT",
        Some(&token),
        &format!("/api/0/issues/{target}/"),
        Some(json!({"status": "resolved"})),
    );
    assert_eq!(
        (a.status, a.json()["status"].clone()),
        (200, json!("resolved")),
        "{}",
        a.body
    );
    let bulk = format!(
        "/api/0/projects/acme/web/issues/?id={}&id={}",
        ids[4], ids[5]
    );
    let a = api.call(
        "PUT",
        Some(&token),
        &bulk,
        Some(json!({"status": "ignored"})),
    );
    assert_eq!(
        a.json(),
        json!({"status": "ignored", "statusDetails": {}, "inbox": null})
    );
    let resolved = api
        .get(&token, "/api/0/projects/acme/web/issues/?query=is:resolved")
        .json();
    assert_eq!(
        resolved
            .as_array()
            .map(|r| r.iter().map(|g| g["id"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(target)])
    );
    let ignored = api
        .get(&token, "/api/0/projects/acme/web/issues/?query=is:ignored")
        .json();
    assert_eq!(ignored.as_array().map(Vec::len), Some(2));
    assert_eq!(ignored[0]["substatus"], "archived_forever");
    assert_eq!(count(&url, &format!("SELECT count(*) AS n FROM activities WHERE group_id = {target} AND type = 'set_resolved'"))?, 1);
    assert_eq!(count(&url, &format!("SELECT count(*) AS n FROM group_history WHERE group_id = {target} AND status = 'resolved'"))?, 1);
    assert_eq!(
        count(&url, "SELECT count(*) AS n FROM applied_status_changes")?,
        3,
        "applied as status changes"
    );
    let d = api.get(&token, &format!("/api/0/issues/{target}/")).json();
    assert_eq!(d["activity"][0]["type"], "set_resolved");
    // Another organization's token cannot update acme's issues.
    let a = api.call(
        "PUT",
        Some(&other_token),
        &format!("/api/0/issues/{}/", ids[6]),
        Some(json!({"status": "resolved"})),
    );
    assert_eq!(a.status, 404);

    // sentry-cli 3.8 against the API.
    if let Some(cli) = std::env::var_os("SENTRY_CLI_BIN") {
        let run = |args: &[&str]| -> anyhow::Result<String> {
            let out = Command::new(&cli)
                .env_clear()
                .env("SENTRY_DISABLE_UPDATE_CHECK", "1")
                .env("SENTRY_AUTH_TOKEN", &token)
                .args(["--url", &format!("http://{}", api.addr)])
                .args(args)
                .output()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            anyhow::ensure!(out.status.success(), "sentry-cli {args:?}: {text}");
            Ok(text)
        };
        assert!(run(&["info"])?.contains("Auth Token"));
        assert!(run(&["organizations", "list"])?.contains("acme"));
        assert!(run(&["projects", "list", "-o", "acme"])?.contains("web"));
        let list = run(&["issues", "list", "-o", "acme", "-p", "web"])?;
        assert!(list.contains("fp-00") && list.contains("WEB-"), "{list}");
        let victim = ids[10].as_str();
        run(&["issues", "resolve", "-o", "acme", "-p", "web", "-i", victim])?;
        assert_eq!(
            api.get(&token, &format!("/api/0/issues/{victim}/")).json()["status"],
            "resolved"
        );
        run(&[
            "issues",
            "unresolve",
            "-o",
            "acme",
            "-p",
            "web",
            "-i",
            victim,
        ])?;
        assert_eq!(
            api.get(&token, &format!("/api/0/issues/{victim}/")).json()["status"],
            "unresolved"
        );
        run(&["issues", "mute", "-o", "acme", "-p", "web", "-i", victim])?;
        assert_eq!(
            api.get(&token, &format!("/api/0/issues/{victim}/")).json()["status"],
            "ignored"
        );
        let events = run(&["events", "list", "-o", "acme", "-p", "web"])?;
        assert!(
            events.contains("00000000-0000-0000-0000-0000e000001e"),
            "{events}"
        );
    } else {
        panic!("SENTRY_CLI_BIN is not set: run scripts/services up and source .local/env");
    }

    // Webhooks: the receiver was down, nothing is lost; once up, each delivery arrives signed.
    wait_for(
        "attempts against the down receiver",
        Duration::from_secs(30),
        || receiver.refused.lock().ok().filter(|r| **r > 0).map(|_| ()),
    )?;
    receiver.up.store(true, Ordering::SeqCst);
    let expected = count(&url, "SELECT count(*) AS n FROM webhook_deliveries")?;
    assert!(
        expected >= 30 + 3 + 3,
        "created, resolved/ignored and the CLI's updates: {expected}"
    );
    wait_for("every delivery", Duration::from_secs(120), || {
        (count(
            &url,
            "SELECT count(*) AS n FROM webhook_deliveries WHERE delivered_at IS NOT NULL",
        )
        .ok()?
            == expected)
            .then_some(())
    })?;
    let got = receiver.received();
    let mut delivery_ids: Vec<String> = Vec::new();
    for (h, body) in &got {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
        mac.update(body);
        assert_eq!(
            header(h, "sentry-hook-signature"),
            Some(hex::encode(mac.finalize().into_bytes()).as_str())
        );
        assert!(header(h, "sentry-hook-timestamp").is_some_and(|t| t.parse::<i64>().is_ok()));
        assert_eq!(header(h, "content-type"), Some("application/json"));
        delivery_ids.extend(header(h, "sentry-hook-delivery-id").map(str::to_owned));
        let v: Value = serde_json::from_slice(body)?;
        assert_eq!(
            v["actor"],
            json!({"type": "application", "id": "sentry", "name": "Sentry"})
        );
        assert!(v["installation"]["uuid"].is_string());
    }
    delivery_ids.sort();
    delivery_ids.dedup();
    assert_eq!(
        delivery_ids.len() as i64,
        expected,
        "every delivery arrived (dedup by delivery id)"
    );
    let bodies: Vec<Value> = got
        .iter()
        .filter_map(|(_, b)| serde_json::from_slice(b).ok())
        .collect();
    let created: Vec<&Value> = bodies.iter().filter(|b| b["action"] == "created").collect();
    assert_eq!(created.len(), 30);
    assert!(created.iter().all(|b| b["data"]["issue"]["url"]
        .as_str()
        .is_some_and(|u| u.contains("/api/0/organizations/acme/issues/"))));
    let resolved_hook = bodies
        .iter()
        .find(|b| b["action"] == "resolved" && b["data"]["issue"]["id"] == json!(target));
    assert_eq!(
        resolved_hook.map(|b| b["data"]["resolution_type"].clone()),
        Some(json!("now"))
    );
    // Order per issue: the CLI's resolve, unresolve and mute arrive in that order.
    let victim = &ids[10];
    let order: Vec<String> = got
        .iter()
        .filter_map(|(h, b)| {
            let v: Value = serde_json::from_slice(b).ok()?;
            (v["data"]["issue"]["id"] == json!(victim) && v["action"] != "created").then(|| {
                format!(
                    "{}:{}",
                    header(h, "sentry-hook-resource").unwrap_or(""),
                    v["action"].as_str().unwrap_or("")
                )
            })
        })
        .collect();
    assert_eq!(
        order,
        ["issue:resolved", "issue:unresolved", "issue:ignored"]
    );

    // Replaying the input queues nothing new.
    send(&url, &items)?;
    assert_eq!(
        count(&url, "SELECT count(*) AS n FROM webhook_deliveries")?,
        expected
    );
    Ok(())
}

/// The served OpenAPI document with `example`s on the path parameters naming real resources,
/// so schemathesis reaches existing issues and events as well as missing ones.
fn schema_with_examples(api: &Api, token: &str, examples: &[(&str, Value)]) -> Value {
    let mut doc = api.get(token, "/api/0/openapi.json").json();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for op in ops.values_mut() {
                let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                    continue;
                };
                for p in params.iter_mut().filter(|p| p["in"] == "path") {
                    let name = p["name"].as_str().unwrap_or_default().to_owned();
                    if let Some((_, v)) = examples.iter().find(|(k, _)| *k == name) {
                        p["example"] = v.clone();
                    }
                }
            }
        }
    }
    doc
}

/// Property-based tests of every operation against the served OpenAPI document (schemathesis,
/// from PyPI): schema-valid requests get documented statuses, content types and bodies that
/// match their schemas, never a server error; schema-invalid ones are refused with a 4xx; and
/// no operation answers without a token.
#[test]
fn api_conforms_to_its_openapi_document() -> anyhow::Result<()> {
    let Some(schemathesis) = std::env::var_os("SCHEMATHESIS_BIN") else {
        panic!("SCHEMATHESIS_BIN is not set: run scripts/services up and source .local/env");
    };
    let db = support::migrated_db("sluice", "SELECT 1")?;
    let url = db.url.clone();
    sluice(&url, &["org", "create", "acme"])?;
    let web: i64 = sluice(&url, &["project", "create", "acme", "web"])?.parse()?;
    let token = sluice(&url, &["token", "create", "acme"])?;
    let items: Vec<Value> = (0..3)
        .map(|n| occurrence(n, web, &format!("fp-{n}")))
        .collect();
    send(&url, &items)?;
    let group: i64 = count(&url, "SELECT min(id) AS n FROM groups")?;
    let event_id = format!("{:032x}", 0xe000_0000u64);

    let api = Api::start(&url)?;
    let doc = schema_with_examples(
        &api,
        &token,
        &[
            ("org", json!("acme")),
            ("project", json!("web")),
            ("id", json!(group.to_string())),
            ("which", json!("latest")),
            ("event_id", json!(event_id)),
        ],
    );
    assert!(
        doc["paths"].as_object().is_some_and(|p| p.len() >= 15),
        "the served document lists the API's paths"
    );
    let dir = tempfile::tempdir()?;
    let schema = dir.path().join("openapi.json");
    std::fs::write(&schema, serde_json::to_vec(&doc)?)?;
    let junit = dir.path().join("junit.xml");
    let out = Command::new(schemathesis)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .arg("run")
        .arg(&schema)
        .args(["--url", &format!("http://{}", api.addr)])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: hypothesis describes strategies with `ast.parse`, which CPython 3.11 does
        // not support from several threads at once.
        .args(["--max-examples", "25", "--seed", "7", "--workers", "1"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&junit)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every operation of the document was exercised (nothing skipped as unreachable).
    let report = std::fs::read_to_string(&junit)?;
    let cases = report.matches("<testcase").count();
    let operations: usize = doc["paths"]
        .as_object()
        .map(|p| {
            p.values()
                .filter_map(Value::as_object)
                .map(|ops| {
                    ops.keys()
                        .filter(|m| ["get", "put"].contains(&m.as_str()))
                        .count()
                })
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(cases, operations, "one test case per operation:\n{stdout}");
    assert!(
        !report.contains("<skipped"),
        "no operation skipped:\n{stdout}"
    );
    Ok(())
}
