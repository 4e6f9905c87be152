//! `dlq redrive`: re-publishes dead-lettered records whose cause can pass (a topic that did
//! not exist, a write the bridge was not allowed) to their original topic, as they were,
//! in the dead-letter topic's order, remembering how far it got.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::block_in_place;

use crate::config::Config;
use crate::delivery::kafka::{Publisher, DLQ_ORIGINAL_TOPIC, DLQ_REASON};
use crate::metrics::{DlqReason, Metrics};
use crate::registry::{Framing, RegistryError};

/// The reasons whose dead letters are records that may pass on a second try.
pub const REDRIVABLE: [DlqReason; 2] =
    [DlqReason::UnknownTopic, DlqReason::TopicAuthorizationFailed];

/// How long a metadata, offset or commit request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a redrive stopped.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("`{0}` dead letters cannot be re-published: {1}")]
    NotRedrivable(String, &'static str),
    #[error("unknown reason `{0}`; the reasons that can be re-published: unknown_topic, topic_authorization_failed")]
    UnknownReason(String),
    #[error("cannot read the dead-letter topic {topic}: {error}; check kafka.brokers and that the bridge may read it")]
    Read { topic: String, error: String },
    #[error("cannot re-publish {id} to {topic}: {error}; it and the records after it stay in the dead-letter topic (create the topic, or grant Write on it, and run again)")]
    Publish {
        id: String,
        topic: String,
        error: String,
    },
    #[error("cannot record how far the redrive got: {0}; the next run may re-publish some records again")]
    Commit(KafkaError),
    #[error("cannot create the Kafka client: {0}")]
    Client(KafkaError),
    #[error("kafka.value_format = \"json_sr\": {0}")]
    Registry(#[from] RegistryError),
}

/// The reasons `names` selects: each must be one whose dead letters are whole records.
pub fn reasons(names: &[String]) -> Result<Vec<DlqReason>, RedriveError> {
    if names.is_empty() {
        return Ok(REDRIVABLE.to_vec());
    }
    names
        .iter()
        .map(|name| {
            let reason = DlqReason::ALL
                .iter()
                .find(|r| r.as_str() == name)
                .ok_or_else(|| RedriveError::UnknownReason(name.clone()))?;
            match reason {
                r if REDRIVABLE.contains(r) => Ok(*r),
                DlqReason::RecordTooLarge => Err(RedriveError::NotRedrivable(
                    name.clone(),
                    "they are truncated envelopes, not the records (raise the size limits; the records are lost past their first 64 KiB)",
                )),
                DlqReason::InvalidRecord => Err(RedriveError::NotRedrivable(
                    name.clone(),
                    "Kafka would refuse them again",
                )),
                DlqReason::UnreadableSpoolRecord => Err(RedriveError::NotRedrivable(
                    name.clone(),
                    "they are damaged spool frames, not records",
                )),
                _ => Err(RedriveError::NotRedrivable(
                    name.clone(),
                    "they are request bodies the bridge refused, not records",
                )),
            }
        })
        .collect()
}

/// What one reason's pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Dead letters of the reason re-published (or, in a dry run, that would be).
    pub republished: u64,
    /// Dead letters of the reason without an original topic: left alone.
    pub unusable: u64,
}

/// Re-publishes the dead letters of each reason, one pass per reason with its own consumer
/// group (`<client_id>-redrive-<reason>`), so a pass remembers its own progress. Each
/// record goes back to its `dlq_original_topic` with its key, value and headers (but the
/// `dlq_*` ones), in the dead-letter topic's offset order, each acknowledged before the
/// next; progress is committed as it goes. `report` hears each record. The consumer's
/// calls block: run it on a multi-threaded runtime.
pub async fn redrive(
    config: &Config,
    reasons: &[DlqReason],
    dry_run: bool,
    mut report: impl FnMut(&str),
) -> Result<BTreeMap<&'static str, Counts>, RedriveError> {
    let publisher = match dry_run {
        true => None,
        false => {
            let framing = Framing::from_config(config).await?;
            Some(Publisher::new(config, Metrics::new(), framing).map_err(RedriveError::Client)?)
        }
    };
    let mut all = BTreeMap::new();
    for reason in reasons {
        let counts = pass(config, *reason, publisher.as_ref(), dry_run, &mut report).await?;
        all.insert(reason.as_str(), counts);
    }
    if let Some(publisher) = publisher {
        let _ = publisher.flush(Duration::from_secs(10)).await;
    }
    Ok(all)
}

/// One reason's pass over the dead-letter topic, from its group's committed offsets to the
/// end the topic had when the pass began.
async fn pass(
    config: &Config,
    reason: DlqReason,
    publisher: Option<&Publisher>,
    dry_run: bool,
    report: &mut impl FnMut(&str),
) -> Result<Counts, RedriveError> {
    let topic = config.dlq_topic();
    let read = |error: KafkaError| RedriveError::Read {
        topic: topic.clone(),
        error: error.to_string(),
    };
    let consumer = consumer(config, reason)?;
    let (mut position, ends) = block_in_place(|| assign(&consumer, &topic)).map_err(read)?;
    let mut counts = Counts::default();
    let mut done: BTreeMap<i32, i64> = BTreeMap::new();
    while ends
        .iter()
        .any(|(p, end)| position.get(p).copied().unwrap_or(0) < *end)
    {
        let Some(polled) = block_in_place(|| consumer.poll(Duration::from_millis(500))) else {
            // The fetch position moves past what is not a record (transaction markers).
            for e in consumer.position().map_err(read)?.elements() {
                if let Offset::Offset(n) = e.offset() {
                    let at = position.entry(e.partition()).or_default();
                    *at = (*at).max(n);
                }
            }
            continue;
        };
        let message = polled.map_err(read)?;
        position.insert(message.partition(), message.offset() + 1);
        if header(&message, DLQ_REASON) == Some(reason.as_str()) {
            match header(&message, DLQ_ORIGINAL_TOPIC) {
                None => counts.unusable += 1,
                Some(original) => {
                    let id = header(&message, "ce_id").unwrap_or("?").to_owned();
                    if let Some(publisher) = publisher {
                        republish(publisher, &message, original)
                            .await
                            .map_err(|error| RedriveError::Publish {
                                id: id.clone(),
                                topic: original.to_owned(),
                                error: error.to_string(),
                            })
                            .inspect_err(|_| {
                                let _ = block_in_place(|| commit(&consumer, &topic, &done));
                            })?;
                    }
                    let verb = if dry_run {
                        "would re-publish"
                    } else {
                        "re-published"
                    };
                    report(&format!(
                        "{verb} {id} to {original} ({}, {topic} partition {} offset {})",
                        reason.as_str(),
                        message.partition(),
                        message.offset()
                    ));
                    counts.republished += 1;
                }
            }
        }
        done.insert(message.partition(), message.offset() + 1);
    }
    if !dry_run {
        block_in_place(|| commit(&consumer, &topic, &done)).map_err(RedriveError::Commit)?;
    }
    Ok(counts)
}

/// A consumer of the dead-letter topic in the pass's own group, with the producer's
/// connection settings.
fn consumer(config: &Config, reason: DlqReason) -> Result<BaseConsumer, RedriveError> {
    crate::delivery::kafka::connection_config(&config.kafka)
        .set(
            "group.id",
            format!("{}-redrive-{}", config.kafka.client_id, reason.as_str()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(RedriveError::Client)
}

/// Offsets by partition.
type Offsets = BTreeMap<i32, i64>;

/// Assigns every partition of `topic` at the group's committed offset (the first offset
/// when there is none, or when it is gone); returns where each partition starts and ends
/// now.
fn assign(consumer: &BaseConsumer, topic: &str) -> Result<(Offsets, Offsets), KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let mut wanted = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            wanted.add_partition(topic, p.id());
        }
    }
    let committed = committed(consumer, wanted)?;
    let mut assignment = TopicPartitionList::new();
    let (mut starts, mut ends) = (Offsets::new(), Offsets::new());
    for element in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topic, element.partition(), TIMEOUT)?;
        let start = match element.offset() {
            Offset::Offset(n) if n >= low => n,
            _ => low,
        };
        assignment.add_partition_offset(topic, element.partition(), Offset::Offset(start))?;
        starts.insert(element.partition(), start);
        ends.insert(element.partition(), high);
    }
    consumer.assign(&assignment)?;
    Ok((starts, ends))
}

/// The group's committed offsets of `wanted`, asked again while the group's coordinator is
/// still being chosen or loading (the first use of a consumer group on a cluster).
fn committed(
    consumer: &BaseConsumer,
    wanted: TopicPartitionList,
) -> Result<TopicPartitionList, KafkaError> {
    let started = std::time::Instant::now();
    loop {
        match consumer.committed_offsets(wanted.clone(), TIMEOUT) {
            Err(e)
                if started.elapsed() < TIMEOUT
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::NotCoordinator
                                | RDKafkaErrorCode::CoordinatorNotAvailable
                                | RDKafkaErrorCode::CoordinatorLoadInProgress
                        )
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            result => return result,
        }
    }
}

/// Records `done` (partition → next offset) as the group's progress.
fn commit(
    consumer: &BaseConsumer,
    topic: &str,
    done: &BTreeMap<i32, i64>,
) -> Result<(), KafkaError> {
    if done.is_empty() {
        return Ok(());
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, next) in done {
        offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    consumer.commit(&offsets, CommitMode::Sync)
}

fn header<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// Sends `message` as it was to `topic`, without its `dlq_*` headers, and waits for Kafka.
async fn republish(
    publisher: &Publisher,
    message: &BorrowedMessage<'_>,
    topic: &str,
) -> Result<(), KafkaError> {
    let headers: Vec<crate::route::Header> = message
        .headers()
        .map(|h| {
            h.iter()
                .filter(|h| !h.key.starts_with("dlq_"))
                .filter_map(|h| {
                    let value = std::str::from_utf8(h.value?).ok()?;
                    Some((Cow::Owned(h.key.to_owned()), Cow::Owned(value.to_owned())))
                })
                .collect()
        })
        .unwrap_or_default();
    let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
    let pending =
        publisher.enqueue_raw(topic, key, &headers, message.payload().unwrap_or_default())?;
    pending.wait().await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reasons_whose_dead_letters_are_whole_records_are_taken() {
        assert_eq!(reasons(&[]).unwrap(), REDRIVABLE.to_vec());
        assert_eq!(
            reasons(&["unknown_topic".into()]).unwrap(),
            [DlqReason::UnknownTopic]
        );
        for refused in [
            "record_too_large",
            "invalid_json",
            "invalid_gzip",
            "unreadable_spool_record",
        ] {
            let e = reasons(&[refused.into()]).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("`{refused}` dead letters cannot be re-published")),
                "{e}"
            );
        }
        assert!(matches!(
            reasons(&["nope".into()]),
            Err(RedriveError::UnknownReason(_))
        ));
    }
}
