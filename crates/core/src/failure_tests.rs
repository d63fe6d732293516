use super::*;
use rdkafka::error::KafkaError;

fn produce(code: RDKafkaErrorCode) -> ProduceError {
    ProduceError {
        topic: "t".into(),
        error: KafkaError::MessageProduction(code),
        detail: None,
    }
}

#[test]
fn produce_errors_by_librdkafka_code() {
    assert_eq!(
        produce(RDKafkaErrorCode::MessageSizeTooLarge)
            .failure()
            .class(),
        "permanent"
    );
    match produce(RDKafkaErrorCode::MessageSizeTooLarge).failure() {
        Failure::Permanent(r) => assert_eq!(r.reason, DlqReason::TooLarge),
        other => panic!("{other:?}"),
    }
    for code in [
        RDKafkaErrorCode::MessageTimedOut,
        RDKafkaErrorCode::UnknownTopicOrPartition,
        RDKafkaErrorCode::QueueFull,
        RDKafkaErrorCode::TopicAuthorizationFailed,
    ] {
        assert!(produce(code).failure().is_outage(), "{code:?}");
    }
}

#[test]
fn task_panics_are_transient_and_pool_timeouts_outages() {
    assert_eq!(
        DbError::Task("panicked".into()).failure().class(),
        "transient"
    );
    assert!(DbError::Unavailable("timed out".into())
        .failure()
        .is_outage());
}

fn pg(message: &str) -> Failure {
    classify_pg_message(&message.to_ascii_lowercase(), message.to_owned())
}

fn reason(f: Failure) -> Option<DlqReason> {
    match f {
        Failure::Permanent(r) => Some(r.reason),
        _ => None,
    }
}

#[test]
fn postgres_messages_by_class() {
    assert_eq!(
        reason(pg("index row size 3064 exceeds btree version 4 maximum 2704 for index \"emitted_outcomes_pkey\"")),
        Some(DlqReason::TooLarge)
    );
    assert_eq!(
        reason(pg("invalid byte sequence for encoding \"UTF8\": 0x00")),
        Some(DlqReason::InvalidField)
    );
    assert_eq!(
        reason(pg("unsupported Unicode escape sequence")),
        Some(DlqReason::InvalidField)
    );
    assert_eq!(
        reason(pg("value overflows numeric format")),
        Some(DlqReason::InvalidField)
    );
    assert_eq!(
        reason(pg("timestamp out of range")),
        Some(DlqReason::InvalidField)
    );
    assert!(pg("terminating connection due to administrator command").is_outage());
    assert!(pg("sorry, too many clients already").is_outage());
    assert!(pg("relation \"events\" does not exist").is_outage());
    assert!(pg("cached plan must not change result type").is_outage());
    assert_eq!(
        pg("deadlock detected").class(),
        "transient",
        "a deadlock passes on a retry"
    );
    assert_eq!(pg("something new").class(), "transient");
}

#[test]
fn object_store_status_from_text() {
    assert_eq!(
        status_in("Error performing PUT http://x in 2ms - Server returned non-2xx status code: 413 Payload Too Large: "),
        Some(413)
    );
    assert_eq!(status_in("connection refused"), None);
    assert_eq!(
        reason(classify_status(413, String::new())),
        Some(DlqReason::TooLarge)
    );
    assert!(classify_status(503, String::new()).is_outage());
    assert!(classify_status(403, String::new()).is_outage());
}

#[test]
fn verdicts_follow_classes() {
    assert!(matches!(
        Verdict::from(Failure::Outage("x".into())),
        Verdict::Unavailable(_)
    ));
    assert!(matches!(
        Verdict::from(Failure::Transient("x".into())),
        Verdict::Retry {
            reason: DlqReason::RetryExhausted,
            ..
        }
    ));
    assert!(matches!(
        Verdict::from(Failure::permanent(DlqReason::TooLarge, "x")),
        Verdict::Reject(_)
    ));
}
