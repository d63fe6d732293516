//! Issue-platform processing against a real PostgreSQL.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text};
use serde_json::{json, Value};
use sluice_core::ids::md5_hex;
use sluice_core::issues::{self, Applied, IssueError};
use sluice_core::messages::{DlqReason, IssuePlatformMessage};
use sluice_core::storage::{migrate, Db};
use sluice_testkit::db::count;
use sluice_testkit::TestDb;

struct Env {
    _db: TestDb,
    url: String,
    pool: Db,
}

fn env() -> anyhow::Result<Env> {
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let mut c = db.connect()?;
    diesel::sql_query("INSERT INTO organizations (id, slug) VALUES (1, 'acme'), (2, 'beta')")
        .execute(&mut c)?;
    diesel::sql_query(
        "INSERT INTO projects (id, organization_id, slug) VALUES (42, 1, 'web'), (43, 2, 'api')",
    )
    .execute(&mut c)?;
    Ok(Env {
        url: db.url.clone(),
        pool: Db::new(&db.url, 8),
        _db: db,
    })
}

fn occurrence(id: u32, fp: &str, extra: Value) -> Value {
    let mut v = json!({
        "id": format!("{id:032x}"),
        "project_id": 42,
        "event_id": format!("{:032x}", 0xe000_0000u64 + u64::from(id)),
        "fingerprint": [fp],
        "issue_title": format!("title {id}"),
        "subtitle": "it was bad",
        "culprit": "api/123",
        "type": 1001,
        "detection_time": 1_795_432_200.0 + f64::from(id),
        "level": "warning",
    });
    let event_id = v["event_id"].clone();
    if let Value::Object(m) = &mut v {
        m.insert(
            "event".into(),
            json!({"event_id": event_id, "project_id": 42, "platform": "python", "timestamp": 1_795_432_100.5, "tags": {"k": "v"}}),
        );
        if let Value::Object(e) = extra {
            for (k, val) in e {
                if val.is_null() {
                    m.remove(&k);
                } else {
                    m.insert(k, val);
                }
            }
        }
    }
    v
}

fn status(id: &str, fp: &str, status: i32, substatus: Option<i32>) -> Value {
    json!({"payload_type": "status_change", "id": id, "project_id": 42, "fingerprint": [fp],
           "new_status": status, "new_substatus": substatus})
}

async fn process(e: &Env, v: Value) -> Result<Applied, IssueError> {
    let msg = IssuePlatformMessage::decode(v.to_string().as_bytes())?;
    issues::process(&e.pool, &Default::default(), msg).await
}

#[derive(QueryableByName, Debug, PartialEq, Clone)]
struct G {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Integer)]
    status: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    substatus: Option<i32>,
    #[diesel(sql_type = Integer)]
    priority: i32,
    #[diesel(sql_type = Integer)]
    level: i32,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = Text)]
    culprit: String,
    #[diesel(sql_type = Text)]
    message: String,
    #[diesel(sql_type = BigInt)]
    times_seen: i64,
    #[diesel(sql_type = Jsonb)]
    data: Value,
    #[diesel(sql_type = Integer)]
    r#type: i32,
    #[diesel(sql_type = BigInt)]
    first_seen: i64,
    #[diesel(sql_type = BigInt)]
    last_seen: i64,
}

fn group(url: &str, fp: &str) -> anyhow::Result<Option<G>> {
    let mut c = PgConnection::establish(url)?;
    Ok(diesel::sql_query(
        "SELECT g.id, g.status, g.substatus, g.priority, g.level, g.title, g.culprit, g.message, g.times_seen, g.data, \
         g.type, extract(epoch from g.first_seen)::bigint AS first_seen, extract(epoch from g.last_seen)::bigint AS last_seen \
         FROM group_hashes h JOIN groups g ON g.id = h.group_id WHERE h.project_id = 42 AND h.hash = $1",
    )
    .bind::<Text, _>(md5_hex(fp))
    .get_result(&mut c)
    .optional()?)
}

#[derive(QueryableByName, Debug, PartialEq)]
struct S {
    #[diesel(sql_type = Text)]
    s: String,
}

fn strings(url: &str, sql: &str, group_id: i64) -> anyhow::Result<Vec<String>> {
    let mut c = PgConnection::establish(url)?;
    Ok(diesel::sql_query(sql)
        .bind::<BigInt, _>(group_id)
        .load::<S>(&mut c)?
        .into_iter()
        .map(|s| s.s)
        .collect())
}

fn activities(url: &str, g: i64) -> anyhow::Result<Vec<String>> {
    strings(url, "SELECT type || coalesce(':' || (data->>'priority'), '') AS s FROM activities WHERE group_id = $1 ORDER BY id", g)
}

fn history(url: &str, g: i64) -> anyhow::Result<Vec<String>> {
    strings(
        url,
        "SELECT status AS s FROM group_history WHERE group_id = $1 ORDER BY id",
        g,
    )
}

#[tokio::test]
async fn new_group_then_update_then_replay() -> anyhow::Result<()> {
    let e = env()?;
    let applied = process(&e, occurrence(1, "touch-id", json!({}))).await?;
    let g = group(&e.url, "touch-id")?.ok_or_else(|| anyhow::anyhow!("no group"))?;
    assert_eq!(applied, Applied::Created { group_id: g.id });
    assert_eq!(md5_hex("touch-id"), "85345ea2b9abf72d3d7a39737524235c");
    assert_eq!(
        (g.status, g.substatus, g.times_seen),
        (0, Some(7), 1),
        "UNRESOLVED / NEW"
    );
    assert_eq!(
        (g.priority, g.level, g.r#type),
        (25, 30, 1001),
        "type default LOW, level warning"
    );
    assert_eq!(
        (g.title.as_str(), g.culprit.as_str()),
        ("title 1", "api/123")
    );
    assert_eq!(g.message, "title 1 it was bad api/123");
    assert_eq!((g.first_seen, g.last_seen), (1_795_432_201, 1_795_432_201));
    assert_eq!(g.data["metadata"]["value"], "it was bad");
    assert_eq!(g.data["metadata"]["initial_priority"], 25);
    let event = format!("{:032x}", 0xe000_0001u64);
    assert_eq!(
        count(&e.url, &format!("SELECT count(*) AS n FROM events JOIN event_payloads USING (project_id, event_id, expires_at) \
            WHERE event_id = '{event}' AND group_id = {} AND data->>'type' = 'generic' AND data->>'level' = 'warning' AND data->'metadata'->>'title' = 'title 1'", g.id))?,
        1,
        "event stored as generic with the occurrence level and title, back-filled"
    );

    // A newer occurrence updates title and counts; an older one only counts.
    let newer = process(
        &e,
        occurrence(5, "touch-id", json!({"culprit": "api/5", "level": "error"})),
    )
    .await?;
    assert_eq!(
        newer,
        Applied::Updated {
            group_id: g.id,
            regressed: false
        }
    );
    process(&e, occurrence(3, "touch-id", json!({"culprit": "api/3"}))).await?;
    let g2 = group(&e.url, "touch-id")?.ok_or_else(|| anyhow::anyhow!("no group"))?;
    assert_eq!(g2.times_seen, 3);
    assert_eq!(
        (g2.title.as_str(), g2.culprit.as_str(), g2.level),
        ("title 5", "api/5", 40),
        "newest wins"
    );
    assert_eq!(
        (g2.first_seen, g2.last_seen),
        (1_795_432_201, 1_795_432_205)
    );

    // Replaying any of them changes nothing.
    assert_eq!(
        process(&e, occurrence(3, "touch-id", json!({}))).await?,
        Applied::Duplicate
    );
    assert_eq!(group(&e.url, "touch-id")?.map(|g| g.times_seen), Some(3));
    assert_eq!(count(&e.url, "SELECT count(*) AS n FROM occurrences")?, 3);
    Ok(())
}

#[tokio::test]
async fn arrival_order_does_not_change_the_result() -> anyhow::Result<()> {
    let (a, b) = (env()?, env()?);
    for i in [1, 2, 3, 4] {
        process(&a, occurrence(i, "fp", json!({"culprit": format!("c{i}")}))).await?;
    }
    for i in [4, 2, 3, 1] {
        process(&b, occurrence(i, "fp", json!({"culprit": format!("c{i}")}))).await?;
    }
    let (ga, gb) = (group(&a.url, "fp")?, group(&b.url, "fp")?);
    let key = |g: Option<G>| {
        g.map(|g| {
            (
                g.title,
                g.culprit,
                g.message,
                g.level,
                g.times_seen,
                g.first_seen,
                g.last_seen,
            )
        })
    };
    assert_eq!(key(ga), key(gb));
    Ok(())
}

#[tokio::test]
async fn priorities_category_mismatch_and_gates() -> anyhow::Result<()> {
    let e = env()?;
    process(
        &e,
        occurrence(1, "hi", json!({"initial_issue_priority": 75})),
    )
    .await?;
    assert_eq!(
        group(&e.url, "hi")?.map(|g| g.priority),
        Some(75),
        "explicit priority kept"
    );
    let before = group(&e.url, "hi")?;
    let mismatch = process(&e, occurrence(2, "hi", json!({"type": 4001}))).await?;
    assert_eq!(mismatch, Applied::Dropped("category_mismatch"));
    assert_eq!(group(&e.url, "hi")?, before, "group unchanged");

    assert_eq!(
        process(
            &e,
            occurrence(3, "x", json!({"project_id": 999, "event": null}))
        )
        .await?,
        Applied::Dropped("unknown_project")
    );
    let unreleased = process(&e, occurrence(4, "prof", json!({"type": 2004}))).await?;
    assert_eq!(unreleased, Applied::Dropped("group_type_disabled"));
    let mut c = PgConnection::establish(&e.url)?;
    diesel::sql_query("UPDATE organizations SET options = '{\"profile-core-data-main-exp-ingest\": true}' WHERE id = 1")
        .execute(&mut c)?;
    assert!(matches!(
        process(&e, occurrence(5, "prof", json!({"type": 2004}))).await?,
        Applied::Created { .. }
    ));

    let unknown = process(&e, occurrence(6, "t", json!({"type": 300}))).await;
    assert!(
        matches!(unknown, Err(IssueError::Reject(r)) if r.reason == DlqReason::UnknownGroupType)
    );
    let ev = json!({"event_id": format!("{:032x}", 1), "project_id": 42, "platform": "x"});
    let mismatch = process(&e, occurrence(7, "t", json!({"event": ev}))).await;
    assert!(matches!(mismatch, Err(IssueError::Reject(r)) if r.reason == DlqReason::IdMismatch));
    Ok(())
}

#[tokio::test]
async fn lookup_path_waits_for_the_event_and_backfills() -> anyhow::Result<()> {
    let e = env()?;
    let event = format!("{:032x}", 0xe000_0009u64);
    let no_event = occurrence(9, "err", json!({"event": null, "type": 1}));
    assert!(matches!(
        process(&e, no_event.clone()).await,
        Err(IssueError::EventNotFound(_))
    ));
    assert_eq!(
        count(&e.url, "SELECT count(*) AS n FROM occurrences")?,
        0,
        "nothing written"
    );
    let mut c = PgConnection::establish(&e.url)?;
    c.batch_execute(&format!(
        "INSERT INTO events (project_id, event_id, expires_at) VALUES (42, '{event}', now() + interval '90 days');
         INSERT INTO event_payloads (project_id, event_id, expires_at, data) SELECT project_id, event_id, expires_at,
           '{{\"message\": \"boom\", \"timestamp\": 1795432000}}' FROM events WHERE event_id = '{event}';
         INSERT INTO event_attachments (project_id, event_id, attachment_id, type, name, content_type, size, sha1, expires_at)
           VALUES (42, '{event}', 'a1', 'event.attachment', 'f', 'text/plain', 1, repeat('0', 40), now() + interval '90 days');
         INSERT INTO user_reports (project_id, event_id, name, email, comments) VALUES (42, '{event}', 'n', 'e', 'c');"
    ))?;
    let Applied::Created { group_id } = process(&e, no_event).await? else {
        panic!("created")
    };
    for table in ["events", "event_attachments", "user_reports"] {
        let n = count(
            &e.url,
            &format!("SELECT count(*) AS n FROM {table} WHERE group_id = {group_id}"),
        )?;
        assert_eq!(n, 1, "{table} back-filled");
    }
    let g = group(&e.url, "err")?.ok_or_else(|| anyhow::anyhow!("no group"))?;
    assert_eq!((g.priority, g.data["type"].as_str()), (50, Some("error")));
    assert!(g.message.starts_with("boom "), "{}", g.message);
    Ok(())
}

#[tokio::test]
async fn status_transitions_with_activity_and_history() -> anyhow::Result<()> {
    let e = env()?;
    process(&e, occurrence(1, "group-1", json!({"type": 1}))).await?; // MEDIUM
    let g = group(&e.url, "group-1")?.ok_or_else(|| anyhow::anyhow!("no group"))?;
    let step = |id: &str, st: i32, sub: Option<i32>| status(id, "group-1", st, sub);

    assert_eq!(
        process(&e, step("a1", 1, None)).await?,
        Applied::StatusChanged { group_id: g.id }
    );
    assert_eq!(
        group(&e.url, "group-1")?.map(|g| (g.status, g.substatus)),
        Some((1, None))
    );
    for (i, sub, hist) in [
        (2, 1, "archived_until_escalating"),
        (3, 4, "archived_until_condition_met"),
        (4, 5, "archived_forever"),
    ] {
        process(&e, step(&format!("a{i}"), 2, Some(sub))).await?;
        assert_eq!(
            history(&e.url, g.id)?.last().map(String::as_str),
            Some(hist)
        );
    }
    process(&e, step("a5", 2, Some(1))).await?; // IGNORED / UNTIL_ESCALATING
    process(&e, step("a6", 0, Some(2))).await?; // ESCALATING
    assert_eq!(
        group(&e.url, "group-1")?.map(|g| (g.status, g.substatus, g.priority)),
        Some((0, Some(2), 75))
    );
    process(&e, step("a7", 0, Some(3))).await?; // ONGOING from ESCALATING
    assert_eq!(
        group(&e.url, "group-1")?.map(|g| (g.substatus, g.priority)),
        Some((Some(3), 50)),
        "initial priority back"
    );
    process(&e, step("a8", 0, Some(6))).await?; // REGRESSED
    process(&e, step("a9", 0, Some(3))).await?; // ONGOING (not from escalating)
    assert_eq!(
        activities(&e.url, g.id)?,
        [
            "set_resolved",
            "set_ignored",
            "set_ignored",
            "set_ignored",
            "set_ignored",
            "set_escalating",
            "set_priority:high",
            "auto_set_ongoing",
            "set_priority:medium",
            "set_regression",
            "set_unresolved",
        ]
    );
    assert_eq!(
        history(&e.url, g.id)?,
        [
            "resolved",
            "archived_until_escalating",
            "archived_until_condition_met",
            "archived_forever",
            "archived_until_escalating",
            "escalating",
            "ongoing",
            "regressed",
            "ongoing",
        ]
    );

    // No change, invalid combinations, replays and unknown fingerprints change nothing.
    let before = (
        group(&e.url, "group-1")?,
        activities(&e.url, g.id)?.len(),
        history(&e.url, g.id)?.len(),
    );
    assert_eq!(
        process(&e, step("b1", 0, Some(3))).await?,
        Applied::StatusUnchanged
    );
    for (id, st, sub) in [
        ("b2", 1, Some(5)),
        ("b3", 2, None),
        ("b4", 2, Some(6)),
        ("b5", 0, Some(7)),
    ] {
        assert!(
            matches!(
                process(&e, step(id, st, sub)).await?,
                Applied::StatusInvalid(_)
            ),
            "{st}/{sub:?}"
        );
    }
    assert_eq!(
        process(&e, step("a1", 1, None)).await?,
        Applied::Duplicate,
        "replayed id"
    );
    assert!(matches!(
        process(&e, status("c1", "nope", 1, None)).await,
        Err(IssueError::GroupNotFound(_))
    ));
    let after = (
        group(&e.url, "group-1")?,
        activities(&e.url, g.id)?.len(),
        history(&e.url, g.id)?.len(),
    );
    assert_eq!(before, after);
    Ok(())
}

#[tokio::test]
async fn resolved_group_regresses_on_a_new_occurrence() -> anyhow::Result<()> {
    let e = env()?;
    process(&e, occurrence(1, "r", json!({}))).await?;
    process(&e, status("s1", "r", 1, None)).await?;
    let applied = process(&e, occurrence(2, "r", json!({}))).await?;
    let g = group(&e.url, "r")?.ok_or_else(|| anyhow::anyhow!("no group"))?;
    assert_eq!(
        applied,
        Applied::Updated {
            group_id: g.id,
            regressed: true
        }
    );
    assert_eq!((g.status, g.substatus, g.times_seen), (0, Some(6), 2));
    assert_eq!(
        activities(&e.url, g.id)?,
        ["set_resolved", "set_regression"]
    );
    assert_eq!(history(&e.url, g.id)?, ["resolved", "regressed"]);
    Ok(())
}

#[tokio::test]
async fn concurrent_creators_end_with_one_group() -> anyhow::Result<()> {
    let e = env()?;
    let tasks: Vec<_> = (1..=8)
        .map(|i| {
            let pool = e.pool.clone();
            let v = occurrence(i, "race", json!({}));
            tokio::spawn(async move {
                let msg = IssuePlatformMessage::decode(v.to_string().as_bytes())?;
                issues::process(&pool, &Default::default(), msg).await
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    assert_eq!(count(&e.url, "SELECT count(*) AS n FROM groups")?, 1);
    assert_eq!(group(&e.url, "race")?.map(|g| g.times_seen), Some(8));
    assert_eq!(
        count(
            &e.url,
            "SELECT count(*) AS n FROM occurrences WHERE group_id IS NOT NULL"
        )?,
        8
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_message_blocks_later_ones_of_its_fingerprint() -> anyhow::Result<()> {
    let e = env()?;
    let decode = |v: Value| IssuePlatformMessage::decode(v.to_string().as_bytes());
    // The resolve comes before its group exists: it fails, and what follows it for the same
    // fingerprint waits instead of being applied ahead of it. Another fingerprint goes on.
    let round = vec![
        decode(status("r1", "late", 1, None))?,
        decode(occurrence(1, "late", json!({})))?,
        decode(status("i1", "late", 2, Some(5)))?,
        decode(occurrence(2, "other", json!({})))?,
    ];
    let results = issues::process_many(&e.pool, &Default::default(), round).await;
    assert!(matches!(results[0], Err(IssueError::GroupNotFound(_))));
    assert!(
        matches!(results[1], Err(IssueError::Blocked))
            && matches!(results[2], Err(IssueError::Blocked))
    );
    assert!(matches!(results[3], Ok(Applied::Created { .. })));
    assert!(
        group(&e.url, "late")?.is_none(),
        "nothing of the blocked fingerprint was applied"
    );
    // Once the resolve is given up on, the rest applies in order.
    let rest = vec![
        decode(occurrence(1, "late", json!({})))?,
        decode(status("i1", "late", 2, Some(5)))?,
    ];
    let results = issues::process_many(&e.pool, &Default::default(), rest).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        group(&e.url, "late")?.map(|g| (g.status, g.substatus)),
        Some((2, Some(5)))
    );
    Ok(())
}

fn limited_reason(r: &Result<Applied, IssueError>) -> Option<&'static str> {
    match r {
        Ok(Applied::Limited(l)) => Some(l.reason),
        _ => None,
    }
}

async fn process_with(
    e: &Env,
    settings: &sluice_core::config::IssueSettings,
    v: Value,
) -> Result<Applied, IssueError> {
    let msg = IssuePlatformMessage::decode(v.to_string().as_bytes())?;
    issues::process(&e.pool, settings, msg).await
}

#[tokio::test]
async fn noise_reduction_holds_creation_until_the_ignore_limit() -> anyhow::Result<()> {
    let e = env()?;
    let settings = sluice_core::config::IssueSettings {
        noise_reduction: true,
        ..Default::default()
    };
    // Type 1006 has an ignore limit of 3: two occurrences are held back, the third creates.
    let n1 = json!({"type": 1006});
    let first = process_with(&e, &settings, occurrence(1, "noisy", n1.clone())).await;
    assert_eq!(limited_reason(&first), Some("noise_reduction"));
    let second = process_with(&e, &settings, occurrence(2, "noisy", n1.clone())).await;
    assert_eq!(limited_reason(&second), Some("noise_reduction"));
    assert!(group(&e.url, "noisy")?.is_none());
    // A redelivery is recognised (so its outcome can be re-emitted) but does not count.
    let again = process_with(&e, &settings, occurrence(2, "noisy", n1.clone())).await;
    assert_eq!(limited_reason(&again), Some("noise_reduction"));
    let third = process_with(&e, &settings, occurrence(3, "noisy", n1.clone())).await?;
    assert!(matches!(third, Applied::Created { .. }), "{third:?}");
    assert_eq!(group(&e.url, "noisy")?.map(|g| g.times_seen), Some(1));
    assert_eq!(
        count(
            &e.url,
            "SELECT count(*) AS n FROM occurrences WHERE dropped = 'noise_reduction' AND group_id IS NULL"
        )?,
        2
    );
    // Error occurrences are never held back; types without a noise config neither.
    let error = process_with(&e, &settings, occurrence(4, "err", json!({"type": 1}))).await?;
    assert!(matches!(error, Applied::Created { .. }));
    let plain = process_with(&e, &settings, occurrence(5, "plain", json!({"type": 2007}))).await?;
    assert!(matches!(plain, Applied::Created { .. }));
    // Off by default: the same type creates at once.
    let default = process(&e, occurrence(6, "quiet", json!({"type": 1006}))).await?;
    assert!(matches!(default, Applied::Created { .. }));
    Ok(())
}

#[tokio::test]
async fn creation_quota_and_occurrence_rate_limit() -> anyhow::Result<()> {
    let e = env()?;
    let quotas = sluice_core::config::IssueSettings {
        creation_quotas: true,
        ..Default::default()
    };
    // Type 1001's creation quota is the default: 5 new issues per hour per project.
    for i in 0..5 {
        let r = process_with(&e, &quotas, occurrence(i, &format!("q{i}"), json!({}))).await?;
        assert!(matches!(r, Applied::Created { .. }), "{i}: {r:?}");
    }
    let sixth = process_with(&e, &quotas, occurrence(5, "q5", json!({}))).await;
    assert_eq!(limited_reason(&sixth), Some("issue_creation_quota"));
    // An existing group still takes occurrences.
    let update = process_with(&e, &quotas, occurrence(6, "q0", json!({}))).await?;
    assert!(matches!(update, Applied::Updated { .. }), "{update:?}");
    // An hour later (detection time) the window has room again.
    let later = json!({"detection_time": 1_795_432_200.0 + 3700.0});
    let r = process_with(&e, &quotas, occurrence(7, "q5", later)).await?;
    assert!(matches!(r, Applied::Created { .. }), "{r:?}");

    let rate = sluice_core::config::IssueSettings {
        occurrence_rate_limit: sluice_core::config::Quota {
            enabled: true,
            window_seconds: 3600,
            granularity_seconds: 60,
            limit: 2,
        },
        ..Default::default()
    };
    let mut reasons = Vec::new();
    for i in 10..13 {
        reasons.push(limited_reason(
            &process_with(&e, &rate, occurrence(i, "hot", json!({}))).await,
        ));
    }
    assert_eq!(reasons, vec![None, None, Some("occurrence_rate_limit")]);
    assert_eq!(group(&e.url, "hot")?.map(|g| g.times_seen), Some(2));
    // Error occurrences are never rate limited.
    for i in 20..23 {
        let r = process_with(&e, &rate, occurrence(i, "hot-error", json!({"type": 1}))).await?;
        assert!(!matches!(r, Applied::Limited(_)), "{r:?}");
    }
    assert_eq!(group(&e.url, "hot-error")?.map(|g| g.times_seen), Some(3));
    Ok(())
}

/// A stream that touches every branch of saving: new groups, updates older and newer than the
/// group, duplicates inside and across calls, a category mismatch, the lookup path, a resolve,
/// a regression, a second occurrence after the regression, and two groups for one event.
fn mixed_stream() -> Vec<Value> {
    let older = json!({"detection_time": 1_795_432_100.0});
    vec![
        occurrence(1, "a", json!({})),
        occurrence(2, "b", json!({"level": "error", "culprit": "other/1"})),
        occurrence(3, "a", older),
        occurrence(4, "a", json!({"subtitle": "newer"})),
        occurrence(1, "a", json!({})),
        occurrence(5, "a", json!({"type": 6001})),
        occurrence(
            6,
            "c",
            json!({"event": null, "event_id": format!("{:032x}", 0xfeed_u64)}),
        ),
        occurrence(
            7,
            "b",
            json!({"event_id": format!("{:032x}", 0xe000_0000u64 + 2), "event": {
            "event_id": format!("{:032x}", 0xe000_0000u64 + 2), "project_id": 42, "platform": "go"}}),
        ),
        status("res-a", "a", 1, None),
        occurrence(8, "a", json!({})),
        occurrence(9, "a", json!({})),
        occurrence(
            10,
            "d",
            json!({"event_id": format!("{:032x}", 0xe000_0000u64 + 9), "event": {
            "event_id": format!("{:032x}", 0xe000_0000u64 + 9), "project_id": 42, "platform": "go"}}),
        ),
        occurrence(11, "b", json!({"initial_issue_priority": 75})),
    ]
}

fn seed_lookup_event(url: &str) -> anyhow::Result<()> {
    let mut c = PgConnection::establish(url)?;
    c.batch_execute(&format!(
        "WITH e AS (INSERT INTO events (project_id, event_id, expires_at) \
           VALUES (42, '{:032x}', now() + interval '90 days') RETURNING project_id, event_id, expires_at) \
         INSERT INTO event_payloads (project_id, event_id, expires_at, data) SELECT project_id, event_id, expires_at, \
         '{{\"message\": \"stored first\", \"platform\": \"python\"}}' FROM e; \
         INSERT INTO user_reports (project_id, event_id, name) VALUES (42, '{:032x}', 'early'), \
           (42, '{:032x}', 'before its event'); \
         INSERT INTO event_attachments (project_id, event_id, attachment_id, type, name, content_type, size, sha1, expires_at) \
           VALUES (42, '{:032x}', 'a1', 'event.attachment', 'a.txt', 'text/plain', 0, repeat('0', 40), now() + interval '90 days')",
        0xfeed_u64,
        0xfeed_u64,
        0xe000_0000u64 + 1,
        0xe000_0000u64 + 1
    ))?;
    Ok(())
}

#[tokio::test]
async fn set_based_runs_match_one_by_one() -> anyhow::Result<()> {
    let decode = |v: &Value| IssuePlatformMessage::decode(v.to_string().as_bytes());
    let stream = mixed_stream();

    let single = env()?;
    seed_lookup_event(&single.url)?;
    let mut one_by_one = Vec::new();
    for v in &stream {
        one_by_one.push(issues::process(&single.pool, &Default::default(), decode(v)?).await?);
    }

    let batched = env()?;
    seed_lookup_event(&batched.url)?;
    let msgs = stream.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    let fallbacks = issues::one_by_one_total().get();
    let results = issues::process_many(&batched.pool, &Default::default(), msgs).await;
    let in_runs = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    assert_eq!(
        issues::one_by_one_total().get(),
        fallbacks,
        "the batch was saved by the set-based path"
    );

    let label = |a: &Vec<Applied>| a.iter().map(Applied::label).collect::<Vec<_>>();
    assert_eq!(label(&in_runs), label(&one_by_one));
    assert_eq!(
        label(&one_by_one),
        vec![
            "group_created",
            "group_created",
            "group_updated",
            "group_updated",
            "duplicate",
            "category_mismatch",
            "group_created",
            "group_updated",
            "status_changed",
            "group_regressed",
            "group_updated",
            "group_created",
            "group_updated"
        ]
    );
    let grouped = "SELECT count(*) AS n FROM user_reports r JOIN event_attachments a ON true \
                   WHERE r.group_id IS NOT NULL AND a.group_id IS NOT NULL";
    assert_eq!(
        count(&batched.url, grouped)?,
        2,
        "reports and attachments back-filled"
    );
    assert_eq!(count(&single.url, grouped)?, 2);
    let snap = sluice_testkit::db::issue_snapshot(&batched.url)?;
    sluice_testkit::db::assert_same_rows(
        &snap,
        &sluice_testkit::db::issue_snapshot(&single.url)?,
        "set-based runs vs one by one",
    );
    // Replaying the whole stream in one call changes nothing.
    let msgs = stream.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    let again = issues::process_many(&batched.pool, &Default::default(), msgs).await;
    assert!(
        again.iter().all(
            |r| matches!(r, Ok(Applied::Duplicate | Applied::StatusUnchanged))
                || matches!(r, Ok(Applied::Dropped(_)))
        ),
        "{again:?}"
    );
    sluice_testkit::db::assert_same_rows(
        &sluice_testkit::db::issue_snapshot(&batched.url)?,
        &snap,
        "replay",
    );
    Ok(())
}
