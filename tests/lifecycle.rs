//! Production's own life, with the real binary: a record Kafka can never take, rolling
//! restarts, scale-in (shutdown drain, `spool drain`, the spool lock) and SIGHUP. Each test
//! reports its counts to `target/tmp/test-report.txt`.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::{json, Value};

const TOPIC: &str = "comm100.chat_transferred";

/// A valid event whose record is over the producer's default `message.max.bytes`
/// (1,000,000): 40,000 empty custom variables, 120 KB posted, 1.08 MB normalized.
fn oversized_event(chat: &str) -> String {
    json!({
        "event": "chat_transferred",
        "visitor": {"chat_id": chat, "custom_variables": vec![json!({}); 40_000]},
        "seq": 0,
    })
    .to_string()
}

/// Checks the dead-letter envelope of the oversized record `id`.
fn assert_envelope(bootstrap: &str, id: &str) -> usize {
    let dlq = consume_all(bootstrap, "comm100.dlq", Duration::from_secs(20), |got| {
        got.iter().any(|r| r.value["id"] == id)
    });
    let letter = dlq
        .iter()
        .find(|r| r.value["id"] == id)
        .expect("the oversized record is in the dead-letter topic");
    let v = &letter.value;
    assert_eq!(letter.header("dlq_reason"), Some("record_too_large"));
    assert_eq!(letter.header("dlq_original_topic"), Some(TOPIC));
    assert_eq!(letter.header("ce_id"), Some(id));
    assert_eq!(v["type"], "chat_transferred");
    assert_eq!(v["dlq_reason"], "record_too_large");
    assert_eq!(v["original_topic"], TOPIC);
    let original = v["original_bytes"].as_u64().unwrap();
    assert!(original > 1_000_000, "{original}");
    let prefix = v["body_prefix"].as_str().unwrap();
    assert!(prefix.starts_with("{\"schema_version\":1,"), "{prefix:.80}");
    assert_eq!(prefix.len(), 64 << 10);
    assert!(letter.raw.len() < 100 << 10, "{}", letter.raw.len());
    letter.raw.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_never_holds_up_the_spool() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &bootstrap, &dir.path().join("spool"), &[]);

    cluster.broker_down(-1).unwrap();
    let mut bridge = Process::start(&config);
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let big = post(&hook, &[], oversized_event("big")).await;
    assert_eq!(big.status, StatusCode::ACCEPTED, "{}", big.text);
    let big_id = big.json["id"].as_str().unwrap().to_owned();
    let mut acked = Acked::default();
    acked.record(
        "before",
        1,
        Some(post(&hook, &[], event("before", 1)).await),
    );
    assert_eq!(acked.statuses.get(&202), Some(&1), "{:?}", acked.statuses);

    cluster.broker_up(-1).unwrap();
    acked.record("after", 2, Some(post(&hook, &[], event("after", 2)).await));
    wait_for_metric(
        &bridge.url("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(30),
    )
    .await;
    verify(
        "oversized record in the spool",
        &bootstrap,
        TOPIC,
        &acked,
        true,
    );
    let letter = assert_envelope(&bootstrap, &big_id);
    let metrics = get(&bridge.url("/metrics")).await.text;
    assert_eq!(
        metric_series(
            &metrics,
            r#"comm100_bridge_dlq_total{reason="record_too_large"}"#
        ),
        1.0
    );
    report(&format!(
        "oversized record: 1 record of 1.08 MB spooled as its {letter}-byte envelope, \
         {} normal records published behind it, spool back to 0",
        acked.ids.len()
    ));

    // With Kafka up (and known to be), the same record is dead-lettered at once.
    wait_for_metric(
        &bridge.url("/metrics"),
        "comm100_bridge_kafka_brokers_up",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    let again = post(&hook, &[], oversized_event("big-2")).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
    assert_eq!(again.json["status"], "dead_lettered");
    assert_eq!(again.json["reason"], "record_too_large");
    assert_envelope(&bootstrap, again.json["id"].as_str().unwrap());
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    let _ = bridge.log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_dead_letters_a_record_the_broker_refuses_and_moves_on() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &bootstrap, &dir.path().join("spool"), &[]);

    cluster.broker_down(-1).unwrap();
    let bridge = Process::start(&config);
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let refused = post(&hook, &[], event("refused", 0)).await;
    assert_eq!(refused.status, StatusCode::ACCEPTED, "{}", refused.text);
    let refused_id = refused.json["id"].as_str().unwrap().to_owned();

    // The broker refuses the first produce request of replay as too large, as one whose
    // topic has a lower max.message.bytes would.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    cluster.broker_up(-1).unwrap();
    wait_for_metric(
        &bridge.url("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(30),
    )
    .await;
    let mut acked = Acked::default();
    acked.record("next", 1, Some(post(&hook, &[], event("next", 1)).await));
    assert_eq!(acked.ids.len(), 1, "{:?}", acked.statuses);
    verify("replay dead letter", &bootstrap, TOPIC, &acked, true);

    let dlq = consume_all(&bootstrap, "comm100.dlq", Duration::from_secs(20), |got| {
        !got.is_empty()
    });
    let letter = dlq
        .iter()
        .find(|r| r.value["id"] == refused_id.as_str())
        .expect("the refused spooled record is in the dead-letter topic");
    assert_eq!(letter.header("dlq_reason"), Some("record_too_large"));
    assert_eq!(letter.value["original_topic"], TOPIC);
    let prefix: Value =
        serde_json::from_str(letter.value["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(prefix["chat_id"], "refused", "a short record is kept whole");
    report("replay dead letter: 1 spooled record refused by the broker, dead-lettered, replay moved on");
}

/// A metric's value for one exact series, e.g. `name{label="x"}`; 0 when absent.
fn metric_series(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
