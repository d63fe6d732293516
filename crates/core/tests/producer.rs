//! The core producer: success only after the broker acknowledged; murmur2_random partitioning
//! (the Java client's), so every producer of a key agrees on its partition.

use rdkafka::message::{Headers, Message};
use sluice_core::kafka::producer::{Producer, ProducerConfig};
use sluice_testkit::kafka::java_partition;
use sluice_testkit::Broker;
use std::time::Duration;

#[tokio::test]
async fn acknowledged_sends_keyed_partitions_and_outage() -> anyhow::Result<()> {
    let mut broker = Broker::start(&[("out", 4)])?;
    let topic = broker.topic("out");
    let producer = Producer::new(&ProducerConfig {
        brokers: broker.bootstrap.clone(),
        client_id: "test".into(),
        message_timeout: Duration::from_secs(3),
    })?;
    for i in 0..200 {
        let key = format!("fingerprint-{i}-42");
        let (partition, offset) = producer
            .send(
                &topic,
                Some(key.as_bytes()),
                b"value",
                &[("source", b"test".as_slice())],
            )
            .await?;
        assert_eq!(partition, java_partition(key.as_bytes(), 4), "{key}");
        assert!(offset >= 0);
    }
    let got = broker.read_all(&topic, 200, Duration::from_secs(20))?;
    assert_eq!(got.len(), 200, "every acknowledged message is on the topic");
    for m in &got {
        let key = m.key().unwrap_or_default();
        assert_eq!(m.partition(), java_partition(key, 4));
        let h = m
            .headers()
            .map(|h| h.get(0))
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)));
        assert_eq!(h, Some(("source".to_owned(), Some(b"test".to_vec()))));
    }

    if !broker.is_mock() {
        return Ok(());
    }
    broker.down()?;
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        producer.send(&topic, Some(b"k"), b"lost?", &[]),
    )
    .await;
    match res {
        Ok(Err(_)) => {}
        Ok(Ok(r)) => panic!("reported success while the broker is down: {r:?}"),
        Err(_) => panic!("the send neither failed nor succeeded within message.timeout.ms"),
    }
    broker.up()?;
    // The client reconnects with backoff: sends fail until it has, then succeed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while producer
        .send(&topic, Some(b"k"), b"after", &[])
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "no recovery after up");
    }
    producer.flush(Duration::from_secs(5))?;
    Ok(())
}
