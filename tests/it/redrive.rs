//! `dlq redrive` against the mock cluster: dead letters as the bridge writes them go back
//! to their topics in order, once; what cannot pass again stays where it is. (The whole
//! path, a missing topic to its records, runs against Apache Kafka in kafka.rs.)

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::common::*;

/// `comm100-bridge dlq redrive ARGS` against `bootstrap`: success, standard output, errors.
fn redrive(args: &[&str], bootstrap: &str) -> (bool, String, String) {
    outcome(
        bridge_command()
            .args(["dlq", "redrive"])
            .args(args)
            .env("COMM100_BRIDGE__KAFKA__BROKERS", bootstrap)
            .env("COMM100_BRIDGE__AUTH__TOKENS", TOKEN),
    )
}

/// Writes a dead letter to `comm100.dlq`.
async fn letter(
    producer: &FutureProducer,
    key: Option<&str>,
    headers: &[(&str, &str)],
    value: &str,
) {
    let mut owned = OwnedHeaders::new();
    for (k, v) in headers {
        owned = owned.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let mut record = FutureRecord::<str, str>::to("comm100.dlq")
        .payload(value)
        .headers(owned);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_republishes_whole_records_in_order_once_and_nothing_else() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    // Dead letters as the bridge writes them: records of two chats whose topic was missing,
    // one its user could not write, a rejected body and a truncated envelope.
    for seq in 0..6 {
        let chat = if seq % 2 == 0 { "chat-a" } else { "chat-b" };
        let id = format!("id-{seq}");
        letter(
            &producer,
            Some(chat),
            &[
                ("ce_id", &id),
                ("ce_type", "com.comm100.livechat.chat_ended"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("dlq_reason", "unknown_topic"),
                ("dlq_original_topic", "comm100.chat_ended"),
            ],
            &format!("{{\"id\":\"{id}\",\"chat_id\":\"{chat}\",\"seq\":{seq}}}"),
        )
        .await;
    }
    letter(
        &producer,
        Some("chat-a"),
        &[
            ("ce_id", "id-denied"),
            ("dlq_reason", "topic_authorization_failed"),
            ("dlq_original_topic", "comm100.chat_started"),
        ],
        "{\"id\":\"id-denied\"}",
    )
    .await;
    letter(
        &producer,
        None,
        &[("dlq_reason", "invalid_json")],
        "{not json",
    )
    .await;
    letter(
        &producer,
        Some("chat-a"),
        &[
            ("ce_id", "id-large"),
            ("dlq_reason", "record_too_large"),
            ("dlq_original_topic", "comm100.chat_ended"),
        ],
        "{\"id\":\"id-large\",\"dlq_reason\":\"record_too_large\",\"body_prefix\":\"{\"}",
    )
    .await;

    // A dry run says what it would do, and does nothing.
    let (ok, out, said) = redrive(&["--dry-run", "--reason", "unknown_topic"], &bootstrap);
    assert!(ok, "{said}");
    assert_eq!(out.matches("would re-publish id-").count(), 6, "{out}");
    assert!(
        out.contains("unknown_topic: 6 would be re-published"),
        "{out}"
    );

    // The run: each whole record back on its topic, with its key and headers but the dlq_
    // ones, in order; the body and the envelope stay.
    let (ok, out, said) = redrive(&[], &bootstrap);
    assert!(ok, "{said}");
    assert!(out.contains("unknown_topic: 6 re-published"), "{out}");
    assert!(
        out.contains("topic_authorization_failed: 1 re-published"),
        "{out}"
    );
    assert!(!out.contains("id-large"), "{out}");
    let ended = consume_all(
        &bootstrap,
        "comm100.chat_ended",
        Duration::from_secs(20),
        |got| got.len() >= 6,
    );
    assert_eq!(
        ended.len(),
        6,
        "the dry run published, or the envelope was re-published"
    );
    for chat in ["chat-a", "chat-b"] {
        let mut of_chat: Vec<_> = ended
            .iter()
            .filter(|r| r.key.as_deref() == Some(chat))
            .collect();
        of_chat.sort_by_key(|r| r.offset);
        let seqs: Vec<i64> = of_chat
            .iter()
            .map(|r| r.value["seq"].as_i64().unwrap())
            .collect();
        let expected: Vec<i64> = (0..6)
            .filter(|s| (s % 2 == 0) == (chat == "chat-a"))
            .collect();
        assert_eq!(seqs, expected, "{chat}: out of order");
        assert!(of_chat.iter().all(|r| r.partition == of_chat[0].partition));
    }
    for record in &ended {
        assert!(
            record.headers.iter().all(|(k, _)| !k.starts_with("dlq_")),
            "{:?}",
            record.headers
        );
        assert_eq!(record.header("ce_id"), record.value["id"].as_str());
        assert_eq!(
            record.header("traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }
    let started = consume_all(
        &bootstrap,
        "comm100.chat_started",
        Duration::from_secs(20),
        |got| !got.is_empty(),
    );
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].value["id"], "id-denied");

    // A second run re-publishes nothing.
    let (ok, out, said) = redrive(&[], &bootstrap);
    assert!(ok, "{said}");
    assert!(out.contains("unknown_topic: 0 re-published"), "{out}");
    assert!(
        out.contains("topic_authorization_failed: 0 re-published"),
        "{out}"
    );

    // Envelopes and bodies are refused by name.
    let (ok, _, said) = redrive(&["--reason", "record_too_large"], &bootstrap);
    assert!(!ok);
    assert!(
        said.contains(
            "`record_too_large` dead letters cannot be re-published: they are truncated envelopes"
        ),
        "{said}"
    );
    let (ok, _, said) = redrive(&["--reason", "invalid_json"], &bootstrap);
    assert!(!ok);
    assert!(said.contains("request bodies the bridge refused"), "{said}");
    report("dlq redrive: 7 dead letters back on their topics in order, once; dry run, envelope and body left");
}
