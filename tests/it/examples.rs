//! The programs of `examples/`, run as documented against a bridge and the mock cluster.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use http::StatusCode;

/// The example `name`, which `cargo test` builds beside this test binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    assert!(path.is_file(), "{} is not built", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_example_reads_the_topics_of_its_prefix_with_properties_from_the_environment()
{
    let cluster = cluster();
    for kind in ["chat_ended", "dlq"] {
        cluster.create_topic(&format!("acme.{kind}"), 3, 1).unwrap();
    }
    let mut c = config(&cluster.bootstrap_servers());
    c.topics.prefix = "acme".into();
    let bridge = Bridge::start(c).await;
    let body = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let answer = post(&hook, &[], body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let id = answer.json["id"].as_str().unwrap().to_owned();

    // `consumer BROKERS GROUP PREFIX`, a librdkafka property from the environment.
    let mut child = Command::new(example("consumer"))
        .args([cluster.bootstrap_servers().as_str(), "example-test", "acme"])
        .env("KAFKA_CLIENT_ID", "comm100-example-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn_child()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("the consumer printed no record within 30 s");
    assert!(line.starts_with("acme.chat_ended ["), "{line}");
    assert!(
        line.ends_with("type=com.comm100.livechat.chat_ended"),
        "{line}"
    );
    bridge.stop().await.unwrap();

    // A property librdkafka refuses, from the environment, stops it naming the property.
    let refused = Command::new(example("consumer"))
        .args([cluster.bootstrap_servers().as_str()])
        .env("KAFKA_SECURITY_PROTOCOL", "carrier-pigeon")
        .run()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("security.protocol"), "{said}");
    report(&format!(
        "examples: consumer read {id} from acme.chat_ended"
    ));
}
