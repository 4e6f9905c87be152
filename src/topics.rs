//! The topics the bridge writes to (every record topic, `unknown` among them, and the
//! dead-letter topic), surveyed and created through Kafka's admin API: `topics check`,
//! `topics ensure`, and the check `serve` makes at start.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;

use crate::config::Config;
use crate::delivery::kafka::{producer_config, Publisher};
use crate::delivery::MissingTopics;
use crate::route::Router;

/// How long a metadata request or a topic creation may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `ensure` waits for the topics it created to show in the metadata.
const PROPAGATION: Duration = Duration::from_secs(30);

/// Every topic the bridge writes to, each once: the record topics, then the DLQ.
pub fn expected(config: &Config) -> Vec<String> {
    let mut topics: Vec<String> = Vec::new();
    let router = Router::new(&config.topics);
    for topic in router.topics().iter().cloned().chain([config.dlq_topic()]) {
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    topics
}

/// What Kafka has of the expected topics: each one's partition count, or `None` when it
/// does not exist (or the bridge's principal may not see it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    pub topics: Vec<(String, Option<usize>)>,
}

impl Survey {
    /// Reads `expected` out of the cluster metadata of every topic.
    pub fn of(expected: &[String], metadata: &Metadata) -> Self {
        let found: BTreeMap<&str, usize> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() || !t.partitions().is_empty())
            .map(|t| (t.name(), t.partitions().len()))
            .collect();
        Self {
            topics: expected
                .iter()
                .map(|t| (t.clone(), found.get(t.as_str()).copied()))
                .collect(),
        }
    }

    /// The expected topics Kafka does not have.
    pub fn missing(&self) -> Vec<&str> {
        self.topics
            .iter()
            .filter(|(_, partitions)| partitions.is_none())
            .map(|(t, _)| t.as_str())
            .collect()
    }

    /// The existing topics by partition count.
    fn by_partitions(&self) -> BTreeMap<usize, Vec<&str>> {
        let mut counts: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for (topic, partitions) in &self.topics {
            if let Some(n) = partitions {
                counts.entry(*n).or_default().push(topic);
            }
        }
        counts
    }

    /// What is wrong, one sentence each: topics missing, partition counts that differ.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let missing = self.missing();
        if !missing.is_empty() {
            problems.push(format!(
                "missing: {} (create them: comm100-bridge topics ensure)",
                missing.join(", ")
            ));
        }
        problems.extend(self.unequal_partitions());
        problems
    }

    /// Partition counts that differ between the existing topics, as one sentence.
    pub fn unequal_partitions(&self) -> Option<String> {
        let counts = self.by_partitions();
        if counts.len() < 2 {
            return None;
        }
        let described: Vec<String> = counts
            .iter()
            .map(|(n, topics)| format!("{n} ({})", topics.join(", ")))
            .collect();
        Some(format!(
            "partition counts differ: {}; a chat's records keep their order across topics only with equal counts (add partitions with kafka-topics.sh --alter)",
            described.join(", ")
        ))
    }
}

impl fmt::Display for Survey {
    /// One line per topic: its name and partition count, or `missing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.topics.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
        for (topic, partitions) in &self.topics {
            match partitions {
                Some(n) => writeln!(f, "{topic:width$}  {n} partitions")?,
                None => writeln!(f, "{topic:width$}  missing")?,
            }
        }
        Ok(())
    }
}

/// Why the topics could not be surveyed or created.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("cannot create the Kafka admin client: {0}")]
    Client(KafkaError),
    #[error("cannot read the topics from Kafka: {0}; check kafka.brokers, the network and the security settings")]
    Metadata(KafkaError),
    #[error("cannot ask Kafka to create topics: {0}")]
    Request(KafkaError),
    #[error("Kafka did not create {}: {}", .0.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(", "), .0.iter().map(|(t, c)| format!("{t}: {}", refusal(*c))).collect::<Vec<_>>().join("; "))]
    Refused(Vec<(String, RDKafkaErrorCode)>),
    #[error("the created topics did not all appear in the metadata in time: {}", .0.join(", "))]
    NotPropagated(Vec<String>),
}

/// What to do about a topic Kafka would not create.
fn refusal(code: RDKafkaErrorCode) -> String {
    let hint = match code {
        RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            "the bridge's principal may not create topics: grant it Create, or have an administrator create them"
        }
        RDKafkaErrorCode::InvalidReplicationFactor => {
            "topics.replication_factor is more than the brokers there are"
        }
        RDKafkaErrorCode::InvalidPartitions => "topics.partitions is not a valid count",
        RDKafkaErrorCode::InvalidConfig => "a setting of topics.config is not a topic configuration Kafka takes",
        RDKafkaErrorCode::PolicyViolation => "the brokers' create-topic policy refused it",
        _ => "see the brokers' log",
    };
    format!("{code} ({hint})")
}

/// The admin side of the cluster `config` names, with the producer's own settings (brokers,
/// SASL, TLS).
pub struct Admin {
    client: Arc<AdminClient<DefaultClientContext>>,
    expected: Vec<String>,
}

impl Admin {
    pub fn new(config: &Config) -> Result<Self, TopicsError> {
        let client = producer_config(
            &config.kafka,
            config.kafka_wait(),
            config.http.max_inflight_bytes / 2,
        )
        .create()
        .map_err(TopicsError::Client)?;
        Ok(Self {
            client: Arc::new(client),
            expected: expected(config),
        })
    }

    /// What Kafka has of the expected topics. Asks for every topic, which never makes a
    /// broker with `auto.create.topics.enable` create one.
    pub async fn survey(&self) -> Result<Survey, TopicsError> {
        let client = self.client.clone();
        let metadata =
            tokio::task::spawn_blocking(move || client.inner().fetch_metadata(None, ADMIN_TIMEOUT))
                .await
                .expect("the metadata request does not panic")
                .map_err(TopicsError::Metadata)?;
        Ok(Survey::of(&self.expected, &metadata))
    }

    /// Creates the expected topics Kafka does not have, with `topics.partitions`,
    /// `topics.replication_factor` and `topics.config`; never changes an existing one.
    /// Returns the topics it created and the survey after, once they all show.
    pub async fn ensure(&self, config: &Config) -> Result<(Vec<String>, Survey), TopicsError> {
        let before = self.survey().await?;
        let missing: Vec<&str> = before.missing();
        if missing.is_empty() {
            return Ok((Vec::new(), before));
        }
        let settings = &config.topics;
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|topic| {
                settings.config.iter().fold(
                    NewTopic::new(
                        topic,
                        settings.partitions,
                        TopicReplication::Fixed(settings.replication_factor),
                    ),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(ADMIN_TIMEOUT))
            .request_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .client
            .create_topics(&new, &options)
            .await
            .map_err(TopicsError::Request)?;
        let mut created = Vec::new();
        let mut refused = Vec::new();
        for result in results {
            match result {
                Ok(topic) => created.push(topic),
                // Created meanwhile by someone else (another replica's job): it exists.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => refused.push((topic, code)),
            }
        }
        if !refused.is_empty() {
            return Err(TopicsError::Refused(refused));
        }
        let started = tokio::time::Instant::now();
        loop {
            let after = self.survey().await?;
            let missing = after.missing();
            if missing.is_empty() {
                return Ok((created, after));
            }
            if started.elapsed() > PROPAGATION {
                return Err(TopicsError::NotPropagated(
                    missing.into_iter().map(str::to_owned).collect(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How often `serve` looks again while topics are missing.
const WATCH_EVERY: Duration = Duration::from_secs(10);

/// `serve`'s check of its topics: surveys them once Kafka answers, and again every 10 s
/// while any is missing (readiness reports them meanwhile), with one ERROR line per set of
/// missing topics and one WARN line if partition counts differ. Ends once every topic
/// exists.
pub async fn watch(publisher: Publisher, expected: Vec<String>, missing: Arc<MissingTopics>) {
    let mut reported: Option<Vec<String>> = None;
    let mut warned = false;
    loop {
        if let Ok(metadata) = publisher.metadata(Duration::from_secs(5)).await {
            let survey = Survey::of(&expected, &metadata);
            let now: Vec<String> = survey.missing().into_iter().map(str::to_owned).collect();
            missing.set(now.clone());
            if let Some(unequal) = survey.unequal_partitions().filter(|_| !warned) {
                tracing::warn!("{unequal}");
                warned = true;
            }
            if now.is_empty() {
                if reported.is_some() {
                    tracing::info!("every topic exists now");
                }
                return;
            }
            if reported.as_ref() != Some(&now) {
                tracing::error!(
                    topics = now.join(","),
                    "missing topics: their records are dead-lettered (unknown_topic), and without the dead-letter topic held in the spool; /readyz answers 503 until they exist: create them (comm100-bridge topics ensure)"
                );
                reported = Some(now);
            }
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survey(topics: &[(&str, Option<usize>)]) -> Survey {
        Survey {
            topics: topics.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect(),
        }
    }

    #[test]
    fn every_topic_is_expected_once_the_dlq_last() {
        let mut config = Config::load_with_env(None, Some(Default::default())).unwrap();
        let all = expected(&config);
        assert_eq!(all.len(), 9, "{all:?}");
        assert_eq!(all.last().map(String::as_str), Some("comm100.dlq"));
        assert!(all.contains(&"comm100.unknown".to_owned()));
        config.topics.chat_started = Some("comm100.chat_ended".into());
        assert_eq!(
            expected(&config).len(),
            8,
            "a topic two types share is one topic"
        );
    }

    #[test]
    fn problems_name_missing_topics_and_unequal_partition_counts() {
        let good = survey(&[("a", Some(6)), ("b", Some(6))]);
        assert!(good.problems().is_empty());
        let bad = survey(&[("a", Some(6)), ("b", None), ("c", Some(3)), ("d", None)]);
        let problems = bad.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("missing: b, d "), "{}", problems[0]);
        assert!(
            problems[1].starts_with("partition counts differ: 3 (c), 6 (a)"),
            "{}",
            problems[1]
        );
        assert_eq!(
            bad.to_string(),
            "a  6 partitions\nb  missing\nc  3 partitions\nd  missing\n"
        );
    }
}
