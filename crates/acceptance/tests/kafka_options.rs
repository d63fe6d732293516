//! The librdkafka passthrough through the binaries: `--kafka-option`, `KAFKA_OPTIONS` and the
//! settings file's `[kafka]` table reach every client (an unknown property is a start-up error
//! naming it; valid options leave processing unchanged), protected keys are refused, a client
//! speaking TLS to a plaintext listener stops at start-up with a clear error instead of
//! retrying forever, and secret values never appear in the output.

mod support;

use sluice_testkit::paths::existing_bin;
use sluice_testkit::{unique, Broker};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::*;

/// Runs `ingest-consumer run` with `args` and `env` until it exits (at most `timeout`).
fn run_until_exit(
    broker: &Broker,
    db: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<(Output, Duration)> {
    let mut cmd = Command::new(existing_bin("ingest-consumer")?);
    cmd.env("KAFKA_BROKERS", &broker.bootstrap)
        .env("DATABASE_URL", db)
        .env("LOG_LEVEL", "info")
        .envs(env.iter().copied())
        .args([
            "run",
            "--consumer-group",
            &unique("opt"),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    while child.try_wait()?.is_none() {
        if started.elapsed() > timeout {
            child.kill()?;
            let out = child.wait_with_output()?;
            anyhow::bail!(
                "still running after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((child.wait_with_output()?, started.elapsed()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn kafka_options_reach_every_client_and_bad_ones_stop_start_up() -> anyhow::Result<()> {
    let broker = Broker::start(&INGEST_TOPICS)?;
    let db = migrated_db("ingest-consumer", "SELECT 1")?;
    let limit = Duration::from_secs(40);

    // A property librdkafka does not know, from the flag: named in the error.
    let (out, _) = run_until_exit(
        &broker,
        &db.url,
        &["--kafka-option", "no.such.property=1"],
        &[],
        limit,
    )?;
    assert!(!out.status.success());
    assert!(text(&out).contains("no.such.property"), "{}", text(&out));

    // From the environment, comma-separated: a protected key is refused.
    let (out, _) = run_until_exit(
        &broker,
        &db.url,
        &[],
        &[("KAFKA_OPTIONS", "linger.ms=10,enable.auto.commit=true")],
        limit,
    )?;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("enable.auto.commit cannot be changed"),
        "{}",
        text(&out)
    );

    // From the settings file: TLS against a plaintext listener stops start-up with the reason,
    // and the SASL password in the same table is never printed.
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[kafka]\n\"security.protocol\" = \"sasl_ssl\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"svc\"\n\"sasl.password\" = \"hunter2-very-secret\"\n",
    )?;
    let config_arg = config.display().to_string();
    let (out, took) = run_until_exit(&broker, &db.url, &["--config", &config_arg], &[], limit)?;
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("refused the connection's security settings"),
        "{all}"
    );
    assert!(
        all.contains("sasl.password=***"),
        "the options are logged, redacted: {all}"
    );
    assert!(
        !all.contains("hunter2"),
        "a secret reached the output: {all}"
    );
    assert!(took < limit, "stopped, not retried forever ({took:?})");

    // Valid options leave processing as it was: a bad message still reaches its DLQ.
    produce(
        &broker,
        "ingest-events",
        &[("k".into(), "not msgpack".into(), vec![])],
    )?;
    let group = unique("ok");
    let mut ingest = stage(
        "ingest-consumer",
        &broker,
        &db.url,
        &group,
        &[
            "--kafka-option",
            "socket.keepalive.enable=true",
            "--kafka-option",
            "linger.ms=1",
        ],
    )?;
    wait_committed_all(&broker, &group, "ingest-events")?;
    assert_eq!(
        broker.dlq_reasons("ingest-events-dlq")?,
        vec!["undecodable"]
    );
    stop_cleanly(&mut ingest)?;
    Ok(())
}
