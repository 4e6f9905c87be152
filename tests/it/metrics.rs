//! Metrics and readiness against a running bridge: exact deltas, every series present at
//! zero on start, `/readyz` following the brokers, and every metric the deployment files
//! (alerts, dashboard) use present in a real scrape.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use comm100_bridge::auth::AuthError;
use comm100_bridge::event::EventType;
use comm100_bridge::http::{refusal_codes, routes};
use comm100_bridge::metrics::{DlqReason, FailureReason, RefusedConnection};
use http::StatusCode;

/// Every sample of an exposition: `name{labels}` → value.
fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(bridge: &Bridge) -> BTreeMap<String, f64> {
    samples(&get(&bridge.admin("/metrics")).await.text)
}

/// `after - before` for every series that changed.
fn deltas(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

fn counter_deltas(d: &BTreeMap<String, f64>) -> BTreeMap<&str, f64> {
    // Counters only: durations, sums, gauges and process metrics move on their own.
    d.iter()
        .filter(|(k, _)| k.contains("_total{") && !k.starts_with("comm100_bridge_process"))
        .map(|(k, v)| (k.as_str(), *v))
        .collect()
}

#[tokio::test]
async fn every_labelled_series_exists_at_zero_on_start() {
    let cluster = cluster();
    let bridge = Bridge::start(config(&cluster.bootstrap_servers())).await;
    let s = scrape(&bridge).await;
    let mut missing = Vec::new();
    let mut expect = |series: String| {
        if s.get(&series) != Some(&0.0) {
            missing.push(series);
        }
    };
    for kind in EventType::ALL {
        let t = kind.as_str();
        expect(format!(
            "comm100_bridge_events_received_total{{type=\"{t}\"}}"
        ));
        expect(format!(
            "comm100_bridge_events_published_total{{type=\"{t}\"}}"
        ));
        expect(format!(
            "comm100_bridge_events_spooled_total{{type=\"{t}\"}}"
        ));
        expect(format!(
            "comm100_bridge_kafka_delivery_duration_seconds_count{{type=\"{t}\"}}"
        ));
        for reason in FailureReason::ALL.iter().map(|r| r.as_str()) {
            expect(format!(
                "comm100_bridge_events_failed_total{{reason=\"{reason}\",type=\"{t}\"}}"
            ));
        }
    }
    for reason in DlqReason::ALL.iter().map(|r| r.as_str()) {
        expect(format!("comm100_bridge_dlq_total{{reason=\"{reason}\"}}"));
    }
    for reason in DlqReason::REJECTED_BODIES.iter().map(|r| r.as_str()) {
        expect(format!(
            "comm100_bridge_dlq_dropped_total{{reason=\"{reason}\"}}"
        ));
    }
    for reason in AuthError::ALL.map(AuthError::reason) {
        expect(format!(
            "comm100_bridge_auth_failures_total{{reason=\"{reason}\"}}"
        ));
    }
    for reason in refusal_codes() {
        expect(format!(
            "comm100_bridge_webhooks_refused_total{{reason=\"{reason}\"}}"
        ));
    }
    for reason in RefusedConnection::ALL.iter().map(|r| r.as_str()) {
        expect(format!(
            "comm100_bridge_connections_refused_total{{reason=\"{reason}\"}}"
        ));
    }
    for (route, statuses) in routes() {
        for status in statuses {
            // The scrape itself is counted after it is rendered.
            expect(format!(
                "comm100_bridge_http_requests_total{{route=\"{route}\",status=\"{status}\"}}"
            ));
        }
    }
    expect("comm100_bridge_spool_replay_retries_total".into());
    assert!(missing.is_empty(), "not present at 0: {missing:#?}");
    for gauge in [
        "comm100_bridge_spool_events",
        "comm100_bridge_spool_bytes",
        "comm100_bridge_spool_capacity_bytes",
        "comm100_bridge_inflight_requests",
        "comm100_bridge_kafka_producer_queue_messages",
        "comm100_bridge_kafka_brokers_up",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(s.contains_key(gauge), "{gauge} missing");
    }
    let defaults = comm100_bridge::config::Config::load_with_env(None, Some(Default::default()));
    assert_eq!(
        s.get("comm100_bridge_spool_capacity_bytes"),
        Some(&(defaults.unwrap().spool.max_bytes as f64)),
        "the spool's limit, for a nearly-full alert"
    );
    let build_info = format!(
        "comm100_bridge_build_info{{commit=\"{}\",version=\"{}\"}}",
        comm100_bridge::COMMIT,
        comm100_bridge::VERSION
    );
    assert_eq!(s.get(build_info.as_str()), Some(&1.0), "{build_info}");
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn requests_move_exactly_the_counters_they_should() {
    let cluster = cluster();
    let bridge = Bridge::start(config(&cluster.bootstrap_servers())).await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let body = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();

    let before = scrape(&bridge).await;
    assert_eq!(post(&hook, &[], body).await.status, StatusCode::OK);
    let after = scrape(&bridge).await;
    let d = deltas(&before, &after);
    let expected: BTreeMap<&str, f64> = [
        (
            "comm100_bridge_events_received_total{type=\"chat_ended\"}",
            1.0,
        ),
        (
            "comm100_bridge_events_published_total{type=\"chat_ended\"}",
            1.0,
        ),
        (
            "comm100_bridge_http_requests_total{route=\"webhook\",status=\"200\"}",
            1.0,
        ),
        // The scrape that produced `before`.
        (
            "comm100_bridge_http_requests_total{route=\"metrics\",status=\"200\"}",
            1.0,
        ),
    ]
    .into();
    assert_eq!(counter_deltas(&d), expected);
    assert_eq!(
        d.get("comm100_bridge_kafka_delivery_duration_seconds_count{type=\"chat_ended\"}"),
        Some(&1.0)
    );
    assert_eq!(
        d.get("comm100_bridge_http_request_duration_seconds_count{route=\"webhook\"}"),
        Some(&1.0)
    );
    // Nothing is in flight between requests; a scrape does not count itself.
    assert_eq!(after.get("comm100_bridge_inflight_requests"), Some(&0.0));

    let before = scrape(&bridge).await;
    let unauthorized = post(&bridge.url("/webhooks/comm100?token=wrong"), &[], "{}").await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    let d = deltas(&before, &scrape(&bridge).await);
    let expected: BTreeMap<&str, f64> = [
        (
            "comm100_bridge_auth_failures_total{reason=\"invalid_token\"}",
            1.0,
        ),
        (
            "comm100_bridge_http_requests_total{route=\"webhook\",status=\"401\"}",
            1.0,
        ),
        (
            "comm100_bridge_webhooks_refused_total{reason=\"unauthorized\"}",
            1.0,
        ),
        (
            "comm100_bridge_http_requests_total{route=\"metrics\",status=\"200\"}",
            1.0,
        ),
    ]
    .into();
    assert_eq!(counter_deltas(&d), expected);

    let before = scrape(&bridge).await;
    assert_eq!(
        post(&hook, &[], "{\"no\":\"event\"}").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        get(&bridge.url("/nope")).await.status,
        StatusCode::NOT_FOUND
    );
    let after = scrape(&bridge).await;
    let d = deltas(&before, &after);
    assert_eq!(
        d.get("comm100_bridge_http_requests_total{route=\"webhook\",status=\"422\"}"),
        Some(&1.0)
    );
    assert_eq!(
        d.get("comm100_bridge_http_requests_total{route=\"other\",status=\"404\"}"),
        Some(&1.0)
    );
    assert_eq!(
        d.get("comm100_bridge_events_received_total{type=\"unknown\"}"),
        None
    );

    // Kafka away: the record is spooled (202), counted once as spooled, not as published.
    cluster.broker_down(-1).unwrap();
    let before = scrape(&bridge).await;
    let body = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();
    let spooled = post(&hook, &[], body).await;
    assert_eq!(spooled.status, StatusCode::ACCEPTED, "{}", spooled.text);
    let d = deltas(&before, &scrape(&bridge).await);
    assert_eq!(
        d.get("comm100_bridge_events_spooled_total{type=\"chat_ended\"}"),
        Some(&1.0)
    );
    assert_eq!(
        d.get("comm100_bridge_events_published_total{type=\"chat_ended\"}"),
        None
    );
    cluster.broker_up(-1).unwrap();
    bridge.stop().await.unwrap();
}

/// Reads what the bridge answers on `stream` until it closes it (a reset counts as closed).
async fn answer_of(mut stream: tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn every_way_a_webhook_is_lost_moves_a_counter_with_its_reason() {
    let cluster = cluster();
    let bridge = Bridge::start(config(&cluster.bootstrap_servers())).await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let before = scrape(&bridge).await;

    // A webhook URL mistyped where it is configured: a 404 with a valid token.
    let mistyped = bridge.url(&format!("/webhooks/comm10?token={TOKEN}"));
    assert_eq!(
        post(&mistyped, &[], "{}").await.status,
        StatusCode::NOT_FOUND
    );
    // A scanner's POST without a token and a GET are 404s too, not refused webhooks.
    let scanner = post(&bridge.url("/webhooks/comm10"), &[], "{}").await;
    assert_eq!(scanner.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&mistyped).await.status, StatusCode::NOT_FOUND);
    // A body declared gzip that is not (dead-lettered as sent).
    let not_gzip = post(&hook, &[("content-encoding", "gzip")], "not gzip").await;
    assert_eq!(not_gzip.json["error"]["code"], "invalid_gzip");
    // A chunked body that cannot be decoded.
    let target = format!("/webhooks/comm100?token={TOKEN}");
    let broken = raw_request(
        bridge.addr,
        format!("POST {target} HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
    )
    .await;
    let answer = answer_of(broken).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body_unreadable"), "{answer}");
    // Heads the HTTP layer answers itself: over the limits (431), and not HTTP (400).
    let padding = "a".repeat(20 << 10);
    let big = format!("POST {target} HTTP/1.1\r\nhost: b\r\nx-padding: {padding}\r\n\r\n");
    answer_of(raw_request(bridge.addr, big).await).await;
    let garbage = answer_of(raw_request(bridge.addr, "HELLO\r\n\r\n").await).await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");

    let expected: BTreeMap<String, f64> = [
        (
            "comm100_bridge_http_requests_total{route=\"other\",status=\"404\"}",
            3.0,
        ),
        (
            "comm100_bridge_webhooks_refused_total{reason=\"not_found\"}",
            1.0,
        ),
        (
            "comm100_bridge_http_requests_total{route=\"webhook\",status=\"400\"}",
            2.0,
        ),
        (
            "comm100_bridge_webhooks_refused_total{reason=\"invalid_gzip\"}",
            1.0,
        ),
        (
            "comm100_bridge_webhooks_refused_total{reason=\"body_unreadable\"}",
            1.0,
        ),
        ("comm100_bridge_dlq_total{reason=\"invalid_gzip\"}", 1.0),
        (
            "comm100_bridge_connections_refused_total{reason=\"head_too_large\"}",
            1.0,
        ),
        (
            "comm100_bridge_connections_refused_total{reason=\"malformed_request\"}",
            1.0,
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into();
    // The dead letter is counted once Kafka acknowledges it, the HTTP layer's refusals once
    // their connections close: poll for up to 10 s.
    let started = std::time::Instant::now();
    let counted = loop {
        let d = deltas(&before, &scrape(&bridge).await);
        let now: BTreeMap<String, f64> = counter_deltas(&d)
            .into_iter()
            .filter(|(k, _)| !k.contains("route=\"metrics\""))
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        if now == expected || started.elapsed() > Duration::from_secs(10) {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(counted, expected);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_follows_the_brokers_when_there_is_no_spool() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.spool.enabled = false;
    c.kafka.properties.insert("reconnect.backoff.ms", "50");
    c.kafka.properties.insert("reconnect.backoff.max.ms", "500");
    let bridge = Bridge::start(c).await;
    let readyz = bridge.admin("/readyz");
    let healthz = bridge.admin("/healthz");
    wait_for_status(&readyz, StatusCode::OK, Duration::from_secs(10)).await;

    cluster.broker_down(-1).unwrap();
    let took = wait_for_status(
        &readyz,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    let answer = get(&readyz).await;
    assert_eq!(answer.json["reason"], "no Kafka broker is connected");
    assert_eq!(get(&healthz).await.status, StatusCode::OK);
    report(&format!(
        "readiness: 503 {:.1} s after every broker went down",
        took.as_secs_f64()
    ));

    cluster.broker_up(-1).unwrap();
    let took = wait_for_status(&readyz, StatusCode::OK, Duration::from_secs(15)).await;
    report(&format!(
        "readiness: 200 {:.1} s after the brokers came back",
        took.as_secs_f64()
    ));
    bridge.stop().await.unwrap();
}

/// Names of the bridge's own and `process_*` metrics used in a deployment file.
fn names_in(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap();
    let mut names = BTreeSet::new();
    for prefix in ["comm100_bridge_", "process_"] {
        let mut rest = text.as_str();
        while let Some(i) = rest.find(prefix) {
            let preceded_by_name = rest[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !preceded_by_name {
                names.insert(tail[..end].to_owned());
            }
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_alerts_and_dashboard_use_exists() {
    let cluster = cluster();
    let bridge = Bridge::start(config(&cluster.bootstrap_servers())).await;
    let exposed: BTreeSet<String> = scrape(&bridge)
        .await
        .keys()
        .map(|k| k.split('{').next().unwrap().to_owned())
        .collect();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/dashboards/comm100-bridge.json",
    ] {
        let used = names_in(file);
        assert!(
            used.len() >= 5,
            "{file} uses almost no bridge metric: {used:?}"
        );
        let unknown: Vec<_> = used.iter().filter(|n| !exposed.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the bridge does not expose: {unknown:?}"
        );
    }
    bridge.stop().await.unwrap();
}
