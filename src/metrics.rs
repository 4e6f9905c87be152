//! Prometheus metrics, prefix `comm100_bridge_`, low-cardinality labels only.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::event::EventType;

const PREFIX: &str = "comm100_bridge";

/// Route labels of `http_requests_total` and `http_request_duration_seconds`, each with
/// every status the bridge answers on it (the webhook's from [`crate::http::Refusal`]).
pub fn routes() -> Vec<(&'static str, Vec<u16>)> {
    vec![
        ("webhook", crate::http::webhook_statuses()),
        ("healthz", vec![200, 405]),
        ("readyz", vec![200, 405, 503]),
        ("metrics", vec![200, 405]),
        ("other", vec![404]),
    ]
}

/// Reasons of `events_failed_total`.
pub const FAILURE_REASONS: [&str; 4] = ["timeout", "kafka_error", "spool_full", "spool_error"];

/// Reasons of `dlq_total`: permanent Kafka rejections, then rejected request bodies.
pub const DLQ_REASONS: [&str; 8] = [
    "record_too_large",
    "topic_authorization_failed",
    "unknown_topic",
    "invalid_record",
    "unreadable_spool_record",
    "invalid_json",
    "missing_event",
    "body_too_complex",
];

/// Reasons of `dlq_dropped_total`: the rejected bodies that may be copied to the DLQ.
pub const REJECTED_BODY_REASONS: [&str; 3] = ["invalid_json", "missing_event", "body_too_complex"];

/// Reasons of `auth_failures_total`.
pub const AUTH_REASONS: [&str; 4] = [
    "missing_token",
    "invalid_token",
    "wrong_site",
    "address_not_allowed",
];

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
    pub kafka_delivery_duration: HistogramVec,
    pub auth_failures: IntCounterVec,
    pub events_spooled: IntCounterVec,
    pub spool_events: IntGauge,
    pub spool_bytes: IntGauge,
    pub kafka_retries: prometheus::IntCounter,
    pub dlq: IntCounterVec,
    pub dlq_dropped: IntCounterVec,
    pub inflight_requests: IntGauge,
    pub kafka_producer_queue_messages: IntGauge,
    pub kafka_brokers_up: IntGauge,
    /// Handles resolved once, so the request path does no label lookups.
    types: Arc<[TypeMetrics]>,
    routes: Arc<[RouteMetrics]>,
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
    /// `events_failed_total` for one of [`FAILURE_REASONS`].
    pub fn failed(&self, reason: &str) -> &IntCounter {
        let i = FAILURE_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        &self.failed[i]
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
        let m = Self {
            http_requests: IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests answered, by route and status.",
                ),
                &["route", "status"],
            )
            .unwrap(),
            http_request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time from request arrival to response, by route.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .unwrap(),
            events_received: IntCounterVec::new(
                Opts::new(
                    "events_received_total",
                    "Webhook events parsed and normalized, by type.",
                ),
                &["type"],
            )
            .unwrap(),
            events_published: IntCounterVec::new(
                Opts::new(
                    "events_published_total",
                    "Records acknowledged by Kafka, by type.",
                ),
                &["type"],
            )
            .unwrap(),
            events_failed: IntCounterVec::new(
                Opts::new(
                    "events_failed_total",
                    "Records Kafka did not acknowledge (answered 503), by type and reason.",
                ),
                &["type", "reason"],
            )
            .unwrap(),
            kafka_delivery_duration: HistogramVec::new(
                HistogramOpts::new(
                    "kafka_delivery_duration_seconds",
                    "Time from handing a record to the producer to its delivery report, by type.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["type"],
            )
            .unwrap(),
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "auth_failures_total",
                    "Requests refused by authentication, by reason.",
                ),
                &["reason"],
            )
            .unwrap(),
            events_spooled: IntCounterVec::new(
                Opts::new(
                    "events_spooled_total",
                    "Records written to the durable spool (answered 202), by type.",
                ),
                &["type"],
            )
            .unwrap(),
            spool_events: IntGauge::new("spool_events", "Records in the spool awaiting replay.")
                .unwrap(),
            spool_bytes: IntGauge::new("spool_bytes", "Size of the spool on disk, in bytes.")
                .unwrap(),
            kafka_retries: prometheus::IntCounter::new(
                "kafka_retries_total",
                "Spool replay rounds that Kafka did not fully acknowledge and that will be retried.",
            )
            .unwrap(),
            dlq: IntCounterVec::new(
                Opts::new(
                    "dlq_total",
                    "Records and rejected bodies published to the dead-letter topic, by reason.",
                ),
                &["reason"],
            )
            .unwrap(),
            dlq_dropped: IntCounterVec::new(
                Opts::new(
                    "dlq_dropped_total",
                    "Rejected bodies (answered 4xx) not copied to the dead-letter topic: the memory set aside for such copies was full, or Kafka did not take them; by reason.",
                ),
                &["reason"],
            )
            .unwrap(),
            inflight_requests: IntGauge::new("inflight_requests", "Webhook requests being served.")
                .unwrap(),
            kafka_producer_queue_messages: IntGauge::new(
                "kafka_producer_queue_messages",
                "Records in the producer's queue, awaiting delivery (librdkafka statistics).",
            )
            .unwrap(),
            kafka_brokers_up: IntGauge::new(
                "kafka_brokers_up",
                "Brokers the producer has an open connection to (librdkafka statistics).",
            )
            .unwrap(),
            registry,
            process: Registry::new(),
            types: Arc::new([]),
            routes: Arc::new([]),
        };
        let mut m = m;
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "The running version; always 1."),
            &["version"],
        )
        .unwrap();
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        for c in [
            Box::new(m.http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.http_request_duration.clone()),
            Box::new(m.events_received.clone()),
            Box::new(m.events_published.clone()),
            Box::new(m.events_failed.clone()),
            Box::new(m.kafka_delivery_duration.clone()),
            Box::new(m.auth_failures.clone()),
            Box::new(m.events_spooled.clone()),
            Box::new(m.spool_events.clone()),
            Box::new(m.spool_bytes.clone()),
            Box::new(m.kafka_retries.clone()),
            Box::new(m.dlq.clone()),
            Box::new(m.dlq_dropped.clone()),
            Box::new(m.inflight_requests.clone()),
            Box::new(m.kafka_producer_queue_messages.clone()),
            Box::new(m.kafka_brokers_up.clone()),
            Box::new(build_info),
        ] {
            m.registry
                .register(c)
                .expect("each metric is registered once");
        }

        m.process
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("registered once");
        let routes = routes();
        for (route, statuses) in &routes {
            m.http_request_duration.with_label_values(&[*route]);
            for status in statuses {
                m.http_requests
                    .with_label_values(&[*route, status.to_string().as_str()]);
            }
        }
        for kind in EventType::ALL {
            let t = kind.as_str();
            m.events_received.with_label_values(&[t]);
            m.events_published.with_label_values(&[t]);
            m.kafka_delivery_duration.with_label_values(&[t]);
            m.events_spooled.with_label_values(&[t]);
            for reason in FAILURE_REASONS {
                m.events_failed.with_label_values(&[t, reason]);
            }
        }
        for reason in DLQ_REASONS {
            m.dlq.with_label_values(&[reason]);
        }
        for reason in REJECTED_BODY_REASONS {
            m.dlq_dropped.with_label_values(&[reason]);
        }
        for reason in AUTH_REASONS {
            m.auth_failures.with_label_values(&[reason]);
        }
        m.types = EventType::ALL
            .iter()
            .map(|kind| {
                let t = kind.as_str();
                TypeMetrics {
                    received: m.events_received.with_label_values(&[t]),
                    published: m.events_published.with_label_values(&[t]),
                    spooled: m.events_spooled.with_label_values(&[t]),
                    delivery: m.kafka_delivery_duration.with_label_values(&[t]),
                    failed: FAILURE_REASONS
                        .iter()
                        .map(|r| m.events_failed.with_label_values(&[t, r]))
                        .collect(),
                }
            })
            .collect();
        m.routes = routes
            .iter()
            .map(|(route, statuses)| RouteMetrics {
                route,
                duration: m.http_request_duration.with_label_values(&[route]),
                statuses: statuses
                    .iter()
                    .map(|s| {
                        let status = s.to_string();
                        (
                            *s,
                            m.http_requests
                                .with_label_values(&[*route, status.as_str()]),
                        )
                    })
                    .collect(),
            })
            .collect();
        m
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
