//! Wire formats: Relay's msgpack ingest messages, the issue platform's JSON, outcomes, DLQ headers.

pub mod dlq;
pub mod enums;
pub mod ingest;
pub mod issue_platform;
pub mod outcome;
pub mod time;
pub mod validate;

pub use dlq::{DlqHeaders, DlqReason, Rejection};
pub use ingest::{
    AttachmentChunk, AttachmentMessage, ChunkedAttachment, EventMessage, IngestMessage,
    UserReportMessage,
};
pub use issue_platform::{
    EmbeddedEvent, IssueEvidence, IssuePlatformMessage, OccurrenceMessage, StatusChangeMessage,
    Tags,
};
pub use outcome::OutcomeMessage;
pub use time::{event_time, Timestamp};
