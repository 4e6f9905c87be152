//! The integration tests, one binary (librdkafka is linked once): the real bridge over
//! real HTTP against librdkafka's mock cluster, the CLI, the deployment files, the goldens
//! and schemas, properties, and (ignored by default; `.ci/run` runs them) Apache Kafka.

mod common;

mod bridge;
mod cli;
mod comm100;
mod commands;
mod deploy;
mod disk;
mod docs;
mod durability;
mod examples;
mod golden;
mod harness;
mod hostile;
mod http2;
mod kafka;
mod lifecycle;
mod metrics;
mod order;
mod properties;
mod redrive;
mod registry;
mod render;
mod schemas;
mod tls;
mod topics;
