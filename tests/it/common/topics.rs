//! Reading back from Kafka: what an answer points at, whole topics, dead letters.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

use super::*;

/// A consumer for assigning partitions by hand (no group membership is used).
fn test_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "comm100-bridge-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// Every record of `topic` (all partitions, from the beginning) until `done` says so or
/// `bound` passes.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    bound: Duration,
    mut done: impl FnMut(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    let consumer = test_consumer(bootstrap);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    assert!(tpl.count() > 0, "{topic} has no partitions");
    consumer.assign(&tpl).unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    while !done(&out) && started.elapsed() < bound {
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            out.push(Consumed::from(&result.unwrap()));
        }
    }
    out
}

/// Reads the single record at `topic`/`partition`/`offset`.
pub fn consume_at(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> Consumed {
    let consumer = test_consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    for _ in 0..100 {
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            return Consumed::from(&result.unwrap());
        }
    }
    panic!("no record at {topic}/{partition}@{offset} within 10 s");
}

/// Reads the record a 200 answer points at (its `topic`, `partition` and `offset`).
pub fn consume_answered(bootstrap: &str, answer: &Answer) -> Consumed {
    let j = &answer.json;
    consume_at(
        bootstrap,
        j["topic"].as_str().expect("a 200 answer names the topic"),
        j["partition"]
            .as_i64()
            .expect("a 200 answer names the partition") as i32,
        j["offset"].as_i64().expect("a 200 answer names the offset"),
    )
}

/// A consumed Kafka record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// The record's timestamp (the producer's create time), in ms.
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, String)>,
    pub value: Value,
    pub raw: Vec<u8>,
}

impl From<&BorrowedMessage<'_>> for Consumed {
    fn from(m: &BorrowedMessage<'_>) -> Self {
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8(k.to_vec()).unwrap()),
            timestamp: m.timestamp().to_millis(),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            value: serde_json::from_slice(m.payload().unwrap()).unwrap_or(Value::Null),
            raw: m.payload().unwrap_or_default().to_vec(),
        }
    }
}

impl Consumed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A valid event whose record is over the producer's default `message.max.bytes`
/// (1,000,000).
pub fn oversized_event(chat: &str) -> String {
    // Each `a\n` (3 bytes) becomes a transcript line `"a",` (4 bytes): a 750 KB body that
    // fits http.max_body_bytes makes a record over message.max.bytes.
    json!({
        "event": "chat_transferred",
        "visitor": {"chat_id": chat},
        "chat": {"chat_transcript": "a\n".repeat(250_000)},
        "seq": 0,
    })
    .to_string()
}

/// The dead letters of `ids`, in that order, read from the dead-letter topic until every
/// one is there (failing the test after 30 s).
pub fn dead_letters(bootstrap: &str, ids: &[&str]) -> Vec<Consumed> {
    let dlq = consume_all(bootstrap, "comm100.dlq", Duration::from_secs(30), |got| {
        ids.iter()
            .all(|id| got.iter().any(|r| r.value["id"] == *id))
    });
    ids.iter()
        .map(|id| {
            dlq.iter()
                .find(|r| r.value["id"] == *id)
                .cloned()
                .unwrap_or_else(|| panic!("{id} is not in the dead-letter topic"))
        })
        .collect()
}

/// The dead letter of `id` ([`dead_letters`]).
pub fn dead_letter(bootstrap: &str, id: &str) -> Consumed {
    dead_letters(bootstrap, &[id]).remove(0)
}

/// Finds the dead-letter envelope of record `id`, meant for `topic` and larger than
/// `larger_than` bytes, in the dead-letter topic, and checks its fields and headers.
pub fn assert_envelope(bootstrap: &str, id: &str, topic: &str, larger_than: u64) -> Consumed {
    let letter = dead_letter(bootstrap, id);
    let v = &letter.value;
    assert_eq!(letter.header("dlq_reason"), Some("record_too_large"));
    assert_eq!(letter.header("dlq_original_topic"), Some(topic));
    assert_eq!(letter.header("ce_id"), Some(id));
    assert_eq!(v["dlq_reason"], "record_too_large");
    assert_eq!(v["original_topic"], topic);
    let original = v["original_bytes"].as_u64().unwrap();
    assert!(original > larger_than, "{original}");
    let prefix = v["body_prefix"].as_str().unwrap();
    assert!(prefix.starts_with("{\"schema_version\":1,"), "{prefix:.80}");
    assert_eq!(prefix.len() as u64, original.min(64 << 10));
    assert!(letter.raw.len() < 100 << 10, "{}", letter.raw.len());
    letter
}
