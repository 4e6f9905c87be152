//! Delivery: making a routed message durable, whoever asks. Kafka first; the spool when
//! Kafka does not acknowledge within the deadline; the dead-letter topic for what Kafka can
//! never take. Records of one key keep the order they were accepted in ([`order`]): a key
//! with records in the spool sends its new ones behind them, every other key goes straight
//! to Kafka. The webhook handler delivers through [`Delivery`]; spool replay shares its
//! Kafka side ([`Publisher::settle`]), so a permanent rejection is decided in one place.

pub mod kafka;
pub mod order;
pub mod spool;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::delivery::kafka::{Delivered, Late, Publisher, Rejection, Settled, Unsettled};
use crate::delivery::order::{Order, Original, Turn};
use crate::delivery::spool::{Spool, SpoolError};
use crate::metrics::{FailureReason, Metrics};
use crate::registry::Framing;
use crate::route::Message;
use crate::sync::Unpoisoned;

/// What became of a record.
#[derive(Debug)]
pub enum Outcome {
    /// In Kafka, acknowledged by every in-sync replica.
    Published(Delivered),
    /// In the spool; replay publishes it. `durable`: fsynced, so it survives a machine
    /// crash (false with `spool.fsync = "never"`: written to the OS only).
    Spooled { durable: bool },
    /// Kafka rejected it for good; it is in the dead-letter topic, for this reason.
    DeadLettered(&'static str),
    /// Neither in Kafka nor in the spool: the sender must retry.
    Failed {
        reason: FailureReason,
        /// For the sender: says what failed, never a path.
        message: String,
    },
}

/// Whether records can be made durable now, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// `spooling`: with a spool, whether records go to it (no broker, or records waiting).
    Ready {
        brokers_up: i64,
        spooling: Option<bool>,
    },
    NotReady {
        reason: String,
        brokers_up: i64,
    },
}

/// The topics of the bridge that Kafka does not have, as last surveyed.
#[derive(Debug, Default)]
pub struct MissingTopics(Mutex<Vec<String>>);

impl MissingTopics {
    pub fn set(&self, topics: Vec<String>) {
        *self.0.locked() = topics;
    }

    pub fn get(&self) -> Vec<String> {
        self.0.locked().clone()
    }
}

/// Kafka, the spool beside it, and how long a record may take to reach either.
pub struct Delivery {
    pub publisher: Publisher,
    pub spool: Option<Spool>,
    pub order: Arc<Order>,
    /// The bridge's topics Kafka was last seen without (none until known).
    pub missing_topics: Arc<MissingTopics>,
    deadline: Duration,
    /// The part of the deadline kept for the spool append, when there is a spool.
    append_budget: Duration,
}

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot open the spool: {0}")]
    Spool(#[from] SpoolError),
}

impl Delivery {
    /// The producer, writing values as `framing` says, and the spool when `spool.enabled`,
    /// of `config`; what the spool holds
    /// is counted per key, so that new records of those keys queue behind it.
    pub fn from_config(
        config: &Config,
        metrics: Metrics,
        framing: Framing,
    ) -> Result<Self, OpenError> {
        let spool = match config.spool.enabled {
            true => Some(Spool::open(
                &config.spool,
                spool::frame_limit(config.kafka.message_max_bytes()),
                metrics.clone(),
            )?),
            false => None,
        };
        let publisher = Publisher::new(config, metrics, framing)?;
        let order = Arc::new(Order::new());
        if let Some(spool) = &spool {
            if spool.pending_events() > 0 {
                spool.for_each_pending(|m| order.count_spooled(m.key.as_deref()))?;
            }
        }
        Ok(Self::new(
            publisher,
            spool,
            order,
            config.delivery.deadline(),
            config.kafka_wait(),
        ))
    }

    /// `kafka_wait` is the part of `deadline` a record may wait for Kafka; the rest is
    /// for its spool append. `order` knows the keys of what the spool holds.
    pub fn new(
        publisher: Publisher,
        spool: Option<Spool>,
        order: Arc<Order>,
        deadline: Duration,
        kafka_wait: Duration,
    ) -> Self {
        Self {
            publisher,
            spool,
            order,
            missing_topics: Arc::default(),
            deadline,
            append_budget: deadline.saturating_sub(kafka_wait),
        }
    }

    /// Brokers the producer is connected to (0 until it knows).
    pub fn brokers_up(&self) -> i64 {
        self.publisher.brokers_up().max(0)
    }

    /// Whether a record handed over now can be made durable: a broker to publish to, or
    /// room in a working spool; not before the producer knows the cluster, nor while Kafka
    /// refuses the bridge's credentials.
    pub fn readiness(&self) -> Readiness {
        let known = self.publisher.brokers_up();
        let up = known.max(0);
        let not_ready = |reason: String| Readiness::NotReady {
            reason,
            brokers_up: up,
        };
        // A configuration error: traffic should stay with replicas that can publish.
        if let Some(problem) = self.publisher.authentication_error() {
            return not_ready(problem);
        }
        // A bridge that has never reached Kafka is misconfigured more often than not (broker
        // names, ports, protocol): a rollout should not count it ready, spool or no spool.
        if let Some(last) = self.publisher.never_reached() {
            let brokers = self.publisher.brokers();
            return not_ready(match last {
                None => format!("connecting to Kafka ({brokers})"),
                Some(error) => format!(
                    "no Kafka broker reached since start ({brokers}): {error}; check \
                     kafka.brokers, the ports and security.protocol"
                ),
            });
        }
        let missing = self.missing_topics.get();
        if !missing.is_empty() {
            return not_ready(format!(
                "missing topics: {}; create them (comm100-bridge topics ensure)",
                missing.join(", ")
            ));
        }
        if let Some(fault) = self.spool.as_ref().and_then(|s| s.fault()) {
            return not_ready(format!("the spool cannot take records: {fault}"));
        }
        match &self.spool {
            Some(spool) if up > 0 || spool.has_room() => Readiness::Ready {
                brokers_up: up,
                spooling: Some(up == 0 || spool.pending_events() > 0),
            },
            Some(_) => not_ready("no Kafka broker is connected and the spool is full".into()),
            None if up == 0 => not_ready("no Kafka broker is connected".into()),
            None if self.publisher.not_acknowledging() => {
                not_ready("Kafka is not acknowledging records and there is no spool".into())
            }
            None => Readiness::Ready {
                brokers_up: up,
                spooling: None,
            },
        }
    }

    /// How long a record may take to be made durable.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Makes `message` durable: in Kafka, else in the spool, within the deadline, after
    /// every earlier record of its key has its place. A key with records in the spool, or
    /// any key while no broker is connected, goes to the spool. Counts the outcome: here a
    /// record spooled or failed, in [`Publisher::settle`] one published or dead-lettered.
    pub async fn deliver(&self, message: &Message) -> Outcome {
        let outcome = self.make_durable(message).await;
        let metrics = self.publisher.metrics().of(message.kind);
        match &outcome {
            Outcome::Spooled { .. } => metrics.spooled.inc(),
            Outcome::Failed { reason, .. } => metrics.failed(*reason).inc(),
            Outcome::Published(_) | Outcome::DeadLettered(_) => {}
        }
        outcome
    }

    async fn make_durable(&self, message: &Message) -> Outcome {
        let deadline = Instant::now() + self.deadline;
        let Some(spool) = &self.spool else {
            return match self.publisher.publish(message, self.deadline).await {
                Ok(settled) => settled.into(),
                Err(Unsettled { error, .. }) => Outcome::Failed {
                    reason: error.reason(),
                    message: error.to_string(),
                },
            };
        };
        let mut turn = self.order.enter(message.key.as_deref());
        let behind = turn.ready().await;
        if behind || self.publisher.known_down() {
            return self.spool_it(spool, message, deadline, turn, None).await;
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.append_budget);
        match self.publisher.publish(message, wait).await {
            Ok(settled) => settled.into(),
            Err(Unsettled { error, late }) => {
                tracing::info!(id = %message.id, r#type = message.kind.as_str(), error = %error, "Kafka did not acknowledge the record in time; spooling it");
                self.spool_it(spool, message, deadline, turn, late).await
            }
        }
    }

    /// Appends `message` to the spool within what is left of the deadline; `late` is the
    /// delivery report of its original produce, when that may still come. A record the
    /// producer can never send is spooled as its dead letter, so replay never meets it.
    async fn spool_it(
        &self,
        spool: &Spool,
        message: &Message,
        deadline: Instant,
        turn: Turn<'_>,
        late: Option<Late>,
    ) -> Outcome {
        let letter;
        let message = if self.publisher.fits(message) {
            message
        } else {
            letter = self
                .publisher
                .dead_letter_of(message, Rejection::RecordTooLarge);
            &letter
        };
        // Watched before the append is issued, so replay never reads it unwatched.
        let original = late.map(|late| (self.order.watch_original(message), late));
        let appending = match spool.submit(message) {
            Ok(appending) => appending,
            Err(e) => {
                if let Some((original, _)) = original {
                    self.order.original_reported(original, false);
                }
                drop(turn);
                return self.not_spooled(message, &e);
            }
        };
        if let Some((original, late)) = original {
            self.follow_original(original, late);
        }
        turn.spooled();
        let budget = deadline.saturating_duration_since(Instant::now());
        let mut written = Box::pin(appending.written());
        match tokio::time::timeout(budget, &mut written).await {
            Ok(Ok(())) => Outcome::Spooled {
                durable: spool.durable(),
            },
            Ok(Err(e)) => {
                self.order.append_failed(message.key.as_deref());
                self.not_spooled(message, &e)
            }
            Err(_) => {
                // The sender is told to retry; the append may still land.
                let order = self.order.clone();
                let key = message.key.clone();
                tokio::spawn(async move {
                    if written.await.is_err() {
                        order.append_failed(key.as_deref());
                    }
                });
                Outcome::Failed {
                    reason: FailureReason::SpoolError,
                    message: "the spool did not sync in time".to_owned(),
                }
            }
        }
    }

    /// Follows the original produce of a spooled record: if Kafka acknowledges it after
    /// all, replay skips the spooled copy.
    fn follow_original(&self, original: Original, late: Late) {
        let order = self.order.clone();
        let metrics = self.publisher.metrics().clone();
        tokio::spawn(async move {
            let acknowledged = late.wait().await.is_ok();
            if acknowledged {
                metrics.spool.replay_skipped.inc();
            }
            order.original_reported(original, acknowledged);
        });
    }

    fn not_spooled(&self, message: &Message, e: &SpoolError) -> Outcome {
        // A full or faulted spool is reported once, not per record.
        if !matches!(e, SpoolError::Full(_) | SpoolError::Faulted(_)) {
            tracing::error!(id = %message.id, error = %e, "cannot spool the record");
        }
        spool_failure(e)
    }
}

impl From<Settled> for Outcome {
    fn from(settled: Settled) -> Self {
        match settled {
            Settled::Published(delivered) => Self::Published(delivered),
            Settled::DeadLettered(reason) => Self::DeadLettered(reason.as_str()),
        }
    }
}

/// What the sender is told when the spool refuses a record: whether it is full, never the
/// detail (with its path), which is for the operator's log.
fn spool_failure(e: &SpoolError) -> Outcome {
    match e {
        SpoolError::Full(_) => Outcome::Failed {
            reason: FailureReason::SpoolFull,
            message: e.to_string(),
        },
        _ => Outcome::Failed {
            reason: FailureReason::SpoolError,
            message: "the spool could not take the record".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;

    use crate::config::Config;
    use crate::event::{Record, Timestamp};
    use crate::metrics::Metrics;
    use crate::route::Router;

    /// A delivery against a one-broker mock cluster with every topic, and a spool in `dir`
    /// when one is given.
    fn delivery(
        cluster: &MockCluster<'static, DefaultProducerContext>,
        dir: Option<&std::path::Path>,
    ) -> (Delivery, Router) {
        let mut config = Config::load_with_env(None, Some(Default::default())).unwrap();
        config.kafka.brokers = vec![cluster.bootstrap_servers()];
        config.delivery.deadline_ms = 2000;
        config.spool.append_budget_ms = 500;
        config.spool.enabled = dir.is_some();
        config
            .kafka
            .properties
            .insert("reconnect.backoff.max.ms", "200");
        let router = Router::new(&config.topics);
        for topic in router.topics() {
            cluster.create_topic(topic, 1, 1).unwrap();
        }
        let metrics = Metrics::new();
        let spool = dir.map(|dir| {
            config.spool.dir = dir.to_owned();
            let limit = spool::frame_limit(config.kafka.message_max_bytes());
            Spool::open(&config.spool, limit, metrics.clone()).unwrap()
        });
        let publisher = Publisher::new(&config, metrics, Framing::plain()).unwrap();
        (
            Delivery::new(
                publisher,
                spool,
                Arc::new(Order::new()),
                config.delivery.deadline(),
                config.kafka_wait(),
            ),
            router,
        )
    }

    fn message(router: &Router, chat: &str) -> Message {
        let body = format!(r#"{{"event":"chat_started","chat_id":"{chat}"}}"#);
        router.route(&Record::from_body(body.as_bytes(), None, Timestamp::now()).unwrap())
    }

    async fn connected(publisher: &Publisher) {
        let started = Instant::now();
        while publisher.known_down() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never connected"
            );
            publisher.probe().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The unit tests spawn no process, so no fork can hold a broker's listener (clippy.toml).
    #[allow(clippy::disallowed_methods)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka_first_then_the_spool_and_only_the_spooled_key_waits_behind_it() {
        let cluster = MockCluster::new(1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (delivery, router) = delivery(&cluster, Some(dir.path()));
        connected(&delivery.publisher).await;
        let outcome = delivery.deliver(&message(&router, "a")).await;
        assert!(matches!(outcome, Outcome::Published(_)), "{outcome:?}");

        cluster.broker_down(1).unwrap();
        // Known down: straight to the spool (a record sent before that would still be
        // held by librdkafka, and its late acknowledgement would free the key).
        while !delivery.publisher.known_down() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(
            delivery.deliver(&message(&router, "a")).await,
            Outcome::Spooled { durable: true }
        ));
        cluster.broker_up(1).unwrap();
        connected(&delivery.publisher).await;
        // Kafka is back, but a record of chat a is in the spool: a's next one goes behind
        // it, while chat b goes straight to Kafka.
        assert!(matches!(
            delivery.deliver(&message(&router, "a")).await,
            Outcome::Spooled { durable: true }
        ));
        let outcome = delivery.deliver(&message(&router, "b")).await;
        assert!(matches!(outcome, Outcome::Published(_)), "{outcome:?}");
        assert_eq!(delivery.spool.as_ref().unwrap().pending_events(), 2);
    }

    // The unit tests spawn no process, so no fork can hold a broker's listener (clippy.toml).
    #[allow(clippy::disallowed_methods)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_spool_a_record_kafka_does_not_take_in_time_fails() {
        let cluster = MockCluster::new(1).unwrap();
        let (delivery, router) = delivery(&cluster, None);
        connected(&delivery.publisher).await;
        cluster.broker_down(1).unwrap();
        let started = Instant::now();
        let outcome = delivery.deliver(&message(&router, "b")).await;
        assert!(
            matches!(
                outcome,
                Outcome::Failed {
                    reason: FailureReason::Timeout,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert!(started.elapsed() < delivery.deadline() + Duration::from_secs(1));
    }

    #[test]
    fn spool_failures_tell_the_sender_no_path() {
        let errors = [
            SpoolError::Io {
                dir: "/var/lib/secret-spool".into(),
                error: std::io::Error::other("disk on fire"),
            },
            SpoolError::Locked {
                dir: "/var/lib/secret-spool".into(),
                holder: "1".into(),
            },
            SpoolError::TooLarge { size: 2, limit: 1 },
            SpoolError::Closed,
            SpoolError::Full(10),
        ];
        for e in &errors {
            let Outcome::Failed { message, .. } = spool_failure(e) else {
                panic!("{e} is a failure");
            };
            assert!(!message.contains('/'), "{message}");
            assert!(!message.contains("disk on fire"), "{message}");
        }
    }
}
