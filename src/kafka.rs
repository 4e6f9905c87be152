//! Publishing: an idempotent `acks=all` producer whose every send awaits its delivery report
//! within the delivery deadline.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use crate::config::{Config, KafkaConfig};
use crate::metrics::Metrics;
use crate::route::Message;

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Why a record was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("Kafka did not acknowledge the record within {}ms", .0.as_millis())]
    Timeout(Duration),
    #[error("Kafka did not accept the record: {0}")]
    Kafka(#[from] KafkaError),
}

impl PublishError {
    /// The `reason` label of `events_failed_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Kafka(_) => "kafka_error",
        }
    }
}

/// What the producer's callbacks report, shared with the [`Publisher`].
struct Shared {
    brokers_up: AtomicI64,
    metrics: Metrics,
}

/// The producer's context: librdkafka's statistics, log and error callbacks.
pub struct Context(Arc<Shared>);

impl ClientContext for Context {
    fn stats(&self, stats: Statistics) {
        let up = stats
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0 && b.state == "UP")
            .count() as i64;
        self.0.brokers_up.store(up, Ordering::Relaxed);
        self.0.metrics.kafka_brokers_up.set(up);
        self.0
            .metrics
            .kafka_producer_queue_messages
            .set(stats.msg_cnt as i64);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

/// Publishes records and waits for their delivery reports.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer<Context>,
    shared: Arc<Shared>,
    deadline: Duration,
}

impl Publisher {
    /// Creates the producer; librdkafka connects in the background.
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, KafkaError> {
        let deadline = config.delivery.deadline();
        let client_config = producer_config(&config.kafka, deadline);
        let shared = Arc::new(Shared {
            brokers_up: AtomicI64::new(0),
            metrics,
        });
        let producer = client_config.create_with_context(Context(shared.clone()))?;
        Ok(Self {
            producer,
            shared,
            deadline,
        })
    }

    /// Sends `message` and waits for Kafka's acknowledgement, at most the delivery deadline.
    pub async fn publish(&self, message: &Message) -> Result<Delivered, PublishError> {
        let started = Instant::now();
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&message.topic)
            .payload(&message.value)
            .headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_bytes());
        }
        let delivery = self.producer.send_result(record).map_err(|(e, _)| e)?;
        let result = match tokio::time::timeout(self.deadline, delivery).await {
            Err(_) => Err(PublishError::Timeout(self.deadline)),
            Ok(Err(_canceled)) => Err(PublishError::Kafka(KafkaError::Canceled)),
            Ok(Ok(Err((e, _)))) => Err(PublishError::Kafka(e)),
            Ok(Ok(Ok(d))) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
        };
        self.shared
            .metrics
            .kafka_delivery_duration
            .with_label_values(&[message.kind.as_str()])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Brokers the producer is connected to, per the latest statistics.
    pub fn brokers_up(&self) -> i64 {
        self.shared.brokers_up.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }
}

/// The librdkafka configuration: the bridge's fixed guarantees, then the user's properties.
pub fn producer_config(kafka: &KafkaConfig, deadline: Duration) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kafka.brokers.join(","))
        .set("client.id", &kafka.client_id)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", deadline.as_millis().to_string());
    for (key, value) in kafka.properties.iter() {
        c.set(key, value);
    }
    c.set_log_level(RDKafkaLogLevel::Info);
    c
}
