//! `producer-shim` end to end: HTTP and `send` against the mock broker and PostgreSQL, its
//! fallback to direct processing, and its refusals.

mod support;

use rdkafka::Message;
use serde_json::{json, Value};
use sluice_testkit::http;
use sluice_testkit::kafka::java_partition;
use sluice_testkit::paths::existing_bin;
use sluice_testkit::process::{free_port, wait_for, Proc};
use sluice_testkit::{Broker, TestDb};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOPIC: &str = "ingest-occurrences";

fn occurrence(n: u32, fp: &str) -> Value {
    let event_id = format!("{:032x}", 0xe000_0000u64 + u64::from(n));
    json!({"id": format!("{n:032x}"), "project_id": 42, "event_id": event_id, "fingerprint": [fp],
           "issue_title": format!("title {n}"), "subtitle": "s", "type": 6001, "detection_time": 1795432200.0 + f64::from(n),
           "event": {"event_id": event_id, "project_id": 42, "platform": "other", "timestamp": 1795432200}})
}

fn database() -> anyhow::Result<TestDb> {
    support::migrated_db(
        "producer-shim",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o'); \
         INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'p');",
    )
}

struct Shim {
    proc: Proc,
    addr: String,
    metrics: String,
}

fn shim(brokers: Option<&str>, db_url: &str, extra: &[&str]) -> anyhow::Result<Shim> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(existing_bin("producer-shim")?);
    cmd.env_clear()
        .env("DATABASE_URL", db_url)
        .args(["serve", "--listen", &addr, "--metrics-addr", &metrics])
        .args(["--fallback-after-ms", "1500"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(b) = brokers {
        cmd.env("KAFKA_BROKERS", b);
    }
    let proc = Proc::spawn("producer-shim", cmd)?;
    wait_for("shim listening", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&addr).ok()
    })?;
    Ok(Shim {
        proc,
        addr,
        metrics,
    })
}

fn post(s: &Shim, path: &str, body: &str) -> anyhow::Result<(u16, Value)> {
    let (status, text) = http::post(
        &s.addr,
        path,
        body.as_bytes(),
        &[("content-type", "application/json")],
    )
    .ok_or_else(|| anyhow::anyhow!("no answer"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn groups(url: &str) -> anyhow::Result<i64> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = PgConnection::establish(url)?;
    Ok(diesel::sql_query("SELECT count(*) AS n FROM groups")
        .get_result::<N>(&mut c)?
        .n)
}

#[test]
fn kafka_path_keys_partitions_and_order() -> anyhow::Result<()> {
    let broker = Broker::start(&[(TOPIC, 4)])?;
    let db = database()?;
    let mut s = shim(Some(&broker.bootstrap), &db.url, &[])?;
    let (status, body) = post(
        &s,
        "/api/0/occurrences",
        &occurrence(1, "touch-id").to_string(),
    )?;
    assert_eq!((status, &body["sent"]), (202, &json!(1)), "{body}");
    let sc = json!({"project_id": 42, "fingerprint": ["touch-id"], "new_status": 1});
    assert_eq!(post(&s, "/api/0/status-changes", &sc.to_string())?.0, 202);
    let nd = format!("{}\n{}\n", occurrence(2, "a"), occurrence(3, "b"));
    assert_eq!(post(&s, "/api/0/occurrences", &nd)?.1["sent"], 2, "NDJSON");
    let arr = json!([occurrence(4, "c"), occurrence(5, "d")]).to_string();
    assert_eq!(
        post(&s, "/api/0/occurrences", &arr)?.1["sent"],
        2,
        "JSON array"
    );

    let msgs = broker.read_all(TOPIC, 6, Duration::from_secs(20))?;
    assert_eq!(msgs.len(), 6);
    let mut touch = Vec::new();
    for m in &msgs {
        let key = m.key().unwrap_or_default();
        assert_eq!(
            m.partition(),
            java_partition(key, 4),
            "murmur2 partition of {:?}",
            String::from_utf8_lossy(key)
        );
        let v: Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
        let fp = v["fingerprint"][0].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            key,
            format!("{fp}-42").as_bytes(),
            "key is fingerprint[0]-project_id"
        );
        if fp == "touch-id" {
            touch.push((
                m.offset(),
                v["payload_type"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    touch.sort();
    let kinds: Vec<&str> = touch.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["occurrence", "status_change"],
        "order kept within a fingerprint"
    );
    assert_eq!(
        groups(&db.url)?,
        0,
        "the Kafka path does not write directly"
    );
    s.proc.signal("TERM")?;
    assert_eq!(
        s.proc.wait_timeout(Duration::from_secs(20))?.code(),
        Some(0)
    );
    Ok(())
}

#[test]
fn fallback_paths_and_refusals() -> anyhow::Result<()> {
    let db = database()?;
    // No Kafka configured: processed directly, 201, rows in Postgres.
    let direct = shim(
        None,
        &db.url,
        &["--auth-token", "sekrit", "--max-body-bytes", "4096"],
    )?;
    let auth = [("authorization", "Bearer sekrit")];
    let body = occurrence(1, "fp").to_string();
    let (status, resp) = http::post(&direct.addr, "/api/0/occurrences", body.as_bytes(), &auth)
        .ok_or_else(|| anyhow::anyhow!("no answer"))?;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(groups(&db.url)?, 1);
    assert_eq!(
        post(&direct, "/api/0/occurrences", &body)?.0,
        401,
        "no token"
    );
    let big = "x".repeat(10_000);
    assert_eq!(
        http::post(&direct.addr, "/api/0/occurrences", big.as_bytes(), &auth).map(|r| r.0),
        Some(413)
    );

    // Invalid payloads: 400 with reasons, nothing delivered.
    let mut mismatch = occurrence(2, "fp2");
    mismatch["event"]["event_id"] = json!("00000000000000000000000000000001");
    let mut missing = occurrence(3, "fp3");
    missing.as_object_mut().map(|m| m.remove("issue_title"));
    let mut unknown = occurrence(4, "fp4");
    unknown["payload_type"] = json!("bogus");
    let batch = json!([occurrence(5, "fp5"), mismatch, missing, unknown]).to_string();
    let (status, resp) = http::post(&direct.addr, "/api/0/occurrences", batch.as_bytes(), &auth)
        .ok_or_else(|| anyhow::anyhow!("no answer"))?;
    assert_eq!(status, 400);
    let errors: Value = serde_json::from_str(&resp)?;
    let reasons: Vec<String> = errors["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| e["error"].to_string())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("id_mismatch")
            && reasons[1].contains("missing_field")
            && reasons[2].contains("does not belong")
    );
    assert_eq!(
        groups(&db.url)?,
        1,
        "nothing from the rejected request was delivered"
    );

    // Broker down: direct processing after the delivery deadline.
    let mut broker = Broker::start(&[(TOPIC, 1)])?;
    let fallback = shim(Some(&broker.bootstrap), &db.url, &[])?;
    if broker.is_mock() {
        broker.down()?;
        let (status, resp) = post(
            &fallback,
            "/api/0/occurrences",
            &occurrence(6, "fp6").to_string(),
        )?;
        assert_eq!(status, 201, "{resp}");
        assert_eq!(groups(&db.url)?, 2);
        // Still ready (the fallback serves), with the outage visible in the metrics.
        wait_for(
            "the probe to see Kafka down",
            Duration::from_secs(30),
            || {
                http::get(&fallback.metrics, "/metrics")
                    .filter(|(_, m)| m.contains("sluice_dependency_up{dependency=\"kafka\"} 0"))
            },
        )?;
        assert_eq!(
            http::get(&fallback.metrics, "/health/ready").map(|r| r.0),
            Some(200),
            "the shim stays in its Service while Kafka is down"
        );
        assert!(http::get(&fallback.metrics, "/metrics")
            .is_some_and(|(_, m)| m.contains("sluice_dependency_up{dependency=\"database\"} 1")));
        // Broker down and Postgres down: 503, nothing reported as success.
        let closed = format!("postgres://postgres@127.0.0.1:{}/none", free_port()?);
        let dead = shim(Some(&broker.bootstrap), &closed, &[])?;
        let (status, resp) = post(
            &dead,
            "/api/0/occurrences",
            &occurrence(7, "fp7").to_string(),
        )?;
        assert_eq!(status, 503, "{resp}");
        assert_eq!(resp["failed"].as_array().map(Vec::len), Some(1));
    }
    Ok(())
}

#[test]
fn send_command_summarises_and_fails_on_rejects() -> anyhow::Result<()> {
    let broker = Broker::start(&[(TOPIC, 2)])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("items.ndjson");
    let sc = json!({"payload_type": "status_change", "project_id": 42, "fingerprint": ["a"], "new_status": 1});
    let lines = [
        occurrence(1, "a").to_string(),
        sc.to_string(),
        occurrence(2, "b").to_string(),
        "{broken".into(),
    ];
    std::fs::write(&file, lines.join("\n"))?;
    let out = Command::new(existing_bin("producer-shim")?)
        .env_clear()
        .env("KAFKA_BROKERS", &broker.bootstrap)
        .args(["send", &file.to_string_lossy()])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a rejected line makes the exit non-zero: {stdout}"
    );
    assert!(
        stdout.contains("sent: 3")
            && stdout.contains("rejected: 1")
            && stdout.contains("undecodable"),
        "{stdout}"
    );
    assert_eq!(broker.read_all(TOPIC, 3, Duration::from_secs(20))?.len(), 3);

    std::fs::write(&file, lines[..3].join("\n"))?;
    let out = Command::new(existing_bin("producer-shim")?)
        .env_clear()
        .env("KAFKA_BROKERS", &broker.bootstrap)
        .args(["send", "-"])
        .stdin(std::fs::File::open(&file)?)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// Sends `head` (request line and headers) and `body` on a fresh connection, then reads what the
/// server answers within `wait` (the connection stays open on our side).
fn raw(addr: &str, head: &str, body: &[u8], wait: Duration) -> anyhow::Result<(String, Duration)> {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(wait))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    Ok((
        String::from_utf8_lossy(&buf).into_owned(),
        started.elapsed(),
    ))
}

/// Hostile requests: refused before their body is read, timed out when slow, shed beyond the
/// concurrency limit with `Retry-After`, and answered with a reason and an id, never internals;
/// the shim keeps serving throughout.
#[test]
fn hostile_requests_are_refused_early_and_never_stall() -> anyhow::Result<()> {
    let db = database()?;
    // An empty token is a start-up error.
    let out = Command::new(existing_bin("producer-shim")?)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("AUTH_TOKEN", "")
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()?)])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AUTH_TOKEN"));

    let mut s = shim(
        None,
        &db.url,
        &[
            "--auth-token",
            "s3cret",
            "--header-timeout-secs",
            "1",
            "--body-timeout-secs",
            "1",
            "--max-concurrent-requests",
            "1",
        ],
    )?;
    let path = "/api/0/occurrences";
    // 1. No token, a 10 MiB body announced and never sent: 401 at once.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        10 << 20
    );
    let (answer, took) = raw(&s.addr, &head, b"", Duration::from_secs(5))?;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or(""))?;
    assert_eq!(body["reason"], "unauthorized");
    assert_eq!(body["id"].as_str().map(str::len), Some(32));
    // 2. A wrong token of the right length.
    let (status, body) = {
        let (st, text) = http::post(&s.addr, path, b"{}", &[("authorization", "Bearer s3creX")])
            .ok_or_else(|| anyhow::anyhow!("no answer"))?;
        (st, serde_json::from_str::<Value>(&text)?)
    };
    assert_eq!(
        (status, body["reason"].as_str()),
        (401, Some("unauthorized"))
    );
    // 3. Headers that never end: the connection is closed after the header timeout.
    let (answer, took) = raw(
        &s.addr,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\n"),
        b"",
        Duration::from_secs(10),
    )?;
    assert!(took < Duration::from_secs(5), "{took:?} {answer}");
    // 4. A body that stops coming: 408 after the body timeout.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 100\r\n\r\n"
    );
    let (answer, took) = raw(&s.addr, &head, b"{\"id\":", Duration::from_secs(10))?;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // 5. Beyond the concurrency limit: 503 with Retry-After while another request is held.
    let addr = s.addr.clone();
    let holder = std::thread::spawn(move || {
        raw(
            &addr,
            &format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 100\r\n\r\n"),
            b"[",
            Duration::from_secs(10),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let (answer, _) = raw(
        &s.addr,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"),
        b"{}",
        Duration::from_secs(5),
    )?;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("\"reason\":\"overloaded\""), "{answer}");
    let _ = holder.join();
    // 6. The shim still serves: an occurrence with an escaped NUL in its title is processed.
    let item = occurrence(1, "hostile")
        .to_string()
        .replace("title 1", "title\\u00001");
    let (status, _) = {
        let (st, text) = http::post(
            &s.addr,
            path,
            item.as_bytes(),
            &[("authorization", "Bearer s3cret")],
        )
        .ok_or_else(|| anyhow::anyhow!("no answer"))?;
        (st, text)
    };
    assert_eq!(status, 201, "processed directly (no Kafka)");
    assert_eq!(groups(&db.url)?, 1);
    support::stop_cleanly(&mut s.proc)?;

    // 7. A database that cannot be reached: 503 with a reason and an id, no host or user.
    let port = free_port()?;
    let mut s = shim(
        None,
        &format!("postgres://secretuser@127.0.0.1:{port}/db"),
        &[],
    )?;
    let (status, body) = post(&s, path, &occurrence(2, "down").to_string())?;
    assert_eq!(status, 503);
    let text = body.to_string();
    assert!(
        !text.contains("secretuser") && !text.contains(&port.to_string()),
        "{text}"
    );
    assert_eq!(body["failed"][0]["error"], "unavailable");
    assert_eq!(body["failed"][0]["id"].as_str().map(str::len), Some(32));
    support::stop_cleanly(&mut s.proc)?;
    Ok(())
}
