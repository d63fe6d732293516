//! Shared core of the sluice pipeline: wire types, derived ids, configuration, the command line,
//! storage, attachment objects, Kafka plumbing, metrics and health.

/// jemalloc for every binary: glibc's per-thread arenas kept hundreds of megabytes of freed
/// attachment bodies (1 MiB chunks) resident; jemalloc returns them, so memory follows the byte
/// budgets. The `system-allocator` feature leaves it out, for heap profilers that follow the
/// system's `malloc` (`scripts/heap-profile`).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod app;
pub mod cli;
pub mod config;
pub mod consumer_binary;
pub mod failure;
pub mod health;
pub mod ids;
pub mod issues;
pub mod json;
pub mod kafka;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod objects;
pub mod outcomes;
pub mod parallel;
pub mod queue;
pub mod shutdown;
pub mod stages;
pub mod storage;
