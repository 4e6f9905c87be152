//! Per-key order on every copy: a record never reaches Kafka before an earlier accepted
//! record of its chat, whichever way either travels (straight to Kafka, or through the
//! spool), and a spooled record Kafka acknowledged late is not sent again. Each test
//! reports its counts to `target/tmp/test-report.txt`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use comm100_bridge::config::Config;
use http::StatusCode;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;
use tokio::task::JoinSet;

const TOPIC: &str = "comm100.chat_transferred";

/// A short deadline (Kafka gets 1 s of it) and fast reconnects.
fn short_config(bootstrap: &str) -> Config {
    let mut c = config(bootstrap);
    c.delivery.deadline_ms = 1500;
    c.spool.append_budget_ms = 500;
    c.kafka.properties.insert("reconnect.backoff.ms", "50");
    c.kafka.properties.insert("reconnect.backoff.max.ms", "500");
    c
}

fn hook(bridge: &Bridge) -> String {
    bridge.url(&format!("/webhooks/comm100?token={TOKEN}"))
}

async fn spool_empty(bridge: &Bridge) {
    wait_for_metric(
        &bridge.admin("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(60),
    )
    .await;
}

/// The reproduction: Kafka refuses writes with a retriable error, `seq 1` waits past its
/// deadline and is spooled while librdkafka still retries it, `seq 2` follows; the errors
/// clear and librdkafka's retry of `seq 1` is acknowledged. Replay must not write `seq 1`
/// again after `seq 2` (a compacted topic would end with the older state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_acknowledged_late_is_not_replayed_over_a_newer_one() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let bridge = Bridge::start(short_config(&bootstrap)).await;
    bridge.connected().await;
    let hook = hook(&bridge);
    let mut acked = Acked::default();
    let first = post(&hook, &[], event("operator-77", 0)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    acked.record("operator-77", 0, Some(first));

    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 2000],
    );
    let away = tokio::spawn({
        let hook = hook.clone();
        async move { post(&hook, &[], event("operator-77", 1)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let online = tokio::spawn({
        let hook = hook.clone();
        async move { post(&hook, &[], event("operator-77", 2)).await }
    });
    // Past seq 1's wait for Kafka (1 s), before librdkafka gives it up.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let (away, online) = (away.await.unwrap(), online.await.unwrap());
    for answer in [&away, &online] {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    }
    acked.record("operator-77", 1, Some(away));
    acked.record("operator-77", 2, Some(online));
    spool_empty(&bridge).await;
    let duplicates = verify("late acknowledgement", &bootstrap, TOPIC, &acked, true);
    let metrics = get(&bridge.admin("/metrics")).await.text;
    let skipped = metric(&metrics, "comm100_bridge_spool_replay_skipped_total");
    report(&format!(
        "late acknowledgement: spooled copies skipped {skipped}"
    ));
    assert_eq!(duplicates, 0);
    bridge.stop().await.unwrap();
}

/// The record of `answer` in `topic`.
fn find(bootstrap: &str, topic: &str, answer: &Answer) -> Consumed {
    let id = answer.json["id"].as_str().unwrap();
    let has = |r: &Consumed| r.value["id"] == id;
    let records = consume_all(bootstrap, topic, Duration::from_secs(30), |got| {
        got.iter().any(has)
    });
    records
        .into_iter()
        .find(has)
        .expect("the record is in its topic")
}

fn ended(chat: &str, seq: usize) -> String {
    json!({"event": "chat_ended", "visitor": {"chat_id": chat}, "seq": seq}).to_string()
}

/// While one chat's record waits in the spool for the broker that leads its topic, that
/// chat's next record goes behind it (202) and every other chat goes straight to Kafka
/// (200); once that broker is back, the chat's records arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_chat_with_spooled_records_waits_behind_them() {
    let cluster = cluster_of(2);
    for partition in 0..PARTITIONS {
        cluster.partition_leader(TOPIC, partition, Some(2)).unwrap();
        cluster
            .partition_leader("comm100.chat_ended", partition, Some(1))
            .unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    let bridge = Bridge::start(short_config(&bootstrap)).await;
    bridge.connected().await;
    let hook = hook(&bridge);
    for warm_up in [event("warm-up", 0), ended("warm-up", 1)] {
        assert_eq!(post(&hook, &[], warm_up).await.status, StatusCode::OK);
    }

    cluster.broker_down(2).unwrap();
    let spooled = post(&hook, &[], event("held", 1)).await;
    assert_eq!(spooled.status, StatusCode::ACCEPTED, "{}", spooled.text);
    let behind = post(&hook, &[], ended("held", 2)).await;
    assert_eq!(behind.status, StatusCode::ACCEPTED, "{}", behind.text);
    let straight = post(&hook, &[], ended("free", 1)).await;
    assert_eq!(straight.status, StatusCode::OK, "{}", straight.text);

    cluster.broker_up(2).unwrap();
    spool_empty(&bridge).await;
    // The chat_ended record of `held` was produced after its chat_transferred record.
    let transferred = find(&bootstrap, TOPIC, &spooled);
    let ended = find(&bootstrap, "comm100.chat_ended", &behind);
    assert!(
        transferred.timestamp.unwrap() <= ended.timestamp.unwrap(),
        "{:?} {:?}",
        transferred.timestamp,
        ended.timestamp
    );
    bridge.stop().await.unwrap();
}

/// Many chats over many connections, each chat's events posted one after another, while
/// Kafka turns slow (answers later than the wait), refuses writes, goes down and comes
/// back: every 2xx is in Kafka, and no copy of any record follows a later event of its
/// chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_chat_order_holds_on_every_copy_under_concurrency_errors_and_delays() {
    const SENDERS: usize = 16;
    const PER_SENDER: usize = 45;
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let bridge = Bridge::start(short_config(&bootstrap)).await;
    let hook = hook(&bridge);
    let progress = Arc::new(AtomicUsize::new(0));
    let mut senders = JoinSet::new();
    for s in 0..SENDERS {
        let (hook, progress) = (hook.clone(), progress.clone());
        senders.spawn(async move {
            let mut acked = Acked::default();
            for seq in 0..PER_SENDER {
                let chat = format!("chat-{s}-{}", seq % 3);
                let answer = post(&hook, &[], event(&chat, seq)).await;
                acked.record(&chat, seq, Some(answer));
                progress.fetch_add(1, Ordering::SeqCst);
            }
            acked
        });
    }
    let total = SENDERS * PER_SENDER;
    let reached = |share: usize| {
        let progress = progress.clone();
        move || progress.load(Ordering::SeqCst) >= total * share / 10
    };
    wait_until(reached(1), Duration::from_secs(30)).await;
    // Acknowledgements slower than the 1 s wait: records are spooled, then acknowledged.
    cluster
        .broker_round_trip_time(-1, Duration::from_millis(1300))
        .unwrap();
    wait_until(reached(3), Duration::from_secs(60)).await;
    cluster.broker_round_trip_time(-1, Duration::ZERO).unwrap();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 300],
    );
    wait_until(reached(5), Duration::from_secs(60)).await;
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    // Down: records go straight to the spool, and their chats' next ones behind them.
    cluster.broker_down(-1).unwrap();
    wait_until(reached(7), Duration::from_secs(60)).await;
    cluster.broker_up(-1).unwrap();

    let mut acked = Acked::default();
    while let Some(part) = senders.join_next().await {
        acked.merge(part.unwrap());
    }
    assert!(
        acked.statuses.get(&202).copied().unwrap_or(0) > 0,
        "nothing was spooled: {:?}",
        acked.statuses
    );
    spool_empty(&bridge).await;
    let duplicates = verify("order under concurrency", &bootstrap, TOPIC, &acked, true);
    assert!(
        duplicates * 1000 <= acked.ids.len(),
        "{duplicates} duplicates of {} acknowledged",
        acked.ids.len()
    );
    bridge.stop().await.unwrap();
}
