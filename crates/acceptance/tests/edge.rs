//! The SDK front door end to end: real clients (the Python `sentry-sdk` and `sentry-cli`) send
//! to `sluice edge`, which writes Relay's messages to the ingest topics of the mock broker; the
//! stages turn them into issues, attachments and user reports in PostgreSQL. Also: what the
//! front door answers to hostile requests, and that a refused request leaves nothing on the
//! topics.

mod support;

use serde_json::Value;
use sluice_testkit::db::{count, lines};
use sluice_testkit::http::{self, Answer};
use sluice_testkit::paths::existing_bin;
use sluice_testkit::process::{free_port, wait_for, Proc};
use sluice_testkit::Broker;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const TOPICS: [(&str, i32); 9] = [
    ("ingest-events", 2),
    ("ingest-events-dlq", 1),
    ("ingest-attachments", 2),
    ("ingest-attachments-dlq", 1),
    ("ingest-feedback-events", 2),
    ("ingest-feedback-events-dlq", 1),
    ("ingest-occurrences", 2),
    ("ingest-occurrences-dlq", 1),
    ("outcomes", 1),
];

fn logs() -> Stdio {
    if std::env::var_os("STAGE_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// `sluice edge` on a free port.
fn edge(broker: &Broker, db: &str, extra: &[&str]) -> anyhow::Result<(Proc, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(existing_bin("sluice")?);
    cmd.env_clear()
        .env("DATABASE_URL", db)
        .env("KAFKA_BROKERS", &broker.bootstrap)
        .args(["edge", "--listen", &addr])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(logs());
    let proc = Proc::spawn("sluice edge", cmd)?;
    wait_for("edge ready", Duration::from_secs(30), || {
        http::get(&addr, "/health/ready").filter(|(s, _)| *s == 200)
    })?;
    Ok((proc, addr))
}

/// An organization, a project and a key; returns (project id, DSN, public key).
fn provision(
    db: &str,
    edge_addr: &str,
    extra: &[&str],
) -> anyhow::Result<(String, String, String)> {
    sluice(db, &["org", "create", "acme"])?;
    let project = sluice(db, &["project", "create", "acme", "web"])?;
    let url = format!("http://{edge_addr}");
    let mut args = vec!["key", "create", "acme", "web", "--public-url", url.as_str()];
    args.extend_from_slice(extra);
    let dsn = sluice(db, &args)?;
    let key = sluice_acceptance::dsn_key(&dsn);
    anyhow::ensure!(
        dsn == format!("http://{key}@{edge_addr}/{project}"),
        "DSN {dsn}"
    );
    Ok((project, dsn, key))
}

fn python() -> anyhow::Result<String> {
    std::env::var("SENTRY_PYTHON").map_err(|_| {
        anyhow::anyhow!("SENTRY_PYTHON is not set: run scripts/services up and source .local/env")
    })
}

fn sentry_cli() -> anyhow::Result<String> {
    std::env::var("SENTRY_CLI_BIN").map_err(|_| {
        anyhow::anyhow!("SENTRY_CLI_BIN is not set: run scripts/services up and source .local/env")
    })
}

fn client_script() -> String {
    format!(
        "{}/tests/clients/send_with_sdk.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn outcomes(broker: &Broker) -> anyhow::Result<Vec<Value>> {
    use rdkafka::Message;
    Ok(broker
        .read_all("outcomes", usize::MAX, Duration::from_secs(10))?
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(m.payload()?).ok())
        .collect())
}

#[test]
fn sdk_and_cli_traffic_becomes_issues_attachments_and_reports() -> anyhow::Result<()> {
    let python = python()?;
    let cli = sentry_cli()?;
    let broker = Broker::start(&TOPICS)?;
    anyhow::ensure!(broker.is_mock(), "uses the default topic names");
    let db = migrated_db("sluice", "SELECT 1")?;
    let objects = tempfile::tempdir()?;
    let store_url = format!("file://{}", objects.path().display());
    let env = vec![("OBJECT_STORE_URL".to_owned(), store_url)];
    let _ingest = stage_env("ingest-consumer", &broker, &db.url, "ingest", &[], &env)?;
    let _feedback = stage("feedback-worker", &broker, &db.url, "feedback", &[])?;
    let _occurrences = stage("occurrence-consumer", &broker, &db.url, "occurrences", &[])?;
    let (_edge, addr) = edge(&broker, &db.url, &[])?;
    let (project, dsn, _) = provision(&db.url, &addr, &[])?;

    // The Python SDK.
    let out = Command::new(&python)
        .arg(client_script())
        .arg(&dsn)
        .stderr(logs())
        .output()?;
    anyhow::ensure!(out.status.success(), "sentry-sdk script failed");
    let sent: Value = serde_json::from_slice(&out.stdout)?;
    let id = |k: &str| sent[k].as_str().unwrap_or_default().replace('-', "");
    let (error, message, with_attachment) = (id("error"), id("message"), id("attachment"));

    // sentry-cli: send-event, and send-envelope with an event and an attachment.
    let cli_run = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(&cli)
            .env_clear()
            .env("SENTRY_DISABLE_UPDATE_CHECK", "1")
            .env("SENTRY_DSN", &dsn)
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
    let said = cli_run(&[
        "send-event",
        "-m",
        "deploy hook failed",
        "--level",
        "error",
        "-t",
        "source:cli",
    ])?;
    let cli_event = said
        .split_whitespace()
        .find_map(|w| {
            let w = w
                .trim_matches(|c: char| !c.is_ascii_hexdigit() && c != '-')
                .replace('-', "");
            (w.len() == 32 && w.bytes().all(|b| b.is_ascii_hexdigit())).then_some(w)
        })
        .ok_or_else(|| anyhow::anyhow!("no event id in {said:?}"))?;
    let mut envelope_file = tempfile::NamedTempFile::new()?;
    let env_id = "5e1f0b4c5c2b4d7e9a6f1e2d3c4b5a69";
    write!(
        envelope_file,
        "{{\"event_id\":\"{env_id}\"}}\n\
         {{\"type\":\"event\"}}\n\
         {{\"message\":\"nightly export crashed\",\"level\":\"fatal\",\"platform\":\"native\"}}\n\
         {{\"type\":\"attachment\",\"length\":11,\"filename\":\"export.log\",\"content_type\":\"text/plain\"}}\n\
         hello world\n"
    )?;
    cli_run(&["send-envelope", &envelope_file.path().display().to_string()])?;

    // Everything becomes rows.
    let q = |sql: &str| count(&db.url, sql);
    let grouped = format!(
        "SELECT count(*) AS n FROM events WHERE group_id IS NOT NULL AND event_id IN \
         ('{error}', '{message}', '{with_attachment}', '{cli_event}', '{env_id}')"
    );
    wait_for("issues from both clients", Duration::from_secs(60), || {
        (q(&grouped).ok()? == 5
            && q("SELECT count(*) AS n FROM groups WHERE type = 6001").ok()? >= 2
            && q("SELECT count(*) AS n FROM user_reports WHERE group_id IS NOT NULL").ok()? >= 1)
            .then_some(())
    })?;
    let titles = lines(
        &db.url,
        &format!(
            "SELECT e.event_id || ' ' || g.type || ' ' || g.title || ' ' || g.level AS line \
             FROM events e JOIN groups g ON g.id = e.group_id WHERE e.project_id = {project} \
             ORDER BY 1"
        ),
    )?;
    let has = |event: &str, title: &str| {
        titles
            .iter()
            .any(|l| l.starts_with(event) && l.contains(title))
    };
    assert!(has(&error, "ZeroDivisionError"), "{titles:?}");
    assert!(has(&message, "checkout took too long"), "{titles:?}");
    assert!(
        has(&with_attachment, "event with a 10 KB attachment"),
        "{titles:?}"
    );
    assert!(has(&cli_event, "deploy hook failed"), "{titles:?}");
    assert!(has(env_id, "nightly export crashed"), "{titles:?}");
    // Levels as the SDKs sent them (40 = error, 30 = warning, 50 = fatal).
    assert!(
        titles
            .iter()
            .any(|l| l.starts_with(&message) && l.ends_with(" 30")),
        "{titles:?}"
    );
    assert!(
        titles
            .iter()
            .any(|l| l.starts_with(env_id) && l.ends_with(" 50")),
        "{titles:?}"
    );

    // The exception's stack trace reached the stored event.
    let frames = count(
        &db.url,
        &format!(
            "SELECT jsonb_array_length(data->'exception'->'values'->0->'stacktrace'->'frames')::bigint AS n \
             FROM event_payloads WHERE event_id = '{error}'"
        ),
    )?;
    assert!(frames >= 3, "frames: {frames}");

    // Attachments: the SDK's 10 KB blob and sentry-cli's log, bytes as sent.
    wait_for("attachments stored", Duration::from_secs(30), || {
        (q("SELECT count(*) AS n FROM event_attachments").ok()? >= 2).then_some(())
    })?;
    let stored = lines(
        &db.url,
        "SELECT event_id || ' ' || name || ' ' || size || ' ' || coalesce(blob_path, '-') || ' ' || \
         (group_id IS NOT NULL)::text AS line FROM event_attachments ORDER BY name",
    )?;
    assert_eq!(stored.len(), 2, "{stored:?}");
    let blob: Vec<&str> = stored[0].split(' ').collect();
    assert_eq!(
        &blob[..3],
        [with_attachment.as_str(), "blob-10k.bin", "10240"],
        "{stored:?}"
    );
    assert_eq!(
        blob[4], "true",
        "attachment linked to its group: {stored:?}"
    );
    let bytes = std::fs::read(objects.path().join(blob[3]))?;
    assert_eq!(
        bytes,
        (0..10240).map(|i| (i % 251) as u8).collect::<Vec<u8>>()
    );
    let log: Vec<&str> = stored[1].split(' ').collect();
    assert_eq!(&log[..3], [env_id, "export.log", "11"], "{stored:?}");
    assert_eq!(std::fs::read(objects.path().join(log[3]))?, b"hello world");

    // The user report, with its event's group, and the feedback issue naming the error.
    let reports = lines(
        &db.url,
        "SELECT event_id || ' ' || name || ' ' || email || ' ' || (group_id IS NOT NULL)::text AS line \
         FROM user_reports ORDER BY 1",
    )?;
    assert!(
        reports
            .iter()
            .any(|r| r == &format!("{error} Jane Tester jane@example.com true")),
        "{reports:?}"
    );
    let feedback = lines(
        &db.url,
        "SELECT p.data->'contexts'->'feedback'->>'message' || ' ' || \
         coalesce(p.data->'contexts'->'feedback'->>'associated_event_id', '-') AS line \
         FROM groups g JOIN events e ON e.group_id = g.id \
         JOIN event_payloads p ON p.project_id = e.project_id AND p.event_id = e.event_id \
         WHERE g.type = 6001 ORDER BY 1",
    )?;
    assert!(
        feedback
            .iter()
            .any(|f| f.starts_with("The new feedback widget works!")
                && f.replace('-', "").ends_with(&error)),
        "{feedback:?}"
    );

    // The transaction is not processed: it is counted with an outcome.
    let seen = outcomes(&broker)?;
    assert!(
        seen.iter().any(|o| o["category"] == 2
            && o["outcome"] == 3
            && o["reason"] == "feature_disabled"
            && o["project_id"].as_u64().map(|p| p.to_string()) == Some(project.clone())),
        "{seen:?}"
    );
    Ok(())
}

fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    http::request("POST", addr, path, headers, body).unwrap_or(Answer {
        status: 0,
        headers: Vec::new(),
        body: String::new(),
    })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // A stored (uncompressed) deflate block inside gzip framing, so the test needs no encoder:
    // header, one final stored block per 65,535 bytes, CRC-32 and length.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = c.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    if chunks.is_empty() {
        out.extend([1, 0, 0, 0xff, 0xff]);
    }
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn hostile_requests_get_sentrys_answers_and_leave_nothing_on_the_topics() -> anyhow::Result<()> {
    let broker = Broker::start(&TOPICS)?;
    let db = migrated_db("sluice", "SELECT 1")?;
    let (_edge, addr) = edge(
        &broker,
        &db.url,
        &[
            "--max-envelope-size",
            "1048576",
            "--max-attachment-size",
            "65536",
        ],
    )?;
    let (project, _dsn, key) = provision(&db.url, &addr, &["--rate-limit", "3/3600"])?;
    let auth = format!("Sentry sentry_key={key}, sentry_version=7, sentry_client=hostile/1.0");
    let envelope_path = format!("/api/{project}/envelope/");
    let with_auth = [("x-sentry-auth", auth.as_str())];
    let ok_event = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}\n{\"type\":\"event\"}\n{\"message\":\"ok\"}\n";

    let cases: Vec<(&str, Answer, u16, &str)> = vec![
        ("no auth", post(&addr, &envelope_path, &[], b"{}\n{\"type\":\"event\"}\n{}\n"), 401, "missing authorization information"),
        ("bad key", post(&addr, &envelope_path, &[("x-sentry-auth", "Sentry sentry_key=zz")], ok_event), 400, "bad sentry DSN public key"),
        ("unknown key", post(&addr, &envelope_path, &[("x-sentry-auth", "Sentry sentry_key=00000000000000000000000000000001")], ok_event), 403, "event submission rejected with_reason: ProjectId"),
        ("other project", post(&addr, "/api/999999/envelope/", &with_auth, ok_event), 403, "ProjectId"),
        ("bad project path", post(&addr, "/api/web/envelope/", &with_auth, ok_event), 400, "bad project path parameter"),
        ("header and query", post(&addr, &format!("{envelope_path}?sentry_key={key}"), &with_auth, ok_event), 401, "multiple authorization payloads detected"),
        ("empty", post(&addr, &envelope_path, &with_auth, b""), 400, "empty request body"),
        ("malformed", post(&addr, &envelope_path, &with_auth, b"{}\n{\"type\":\"attachment\",\"length\":50}\nshort\n"), 400, "invalid event envelope"),
        ("not json", post(&addr, &envelope_path, &with_auth, b"GET / HTTP/1.1\n"), 400, "invalid event envelope"),
        ("two events", post(&addr, &envelope_path, &with_auth, b"{}\n{\"type\":\"event\"}\n{}\n{\"type\":\"event\"}\n{}\n"), 413, "size limits for type 'event'"),
        ("oversize attachment", post(&addr, &envelope_path, &with_auth, &[&b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dd\"}\n{\"type\":\"event\"}\n{}\n{\"type\":\"attachment\",\"length\":70000}\n"[..], &vec![b'a'; 70_000]].concat()), 413, "attachment:attachment"),
        ("oversize body", post(&addr, &envelope_path, &with_auth, &vec![b' '; 2 << 20]), 413, "envelope"),
        ("gzip bomb", post(&addr, &envelope_path, &[with_auth[0], ("content-encoding", "gzip")], &gzip(&vec![b' '; 3 << 20])), 413, "envelope"),
        ("corrupt gzip", post(&addr, &envelope_path, &[with_auth[0], ("content-encoding", "gzip")], b"\x1f\x8b\x08garbage"), 400, "invalid request body"),
        ("unknown encoding", post(&addr, &envelope_path, &[with_auth[0], ("content-encoding", "compress")], ok_event), 415, "unsupported content encoding"),
        ("bad event id", post(&addr, &envelope_path, &with_auth, b"{\"event_id\":\"nope\"}\n"), 400, "invalid event envelope"),
        ("dsn mismatch", post(&addr, &envelope_path, &with_auth, format!("{{\"dsn\":\"http://00000000000000000000000000000002@x/{project}\"}}\n").as_bytes()), 400, "invalid event envelope"),
        ("store not json", post(&addr, &format!("/api/{project}/store/"), &with_auth, b"{not json"), 400, "invalid JSON data"),
        ("too many items", post(&addr, &envelope_path, &with_auth, format!("{{}}\n{}", "{\"type\":\"session\"}\n{}\n".repeat(1001)).as_bytes()), 413, "size limits for type 'items'"),
        ("future protocol", post(&addr, &envelope_path, &[("x-sentry-auth", &format!("Sentry sentry_key={key}, sentry_version=8"))], ok_event), 400, "unsupported protocol version (8)"),
    ];
    for (what, answer, status, detail) in &cases {
        assert_eq!(answer.status, *status, "{what}: {}", answer.body);
        let body: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        let text = format!("{} {}", body["detail"], body["causes"]);
        assert!(text.contains(detail), "{what}: {}", answer.body);
    }
    // Nothing refused reached a topic.
    for topic in [
        "ingest-events",
        "ingest-attachments",
        "ingest-feedback-events",
    ] {
        assert_eq!(
            broker
                .read_all(topic, usize::MAX, Duration::from_secs(2))?
                .len(),
            0,
            "{topic}"
        );
    }

    // Accepted: an unknown item type and a session are not refused; a gzip body decodes.
    let a = post(
        &addr,
        &envelope_path,
        &[with_auth[0], ("content-encoding", "gzip")],
        &gzip(b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04de\"}\n{\"type\":\"event\"}\n{\"message\":\"gz\"}\n{\"type\":\"session\"}\n{}\n{\"type\":\"brand_new_thing\"}\n{}\n"),
    );
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "{\"id\":\"9ec79c33ec9942ab8353589fcb2e04de\"}")
    );
    // The store endpoint, with the key in the query, as browsers send it.
    let a = post(
        &addr,
        &format!("/api/{project}/store/?sentry_key={key}&sentry_version=7"),
        &[("content-type", "application/json")],
        b"{\"event_id\":\"9ec79c33-ec99-42ab-8353-589fcb2e04df\",\"message\":\"stored\"}",
    );
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "{\"id\":\"9ec79c33ec9942ab8353589fcb2e04df\"}")
    );
    assert_eq!(
        broker
            .read_all("ingest-events", usize::MAX, Duration::from_secs(5))?
            .len(),
        2
    );

    // CORS: a browser's preflight and the headers it may read.
    let pre = http::request(
        "OPTIONS",
        &addr,
        &envelope_path,
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        b"",
    )
    .ok_or_else(|| anyhow::anyhow!("no preflight answer"))?;
    assert_eq!(pre.status, 200);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert!(pre
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));

    // The key's rate limit (3 per hour): the third event passes, the fourth is refused.
    let third = post(&addr, &envelope_path, &with_auth, ok_event);
    assert_eq!(third.status, 200, "{}", third.body);
    let limited = post(
        &addr,
        &envelope_path,
        &[with_auth[0], ("origin", "https://app.example.com")],
        ok_event,
    );
    assert_eq!(limited.status, 429, "{}", limited.body);
    let retry: u64 = limited.header("retry-after").unwrap_or("0").parse()?;
    assert!(retry > 0 && retry <= 3600, "{retry}");
    assert_eq!(
        limited.header("x-sentry-rate-limits").map(str::to_owned),
        Some(format!("{retry}::key:key_quota"))
    );
    assert_eq!(limited.header("access-control-allow-origin"), Some("*"));
    assert!(limited
        .header("access-control-expose-headers")
        .is_some_and(|h| h.contains("x-sentry-rate-limits")));
    // Envelopes without events pass the event limit.
    let sessions = post(
        &addr,
        &envelope_path,
        &with_auth,
        b"{}\n{\"type\":\"session\"}\n{}\n",
    );
    assert_eq!((sessions.status, sessions.body.as_str()), (200, "{}"));

    // A disabled key is refused.
    sluice(&db.url, &["key", "disable", &key])?;
    wait_for("disabled key refused", Duration::from_secs(30), || {
        (post(&addr, &envelope_path, &with_auth, b"{}\n").status == 403).then_some(())
    })?;

    let seen = outcomes(&broker)?;
    let has = |outcome: u64, reason: &str| {
        seen.iter()
            .any(|o| o["outcome"] == outcome && o["reason"] == reason)
    };
    assert!(has(2, "key_quota"), "{seen:?}");
    assert!(has(3, "too_large:event"), "{seen:?}");
    assert!(has(3, "feature_disabled"), "{seen:?}");
    Ok(())
}
