//! `feedback-worker` end to end, through `occurrence-consumer`: feedback events (Relay's real
//! capture and hand-built ones) become feedback issues; spam is ignored forever when detection
//! is on; filtered feedback produces only INVALID outcomes; a replay changes nothing.

mod support;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text};
use rdkafka::Message;
use serde_json::{json, Value};
use sluice_core::messages::{EventMessage, IngestMessage, Timestamp};
use sluice_testkit::{unique, Broker};
use std::time::Duration;
use support::*;

const TOPICS: [(&str, i32); 5] = [
    ("ingest-feedback-events", 2),
    ("ingest-feedback-events-dlq", 1),
    ("ingest-occurrences", 4),
    ("ingest-occurrences-dlq", 1),
    ("outcomes", 1),
];

fn feedback(project: u64, n: u32, message: Option<&str>) -> Vec<u8> {
    let event_id = format!("{:032x}", 0xfb00_0000u64 + u64::from(n));
    let mut ctx =
        json!({"contact_email": format!("user{n}@example.com"), "name": format!("User {n}")});
    if let Some(m) = message {
        ctx["message"] = json!(m);
    }
    let body = json!({"event_id": event_id, "type": "feedback", "platform": "javascript", "level": "info",
                      "timestamp": 1795432200.5 + f64::from(n), "contexts": {"feedback": ctx}});
    IngestMessage::Event(EventMessage {
        payload: body.to_string().into_bytes(),
        start_time: Timestamp::from_epoch_secs(1795432200.0).unwrap_or_else(|e| panic!("{e}")),
        event_id,
        project_id: project,
        remote_addr: None,
        attachments: vec![],
    })
    .encode()
}

#[derive(QueryableByName, Debug)]
struct G {
    #[diesel(sql_type = Integer)]
    status: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    substatus: Option<i32>,
    #[diesel(sql_type = BigInt)]
    times_seen: i64,
    #[diesel(sql_type = Jsonb)]
    data: Value,
    #[diesel(sql_type = Jsonb)]
    evidence: Value,
    #[diesel(sql_type = Text)]
    subtitle: String,
}

fn groups(url: &str) -> anyhow::Result<Vec<G>> {
    let mut c = PgConnection::establish(url)?;
    Ok(diesel::sql_query(
        "SELECT g.status, g.substatus, g.times_seen, g.data, p.data->'evidence_data' AS evidence, \
         p.data->>'subtitle' AS subtitle FROM groups g JOIN occurrences o ON o.group_id = g.id \
         JOIN occurrence_payloads p ON p.id = o.id AND p.expires_at = o.expires_at \
         WHERE g.type = 6001 ORDER BY o.event_id",
    )
    .load(&mut c)?)
}

fn outcomes(broker: &Broker) -> anyhow::Result<Vec<Value>> {
    let msgs = broker.read_all(&broker.topic("outcomes"), 100, Duration::from_secs(20))?;
    Ok(msgs
        .iter()
        .filter_map(|m| serde_json::from_slice(m.payload().unwrap_or_default()).ok())
        .collect())
}

#[test]
fn feedback_becomes_issues_spam_is_ignored_and_replay_changes_nothing() -> anyhow::Result<()> {
    let broker = Broker::start(&TOPICS)?;
    anyhow::ensure!(broker.is_mock(), "uses the default topic names");
    let db = migrated_db(
        "feedback-worker",
        "INSERT INTO organizations (id, slug) VALUES (1, 'o');
         INSERT INTO projects (id, organization_id, slug, options) VALUES
           (42, 1, 'spammy', '{\"feedback.spam_detection\": \"heuristic\"}'), (43, 1, 'plain', '{}');",
    )?;
    let relay = std::fs::read(format!(
        "{}/../core/tests/fixtures/relay-26.9.0/ingest-feedback-events/000.bin",
        env!("CARGO_MANIFEST_DIR")
    ))?;
    let spam1 = "BUY CHEAP WATCHES http://a.example http://b.example http://c.example";
    let spam2 = "Click here for free crypto: http://x.example";
    let long = "x".repeat(7007);
    let msgs: Vec<(Vec<u8>, Option<&str>)> = vec![
        (relay, None),
        (feedback(42, 1, Some(spam1)), None),
        (feedback(42, 2, Some(spam2)), Some("user_report_envelope")),
        (
            feedback(42, 3, Some("The export button does nothing on Safari")),
            None,
        ),
        (feedback(43, 4, Some(spam1)), None),
        (feedback(43, 5, Some(&long)), None),
        (feedback(42, 6, None), None),
        (feedback(42, 7, Some("Sent in the unattended mode")), None),
        (feedback(42, 8, Some("   ")), None),
    ];
    {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let p: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &broker.bootstrap)
            .create()?;
        for (i, (value, source)) in msgs.iter().enumerate() {
            let key = format!("k{i}");
            let mut rec = BaseRecord::to("ingest-feedback-events")
                .key(&key)
                .payload(value);
            if let Some(s) = source {
                rec = rec.headers(OwnedHeaders::new().insert(Header {
                    key: "source",
                    value: Some(*s),
                }));
            }
            p.send(rec).map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
        }
        p.flush(Duration::from_secs(10))?;
    }
    let (fb_group, occ_group) = (unique("fb"), unique("occ"));
    let mut worker = stage("feedback-worker", &broker, &db.url, &fb_group, &[])?;
    let mut occ = stage("occurrence-consumer", &broker, &db.url, &occ_group, &[])?;
    wait_committed_all(&broker, &fb_group, "ingest-feedback-events")?;
    wait_committed_all(&broker, &occ_group, "ingest-occurrences")?;

    let g = groups(&db.url)?;
    assert_eq!(g.len(), 6, "one issue per feedback that passed the filters");
    let by_msg = |m: &str| g.iter().find(|g| g.data["metadata"]["message"] == m);
    let relay_g = by_msg("The new feedback widget works!")
        .ok_or_else(|| anyhow::anyhow!("relay feedback issue"))?;
    assert_eq!((relay_g.status, relay_g.substatus), (0, Some(7)));
    let meta = &relay_g.data["metadata"];
    assert_eq!(
        (
            meta["contact_email"].as_str(),
            meta["name"].as_str(),
            meta["source"].as_str()
        ),
        (
            Some("jane@example.com"),
            Some("Jane Tester"),
            Some("new_feedback_envelope")
        )
    );
    let spammed: Vec<&G> = g
        .iter()
        .filter(|g| g.data["metadata"]["message"] == spam1)
        .collect();
    assert_eq!(spammed.len(), 2);
    let ignored = spammed
        .iter()
        .filter(|g| (g.status, g.substatus) == (2, Some(5)))
        .count();
    assert_eq!(
        ignored, 1,
        "ignored forever in the heuristic project, unresolved where detection is off"
    );
    let s2 = by_msg(spam2).ok_or_else(|| anyhow::anyhow!("spam2"))?;
    assert_eq!((s2.status, s2.substatus), (2, Some(5)));
    assert_eq!(
        s2.evidence["spam_reason"], "link with spam phrase \"crypto\"",
        "visible reason"
    );
    assert_eq!(s2.evidence["source"], "user_report_envelope");
    let safari = by_msg("The export button does nothing on Safari")
        .ok_or_else(|| anyhow::anyhow!("safari"))?;
    assert_eq!(safari.status, 0);
    let long_g = g
        .iter()
        .find(|g| g.subtitle.starts_with("xxx"))
        .ok_or_else(|| anyhow::anyhow!("long"))?;
    assert_eq!(
        (long_g.subtitle.len(), long_g.status),
        (4096, 0),
        "truncated subtitle, not spam when detection is off"
    );

    let mut c = PgConnection::establish(&db.url)?;
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Text)]
        email: String,
        #[diesel(sql_type = Nullable<Text>)]
        feedback_event_id: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        legacy_report: bool,
    }
    let reports: Vec<R> = diesel::sql_query("SELECT email, feedback_event_id::text, legacy_report FROM user_reports WHERE event_id = 'd0e204294e8e4833ad83cea44088c3c8'")
        .load(&mut c)?;
    assert_eq!(reports.len(), 1, "associated_event_id writes a user report");
    assert_eq!(
        (
            reports[0].email.as_str(),
            reports[0].feedback_event_id.as_deref(),
            reports[0].legacy_report
        ),
        ("jane@example.com", None, false),
        "not a legacy report: never shimmed"
    );

    let first = outcomes(&broker)?;
    let accepted = first
        .iter()
        .filter(|o| o["outcome"] == 0 && o["category"] == 14)
        .count();
    let mut invalid: Vec<String> = first
        .iter()
        .filter(|o| o["outcome"] == 3)
        .map(|o| o["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    invalid.sort();
    assert_eq!(accepted, 6);
    assert_eq!(
        invalid,
        [
            "Empty Feedback Message",
            "Missing Feedback Context",
            "Sent in Unreal Unattended Mode"
        ]
    );

    // Replay the feedback topic from offset 0: still one group per feedback, no second outcome.
    let replay_group = unique("fb-replay");
    let mut again = stage("feedback-worker", &broker, &db.url, &replay_group, &[])?;
    wait_committed_all(&broker, &replay_group, "ingest-feedback-events")?;
    wait_committed_all(&broker, &occ_group, "ingest-occurrences")?;
    let after = groups(&db.url)?;
    assert_eq!(after.len(), 6);
    assert!(
        after.iter().all(|g| g.times_seen == 1),
        "replayed occurrences deduped"
    );
    assert_eq!(outcomes(&broker)?.len(), first.len(), "no second outcome");
    for p in [&mut worker, &mut occ, &mut again] {
        p.signal("TERM")?;
        assert_eq!(p.wait_timeout(Duration::from_secs(30))?.code(), Some(0));
    }
    Ok(())
}
