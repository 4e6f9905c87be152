//! The release binary against a real, independent Kafka implementation (tansu): topics
//! created by the test, one sample of each of the seven event types posted over HTTP, every
//! record consumed back through a consumer group. Needs `TANSU` (the tansu binary), so it
//! is ignored by a plain `cargo test`; `.ci/run` installs tansu and runs it:
//!     TANSU=~/.cache/comm100-bridge/bin/tansu cargo test --release --test tansu -- --ignored

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use comm100_bridge::config::Config;
use comm100_bridge::route::Router;
use common::*;
use http::StatusCode;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;

const SAMPLES: [&str; 7] = [
    "chat_requested",
    "chat_started",
    "chat_transferred",
    "chat_ended",
    "chat_wrapped_up",
    "offline_message_submitted",
    "agent_status_changed_online",
];

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a tansu broker binary in TANSU; .ci/run provides it"]
async fn the_release_binary_publishes_every_event_type_to_tansu() {
    let tansu = std::env::var("TANSU").expect("TANSU names the tansu binary");
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let url = format!("tcp://{bootstrap}");
    let _broker = Killed(
        Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start tansu"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(&bootstrap).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "tansu did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // tansu does not auto-create topics.
    let defaults = Config::load_with_env(None, Some(Default::default())).unwrap();
    let mut topics = Router::new(&defaults.topics).topics().to_vec();
    topics.push(defaults.dlq_topic());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap()
    {
        result.unwrap_or_else(|(topic, e)| panic!("cannot create {topic}: {e}"));
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[auth]\ntokens = [\"{TOKEN}\"]\n[kafka]\nbrokers = [\"{bootstrap}\"]\n[spool]\ndir = \"{}\"\n[log]\nformat = \"json\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let mut bridge = Process::start(&config);
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));

    let mut expected = BTreeMap::new();
    for name in SAMPLES {
        let body = std::fs::read(fixtures_dir().join(format!("{name}.json"))).unwrap();
        let answer = post(&hook, &[], body).await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text);
        let golden: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixtures_dir().join(format!("{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        expected.insert(
            answer.json["id"].as_str().unwrap().to_owned(),
            (answer.json["topic"].as_str().unwrap().to_owned(), golden),
        );
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "comm100-bridge-tansu-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let subscribed: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&subscribed).unwrap();
    let mut found = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while found < expected.len() {
        let message = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            consumer.recv(),
        )
        .await
        .unwrap_or_else(|_| panic!("only {found} of {} records came back", expected.len()))
        .unwrap();
        let mut value: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap()).unwrap();
        let id = value["id"].as_str().unwrap().to_owned();
        let Some((topic, golden)) = expected.get(&id) else {
            continue;
        };
        assert_eq!(message.topic(), topic);
        let ce_id = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "ce_id"))
            .and_then(|h| h.value)
            .unwrap();
        assert_eq!(ce_id, id.as_bytes());
        let object = value.as_object_mut().unwrap();
        object.remove("id");
        object.remove("received_at");
        assert_eq!(&value, golden, "{topic}");
        found += 1;
    }
    report(&format!(
        "tansu: {found} of {} records, one per event type, consumed back through a consumer group",
        SAMPLES.len()
    ));
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
}
