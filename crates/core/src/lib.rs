//! Shared core of the sluice pipeline: wire types, derived ids, configuration, the command line,
//! storage, attachment objects, Kafka plumbing, metrics and health.

pub mod app;
pub mod cli;
pub mod config;
pub mod consumer_binary;
pub mod failure;
pub mod health;
pub mod ids;
pub mod issues;
pub mod kafka;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod objects;
pub mod outcomes;
pub mod shutdown;
pub mod stages;
pub mod storage;
