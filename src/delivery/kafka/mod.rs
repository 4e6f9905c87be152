//! Publishing: an idempotent `acks=all` producer whose every send awaits its delivery report
//! within the delivery deadline.

pub mod properties;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::config::{Config, KafkaConfig};
use crate::metrics::{DlqReason, FailureReason, Metrics};
use crate::registry::Framing;
use std::borrow::Cow;

use bytes::Bytes;

use crate::route::{self, Message};
use crate::sync::Unpoisoned;

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
    pub fn reason(&self) -> FailureReason {
        match self {
            Self::Timeout(_) => FailureReason::Timeout,
            // librdkafka's own message.timeout.ms passed: Kafka did not acknowledge in time.
            Self::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)) => {
                FailureReason::Timeout
            }
            Self::Kafka(_) => FailureReason::KafkaError,
        }
    }
}

/// Why Kafka will never take a record: no retry can fix it, so the record goes to the
/// dead-letter topic and nothing behind it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    RecordTooLarge,
    TopicAuthorizationFailed,
    UnknownTopic,
    InvalidRecord,
}

impl From<Rejection> for DlqReason {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::RecordTooLarge => Self::RecordTooLarge,
            Rejection::TopicAuthorizationFailed => Self::TopicAuthorizationFailed,
            Rejection::UnknownTopic => Self::UnknownTopic,
            Rejection::InvalidRecord => Self::InvalidRecord,
        }
    }
}

impl Rejection {
    pub const ALL: [Self; 4] = [
        Self::RecordTooLarge,
        Self::TopicAuthorizationFailed,
        Self::UnknownTopic,
        Self::InvalidRecord,
    ];

    /// The one decision, for the HTTP path and spool replay alike: which errors are
    /// permanent. `None` for errors that may pass (timeouts, transport, leader changes, a
    /// full queue).
    pub fn of(error: &KafkaError) -> Option<Self> {
        use RDKafkaErrorCode as C;
        match error.rdkafka_error_code()? {
            C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
                Some(Self::RecordTooLarge)
            }
            C::TopicAuthorizationFailed => Some(Self::TopicAuthorizationFailed),
            C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition
            | C::InvalidTopic => Some(Self::UnknownTopic),
            C::InvalidRecord | C::InvalidMessage => Some(Self::InvalidRecord),
            _ => None,
        }
    }

    /// The `dlq_reason` header and the `reason` label of `dlq_total`.
    pub fn as_str(self) -> &'static str {
        DlqReason::from(self).as_str()
    }

    fn parse(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == reason)
    }
}

/// Where a record ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// In its topic.
    Published(Delivered),
    /// In the dead-letter topic, for this reason.
    DeadLettered(Rejection),
}

/// What a record adds to its key, value and headers at most, as librdkafka counts it
/// against `message.max.bytes` (36), plus a record batch header (61).
const RECORD_OVERHEAD: usize = 36 + 61;
/// What one header adds to its name and value at most (two length varints).
const HEADER_OVERHEAD: usize = 10;
/// The most of a too-large record's value kept in its dead-letter envelope: small enough
/// for any topic, so the envelope itself is never too large.
pub const BODY_PREFIX_BYTES: usize = 64 << 10;

/// The bytes `message` counts for against `message.max.bytes`, rounded up.
pub fn wire_size(message: &Message) -> usize {
    RECORD_OVERHEAD
        + message.key.as_ref().map_or(0, String::len)
        + message.value.len()
        + message
            .headers
            .iter()
            .map(|(k, v)| HEADER_OVERHEAD + k.len() + v.len())
            .sum::<usize>()
}

/// The dead letter of `message`, which Kafka refused for `reason`, for `dlq_topic`: the
/// record itself with headers `dlq_reason` and `dlq_original_topic`, or, when the record is
/// too large or the dead letter would not fit within `max_bytes` (0 asks for the envelope),
/// a truncated envelope `{"id","type","dlq_reason","original_topic","original_bytes",
/// "body_prefix"}` in its place.
pub fn dead_letter_of(
    message: &Message,
    reason: Rejection,
    dlq_topic: &str,
    max_bytes: usize,
) -> Message {
    let mut headers = message.headers.clone();
    headers.push((Cow::Borrowed(DLQ_REASON), Cow::Borrowed(reason.as_str())));
    headers.push((
        Cow::Borrowed(DLQ_ORIGINAL_TOPIC),
        Cow::Owned(message.topic.clone()),
    ));
    let mut letter = Message {
        id: message.id,
        kind: message.kind,
        topic: dlq_topic.to_owned(),
        key: message.key.clone(),
        headers,
        value: Vec::new(),
    };
    let whole = message.value.len() + wire_size(&letter);
    if reason != Rejection::RecordTooLarge && whole <= max_bytes {
        letter.value = message.value.clone();
        return letter;
    }
    let text = String::from_utf8_lossy(&message.value);
    let mut cut = text.len().min(BODY_PREFIX_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    letter.value = serde_json::to_vec(&serde_json::json!({
        "id": message.id,
        "type": message.kind.as_str(),
        "dlq_reason": reason.as_str(),
        "original_topic": message.topic,
        "original_bytes": message.value.len(),
        "body_prefix": &text[..cut],
    }))
    .expect("an envelope always serializes");
    letter
}

/// A client configuration with the producer's brokers and connection settings (security,
/// SASL, TLS) but none of its tuning: the base of the bridge's consumers.
pub fn connection_config(kafka: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", kafka.brokers.join(","));
    for (key, value) in kafka.properties.iter() {
        if key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.") {
            c.set(key, value);
        }
    }
    c
}

/// Header naming why a record is in the dead-letter topic.
pub const DLQ_REASON: &str = "dlq_reason";
/// Header naming the topic a dead-lettered record was meant for.
pub const DLQ_ORIGINAL_TOPIC: &str = "dlq_original_topic";

/// Why `message` is a dead letter, when it is one.
fn dead_letter_reason(message: &Message) -> Option<Rejection> {
    message
        .headers
        .iter()
        .find(|(k, _)| k == DLQ_REASON)
        .and_then(|(_, v)| Rejection::parse(v))
}

/// A record handed to the producer, whose delivery report is still to come.
pub struct Pending(DeliveryFuture);

/// The delivery report of a record whose wait ran out.
pub struct Late(Pin<Box<dyn Future<Output = Result<Delivered, KafkaError>> + Send>>);

impl Late {
    /// Waits for the report (librdkafka's message.timeout.ms bounds the wait).
    pub async fn wait(self) -> Result<Delivered, KafkaError> {
        self.0.await
    }
}

/// A record not settled within its wait.
pub struct Unsettled {
    pub error: PublishError,
    /// Its delivery report, when the wait ran out before it came: librdkafka still holds
    /// the record and may yet deliver it.
    pub late: Option<Late>,
}

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
    /// Whether a broker has been connected since start; until then `/readyz` says so.
    reached: AtomicBool,
    /// librdkafka's latest error before any broker was reached, for `/readyz`.
    unreached: Mutex<Option<String>>,
    /// `kafka.brokers`, for the errors that name them.
    brokers: String,
    metrics: Metrics,
    /// librdkafka's latest authentication (SASL or TLS) error; cleared once a broker is up.
    authentication: Mutex<Option<String>>,
    /// Milliseconds since `epoch` of the latest acknowledged and the latest failed delivery.
    last_ack: AtomicU64,
    last_failure: AtomicU64,
    epoch: Instant,
    /// Notified when a broker connects after none was, or an acknowledgement follows a
    /// failure.
    recovered: Notify,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A broker is connected: from now on an outage is "Kafka lost", not "never reached".
    fn reach(&self) {
        if !self.reached.swap(true, Ordering::Relaxed) {
            self.unreached.locked().take();
            tracing::info!(
                after_ms = self.epoch.elapsed().as_millis() as u64,
                "connected to Kafka"
            );
        }
    }
}

/// The producer's context: librdkafka's statistics, log and error callbacks.
pub struct Context(Arc<Shared>);

impl Context {
    /// Keeps librdkafka's latest error while no broker has been reached since start; the
    /// first one is logged as an ERROR naming `kafka.brokers`, unless an authentication
    /// error (which has its own) explains it.
    fn never_reached(&self, reason: &str) {
        let first = self
            .0
            .unreached
            .locked()
            .replace(reason.to_owned())
            .is_none();
        if first && self.0.authentication.locked().is_none() {
            tracing::error!(
                brokers = self.0.brokers,
                "no Kafka broker reached since start: {reason}; /readyz answers 503 until one \
                 is (records are spooled meanwhile): check kafka.brokers, the ports, \
                 security.protocol and the network"
            );
        }
    }
}

impl ClientContext for Context {
    fn stats(&self, stats: Statistics) {
        let up = stats
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0 && b.state == "UP")
            .count() as i64;
        if self.0.brokers_up.swap(up, Ordering::Relaxed) <= 0 && up > 0 {
            self.0.recovered.notify_waiters();
        }
        if up > 0 {
            self.0.reach();
        }
        self.0.metrics.kafka.brokers_up.set(up);
        if up > 0 {
            let cleared = self.0.authentication.locked().take();
            if cleared.is_some() {
                tracing::info!("connected to Kafka; the authentication error is resolved");
            }
        }
        self.0
            .metrics
            .kafka
            .producer_queue_messages
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
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            // Known at once, not at the next statistics.
            self.0.brokers_up.store(0, Ordering::Relaxed);
            self.0.metrics.kafka.brokers_up.set(0);
        }
        let what = match code {
            Some(RDKafkaErrorCode::Authentication) => "Kafka authentication failed",
            Some(RDKafkaErrorCode::SSL) => "Kafka TLS handshake failed",
            _ => {
                if !self.0.reached.load(Ordering::Relaxed) {
                    self.never_reached(reason);
                }
                return;
            }
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
    max_message_bytes: usize,
    framing: Framing,
}

impl Publisher {
    /// Creates the producer, which writes values as `framing` says; librdkafka connects in
    /// the background.
    pub fn new(config: &Config, metrics: Metrics, framing: Framing) -> Result<Self, KafkaError> {
        let deadline = config.kafka_wait();
        let client_config =
            producer_config(&config.kafka, deadline, config.http.max_inflight_bytes / 2);
        let shared = Arc::new(Shared {
            brokers_up: AtomicI64::new(-1),
            reached: AtomicBool::new(false),
            unreached: Mutex::new(None),
            brokers: config.kafka.brokers.join(","),
            metrics,
            authentication: Mutex::new(None),
            last_ack: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
            epoch: Instant::now(),
            recovered: Notify::new(),
        });
        let producer = client_config.create_with_context(Context(shared.clone()))?;
        Ok(Self {
            producer,
            shared,
            deadline,
            dlq_topic: config.dlq_topic(),
            max_message_bytes: config.kafka.message_max_bytes(),
            framing,
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

    /// Hands a record of `topic` to the producer as given: key, headers and value bytes,
    /// the value framed when `topic` is a record topic of a `json_sr` configuration.
    pub fn enqueue_raw(
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
        let value = self.framing.frame(topic, value);
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(value.as_ref())
            .headers(owned);
        if let Some(key) = key {
            record = record.key(key.as_bytes());
        }
        self.producer
            .send_result(record)
            .map(Pending)
            .map_err(|(e, _)| e)
    }

    /// Sends `message` and waits for Kafka's acknowledgement, at most `wait`; a permanent
    /// rejection sends its dead letter instead (see [`Publisher::settle`]). When the wait
    /// runs out, the record's delivery report is still to come: it is handed back.
    pub async fn publish(&self, message: &Message, wait: Duration) -> Result<Settled, Unsettled> {
        let started = Instant::now();
        let (result, late) = match self.enqueue(message) {
            Ok(pending) => {
                let mut report = Box::pin(pending.wait());
                match tokio::time::timeout(wait, &mut report).await {
                    Err(_) => (Err(PublishError::Timeout(wait)), Some(Late(report))),
                    Ok(result) => (result.map_err(PublishError::Kafka), None),
                }
            }
            Err(e) => (Err(PublishError::Kafka(e)), None),
        };
        self.shared
            .metrics
            .of(message.kind)
            .delivery
            .observe(started.elapsed().as_secs_f64());
        let shared = &self.shared;
        let result = match result {
            Ok(delivered) => Ok(delivered),
            Err(PublishError::Kafka(e)) => Err(e),
            Err(timeout) => {
                shared
                    .last_failure
                    .store(shared.now_ms(), Ordering::Relaxed);
                return Err(Unsettled {
                    error: timeout,
                    late,
                });
            }
        };
        let settled = self.settle(message, result).await;
        if let Err(PublishError::Kafka(e)) = &settled {
            if Rejection::of(e).is_none() {
                shared
                    .last_failure
                    .store(shared.now_ms(), Ordering::Relaxed);
            }
        }
        settled.map_err(|error| Unsettled { error, late: None })
    }

    /// Notes an acknowledgement; after failures, wakes whoever waits for Kafka to recover.
    fn acknowledged(&self) {
        let shared = &self.shared;
        // A broker answered: before the next statistics, Kafka is known to be up.
        let up = shared.brokers_up.load(Ordering::Relaxed);
        if up <= 0 {
            shared.reach();
        }
        if up <= 0 {
            let _ = shared
                .brokers_up
                .compare_exchange(up, 1, Ordering::Relaxed, Ordering::Relaxed);
            if up == 0 {
                shared.recovered.notify_waiters();
            }
        }
        // Written only while a failure is the latest outcome: no store to a shared cache
        // line on every acknowledged request.
        if shared.last_failure.load(Ordering::Relaxed) > shared.last_ack.load(Ordering::Relaxed) {
            shared.last_ack.store(shared.now_ms(), Ordering::Relaxed);
            shared.recovered.notify_waiters();
        }
    }

    /// The metrics the producer reports to.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Asks the cluster for its metadata (at most 1 s): librdkafka connects only to
    /// brokers it has requests for, so while none is connected this is what reconnects.
    pub async fn probe(&self) {
        let _ = self.metadata(Duration::from_secs(1)).await;
    }

    /// The cluster's metadata of every topic, asked for within `timeout` (which makes the
    /// producer connect, and never makes a broker create a topic).
    pub async fn metadata(&self, timeout: Duration) -> Result<Metadata, KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Resolves when Kafka may take records again: a broker connects after none was, or a
    /// record is acknowledged after a failure.
    pub async fn recovered(&self) {
        self.shared.recovered.notified().await
    }

    /// Kafka's answer for `message`, counted, with a permanent rejection turned into its
    /// dead letter, which is published (within the Kafka wait) before this returns. Used by
    /// the HTTP path and spool replay alike, so a record Kafka can never take never holds
    /// up the records behind it.
    pub async fn settle(
        &self,
        message: &Message,
        result: Result<Delivered, KafkaError>,
    ) -> Result<Settled, PublishError> {
        let metrics = &self.shared.metrics;
        let error = match result {
            Ok(delivered) => {
                self.acknowledged();
                return Ok(match dead_letter_reason(message) {
                    Some(reason) => {
                        metrics.dead_lettered(reason.into());
                        Settled::DeadLettered(reason)
                    }
                    None => {
                        metrics.of(message.kind).published.inc();
                        Settled::Published(delivered)
                    }
                });
            }
            Err(e) => e,
        };
        let reason = match Rejection::of(&error) {
            // A dead letter the dead-letter topic refuses is retried: it is not dropped.
            Some(reason) if dead_letter_reason(message).is_none() => reason,
            _ => return Err(PublishError::Kafka(error)),
        };
        tracing::warn!(id = %message.id, r#type = message.kind.as_str(), topic = message.topic, error = %error, reason = reason.as_str(), "Kafka rejected the record for good; dead-lettering it");
        let letter = self.dead_letter_of(message, reason);
        let mut sent = self.send_dead_letter(&letter).await;
        if let Err(PublishError::Kafka(e)) = &sent {
            let whole = letter.value.len() == message.value.len() && letter.value == message.value;
            if whole && Rejection::of(e) == Some(Rejection::RecordTooLarge) {
                // The dead-letter topic takes smaller records than the record's own topic.
                let envelope = dead_letter_of(message, reason, &self.dlq_topic, 0);
                sent = self.send_dead_letter(&envelope).await;
            }
        }
        match sent {
            Ok(()) => {
                metrics.dead_lettered(reason.into());
                Ok(Settled::DeadLettered(reason))
            }
            Err(e) => {
                tracing::error!(id = %message.id, reason = reason.as_str(), error = %e, dlq_topic = self.dlq_topic, "cannot publish to the dead-letter topic; the record is kept (in the spool, if there is one) and retried: check that the topic exists and the bridge may write to it");
                Err(e)
            }
        }
    }

    /// Sends a dead letter and waits for its acknowledgement, at most the Kafka wait.
    async fn send_dead_letter(&self, letter: &Message) -> Result<(), PublishError> {
        let pending = self.enqueue(letter)?;
        match tokio::time::timeout(self.deadline, pending.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(PublishError::Kafka(e)),
            Err(_) => Err(PublishError::Timeout(self.deadline)),
        }
    }

    /// Publishes the bytes of a spooled frame that is not a record to the dead-letter
    /// topic (header `dlq_reason: unreadable_spool_record`; at most the first 64 KiB, with
    /// `dlq_original_bytes`), waiting at most the Kafka wait.
    pub async fn dead_letter_unreadable(
        &self,
        payload: &[u8],
        len: u64,
    ) -> Result<(), PublishError> {
        const REASON: DlqReason = DlqReason::UnreadableSpoolRecord;
        let kept = &payload[..payload.len().min(BODY_PREFIX_BYTES)];
        let headers = [
            (Cow::Borrowed(DLQ_REASON), Cow::Borrowed(REASON.as_str())),
            (
                Cow::Borrowed("dlq_original_bytes"),
                Cow::Owned(len.to_string()),
            ),
        ];
        let pending = self.enqueue_raw(&self.dlq_topic, None, &headers, kept)?;
        match tokio::time::timeout(self.deadline, pending.wait()).await {
            Ok(Ok(_)) => {
                self.shared.metrics.dead_lettered(REASON);
                Ok(())
            }
            Ok(Err(e)) => Err(PublishError::Kafka(e)),
            Err(_) => Err(PublishError::Timeout(self.deadline)),
        }
    }

    /// The dead letter of `message` for this producer's dead-letter topic and size limit.
    pub fn dead_letter_of(&self, message: &Message, reason: Rejection) -> Message {
        dead_letter_of(message, reason, &self.dlq_topic, self.max_message_bytes)
    }

    /// Whether the producer can send `message` at all (`message.max.bytes`).
    pub fn fits(&self, message: &Message) -> bool {
        wire_size(message) + self.framing.overhead(&message.topic) <= self.max_message_bytes
    }

    /// Whether the latest delivery failed for a reason that may pass, none was acknowledged
    /// since, and it is less than 10 s old.
    pub fn not_acknowledging(&self) -> bool {
        let failure = self.shared.last_failure.load(Ordering::Relaxed);
        failure > self.shared.last_ack.load(Ordering::Relaxed)
            && self.shared.now_ms() - failure < NOT_ACKNOWLEDGING_FOR.as_millis() as u64
    }

    /// librdkafka's latest authentication or TLS error, while no broker is connected.
    pub fn authentication_error(&self) -> Option<String> {
        self.shared.authentication.locked().clone()
    }

    /// `None` once a broker has been connected since start; before that, why none has been
    /// (librdkafka's latest error, if any yet).
    pub fn never_reached(&self) -> Option<Option<String>> {
        match self.shared.reached.load(Ordering::Relaxed) {
            true => None,
            false => Some(self.shared.unreached.locked().clone()),
        }
    }

    /// `kafka.brokers`, comma-separated.
    pub fn brokers(&self) -> &str {
        &self.shared.brokers
    }

    /// Brokers the producer is connected to, per the latest statistics; -1 before the first.
    pub fn brokers_up(&self) -> i64 {
        self.shared.brokers_up.load(Ordering::Relaxed)
    }

    /// Whether the latest statistics say no broker is connected.
    pub fn known_down(&self) -> bool {
        self.brokers_up() == 0
    }

    /// Publishes a rejected request body, as received, to the dead-letter topic in the
    /// background; the sender's answer does not wait for it. `room` is the body's share of
    /// the memory set aside for such copies, held until Kafka answers; without it the copy
    /// is not made, and `dlq_dropped_total` counts it.
    pub fn dead_letter_body(
        &self,
        body: Bytes,
        reason: DlqReason,
        site: Option<&str>,
        room: Option<OwnedSemaphorePermit>,
    ) {
        let metrics = self.shared.metrics.clone();
        let Some(room) = room else {
            metrics.dead_letter_dropped(reason);
            tracing::debug!(
                reason = reason.as_str(),
                "no room to copy a rejected body to the dead-letter topic"
            );
            return;
        };
        let mut headers = vec![(Cow::Borrowed(DLQ_REASON), Cow::Borrowed(reason.as_str()))];
        if let Some(site) = site {
            headers.push((Cow::Borrowed("dlq_site"), Cow::Owned(site.to_owned())));
        }
        let pending = match self.enqueue_raw(&self.dlq_topic, None, &headers, &body) {
            Ok(pending) => pending,
            Err(e) => {
                metrics.dead_letter_dropped(reason);
                tracing::warn!(reason = reason.as_str(), error = %e, "cannot publish a rejected body to the dead-letter topic");
                return;
            }
        };
        tokio::spawn(async move {
            let _room = room;
            match pending.wait().await {
                Ok(_) => metrics.dead_lettered(reason),
                Err(e) => {
                    metrics.dead_letter_dropped(reason);
                    tracing::warn!(reason = reason.as_str(), error = %e, "cannot publish a rejected body to the dead-letter topic")
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

/// How long librdkafka keeps trying a record (`message.timeout.ms`): well past any wait for
/// it, so that a record whose wait ran out still gets its true outcome (acknowledged late,
/// or failed) instead of a timeout that cannot say whether the broker wrote it.
const REPORT_WITHIN: Duration = Duration::from_secs(30);

/// The librdkafka configuration: the bridge's fixed guarantees, then the user's properties.
/// `deadline` is the longest a record waits for Kafka; `queue_bytes` bounds the records
/// librdkafka holds (those whose wait ran out among them).
pub fn producer_config(
    kafka: &KafkaConfig,
    deadline: Duration,
    queue_bytes: usize,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kafka.brokers.join(","))
        .set("client.id", &kafka.client_id)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set(
            "message.timeout.ms",
            REPORT_WITHIN.max(deadline).as_millis().to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            (queue_bytes / 1024).max(1).to_string(),
        )
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
    // librdkafka's default backs reconnects off up to 10 s: an outage would outlast the
    // brokers' return by that much. A value in kafka.properties overrides this.
    if kafka.properties.get("reconnect.backoff.max.ms").is_none() {
        c.set("reconnect.backoff.max.ms", "1000");
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
            if let Err(e) = Publisher::new(&config, Metrics::new(), Framing::plain()) {
                panic!("{properties:?}: {e}");
            }
        }
        let probed = producer_config(
            &config_with(&[("security.protocol", "SASL_SSL")]).kafka,
            Duration::from_secs(1),
            1 << 20,
        );
        assert_eq!(probed.get("ssl.ca.location"), Some("probe"));
        let plain = producer_config(&config_with(&[]).kafka, Duration::from_secs(1), 1 << 20);
        assert_eq!(plain.get("ssl.ca.location"), None);
        // A mechanism librdkafka was not built with is refused at start-up.
        let bogus = config_with(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "NOT-A-MECHANISM"),
        ]);
        assert!(Publisher::new(&bogus, Metrics::new(), Framing::plain()).is_err());
    }

    fn message(value: String) -> Message {
        Message {
            id: uuid::Uuid::nil(),
            kind: crate::event::EventType::ChatEnded,
            topic: "comm100.chat_ended".into(),
            key: Some("chat-1".into()),
            headers: vec![(Cow::Borrowed("ce_id"), Cow::Borrowed("x"))],
            value: value.into_bytes(),
        }
    }

    #[test]
    fn a_dead_letter_is_the_record_or_its_truncated_envelope() {
        let small = message(r#"{"a":"b"}"#.into());
        let letter = dead_letter_of(&small, Rejection::UnknownTopic, "dlq", 1000);
        assert_eq!(letter.topic, "dlq");
        assert_eq!(letter.value, small.value);
        assert_eq!(letter.key, small.key);
        let header = |m: &Message, k: &str| {
            m.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(
            header(&letter, DLQ_REASON).as_deref(),
            Some("unknown_topic")
        );
        assert_eq!(
            header(&letter, DLQ_ORIGINAL_TOPIC).as_deref(),
            Some("comm100.chat_ended")
        );
        assert_eq!(dead_letter_reason(&letter), Some(Rejection::UnknownTopic));
        assert_eq!(dead_letter_reason(&small), None);

        // Too large, or not fitting the limit: the envelope, cut on a character boundary.
        let big = message(format!("\"{}\"", "é".repeat(BODY_PREFIX_BYTES)));
        for (reason, limit) in [
            (Rejection::RecordTooLarge, usize::MAX),
            (Rejection::TopicAuthorizationFailed, 1000),
        ] {
            let letter = dead_letter_of(&big, reason, "dlq", limit);
            let v: serde_json::Value = serde_json::from_slice(&letter.value).unwrap();
            assert_eq!(v["dlq_reason"], reason.as_str());
            assert_eq!(v["original_topic"], "comm100.chat_ended");
            assert_eq!(v["original_bytes"], big.value.len());
            assert_eq!(v["type"], "chat_ended");
            let prefix = v["body_prefix"].as_str().unwrap();
            assert_eq!(
                prefix.len(),
                BODY_PREFIX_BYTES - 1,
                "one byte of a split é dropped"
            );
            assert!(big.value.starts_with(prefix.as_bytes()));
        }
    }

    #[test]
    fn wire_size_counts_what_librdkafka_counts() {
        let m = message("x".repeat(100));
        // 100 value + 6 key + (10 + 5 + 1) header + 97 framing.
        assert_eq!(wire_size(&m), 219);
    }

    #[test]
    fn a_missing_topic_fails_within_the_kafka_wait_unless_configured() {
        let propagation = |properties: &[(&str, &str)], wait_ms: u64| {
            producer_config(
                &config_with(properties).kafka,
                Duration::from_millis(wait_ms),
                1 << 20,
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
