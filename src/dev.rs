//! `comm100-bridge dev`: the bridge against an embedded librdkafka mock cluster, printing
//! every record it publishes as it is consumed back. For trying the bridge, never production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::{Config, Secret};
use crate::route::Router;

/// Partitions of every topic of the embedded cluster.
pub const PARTITIONS: i32 = 3;

/// The bundled Comm100 samples, `(file name, body)`.
pub const SAMPLES: [(&str, &str); 7] = [
    (
        "chat_ended.json",
        include_str!("../tests/fixtures/chat_ended.json"),
    ),
    (
        "chat_started.json",
        include_str!("../tests/fixtures/chat_started.json"),
    ),
    (
        "chat_wrapped_up.json",
        include_str!("../tests/fixtures/chat_wrapped_up.json"),
    ),
    (
        "chat_requested.json",
        include_str!("../tests/fixtures/chat_requested.json"),
    ),
    (
        "chat_transferred.json",
        include_str!("../tests/fixtures/chat_transferred.json"),
    ),
    (
        "offline_message_submitted.json",
        include_str!("../tests/fixtures/offline_message_submitted.json"),
    ),
    (
        "agent_status_changed_online.json",
        include_str!("../tests/fixtures/agent_status_changed_online.json"),
    ),
];

/// An in-memory Kafka-protocol cluster on loopback with every topic of `config` created
/// (the dead-letter topic among them).
pub fn start_cluster(
    brokers: i32,
    config: &Config,
) -> KafkaResult<MockCluster<'static, DefaultProducerContext>> {
    let cluster = MockCluster::new(brokers)?;
    for topic in crate::topics::expected(config) {
        cluster.create_topic(&topic, PARTITIONS, 1)?;
    }
    Ok(cluster)
}

/// The configuration `dev` runs with: defaults, the embedded cluster, no auth, and a spool
/// in `spool_dir` (the embedded cluster lives in memory, so a spool beyond it is moot).
pub fn config(
    bootstrap: &str,
    listen: SocketAddr,
    spool_dir: PathBuf,
) -> Result<Config, crate::config::ConfigError> {
    let mut config = Config::load(None)?;
    config.kafka.brokers = vec![bootstrap.to_owned()];
    config.http.listen = listen;
    config.auth.tokens = Vec::<Secret>::new();
    config.auth.allow_unauthenticated = true;
    config.spool.dir = spool_dir;
    Ok(config)
}

/// A consumer assigned to every partition of every topic, from the beginning.
pub fn consumer(bootstrap: &str, router: &Router) -> KafkaResult<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "comm100-bridge-dev")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for topic in router.topics() {
        for partition in 0..PARTITIONS {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Prints each consumed record: topic, partition, offset, key, headers, value.
pub async fn print_records(consumer: StreamConsumer) {
    loop {
        match consumer.recv().await {
            Ok(m) => {
                let key = m
                    .key()
                    .map(String::from_utf8_lossy)
                    .unwrap_or("(none)".into());
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                format!(
                                    "{}={}",
                                    h.key,
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let value = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or_default();
                println!(
                    "\n--- published: topic={} partition={} offset={} key={key}\n    headers: {headers}\n{value}",
                    m.topic(),
                    m.partition(),
                    m.offset()
                );
            }
            Err(e) => tracing::warn!(error = %e, "dev consumer"),
        }
    }
}

/// Writes the bundled samples to `dir`/samples and returns that directory.
pub fn write_samples(dir: &Path) -> std::io::Result<PathBuf> {
    let dir = dir.join("samples");
    std::fs::create_dir_all(&dir)?;
    for (name, body) in SAMPLES {
        std::fs::write(dir.join(name), body)?;
    }
    Ok(dir)
}

/// A new directory under the system's temporary directory that only this user can enter,
/// with a name no other process can have chosen first.
pub fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    loop {
        let dir = std::env::temp_dir().join(format!(
            "comm100-bridge-dev-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_go_to_a_fresh_directory_only_its_owner_can_enter() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b) = (private_dir().unwrap(), private_dir().unwrap());
        assert_ne!(a, b);
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let samples = write_samples(&a).unwrap();
        assert!(samples.starts_with(&a));
        assert!(samples.join("chat_ended.json").is_file());
        for dir in [a, b] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}
