//! The mock broker binary: produce and consume through it; `down`/`up` make clients see an
//! outage and recover.

use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use sluice_testkit::Broker;
use std::time::Duration;

#[tokio::test]
async fn produce_consume_and_outage() -> anyhow::Result<()> {
    let mut broker = Broker::start(&[("events", 2)])?;
    let topic = broker.topic("events");
    let producer = broker.producer()?;
    for i in 0..10 {
        let key = format!("k{i}");
        let payload = format!("v{i}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
    }
    let got = broker.read_all(&topic, 10, Duration::from_secs(20))?;
    let mut payloads: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
        .collect();
    payloads.sort();
    assert_eq!(
        payloads,
        (0..10).map(|i| format!("v{i}")).collect::<Vec<_>>()
    );
    let partitions: std::collections::BTreeSet<i32> = got.iter().map(|m| m.partition()).collect();
    assert!(partitions.iter().all(|p| *p == 0 || *p == 1));

    if !broker.is_mock() {
        return Ok(()); // fault injection needs the mock
    }
    broker.down()?;
    let impatient: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("message.timeout.ms", "2000")
        .create()?;
    let res = impatient
        .send(
            FutureRecord::to(&topic).key("k").payload("during outage"),
            Duration::from_secs(1),
        )
        .await;
    assert!(
        res.is_err(),
        "a produce while the broker is down is not acknowledged"
    );

    let consumer = broker.consumer()?;
    consumer.subscribe(&[&topic])?;
    assert!(
        consumer
            .poll(Duration::from_secs(2))
            .and_then(|r| r.ok())
            .is_none(),
        "nothing is delivered while the broker is down"
    );

    broker.up()?;
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("after outage"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("produce after up: {e}"))?;
    let mut seen_after = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen_after && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen_after = m.payload() == Some(b"after outage".as_slice());
        }
    }
    assert!(seen_after, "the consumer recovers after up");
    Ok(())
}

#[test]
fn control_channel_rejects_bad_commands() -> anyhow::Result<()> {
    let mut broker = Broker::start(&[("a", 1)])?;
    if !broker.is_mock() {
        return Ok(());
    }
    broker.create_topic("b", 3)?;
    broker.errors(0, 7, 1)?;
    assert!(
        broker.errors(0, 9999, 1).is_err(),
        "unknown error codes are refused"
    );
    Ok(())
}
