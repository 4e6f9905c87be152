//! Prometheus metrics, prefix `comm100_bridge_`, low-cardinality labels only.

use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::auth::AuthError;
use crate::event::EventType;

const PREFIX: &str = "comm100_bridge";

/// Declares the values of one label as an enum with `ALL` and `as_str`, so that no label
/// value is a free string that could fall into another series.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }
    };
}

label_values! {
    /// Why a record was not made durable (answered 503): `reason` of `events_failed_total`.
    FailureReason {
        Timeout => "timeout",
        KafkaError => "kafka_error",
        SpoolFull => "spool_full",
        SpoolError => "spool_error",
    }
}

label_values! {
    /// Why something went to the dead-letter topic: `reason` of `dlq_total` (permanent Kafka
    /// rejections, then rejected request bodies) and the `dlq_reason` header.
    DlqReason {
        RecordTooLarge => "record_too_large",
        TopicAuthorizationFailed => "topic_authorization_failed",
        UnknownTopic => "unknown_topic",
        InvalidRecord => "invalid_record",
        UnreadableSpoolRecord => "unreadable_spool_record",
        InvalidJson => "invalid_json",
        MissingEvent => "missing_event",
        BodyTooComplex => "body_too_complex",
        InvalidGzip => "invalid_gzip",
    }
}

impl DlqReason {
    /// The reasons of rejected request bodies: `reason` of `dlq_dropped_total`.
    pub const REJECTED_BODIES: &'static [Self] = &[
        Self::InvalidJson,
        Self::MissingEvent,
        Self::BodyTooComplex,
        Self::InvalidGzip,
    ];
}

label_values! {
    /// Why the webhook listener closed a connection without answering a request on it:
    /// `reason` of `connections_refused_total`.
    RefusedConnection {
        AddressNotAllowed => "address_not_allowed",
        PerClientLimit => "per_client_limit",
        TlsHandshakeFailed => "tls_handshake_failed",
        HeadTooLarge => "head_too_large",
        MalformedRequest => "malformed_request",
    }
}

/// Registers `metric` (just built, so it always is valid and new) in `registry`.
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("a constant, valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

/// A registered counter with `labels`.
fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

/// A registered gauge.
fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help))
}

/// Every metric the bridge exports, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// The standard, unprefixed `process_*` metrics.
    process: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub events_received: IntCounterVec,
    pub events_published: IntCounterVec,
    pub events_failed: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub events_spooled: IntCounterVec,
    pub spool: SpoolMetrics,
    pub dlq: IntCounterVec,
    pub dlq_dropped: IntCounterVec,
    pub webhooks_refused: IntCounterVec,
    pub connections_refused: IntCounterVec,
    pub inflight_requests: IntGauge,
    pub kafka: KafkaMetrics,
    /// Handles resolved once, so the request path does no label lookups.
    types: Arc<[TypeMetrics]>,
    routes: Arc<[RouteMetrics]>,
}

/// The spool's series.
#[derive(Clone)]
pub struct SpoolMetrics {
    pub events: IntGauge,
    pub bytes: IntGauge,
    pub capacity_bytes: IntGauge,
    pub replay_retries: IntCounter,
    pub replay_skipped: IntCounter,
    pub faulted: IntGauge,
    pub lost_events: IntCounter,
}

impl SpoolMetrics {
    fn register(r: &Registry) -> Self {
        Self {
        events: gauge(r, "spool_events", "Records in the spool awaiting replay."),
        bytes: gauge(r, "spool_bytes", "Size of the spool on disk, in bytes."),
        capacity_bytes: gauge(
            r,
            "spool_capacity_bytes",
            "The spool's limit (spool.max_bytes); 0 without a spool.",
        ),
        replay_retries: register(
            r,
            prometheus::IntCounter::new(
                "spool_replay_retries_total",
                "Spool replay rounds that Kafka did not fully acknowledge and that will be retried.",
            ),
        ),
        replay_skipped: register(
            r,
            prometheus::IntCounter::new(
                "spool_replay_skipped_total",
                "Spooled records not replayed because Kafka acknowledged their original produce after its deadline.",
            ),
        ),
        faulted: gauge(
            r,
            "spool_faulted",
            "1 while the spool cannot take records (its directory was removed, its disk is full, read-only or failing); webhooks that need it are answered 503.",
        ),
        lost_events: register(
            r,
            IntCounter::new(
                "spool_lost_events_total",
                "Spooled records (answered 202) lost because their spool directory was removed while they waited.",
            ),
        ),
        }
    }
}

/// The producer's series.
#[derive(Clone)]
pub struct KafkaMetrics {
    pub delivery_duration: HistogramVec,
    pub producer_queue_messages: IntGauge,
    pub brokers_up: IntGauge,
}

impl KafkaMetrics {
    fn register(r: &Registry) -> Self {
        Self {
        delivery_duration: register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "kafka_delivery_duration_seconds",
                    "Time from handing a record to the producer to its delivery report, by type.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["type"],
            ),
        ),
        producer_queue_messages: gauge(
            r,
            "kafka_producer_queue_messages",
            "Records in the producer's queue, awaiting delivery (librdkafka statistics).",
        ),
        brokers_up: gauge(
            r,
            "kafka_brokers_up",
            "Brokers the producer has an open connection to (librdkafka statistics).",
        ),
        }
    }
}

/// A registry of the standard `process_*` metrics.
fn process_registry() -> Registry {
    let registry = Registry::new();
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("registered once");
    registry
}

/// Registers `build_info`, set to 1 for this version and commit.
fn build_info(r: &Registry) {
    let build_info = register(
        r,
        IntGaugeVec::new(
            Opts::new(
                "build_info",
                "The running version and the git commit it was built from; always 1.",
            ),
            &["version", "commit"],
        ),
    );
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("COMM100_BRIDGE_COMMIT")])
        .set(1);
}

/// The series of one record type.
pub struct TypeMetrics {
    pub received: IntCounter,
    pub published: IntCounter,
    pub spooled: IntCounter,
    pub delivery: Histogram,
    failed: Vec<IntCounter>,
}

impl TypeMetrics {
    /// `events_failed_total` of this type for `reason`.
    pub fn failed(&self, reason: FailureReason) -> &IntCounter {
        &self.failed[reason as usize]
    }
}

/// The series of one route.
struct RouteMetrics {
    route: &'static str,
    duration: Histogram,
    statuses: Vec<(u16, IntCounter)>,
}

impl Metrics {
    /// Registers every metric and initializes each labelled series at zero.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some(PREFIX.to_owned()), None)
            .expect("a constant, valid metric prefix");
        let r = &registry;
        build_info(r);
        let mut m = Self {
            http_requests: counters(
                r,
                "http_requests_total",
                "HTTP requests answered, by route and status.",
                &["route", "status"],
            ),
            http_request_duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "http_request_duration_seconds",
                        "Time from request arrival to response, by route.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route"],
                ),
            ),
            events_received: counters(
                r,
                "events_received_total",
                "Webhook events parsed and normalized, by type.",
                &["type"],
            ),
            events_published: counters(
                r,
                "events_published_total",
                "Records acknowledged by Kafka, by type.",
                &["type"],
            ),
            events_failed: counters(
                r,
                "events_failed_total",
                "Records Kafka did not acknowledge (answered 503), by type and reason.",
                &["type", "reason"],
            ),
            auth_failures: counters(
                r,
                "auth_failures_total",
                "Requests refused by authentication, by reason.",
                &["reason"],
            ),
            events_spooled: counters(
                r,
                "events_spooled_total",
                "Records written to the durable spool (answered 202), by type.",
                &["type"],
            ),
            dlq: counters(
                r,
                "dlq_total",
                "Records and rejected bodies published to the dead-letter topic, by reason.",
                &["reason"],
            ),
            dlq_dropped: counters(
                r,
                "dlq_dropped_total",
                "Rejected bodies (answered 4xx) not copied to the dead-letter topic: the memory set aside for such copies was full, or Kafka did not take them; by reason.",
                &["reason"],
            ),
            webhooks_refused: counters(
                r,
                "webhooks_refused_total",
                "Webhook requests answered 4xx or 5xx, by the code of the error body; not_found counts authenticated POSTs to a path that is not a webhook path.",
                &["reason"],
            ),
            connections_refused: counters(
                r,
                "connections_refused_total",
                "Webhook-listener connections closed without a routed answer, by reason: at accept (address_not_allowed, per_client_limit), in the TLS handshake, or by the HTTP layer (head_too_large answered 431, malformed_request answered 400).",
                &["reason"],
            ),
            inflight_requests: gauge(r, "inflight_requests", "Webhook requests being served."),
            spool: SpoolMetrics::register(r),
            kafka: KafkaMetrics::register(r),
            registry,
            process: process_registry(),
            types: Arc::new([]),
            routes: Arc::new([]),
        };

        m.zero_every_series();
        m.types = m.type_handles();
        m
    }

    /// Creates every labelled series at zero, so that each is exported before it counts.
    fn zero_every_series(&self) {
        for kind in EventType::ALL {
            let t = kind.as_str();
            self.events_received.with_label_values(&[t]);
            self.events_published.with_label_values(&[t]);
            self.kafka.delivery_duration.with_label_values(&[t]);
            self.events_spooled.with_label_values(&[t]);
            for reason in FailureReason::ALL {
                self.events_failed.with_label_values(&[t, reason.as_str()]);
            }
        }
        for reason in DlqReason::ALL {
            self.dlq.with_label_values(&[reason.as_str()]);
        }
        for reason in DlqReason::REJECTED_BODIES {
            self.dlq_dropped.with_label_values(&[reason.as_str()]);
        }
        for reason in AuthError::ALL.map(AuthError::reason) {
            self.auth_failures.with_label_values(&[reason]);
        }
        for reason in RefusedConnection::ALL {
            self.connections_refused
                .with_label_values(&[reason.as_str()]);
        }
    }

    /// The series of each record type, looked up once.
    fn type_handles(&self) -> Arc<[TypeMetrics]> {
        EventType::ALL
            .iter()
            .map(|kind| {
                let t = kind.as_str();
                TypeMetrics {
                    received: self.events_received.with_label_values(&[t]),
                    published: self.events_published.with_label_values(&[t]),
                    spooled: self.events_spooled.with_label_values(&[t]),
                    delivery: self.kafka.delivery_duration.with_label_values(&[t]),
                    failed: FailureReason::ALL
                        .iter()
                        .map(|r| self.events_failed.with_label_values(&[t, r.as_str()]))
                        .collect(),
                }
            })
            .collect()
    }

    /// With the series of each route label and every status it answers with, at zero; the
    /// server's routes ([`crate::http::routes`]).
    pub fn with_routes(mut self, routes: &[(&'static str, Vec<u16>)]) -> Self {
        self.routes = routes
            .iter()
            .map(|(route, statuses)| RouteMetrics {
                route,
                duration: self.http_request_duration.with_label_values(&[route]),
                statuses: statuses
                    .iter()
                    .map(|s| {
                        let status = s.to_string();
                        let counter = self
                            .http_requests
                            .with_label_values(&[*route, status.as_str()]);
                        (*s, counter)
                    })
                    .collect(),
            })
            .collect();
        self
    }

    /// With the series of each reason a webhook is refused for, at zero: the codes of the
    /// server's error bodies ([`crate::http::refusal_codes`]).
    pub fn with_refusals(self, codes: &[&str]) -> Self {
        for code in codes {
            self.webhooks_refused.with_label_values(&[code]);
        }
        self
    }

    /// Counts one webhook refused with the error code `code`.
    pub fn webhook_refused(&self, code: &str) {
        self.webhooks_refused.with_label_values(&[code]).inc();
    }

    /// Counts one connection closed without a routed answer.
    pub fn connection_refused(&self, reason: RefusedConnection) {
        self.connections_refused
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Counts one record or rejected body in the dead-letter topic.
    pub fn dead_lettered(&self, reason: DlqReason) {
        self.dlq.with_label_values(&[reason.as_str()]).inc();
    }

    /// Counts one rejected body not copied to the dead-letter topic.
    pub fn dead_letter_dropped(&self, reason: DlqReason) {
        self.dlq_dropped.with_label_values(&[reason.as_str()]).inc();
    }

    /// Counts one request refused by authentication.
    pub fn auth_failed(&self, error: AuthError) {
        self.auth_failures
            .with_label_values(&[error.reason()])
            .inc();
    }

    /// The series of records of type `kind`.
    pub fn of(&self, kind: EventType) -> &TypeMetrics {
        &self.types[kind.index()]
    }

    /// Counts one answered request and its duration.
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        match self.routes.iter().find(|r| r.route == route) {
            Some(r) => {
                r.duration.observe(seconds);
                match r.statuses.iter().find(|(s, _)| *s == status) {
                    Some((_, counter)) => counter.inc(),
                    None => self
                        .http_requests
                        .with_label_values(&[route, &status.to_string()])
                        .inc(),
                }
            }
            None => {
                self.http_request_duration
                    .with_label_values(&[route])
                    .observe(seconds);
                self.http_requests
                    .with_label_values(&[route, &status.to_string()])
                    .inc();
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on invalid metric families, which `new` cannot build.
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds, from one millisecond to ten seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];
