//! What is in the topics already: the ids of the records of a type published since a time,
//! by webhooks or earlier backfills.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::config::Config;
use crate::event::{EventType, Timestamp};
use crate::route::Router;

/// How long reading one topic to its end may take.
const READ_BOUND: Duration = Duration::from_secs(300);

/// The ids (chat id, or offline message id) of the records of `kind` in its topic from
/// the first offset at or after `since` to the end the topic had when reading began.
pub fn ids(
    config: &Config,
    router: &Router,
    kind: EventType,
    since: Timestamp,
) -> Result<HashSet<String>, KafkaError> {
    let topic = router.topic(kind);
    let consumer: BaseConsumer = crate::delivery::kafka::connection_config(&config.kafka)
        .set("group.id", format!("{}-backfill", config.kafka.client_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let timeout = Duration::from_secs(30);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut at_time = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for &partition in &partitions {
        at_time.add_partition_offset(topic, partition, Offset::Offset(since.millis()))?;
        let (_, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        ends.insert(partition, high);
    }
    let starts = consumer.offsets_for_times(at_time, timeout)?;
    let mut assignment = TopicPartitionList::new();
    let mut left = BTreeMap::new();
    for element in starts.elements() {
        let end = ends[&element.partition()];
        // No record at or after the time: the partition's end.
        let start = match element.offset() {
            Offset::Offset(o) => o,
            _ => end,
        };
        if start < end {
            assignment.add_partition_offset(topic, element.partition(), Offset::Offset(start))?;
            left.insert(element.partition(), end);
        }
    }
    let mut ids = HashSet::new();
    if left.is_empty() {
        return Ok(ids);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + READ_BOUND;
    while !left.is_empty() {
        if Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        if let Some(id) = message.payload().and_then(|v| id_of(kind, v)) {
            ids.insert(id);
        }
        if left
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            left.remove(&message.partition());
        }
    }
    Ok(ids)
}

/// The id a record value of `kind` is matched on; a `json_sr` frame is skipped.
pub fn id_of(kind: EventType, value: &[u8]) -> Option<String> {
    let json = match value.first() {
        Some(0) => value.get(5..)?,
        _ => value,
    };
    let record: Value = serde_json::from_slice(json).ok()?;
    let id = match kind {
        EventType::OfflineMessageSubmitted => record.pointer("/offline_message/id"),
        _ => record.get("chat_id"),
    };
    id?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_matched_on_chat_id_or_offline_message_id_framed_or_not() {
        let chat = br#"{"type":"chat_ended","chat_id":"c-1","offline_message":null}"#;
        assert_eq!(id_of(EventType::ChatEnded, chat).as_deref(), Some("c-1"));
        let mut framed = vec![0, 0, 0, 0, 7];
        framed.extend_from_slice(chat);
        assert_eq!(id_of(EventType::ChatEnded, &framed).as_deref(), Some("c-1"));
        let offline = br#"{"chat_id":null,"offline_message":{"id":"m-1"}}"#;
        assert_eq!(
            id_of(EventType::OfflineMessageSubmitted, offline).as_deref(),
            Some("m-1")
        );
        assert_eq!(id_of(EventType::ChatEnded, b"not json"), None);
    }
}
