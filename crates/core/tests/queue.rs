//! The embedded transport's tables against a real PostgreSQL: offsets per partition in publish
//! order, reads bounded in messages and bytes per partition, commits, and partition ownership
//! by advisory lock.

use sluice_core::storage::migrate;
use sluice_core::storage::queue::{self, NewMessage, Position};
use sluice_testkit::TestDb;

fn message(partition: i32, payload: Vec<u8>) -> NewMessage {
    NewMessage {
        topic: "t".into(),
        partition,
        key: Some(b"k".to_vec()),
        payload,
        headers: None,
    }
}

fn at(partition: i32, offset: i64) -> Position {
    Position {
        topic: "t".into(),
        partition,
        offset,
    }
}

#[test]
fn offsets_reads_commits_and_ownership() -> anyhow::Result<()> {
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let mut c = db.connect()?;
    assert_eq!(queue::ensure_topic(&mut c, "t", 2)?, 2);
    assert_eq!(
        queue::ensure_topic(&mut c, "t", 8)?,
        2,
        "an existing topic keeps its count"
    );

    // Two publishes: offsets continue per partition, in the order given.
    let mib = 1024 * 1024;
    queue::publish(
        &mut c,
        &[
            message(0, vec![1; mib]),
            message(1, b"a".to_vec()),
            message(0, vec![2; mib]),
        ],
    )?;
    queue::publish(
        &mut c,
        &[
            message(0, vec![3; mib]),
            message(1, b"b".to_vec()),
            message(1, b"c".to_vec()),
        ],
    )?;
    let all = queue::fetch(&mut c, &[at(0, 0), at(1, 0)], 100, i64::MAX)?;
    let seen: Vec<(i32, i64, u8)> = all
        .iter()
        .map(|m| (m.partition, m.offset, m.payload[0]))
        .collect();
    assert_eq!(
        seen,
        vec![
            (0, 0, 1),
            (0, 1, 2),
            (0, 2, 3),
            (1, 0, b'a'),
            (1, 1, b'b'),
            (1, 2, b'c')
        ]
    );

    // Reads stop at the byte budget per partition (the first message always comes), and at the
    // message limit.
    let bounded = queue::fetch(&mut c, &[at(0, 0), at(1, 0)], 100, (mib + 10) as i64)?;
    let per: Vec<(i32, i64)> = bounded.iter().map(|m| (m.partition, m.offset)).collect();
    assert_eq!(per, vec![(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]);
    let tiny = queue::fetch(&mut c, &[at(0, 1), at(1, 1)], 1, 1)?;
    let per: Vec<(i32, i64)> = tiny.iter().map(|m| (m.partition, m.offset)).collect();
    assert_eq!(per, vec![(0, 1), (1, 1)]);

    // A publish to a partition that does not exist publishes nothing.
    assert!(queue::publish(
        &mut c,
        &[message(1, b"d".to_vec()), message(5, b"x".to_vec())]
    )
    .is_err());
    assert_eq!(queue::fetch(&mut c, &[at(1, 3)], 10, i64::MAX)?.len(), 0);

    // Commits are per group.
    queue::commit(&mut c, "g", &[at(0, 3), at(1, 1)])?;
    queue::commit(&mut c, "g", &[at(1, 3)])?;
    let mut committed = queue::committed(&mut c, "g", &["t".to_owned()])?;
    committed.sort_by_key(|p| p.partition);
    assert_eq!(committed, vec![at(0, 3), at(1, 3)]);
    assert!(queue::committed(&mut c, "other", &["t".to_owned()])?.is_empty());
    assert_eq!(
        queue::end_offsets(&mut c, &["t".to_owned()])?,
        vec![at(0, 3), at(1, 3)]
    );

    // One owner per (group, partition) until its connection closes.
    let mut other = db.connect()?;
    assert!(queue::try_own(&mut c, "g", "t", 0)?);
    assert!(!queue::try_own(&mut other, "g", "t", 0)?);
    assert!(queue::try_own(&mut other, "h", "t", 0)?, "another group");
    drop(c);
    let mut owned = false;
    for _ in 0..50 {
        if queue::try_own(&mut other, "g", "t", 0)? {
            owned = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(owned, "a closed connection's partitions are free again");
    Ok(())
}

/// The storage layer's statements are prepared once per connection and kept: after many
/// publishes of different sizes (past the point where PostgreSQL may switch to a generic plan),
/// the connection holds one prepared publish statement, and every message got the right offset.
#[test]
fn statements_are_prepared_once_per_connection_and_stay_correct() -> anyhow::Result<()> {
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;
    #[derive(QueryableByName)]
    struct Plans {
        #[diesel(sql_type = BigInt)]
        statements: i64,
        #[diesel(sql_type = BigInt)]
        executions: i64,
    }
    let db = TestDb::new()?;
    migrate(&db.url)?;
    let mut c = db.connect()?;
    queue::ensure_topic(&mut c, "t", 2)?;
    let sizes = [1_usize, 500, 3, 1, 800, 2, 1, 50, 1, 1000, 7, 1];
    for (i, n) in sizes.iter().enumerate() {
        let batch: Vec<NewMessage> = (0..*n)
            .map(|j| message((j % 2) as i32, format!("{i}:{j}").into_bytes()))
            .collect();
        queue::publish(&mut c, &batch)?;
    }
    let plans: Plans = diesel::sql_query(
        "SELECT count(*) AS statements, \
                coalesce(sum(generic_plans + custom_plans), 0)::bigint AS executions \
         FROM pg_prepared_statements WHERE statement LIKE 'WITH m AS (SELECT * FROM unnest%'",
    )
    .get_result(&mut c)?;
    assert_eq!(plans.statements, 1, "one prepared publish statement");
    assert_eq!(plans.executions, sizes.len() as i64);

    let total: usize = sizes.iter().sum();
    let all = queue::fetch(&mut c, &[at(0, 0), at(1, 0)], 10_000, i64::MAX)?;
    assert_eq!(all.len(), total);
    for p in 0..2 {
        let offsets: Vec<i64> = all
            .iter()
            .filter(|m| m.partition == p)
            .map(|m| m.offset)
            .collect();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, expected, "partition {p}: consecutive offsets");
    }
    // Within a publish, a partition's messages keep the order given.
    let order: Vec<String> = all
        .iter()
        .filter(|m| m.partition == 0)
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .filter(|s| s.starts_with("9:"))
        .collect();
    let expected: Vec<String> = (0..1000).step_by(2).map(|j| format!("9:{j}")).collect();
    assert_eq!(order, expected);
    Ok(())
}
