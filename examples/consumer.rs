//! A consumer of comm100-bridge's topics that drops the duplicates at-least-once delivery
//! can produce, by record `id`.
//!
//!     cargo run --example consumer -- BROKERS [GROUP] [PREFIX]
//!
//! It subscribes to every record topic under `PREFIX` (`topics.prefix`, default `comm100`)
//! except the dead-letter topic, prints one line per record, and commits offsets as it
//! goes. Each environment variable `KAFKA_<PROPERTY>` sets a librdkafka property, its name
//! lower-cased with `_` for `.`: for SASL over TLS with a private CA,
//!
//!     KAFKA_SECURITY_PROTOCOL=SASL_SSL KAFKA_SASL_MECHANISMS=SCRAM-SHA-512 \
//!     KAFKA_SASL_USERNAME=reader KAFKA_SASL_PASSWORD=... KAFKA_SSL_CA_LOCATION=ca.pem \
//!     cargo run --example consumer -- kafka.example.com:9093 my-group

use std::collections::{HashSet, VecDeque};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;

/// How many recent ids to remember; duplicates arrive close together.
const REMEMBER: usize = 100_000;

/// The ids seen most recently, oldest evicted first.
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    fn new() -> Self {
        Self {
            ids: HashSet::with_capacity(REMEMBER),
            order: VecDeque::with_capacity(REMEMBER),
        }
    }

    /// True the first time `id` is seen.
    fn first(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == REMEMBER {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// The record topics under `prefix`, as a subscription pattern: a leading `^` makes it a
/// regular expression.
fn record_topics(prefix: &str) -> String {
    let prefix = prefix.replace('.', "\\.");
    format!("^{prefix}\\.(offline_message_submitted|chat_.*|agent_status_changed|unknown)$")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "localhost:9092".into());
    let group = args
        .next()
        .unwrap_or_else(|| "comm100-example-consumer".into());
    let prefix = args.next().unwrap_or_else(|| "comm100".into());

    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (name, value) in std::env::vars() {
        if let Some(property) = name.strip_prefix("KAFKA_") {
            config.set(property.to_lowercase().replace('_', "."), value);
        }
    }
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[&record_topics(&prefix)])?;

    let mut seen = Seen::new();
    loop {
        let message = consumer.recv().await?;
        let record: serde_json::Value = match message.payload().map(serde_json::from_slice) {
            Some(Ok(record)) => record,
            _ => {
                eprintln!(
                    "{}@{}: not a JSON record, skipped",
                    message.topic(),
                    message.offset()
                );
                continue;
            }
        };
        let id = record["id"].as_str().unwrap_or_default();
        if seen.first(id) {
            let ce_type = message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "ce_type"))
                .and_then(|h| h.value)
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            println!(
                "{} [{}] {} key={} chat={} type={}",
                message.topic(),
                message.partition(),
                message.offset(),
                message
                    .key()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default(),
                record["chat_id"].as_str().unwrap_or("-"),
                ce_type,
            );
        } else {
            eprintln!("duplicate {id} dropped");
        }
        consumer.commit_message(&message, CommitMode::Async)?;
    }
}
