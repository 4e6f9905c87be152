//! Delivery: making a routed message durable, whoever asks. Kafka first; the spool when
//! Kafka does not acknowledge within the deadline; the dead-letter topic for what Kafka can
//! never take. While the spool holds records, or no broker is connected, new records go
//! straight behind them, so that no record overtakes an older one of the same key. The
//! webhook handler delivers through [`Delivery`]; spool replay shares its Kafka side
//! ([`Publisher::settle`]), so a permanent rejection is decided in one place.

pub mod kafka;
pub mod spool;

use std::time::{Duration, Instant};

use crate::delivery::kafka::{Delivered, Publisher, Rejection, Settled};
use crate::delivery::spool::{Spool, SpoolError};
use crate::metrics::FailureReason;
use crate::route::Message;

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

/// Kafka, the spool beside it, and how long a record may take to reach either.
pub struct Delivery {
    pub publisher: Publisher,
    pub spool: Option<Spool>,
    deadline: Duration,
}

impl Delivery {
    pub fn new(publisher: Publisher, spool: Option<Spool>, deadline: Duration) -> Self {
        Self {
            publisher,
            spool,
            deadline,
        }
    }

    /// How long a record may take to be made durable.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Makes `message` durable: in Kafka, else in the spool, within the deadline. While the
    /// spool holds records, or no broker is connected, new records go straight behind them
    /// so that no record overtakes an older one of the same key.
    pub async fn deliver(&self, message: &Message) -> Outcome {
        let deadline = Instant::now() + self.deadline;
        if let Some(spool) = &self.spool {
            if spool.pending_events() > 0 || self.publisher.known_down() {
                return self.spool_it(spool, message, deadline).await;
            }
        }
        let error = match self.publisher.publish(message).await {
            Ok(Settled::Published(delivered)) => return Outcome::Published(delivered),
            Ok(Settled::DeadLettered(reason)) => return Outcome::DeadLettered(reason.as_str()),
            Err(e) => e,
        };
        match &self.spool {
            Some(spool) => {
                tracing::info!(id = %message.id, r#type = message.kind.as_str(), error = %error, "Kafka did not acknowledge the record in time; spooling it");
                self.spool_it(spool, message, deadline).await
            }
            None => Outcome::Failed {
                reason: error.reason(),
                message: error.to_string(),
            },
        }
    }

    /// Appends `message` to the spool within what is left of the deadline. A record the
    /// producer can never send is spooled as its dead letter, so replay never meets it.
    async fn spool_it(&self, spool: &Spool, message: &Message, deadline: Instant) -> Outcome {
        let letter;
        let message = if self.publisher.fits(message) {
            message
        } else {
            letter = self
                .publisher
                .dead_letter_of(message, Rejection::RecordTooLarge);
            &letter
        };
        let budget = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(budget, spool.append(message)).await {
            Ok(Ok(())) => Outcome::Spooled {
                durable: spool.durable(),
            },
            Ok(Err(e)) => {
                // A full or faulted spool is reported once, not per record.
                if !matches!(e, SpoolError::Full(_) | SpoolError::Faulted(_)) {
                    tracing::error!(id = %message.id, error = %e, "cannot spool the record");
                }
                spool_failure(&e)
            }
            Err(_) => Outcome::Failed {
                reason: FailureReason::SpoolError,
                message: "the spool did not sync in time".to_owned(),
            },
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
        let router = Router::new(&config.topics);
        for topic in router.topics() {
            cluster.create_topic(topic, 1, 1).unwrap();
        }
        let metrics = Metrics::new();
        let spool = dir.map(|dir| {
            config.spool.dir = dir.to_owned();
            Spool::open(&config.spool, config.spool_frame_limit(), metrics.clone()).unwrap()
        });
        let publisher = Publisher::new(&config, metrics).unwrap();
        (
            Delivery::new(publisher, spool, config.delivery.deadline()),
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The unit tests spawn no process, so no fork can hold a broker's listener (clippy.toml).
    #[allow(clippy::disallowed_methods)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka_first_then_the_spool_and_nothing_overtakes_a_spooled_record() {
        let cluster = MockCluster::new(1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (delivery, router) = delivery(&cluster, Some(dir.path()));
        connected(&delivery.publisher).await;
        let outcome = delivery.deliver(&message(&router, "a")).await;
        assert!(matches!(outcome, Outcome::Published(_)), "{outcome:?}");

        cluster.broker_down(1).unwrap();
        assert!(matches!(
            delivery.deliver(&message(&router, "a")).await,
            Outcome::Spooled { durable: true }
        ));
        cluster.broker_up(1).unwrap();
        connected(&delivery.publisher).await;
        // Kafka is back, but a record is in the spool: the next one goes behind it.
        assert!(matches!(
            delivery.deliver(&message(&router, "a")).await,
            Outcome::Spooled { durable: true }
        ));
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
