//! Failure classes, decided in one place from the error itself.
//!
//! | class       | meaning                                   | the runtime                                    |
//! |-------------|-------------------------------------------|------------------------------------------------|
//! | `Outage`    | a dependency every message needs is down  | pauses the partitions, retries with backoff, never dead-letters |
//! | `Transient` | this message failed, it may pass later    | up to 5 attempts within 10 s, then DLQ `retry_exhausted` |
//! | `Permanent` | this message can never succeed            | DLQ at once with a precise reason              |
//!
//! Database errors are classified by the SQLSTATE class diesel reports (its error kind) and,
//! for the states diesel folds into `Unknown`, by PostgreSQL's message; object-store errors by
//! kind and HTTP status; produce errors by librdkafka's error code. A value the database cannot
//! hold (NUL, a number or timestamp out of range, an index row too large) is the message's
//! fault, never an outage. Anything not recognised is transient: bounded, never a stall.

use crate::kafka::consumer::Verdict;
use crate::kafka::producer::ProduceError;
use crate::messages::{DlqReason, Rejection};
use crate::objects::ObjectsError;
use crate::outcomes::OutcomeError;
use crate::storage::DbError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How a failure is handled.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// A dependency is unreachable or refuses every request: pause and retry, never DLQ.
    Outage(String),
    /// Scoped to one message and possibly temporary: bounded retries, then DLQ
    /// `retry_exhausted`.
    Transient(String),
    /// The message itself can never succeed: DLQ at once.
    Permanent(Rejection),
}

impl Failure {
    fn permanent(reason: DlqReason, detail: impl Into<String>) -> Failure {
        Failure::Permanent(Rejection::new(reason, detail))
    }

    /// The class name (a metric label): `outage`, `transient` or `permanent`.
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Outage(_) => "outage",
            Failure::Transient(_) => "transient",
            Failure::Permanent(_) => "permanent",
        }
    }

    /// Whether this is an outage.
    pub fn is_outage(&self) -> bool {
        matches!(self, Failure::Outage(_))
    }
}

impl From<Failure> for Verdict {
    fn from(f: Failure) -> Verdict {
        match f {
            Failure::Outage(detail) => Verdict::Unavailable(detail),
            Failure::Transient(detail) => Verdict::Retry {
                reason: DlqReason::RetryExhausted,
                detail,
            },
            Failure::Permanent(rejection) => Verdict::Reject(rejection),
        }
    }
}

/// An error that knows its failure class.
pub trait Classify: std::fmt::Display {
    /// The class of this error.
    fn failure(&self) -> Failure;

    /// The verdict for the message that met this error.
    fn verdict(&self) -> Verdict {
        self.failure().into()
    }
}

impl Classify for DbError {
    fn failure(&self) -> Failure {
        let text = self.to_string();
        match self {
            DbError::Unavailable(_) => Failure::Outage(text),
            // A panic or a cancelled task inside a database closure: the message that caused it
            // must not stall the stage.
            DbError::Task(_) => Failure::Transient(text),
            DbError::Query(e) => classify_diesel(e, text),
        }
    }
}

fn classify_diesel(e: &DieselError, text: String) -> Failure {
    let (kind, message) = match e {
        DieselError::DatabaseError(kind, info) => (kind, info.message().to_ascii_lowercase()),
        DieselError::BrokenTransactionManager => return Failure::Outage(text),
        // A value diesel could not encode or decode: the message's data.
        DieselError::SerializationError(_) | DieselError::DeserializationError(_) => {
            return Failure::permanent(DlqReason::InvalidField, text)
        }
        DieselError::NotFound | DieselError::RollbackTransaction => {
            return Failure::Transient(text)
        }
        _ => return Failure::Transient(text),
    };
    match kind {
        DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
            return Failure::Outage(text)
        }
        // 25006: the server is a read-only standby (a failover in progress).
        DatabaseErrorKind::ReadOnlyTransaction => return Failure::Outage(text),
        // 40001, 23505, 23503: a concurrent writer; the same message passes on a retry.
        DatabaseErrorKind::SerializationFailure
        | DatabaseErrorKind::UniqueViolation
        | DatabaseErrorKind::ForeignKeyViolation => return Failure::Transient(text),
        // 23514 on a partition's constraint: the row was routed just before a day partition
        // was attached beside the default one; the same row is routed anew on a retry.
        DatabaseErrorKind::CheckViolation if message.contains("partition constraint") => {
            return Failure::Transient(text)
        }
        // 23502, 23514: a value the schema refuses.
        DatabaseErrorKind::NotNullViolation | DatabaseErrorKind::CheckViolation => {
            return Failure::permanent(DlqReason::InvalidField, text)
        }
        _ => {}
    }
    classify_pg_message(&message, text)
}

/// Classes for the SQLSTATEs diesel reports as `Unknown`, by PostgreSQL's primary message.
fn classify_pg_message(m: &str, text: String) -> Failure {
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    // Class 08 (connection), 57P0x (shutdown), 53 (insufficient resources), 42 (the schema is
    // not what this build expects: every message would fail the same way).
    if has(&[
        "terminating connection",
        "server closed the connection",
        "connection to server",
        "no connection to the server",
        "could not connect",
        "the database system is",
        "too many clients",
        "remaining connection slots",
        "out of memory",
        "could not extend file",
        "no space left",
        "does not exist",
        "permission denied",
        "cannot execute",
        // A statement prepared before a schema change: its connection is replaced (see
        // `storage::pool`), so the next try succeeds.
        "cached plan must not change result type",
    ]) {
        return Failure::Outage(text);
    }
    if m.contains("deadlock") || m.contains("could not serialize") {
        return Failure::Transient(text);
    }
    // Class 54 (program limit): the value is too large to index or store.
    if has(&[
        "index row size",
        "index row requires",
        "exceeds the maximum",
        "too long to represent",
        "value too long",
    ]) {
        return Failure::permanent(DlqReason::TooLarge, text);
    }
    // Class 22 (data exception): NUL, bad encoding, out-of-range numbers and timestamps.
    if has(&[
        "invalid byte sequence",
        "unsupported unicode escape",
        "out of range",
        "overflow",
        "invalid input syntax",
        "invalid input value",
        "malformed",
        "character with byte sequence",
        "untranslatable",
    ]) {
        return Failure::permanent(DlqReason::InvalidField, text);
    }
    Failure::Transient(text)
}

impl Classify for ProduceError {
    fn failure(&self) -> Failure {
        let text = self.to_string();
        let code = match &self.error {
            KafkaError::MessageProduction(code) => Some(*code),
            e => e.rdkafka_error_code(),
        };
        match code {
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidMessageSize,
            ) => Failure::permanent(DlqReason::TooLarge, text),
            Some(RDKafkaErrorCode::InvalidMessage | RDKafkaErrorCode::InvalidRecord) => {
                Failure::permanent(DlqReason::InvalidField, text)
            }
            // Everything else (timeouts, unknown topic, authorization, a full queue, transport)
            // affects every message produced to that broker.
            _ => Failure::Outage(text),
        }
    }
}

impl Classify for ObjectsError {
    fn failure(&self) -> Failure {
        let text = self.to_string();
        match self {
            ObjectsError::InvalidUrl { .. } => Failure::Outage(text),
            ObjectsError::InvalidKey(_) => Failure::permanent(DlqReason::InvalidField, text),
            ObjectsError::Store(e) => classify_store(e, text),
        }
    }
}

fn classify_store(e: &object_store::Error, text: String) -> Failure {
    use object_store::Error as E;
    match e {
        E::InvalidPath { .. } => Failure::permanent(DlqReason::InvalidField, text),
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::NotSupported { .. }
        | E::NotImplemented
        | E::UnknownConfigurationKey { .. } => Failure::Outage(text),
        E::NotFound { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. } => Failure::Transient(text),
        _ => classify_http(e, text),
    }
}

/// A request that failed over HTTP: by status when the server answered, else by the transport
/// error. A request that cannot even be built (a header value with a control character) is the
/// message's fault.
fn classify_http(e: &object_store::Error, text: String) -> Failure {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http::header::InvalidHeaderValue>()
            || err.is::<http::header::InvalidHeaderName>()
            || err.is::<http::uri::InvalidUri>()
        {
            return Failure::permanent(DlqReason::InvalidField, text);
        }
        if let Some(h) = err.downcast_ref::<HttpError>() {
            if matches!(h.kind(), HttpErrorKind::Decode) {
                return Failure::Transient(text);
            }
        }
        source = err.source();
    }
    // object_store keeps its status-carrying error private; its text names the status.
    match status_in(&text) {
        Some(status) => classify_status(status, text),
        None => Failure::Outage(text),
    }
}

/// The HTTP status in object_store's error text ("… status code: 413 Payload Too Large …").
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

fn classify_status(status: u16, text: String) -> Failure {
    match status {
        413 => Failure::permanent(DlqReason::TooLarge, text),
        400 | 411 | 414 | 431 => Failure::permanent(DlqReason::InvalidField, text),
        404 | 409 | 412 => Failure::Transient(text),
        // 401/403 (credentials), 408/429 (throttled) and 5xx affect every request.
        _ => Failure::Outage(text),
    }
}

impl Classify for OutcomeError {
    fn failure(&self) -> Failure {
        match self {
            OutcomeError::Produce(e) => e.failure(),
            OutcomeError::Db(e) => e.failure(),
        }
    }
}

#[cfg(test)]
#[path = "failure_tests.rs"]
mod tests;
