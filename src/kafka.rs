//! Publishing: an idempotent `acks=all` producer whose every send awaits its delivery report
//! within the delivery deadline.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use crate::config::{Config, KafkaConfig};
use crate::metrics::Metrics;
use std::borrow::Cow;

use bytes::Bytes;

use crate::route::{self, Message};

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

    /// For an error no retry can fix, the `reason` label of `dlq_total`.
    pub fn permanent_reason(&self) -> Option<&'static str> {
        match self {
            Self::Timeout(_) => None,
            Self::Kafka(e) => permanent_reason(e),
        }
    }
}

/// For an error no retry can fix, the `reason` label of `dlq_total`; `None` for errors
/// that may pass (timeouts, transport, leader changes, a full queue).
pub fn permanent_reason(error: &KafkaError) -> Option<&'static str> {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code()? {
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            Some("record_too_large")
        }
        C::TopicAuthorizationFailed => Some("topic_authorization_failed"),
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::InvalidTopic => {
            Some("unknown_topic")
        }
        C::InvalidRecord | C::InvalidMessage => Some("invalid_record"),
        _ => None,
    }
}

/// A record handed to the producer, whose delivery report is still to come.
pub struct Pending(DeliveryFuture);

impl Pending {
    /// Waits for the delivery report (librdkafka's message.timeout.ms bounds the wait).
    pub async fn wait(self) -> Result<Delivered, KafkaError> {
        match self.0.await {
            Err(_canceled) => Err(KafkaError::Canceled),
            Ok(Err((e, _))) => Err(e),
            Ok(Ok(d)) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
        }
    }
}

/// How long after its latest failed delivery, with none acknowledged since, Kafka counts as
/// not acknowledging (for readiness without a spool). Past it, readiness lets a request try.
const NOT_ACKNOWLEDGING_FOR: Duration = Duration::from_secs(10);

/// What the producer's callbacks and deliveries report, shared with the [`Publisher`].
struct Shared {
    brokers_up: AtomicI64,
    metrics: Metrics,
    /// librdkafka's latest authentication (SASL or TLS) error; cleared once a broker is up.
    authentication: Mutex<Option<String>>,
    /// Milliseconds since `epoch` of the latest acknowledged and the latest failed delivery.
    last_ack: AtomicU64,
    last_failure: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
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
        if up > 0 {
            let cleared = self.0.authentication.lock().unwrap().take();
            if cleared.is_some() {
                tracing::info!("connected to Kafka; the authentication error is resolved");
            }
        }
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
        let code = error.rdkafka_error_code();
        let what = match code {
            Some(RDKafkaErrorCode::Authentication) => "Kafka authentication failed",
            Some(RDKafkaErrorCode::SSL) => "Kafka TLS handshake failed",
            _ => return,
        };
        let problem = format!("{what}: {reason}");
        let first = self
            .0
            .authentication
            .lock()
            .unwrap()
            .replace(problem.clone())
            .is_none();
        if first {
            tracing::error!(
                "{problem}; records are spooled (or answered 503 without a spool) until it \
                 connects: check kafka.properties security.protocol, sasl.mechanisms, \
                 sasl.username, sasl.password and ssl.ca.location"
            );
        }
    }
}

/// Publishes records and waits for their delivery reports.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer<Context>,
    shared: Arc<Shared>,
    deadline: Duration,
    dlq_topic: String,
}

impl Publisher {
    /// Creates the producer; librdkafka connects in the background.
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, KafkaError> {
        let deadline = config.kafka_wait();
        let client_config = producer_config(&config.kafka, deadline);
        let shared = Arc::new(Shared {
            brokers_up: AtomicI64::new(-1),
            metrics,
            authentication: Mutex::new(None),
            last_ack: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let producer = client_config.create_with_context(Context(shared.clone()))?;
        Ok(Self {
            producer,
            shared,
            deadline,
            dlq_topic: config.dlq_topic(),
        })
    }

    /// Hands `message` to the producer; its delivery report comes with [`Pending::wait`].
    /// Records enqueued one after another keep their order within a partition.
    pub fn enqueue(&self, message: &Message) -> Result<Pending, KafkaError> {
        self.enqueue_raw(
            &message.topic,
            message.key.as_deref(),
            &message.headers,
            &message.value,
        )
    }

    fn enqueue_raw(
        &self,
        topic: &str,
        key: Option<&str>,
        headers: &[route::Header],
        value: &[u8],
    ) -> Result<Pending, KafkaError> {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (key, value) in headers {
            owned = owned.insert(Header {
                key: key.as_ref(),
                value: Some(value.as_bytes()),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(value)
            .headers(owned);
        if let Some(key) = key {
            record = record.key(key.as_bytes());
        }
        self.producer
            .send_result(record)
            .map(Pending)
            .map_err(|(e, _)| e)
    }

    /// Sends `message` and waits for Kafka's acknowledgement, at most the Kafka wait.
    pub async fn publish(&self, message: &Message) -> Result<Delivered, PublishError> {
        let started = Instant::now();
        let pending = self.enqueue(message)?;
        let result = match tokio::time::timeout(self.deadline, pending.wait()).await {
            Err(_) => Err(PublishError::Timeout(self.deadline)),
            Ok(result) => result.map_err(PublishError::Kafka),
        };
        self.shared
            .metrics
            .of(message.kind)
            .delivery
            .observe(started.elapsed().as_secs_f64());
        let shared = &self.shared;
        match &result {
            // Written only while a failure is the latest outcome: no store to a shared
            // cache line on every acknowledged request.
            Ok(_) => {
                if shared.last_failure.load(Ordering::Relaxed)
                    > shared.last_ack.load(Ordering::Relaxed)
                {
                    shared.last_ack.store(shared.now_ms(), Ordering::Relaxed)
                }
            }
            Err(e) if e.permanent_reason().is_none() => shared
                .last_failure
                .store(shared.now_ms(), Ordering::Relaxed),
            Err(_) => {}
        }
        result
    }

    /// Whether the latest delivery failed for a reason that may pass, none was acknowledged
    /// since, and it is less than [`NOT_ACKNOWLEDGING_FOR`] old.
    pub fn not_acknowledging(&self) -> bool {
        let failure = self.shared.last_failure.load(Ordering::Relaxed);
        failure > self.shared.last_ack.load(Ordering::Relaxed)
            && self.shared.now_ms() - failure < NOT_ACKNOWLEDGING_FOR.as_millis() as u64
    }

    /// librdkafka's latest authentication or TLS error, while no broker is connected.
    pub fn authentication_error(&self) -> Option<String> {
        self.shared.authentication.lock().unwrap().clone()
    }

    /// Brokers the producer is connected to, per the latest statistics; -1 before the first.
    pub fn brokers_up(&self) -> i64 {
        self.shared.brokers_up.load(Ordering::Relaxed)
    }

    /// Whether the latest statistics say no broker is connected.
    pub fn known_down(&self) -> bool {
        self.brokers_up() == 0
    }

    /// Publishes `message` to the dead-letter topic with headers `dlq_reason` and
    /// `dlq_original_topic`, waiting at most the Kafka wait.
    pub async fn dead_letter(
        &self,
        message: &Message,
        reason: &'static str,
    ) -> Result<Delivered, PublishError> {
        let mut headers = message.headers.clone();
        headers.push((Cow::Borrowed("dlq_reason"), Cow::Borrowed(reason)));
        headers.push((
            Cow::Borrowed("dlq_original_topic"),
            Cow::Owned(message.topic.clone()),
        ));
        let pending = self.enqueue_raw(
            &self.dlq_topic,
            message.key.as_deref(),
            &headers,
            &message.value,
        )?;
        let result = match tokio::time::timeout(self.deadline, pending.wait()).await {
            Err(_) => Err(PublishError::Timeout(self.deadline)),
            Ok(result) => result.map_err(PublishError::Kafka),
        };
        match &result {
            Ok(_) => self.shared.metrics.dlq.with_label_values(&[reason]).inc(),
            Err(e) => {
                tracing::error!(id = %message.id, reason, error = %e, "cannot publish to the dead-letter topic")
            }
        }
        result
    }

    /// Publishes a rejected request body, as received, to the dead-letter topic in the
    /// background; the sender's answer does not wait for it.
    pub fn dead_letter_body(&self, body: Bytes, reason: &'static str, site: Option<&str>) {
        let mut headers = vec![(Cow::Borrowed("dlq_reason"), Cow::Borrowed(reason))];
        if let Some(site) = site {
            headers.push((Cow::Borrowed("dlq_site"), Cow::Owned(site.to_owned())));
        }
        let pending = match self.enqueue_raw(&self.dlq_topic, None, &headers, &body) {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(reason, error = %e, "cannot publish a rejected body to the dead-letter topic");
                return;
            }
        };
        let metrics = self.shared.metrics.clone();
        tokio::spawn(async move {
            match pending.wait().await {
                Ok(_) => metrics.dlq.with_label_values(&[reason]).inc(),
                Err(e) => {
                    tracing::warn!(reason, error = %e, "cannot publish a rejected body to the dead-letter topic")
                }
            }
        });
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }
}

/// The longest the producer waits for a topic it does not find in the metadata to appear.
const PROPAGATION_MAX: Duration = Duration::from_secs(2);

/// The librdkafka configuration: the bridge's fixed guarantees, then the user's properties.
pub fn producer_config(kafka: &KafkaConfig, deadline: Duration) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kafka.brokers.join(","))
        .set("client.id", &kafka.client_id)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", deadline.as_millis().to_string())
        // A topic that does not exist fails its records with UNKNOWN_TOPIC (dead-lettered)
        // within the Kafka wait, instead of timing them out into the spool, where they would
        // be retried for ever and hold every later record behind them. librdkafka's default
        // is 30 s.
        .set(
            "topic.metadata.propagation.max.ms",
            (deadline / 2).min(PROPAGATION_MAX).as_millis().to_string(),
        );
    for (key, value) in kafka.properties.iter() {
        c.set(key, value);
    }
    // OpenSSL is built from source, so its default CA directory is not the system's: look
    // for the system's CA bundle unless the user named CAs.
    let tls = kafka
        .properties
        .get("security.protocol")
        .is_some_and(|p| p.to_ascii_uppercase().contains("SSL"));
    let ca_set = ["ssl.ca.location", "ssl.ca.pem", "ssl.ca.certificate.stores"]
        .iter()
        .any(|k| kafka.properties.get(k).is_some());
    if tls && !ca_set {
        c.set("ssl.ca.location", "probe");
    }
    c.set_log_level(RDKafkaLogLevel::Info);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(properties: &[(&str, &str)]) -> Config {
        let mut config = Config::load_with_env(None, Some(Default::default())).unwrap();
        config.kafka.brokers = vec!["127.0.0.1:1".into()];
        for (k, v) in properties {
            config.kafka.properties.insert(*k, *v);
        }
        config
    }

    #[test]
    fn librdkafka_is_built_with_tls_and_sasl() {
        let native = ClientConfig::new().create_native_config().unwrap();
        let features = native.get("builtin.features").unwrap();
        for feature in ["ssl", "sasl_plain", "sasl_scram", "lz4", "snappy", "gzip"] {
            assert!(
                features.split(',').any(|f| f == feature),
                "{feature} missing from {features}"
            );
        }
    }

    #[test]
    fn sasl_ssl_and_mutual_tls_configurations_create_a_producer() {
        let dir = tempfile::tempdir().unwrap();
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["bridge".to_owned()]).unwrap();
        let (cert_path, key_path) = (dir.path().join("client.pem"), dir.path().join("client.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
        let (cert_path, key_path) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());
        for properties in [
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.username", "bridge"),
                ("sasl.password", "secret"),
            ],
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "SCRAM-SHA-256"),
                ("sasl.username", "bridge"),
                ("sasl.password", "secret"),
            ],
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "PLAIN"),
                ("sasl.username", "key"),
                ("sasl.password", "secret"),
            ],
            vec![
                ("security.protocol", "SSL"),
                ("ssl.certificate.location", cert_path),
                ("ssl.key.location", key_path),
            ],
        ] {
            let config = config_with(&properties);
            if let Err(e) = Publisher::new(&config, Metrics::new()) {
                panic!("{properties:?}: {e}");
            }
        }
        let probed = producer_config(
            &config_with(&[("security.protocol", "SASL_SSL")]).kafka,
            Duration::from_secs(1),
        );
        assert_eq!(probed.get("ssl.ca.location"), Some("probe"));
        let plain = producer_config(&config_with(&[]).kafka, Duration::from_secs(1));
        assert_eq!(plain.get("ssl.ca.location"), None);
        // A mechanism librdkafka was not built with is refused at start-up.
        let bogus = config_with(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "NOT-A-MECHANISM"),
        ]);
        assert!(Publisher::new(&bogus, Metrics::new()).is_err());
    }

    #[test]
    fn a_missing_topic_fails_within_the_kafka_wait_unless_configured() {
        let propagation = |properties: &[(&str, &str)], wait_ms: u64| {
            producer_config(
                &config_with(properties).kafka,
                Duration::from_millis(wait_ms),
            )
            .get("topic.metadata.propagation.max.ms")
            .map(str::to_owned)
        };
        assert_eq!(propagation(&[], 4000).as_deref(), Some("2000"));
        assert_eq!(propagation(&[], 1000).as_deref(), Some("500"));
        assert_eq!(
            propagation(&[("topic.metadata.propagation.max.ms", "30000")], 4000).as_deref(),
            Some("30000")
        );
    }
}
