//! Nothing answered 2xx is lost: Kafka outages under load, SIGKILL of the real binary,
//! SIGTERM during a burst, permanent rejections. Each test reports its counts (sent, 2xx,
//! found in Kafka, missing) to `target/tmp/test-report.txt`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use comm100_bridge::config::Config;
use http::StatusCode;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::task::JoinSet;

const TOPIC: &str = "comm100.chat_transferred";

/// A short deadline and fast reconnects, so outages resolve quickly in tests.
fn outage_config(bootstrap: &str) -> Config {
    let mut c = config(bootstrap);
    c.delivery.deadline_ms = 1500;
    c.spool.append_budget_ms = 500;
    c.kafka.properties.insert("reconnect.backoff.ms", "50");
    c.kafka.properties.insert("reconnect.backoff.max.ms", "500");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_load_loses_nothing_answered_2xx_and_keeps_per_chat_order() {
    const SENDERS: usize = 8;
    const PER_SENDER: usize = 60;
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let bridge = Bridge::start(outage_config(&bootstrap)).await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));

    let progress = Arc::new(AtomicUsize::new(0));
    let mut senders = JoinSet::new();
    for s in 0..SENDERS {
        let (hook, progress) = (hook.clone(), progress.clone());
        senders.spawn(async move {
            let mut acked = Acked::default();
            for seq in 0..PER_SENDER {
                // Each sender owns three chats and posts each chat's events in sequence.
                let chat = format!("chat-{s}-{}", seq % 3);
                let answer = post(&hook, &[], event(&chat, seq)).await;
                acked.record(&chat, seq, Some(answer));
                progress.fetch_add(1, Ordering::SeqCst);
            }
            acked
        });
    }
    let total = SENDERS * PER_SENDER;
    wait_until(
        || progress.load(Ordering::SeqCst) >= total / 5,
        Duration::from_secs(30),
    )
    .await;
    cluster.broker_down(-1).unwrap();
    let down_at = progress.load(Ordering::SeqCst);
    wait_until(
        || progress.load(Ordering::SeqCst) >= down_at + total / 4,
        Duration::from_secs(60),
    )
    .await;
    cluster.broker_up(-1).unwrap();

    let mut acked = Acked::default();
    while let Some(part) = senders.join_next().await {
        acked.merge(part.unwrap());
    }
    assert!(
        acked.statuses.get(&202).copied().unwrap_or(0) > 0,
        "the outage spooled nothing: {:?}",
        acked.statuses
    );
    wait_for_metric(
        &bridge.admin("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(60),
    )
    .await;
    verify("outage under load", &bootstrap, TOPIC, &acked, true);
    bridge.stop().await.unwrap();
}

/// Starts the binary again on the same spool and waits until it has replayed everything.
async fn restart_and_drain(config: &Path) -> Process {
    let restarted = Process::start(config);
    wait_for_metric(
        &restarted.admin("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(60),
    )
    .await;
    restarted
}

fn child_config(dir: &Path, bootstrap: &str, spool: &Path) -> std::path::PathBuf {
    write_config(dir, bootstrap, spool, &[])
}

/// Posts `count` events concurrently, counting answers in `answered`; returns what was
/// acknowledged.
async fn burst(url: String, prefix: &str, count: usize, answered: Arc<AtomicUsize>) -> Acked {
    let mut tasks = JoinSet::new();
    for seq in 0..count {
        let url = url.clone();
        let answered = answered.clone();
        let chat = format!("{prefix}-{}", seq % 5);
        tasks.spawn(async move {
            // A killed bridge answers nothing: that is not a 2xx, so nothing is owed.
            let answer =
                tokio::time::timeout(Duration::from_secs(10), try_post(&url, event(&chat, seq)))
                    .await
                    .ok()
                    .and_then(Result::ok);
            answered.fetch_add(1, Ordering::SeqCst);
            (chat, seq, answer)
        });
    }
    let mut acked = Acked::default();
    while let Some(done) = tasks.join_next().await {
        let (chat, seq, answer) = done.unwrap();
        acked.record(&chat, seq, answer);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_outage_then_restart_delivers_every_2xx() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = child_config(dir.path(), &bootstrap, &spool);

    cluster.broker_down(-1).unwrap();
    let first = Process::start(&config);
    let hook = first.url(&format!("/webhooks/comm100?token={TOKEN}"));
    // Everything is spooled while Kafka is down.
    let acked = burst(hook.clone(), "crash-a", 60, Default::default()).await;
    assert_eq!(acked.ids.len(), 60, "{:?}", acked.statuses);
    // A second burst is cut short by SIGKILL once a tenth of it has been answered.
    const SECOND: usize = 600;
    let answered = Arc::new(AtomicUsize::new(0));
    let second = tokio::spawn(burst(hook, "crash-b", SECOND, answered.clone()));
    wait_until(
        || answered.load(Ordering::SeqCst) >= SECOND / 10,
        Duration::from_secs(30),
    )
    .await;
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let killed = second.await.unwrap();
    assert!(
        killed.ids.len() < SECOND,
        "the kill interrupted nothing: {:?}",
        killed.statuses
    );

    let mut all = acked;
    all.merge(killed);

    cluster.broker_up(-1).unwrap();
    let mut restarted = restart_and_drain(&config).await;
    let log = restarted.log().join("\n");
    assert!(
        log.contains("spool holds records from a previous run"),
        "{log}"
    );
    // Posted concurrently: no order among them to check.
    verify("sigkill during outage", &bootstrap, TOPIC, &all, false);
    restarted.signal("-TERM");
    assert_eq!(restarted.child.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_loses_nothing_answered_2xx() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = child_config(dir.path(), &bootstrap, &spool);

    let mut first = Process::start(&config);
    let hook = first.url(&format!("/webhooks/comm100?token={TOKEN}"));
    assert!(post(&hook, &[], event("warm-up", 0))
        .await
        .status
        .is_success());
    // Slow Kafka down so the burst is still in flight when SIGTERM arrives, then take it
    // away so some of those records end up in the spool.
    cluster
        .broker_round_trip_time(-1, Duration::from_millis(300))
        .unwrap();
    let burst = tokio::spawn(burst(hook, "term", 80, Default::default()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.signal("-TERM");
    cluster.broker_down(-1).unwrap();
    let acked = burst.await.unwrap();
    assert_eq!(
        first.child.wait().unwrap().code(),
        Some(0),
        "SIGTERM must exit 0"
    );

    cluster.broker_round_trip_time(-1, Duration::ZERO).unwrap();
    cluster.broker_up(-1).unwrap();
    let mut restarted = restart_and_drain(&config).await;
    verify("sigterm during burst", &bootstrap, TOPIC, &acked, false);
    restarted.signal("-TERM");
    assert_eq!(restarted.child.wait().unwrap().code(), Some(0));
}

#[tokio::test]
async fn a_record_kafka_rejects_for_good_goes_to_the_dead_letter_topic() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let bridge = Bridge::start(config(&bootstrap)).await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    assert_eq!(
        post(&hook, &[], event("warm-up", 0)).await.status,
        StatusCode::OK
    );

    // The broker refuses the next produce request as over its maximum message size.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let answer = post(&hook, &[], event("too-large", 1)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert_eq!(answer.json["status"], "dead_lettered");
    assert_eq!(answer.json["reason"], "record_too_large");
    let id = answer.json["id"].as_str().unwrap().to_owned();

    // An authenticated sender's malformed body is kept there too, as received.
    let bad = b"{\"event\": \"chat_ended\", truncated".to_vec();
    let rejected = post(&hook, &[], bad.clone()).await;
    assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
    // So is a body declared gzip that is not: the bytes as sent, before any decompression.
    let not_gzip = b"\x1f\x8b but not gzip".to_vec();
    let rejected = post(&hook, &[("content-encoding", "gzip")], not_gzip.clone()).await;
    assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
    assert_eq!(rejected.json["error"]["code"], "invalid_gzip");
    // An unauthenticated one is not.
    let unauthenticated = post(
        &bridge.url("/webhooks/comm100"),
        &[],
        b"not from a sender".to_vec(),
    )
    .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);

    let dlq = consume_all(&bootstrap, "comm100.dlq", Duration::from_secs(20), |got| {
        got.len() >= 3
    });
    let record = dlq
        .iter()
        .find(|r| r.value["id"] == id.as_str())
        .expect("the rejected record is in the DLQ");
    assert_eq!(record.header("dlq_reason"), Some("record_too_large"));
    assert_eq!(record.header("dlq_original_topic"), Some(TOPIC));
    assert_eq!(record.header("ce_id"), Some(id.as_str()));
    let body = dlq
        .iter()
        .find(|r| r.raw == bad)
        .expect("the 400 body is in the DLQ");
    assert_eq!(body.header("dlq_reason"), Some("invalid_json"));
    let gzip = dlq
        .iter()
        .find(|r| r.raw == not_gzip)
        .expect("the invalid gzip body is in the DLQ");
    assert_eq!(gzip.header("dlq_reason"), Some("invalid_gzip"));
    assert!(!dlq.iter().any(|r| r.raw == b"not from a sender"));

    let metrics = get(&bridge.admin("/metrics")).await.text;
    assert_eq!(
        metric(
            &metrics,
            "comm100_bridge_dlq_total{reason=\"record_too_large\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "comm100_bridge_dlq_total{reason=\"invalid_json\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "comm100_bridge_dlq_total{reason=\"invalid_gzip\"}"
        ),
        1.0,
        "{metrics}"
    );
    report(&format!(
        "dead letters: {} records in comm100.dlq (1 too large, 2 rejected bodies)",
        dlq.len()
    ));
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_stays_up_while_the_spool_can_accept_and_drops_when_draining() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let mut bridge = Bridge::start(outage_config(&bootstrap)).await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    // Under load the first record may miss the short Kafka wait and be spooled: durable either way.
    assert!(post(&hook, &[], event("r", 0)).await.status.is_success());
    let metrics = bridge.admin("/metrics");
    wait_for_metric(
        &metrics,
        "comm100_bridge_kafka_brokers_up",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    cluster.broker_down(-1).unwrap();
    // Once the producer's statistics say no broker is up, records go straight to the spool.
    wait_for_metric(
        &bridge.admin("/metrics"),
        "comm100_bridge_kafka_brokers_up",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    let started = Instant::now();
    let answer = post(&hook, &[], event("r", 1)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "spooling waited for Kafka: {:?}",
        started.elapsed()
    );
    let ready = get(&bridge.admin("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json["spooling"], true);

    let readyz = bridge.admin("/readyz");
    bridge.begin_stop();
    // Draining: the listener is closed, so readiness is no longer served at all.
    eventually(Duration::from_secs(10), "readiness gone", async || {
        let request = http::Request::get(&readyz)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        match client().request(request).await {
            Ok(r) => (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(()),
            Err(_) => Some(()),
        }
    })
    .await;
    cluster.broker_up(-1).unwrap();
    bridge.join().await.unwrap();
}

#[tokio::test]
async fn without_a_spool_readiness_drops_while_a_connected_broker_acknowledges_nothing() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let mut config = outage_config(&bootstrap);
    config.spool.enabled = false;
    let bridge = Bridge::start(config).await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    assert_eq!(
        post(&hook, &[], event("bare", 0)).await.status,
        StatusCode::OK
    );
    // Ready once the producer's statistics report the broker.
    wait_for_status(
        &bridge.admin("/readyz"),
        StatusCode::OK,
        Duration::from_secs(10),
    )
    .await;

    // The broker stays connected but refuses every write, as with a lost quorum.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 500],
    );
    let answer = post(&hook, &[], event("bare", 1)).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text
    );
    let ready = get(&bridge.admin("/readyz")).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text
    );
    assert_eq!(ready.json["brokers_up"], 1, "{}", ready.text);
    assert!(
        ready.json["reason"]
            .as_str()
            .unwrap()
            .contains("not acknowledging"),
        "{}",
        ready.text
    );

    // Once Kafka acknowledges again, the next delivery makes it ready at once.
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    assert_eq!(
        post(&hook, &[], event("bare", 2)).await.status,
        StatusCode::OK
    );
    assert_eq!(get(&bridge.admin("/readyz")).await.status, StatusCode::OK);
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_that_never_reached_kafka_is_not_ready_and_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = write_config(dir.path(), "kafka.invalid:9092", &spool, &[]);
    let mut process = Process::start(&config);
    let readyz = process.admin("/readyz");
    let reason = wait_for_reason(
        &readyz,
        "no Kafka broker reached since start",
        Duration::from_secs(30),
    )
    .await;
    assert!(
        reason.contains("(kafka.invalid:9092)") && reason.contains("check kafka.brokers"),
        "{reason}"
    );

    // A webhook that still arrives is kept: the spool can take it.
    let hook = process.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let posted = post(&hook, &[], event("never", 0)).await;
    assert_eq!(posted.status, StatusCode::ACCEPTED, "{}", posted.text);
    assert_eq!(posted.json["status"], "spooled");
    assert_eq!(
        get(&readyz).await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a spooled record does not make it ready"
    );

    // One ERROR line says so, naming the brokers, however often librdkafka retries.
    let errors = process.errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let message = errors[0]["fields"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("no Kafka broker reached since start"),
        "{message}"
    );
    assert_eq!(errors[0]["fields"]["brokers"], "kafka.invalid:9092");
    report("never reached: /readyz 503 naming kafka.brokers, one ERROR line, webhooks spooled");
}
