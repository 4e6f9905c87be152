//! The bridge over real HTTP against the in-process mock Kafka cluster.

use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine;
use comm100_bridge::trace::TraceParent;
use http::StatusCode;
use serde_json::{json, Value};

/// The golden record of `sample`, as in `tests/golden.rs`.
fn golden(sample: &std::path::Path) -> Value {
    let bytes = std::fs::read(sample.with_extension("expected.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn expected_type_and_key(golden: &Value) -> (String, Option<String>) {
    let kind = golden["type"].as_str().unwrap().to_owned();
    let key = match kind.as_str() {
        "offline_message_submitted" => golden["offline_message"]["id"].as_str(),
        "agent_status_changed" => golden["agent"]["operator_id"].as_str(),
        _ => golden["chat_id"].as_str(),
    };
    (kind, key.map(str::to_owned))
}

#[tokio::test]
async fn every_sample_is_published_to_its_topic_and_consumed_back() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let bridge = Bridge::start(config(&bootstrap)).await;
    let samples = samples();
    assert!(samples.len() >= 21, "{}", samples.len());

    for sample in &samples {
        let body = std::fs::read(sample).unwrap();
        let answer = post(
            &bridge.url(&format!("/webhooks/comm100?token={TOKEN}")),
            &[],
            body,
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{}: {}",
            sample.display(),
            answer.text
        );

        let golden = golden(sample);
        let (kind, key) = expected_type_and_key(&golden);
        let topic = format!("comm100.{kind}");
        assert_eq!(answer.json["type"], kind.as_str());
        assert_eq!(answer.json["topic"], topic.as_str());
        let id = answer.json["id"].as_str().unwrap().to_owned();
        let partition = answer.json["partition"].as_i64().unwrap() as i32;
        let offset = answer.json["offset"].as_i64().unwrap();

        let record = consume_at(&bootstrap, &topic, partition, offset);
        assert_eq!(record.topic, topic);
        assert_eq!(record.key, key, "{}", sample.display());
        assert_eq!(record.header("ce_specversion"), Some("1.0"));
        assert_eq!(record.header("ce_id"), Some(id.as_str()));
        assert_eq!(
            record.header("ce_type"),
            Some(format!("com.comm100.livechat.{kind}").as_str())
        );
        assert_eq!(record.header("ce_source"), Some("/comm100/livechat"));
        let expected_time = golden["occurred_at"]
            .as_str()
            .unwrap_or_else(|| record.value["received_at"].as_str().unwrap());
        assert_eq!(record.header("ce_time"), Some(expected_time));
        assert_eq!(record.header("content-type"), Some("application/json"));
        let trace = record.header("traceparent").unwrap_or_default();
        assert!(TraceParent::parse(trace).is_some(), "{trace}");
        assert_eq!(record.headers.len(), 7);

        let mut value = record.value.clone();
        assert_eq!(value["id"], id.as_str());
        let object = value.as_object_mut().unwrap();
        object.remove("id");
        object.remove("received_at");
        assert_eq!(value, golden, "{}", sample.display());
    }
    bridge.stop().await.unwrap();
}

// Multi-threaded: the bridge replays while this test's thread blocks reading Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_carries_the_requests_traceparent_or_a_new_one_through_the_spool_too() {
    const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let bridge = Bridge::start(config(&bootstrap)).await;
    bridge.connected().await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let body = |chat: &str| json!({"event": "chat_ended", "chat": {"id": chat}}).to_string();
    let traced = |headers: &[(&str, &str)], chat: &str| {
        let (hook, bootstrap) = (hook.clone(), bootstrap.clone());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let body = body(chat);
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let answer = post(&hook, &headers, body).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            let record = consume_answered(&bootstrap, &answer);
            record.header("traceparent").unwrap().to_owned()
        }
    };
    // The sender's own, kept as sent.
    assert_eq!(traced(&[("traceparent", SENT)], "kept").await, SENT);
    // An invalid one is replaced, never copied; none at all gets a new one.
    let upper = SENT.to_uppercase();
    let replaced = traced(&[("traceparent", upper.as_str())], "invalid").await;
    let new = traced(&[], "none").await;
    for trace in [&replaced, &new] {
        assert!(TraceParent::parse(trace).is_some(), "{trace}");
        assert!(
            !trace.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{trace}"
        );
    }
    assert_ne!(replaced, new);

    // A spooled record keeps it until replay publishes it.
    cluster.broker_down(-1).unwrap();
    let spooled = post(&hook, &[("traceparent", SENT)], body("spooled")).await;
    assert_eq!(spooled.status, StatusCode::ACCEPTED, "{}", spooled.text);
    cluster.broker_up(-1).unwrap();
    let id = spooled.json["id"].as_str().unwrap().to_owned();
    let replayed = consume_all(
        &bootstrap,
        "comm100.chat_ended",
        Duration::from_secs(30),
        |got| got.iter().any(|r| r.value["id"] == id.as_str()),
    );
    let record = replayed
        .iter()
        .find(|r| r.value["id"] == id.as_str())
        .unwrap();
    assert_eq!(record.header("traceparent"), Some(SENT));
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn one_chats_events_share_a_key_and_a_partition() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let bridge = Bridge::start(config(&bootstrap)).await;
    let mut partitions = Vec::new();
    for event in [
        "chat_request",
        "chat_started",
        "chat_transferred",
        "chat_ended",
        "chat_wrapped_up",
    ] {
        let body = json!({"event": event, "visitor": {"chat_id": "chat-42"}}).to_string();
        let answer = post(
            &bridge.url("/webhooks/comm100"),
            &[("x-bridge-token", TOKEN)],
            body,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        partitions.push(answer.json["partition"].as_i64().unwrap());
        let record = consume_answered(&bootstrap, &answer);
        assert_eq!(record.key.as_deref(), Some("chat-42"));
    }
    // The default partitioner hashes the key, and every topic has the same partition count.
    assert!(
        partitions.windows(2).all(|w| w[0] == w[1]),
        "{partitions:?}"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_site_label_tags_the_record_and_its_source() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let bridge = Bridge::start(config(&bootstrap)).await;
    let body = r#"{"event":"online","operator_id":1}"#;
    let answer = post(
        &bridge.url(&format!("/webhooks/comm100/eu-1?token={TOKEN}")),
        &[],
        body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let record = consume_answered(&bootstrap, &answer);
    assert_eq!(record.value["site"], "eu-1");
    assert_eq!(record.header("ce_source"), Some("/comm100/livechat/eu-1"));
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn tokens_are_required_and_accepted_in_every_documented_place() {
    let cluster = cluster();
    let bridge = Bridge::start(config(&cluster.bootstrap_servers())).await;
    let url = bridge.url("/webhooks/comm100");
    let body = r#"{"event":"away","operator_id":1}"#;

    for (headers, query) in [
        (vec![], ""),
        (vec![("x-bridge-token", "wrong")], ""),
        (vec![], "?token=wrong"),
    ] {
        let answer = post(&format!("{url}{query}"), &headers, body).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.json["error"]["code"], "unauthorized");
        assert!(!answer.text.contains(TOKEN));
    }

    let bearer = format!("Bearer {TOKEN}");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("comm100:{TOKEN}"))
    );
    for headers in [
        vec![("authorization", bearer.as_str())],
        vec![("x-bridge-token", TOKEN)],
        vec![("authorization", basic.as_str())],
    ] {
        let answer = post(&url, &headers, body).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{headers:?}: {}",
            answer.text
        );
    }
    let metrics = get(&bridge.admin("/metrics")).await.text;
    assert_eq!(
        metric(
            &metrics,
            "comm100_bridge_auth_failures_total{reason=\"missing_token\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "comm100_bridge_auth_failures_total{reason=\"invalid_token\"}"
        ),
        2.0,
        "{metrics}"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_chunked_body_is_refused_without_reading_it_all() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.http.max_body_bytes = 1024;
    let bridge = Bridge::start(c).await;
    let head = format!(
        "POST /webhooks/comm100?token={TOKEN} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let mut stream = raw_request(bridge.addr, head).await;
    // 2 KiB of chunks, past the limit; the sender never finishes the body.
    for _ in 0..4 {
        stream.write_all(b"200\r\n").await.unwrap();
        stream.write_all(&[b' '; 512]).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to an oversized, unfinished body");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn with_every_broker_down_a_post_answers_503_within_the_deadline() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.delivery.deadline_ms = 1500;
    c.spool.enabled = false;
    let bridge = Bridge::start(c).await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let body = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();
    // Connected and working first.
    assert_eq!(post(&hook, &[], body.clone()).await.status, StatusCode::OK);

    cluster.broker_down(-1).unwrap();
    let started = Instant::now();
    let answer = post(&hook, &[], body.clone()).await;
    let elapsed = started.elapsed();
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text
    );
    assert_eq!(answer.json["error"]["code"], "kafka_unavailable");
    assert!(answer.headers.contains_key("retry-after"));
    assert!(
        elapsed >= Duration::from_millis(1400),
        "answered 503 before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "took {elapsed:?} for a 1500 ms deadline"
    );

    let metrics = get(&bridge.admin("/metrics")).await.text;
    let failed = metrics
        .lines()
        .filter(|l| {
            l.starts_with("comm100_bridge_events_failed_total{reason=")
                && l.contains("type=\"chat_ended\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum::<u64>();
    assert_eq!(failed, 1, "{metrics}");
    cluster.broker_up(-1).unwrap();
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let cluster = cluster();
    let bridge = Bridge::start(config(&cluster.bootstrap_servers())).await;
    let health = get(&bridge.admin("/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json["status"], "ok");
    // Readiness follows librdkafka's statistics, reported every second.
    wait_for_status(
        &bridge.admin("/readyz"),
        StatusCode::OK,
        Duration::from_secs(10),
    )
    .await;

    let before = get(&bridge.admin("/metrics")).await.text;
    assert_eq!(
        metric(
            &before,
            "comm100_bridge_events_published_total{type=\"chat_ended\"}"
        ),
        0.0,
        "{before}"
    );
    let body = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();
    let answer = post(
        &bridge.url(&format!("/webhooks/comm100?token={TOKEN}")),
        &[],
        body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let after = get(&bridge.admin("/metrics")).await.text;
    assert_eq!(
        metric(
            &after,
            "comm100_bridge_events_received_total{type=\"chat_ended\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "comm100_bridge_events_published_total{type=\"chat_ended\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "comm100_bridge_http_requests_total{route=\"webhook\",status=\"200\"}"
        ),
        1.0,
        "{after}"
    );
    assert!(
        after.contains(
            "comm100_bridge_kafka_delivery_duration_seconds_count{type=\"chat_ended\"} 1"
        ),
        "{after}"
    );
    assert!(
        after.contains("comm100_bridge_build_info{commit=\""),
        "{after}"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_token() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.auth.tokens.clear();
    let listeners = comm100_bridge::Listeners {
        webhook: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
    };
    let err = comm100_bridge::serve(c.clone(), listeners, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, comm100_bridge::ServeError::NoToken), "{err}");
    assert!(err.to_string().contains("auth.allow_unauthenticated"));

    c.auth.allow_unauthenticated = true;
    let bridge = Bridge::start(c).await;
    let answer = post(
        &bridge.url("/webhooks/comm100"),
        &[],
        r#"{"event":"online","operator_id":3}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_then_stops_accepting() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let mut bridge = Bridge::start(config(&bootstrap)).await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    // Warm up the connection to the cluster, then slow every broker down.
    assert_eq!(
        post(&hook, &[], r#"{"event":"online","operator_id":1}"#)
            .await
            .status,
        StatusCode::OK
    );
    cluster
        .broker_round_trip_time(-1, Duration::from_millis(800))
        .unwrap();

    let in_flight = tokio::spawn({
        let hook = hook.clone();
        async move { post(&hook, &[], r#"{"event":"away","operator_id":1}"#).await }
    });
    // Shut down only once the request is in flight: parsed, waiting for Kafka.
    let metrics_url = bridge.admin("/metrics");
    eventually(
        Duration::from_secs(5),
        "the request in flight",
        async || {
            let m = get(&metrics_url).await.text;
            let received = metric(&m, "comm100_bridge_events_received_total");
            let in_flight = metric(&m, "comm100_bridge_inflight_requests");
            (received == 2.0 && in_flight == 1.0).then_some(())
        },
    )
    .await;
    bridge.begin_stop();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    cluster.broker_round_trip_time(-1, Duration::ZERO).unwrap();
    let addr = bridge.addr;
    bridge.join().await.unwrap();
    let record = consume_answered(&bootstrap, &answer);
    assert_eq!(record.value["agent"]["status"], "away");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
