//! Test bed: each test gets its own PostgreSQL database, Kafka broker (the mock cluster served by
//! the `mock-broker` binary, or a real one from `KAFKA_BROKERS` with unique topic names), consumer
//! group and S3 server (`s3s-fs`). Everything started here stops when its handle drops.

pub mod broker;
pub mod db;
pub mod http;
pub mod kafka;
pub mod paths;
pub mod pg;
pub mod process;
pub mod s3;

pub use broker::Broker;
pub use db::TestDb;
pub use s3::S3Server;

/// A name unique to this test run: `{prefix}-{12 hex}`.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}
