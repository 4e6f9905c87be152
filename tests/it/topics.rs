//! The bridge's topics against the mock cluster: `topics check` names what is missing and
//! partition counts that differ; `serve` reports missing topics in `/readyz` and one ERROR
//! line until they exist. (`topics ensure` and ACLs: against Apache Kafka in kafka.rs; the
//! mock cluster does not create topics on request.)

use std::time::Duration;

use crate::common::*;
use http::StatusCode;

fn topics_command(args: &[&str], bootstrap: &str) -> std::process::Output {
    bridge_command()
        .arg("topics")
        .args(args)
        .env("COMM100_BRIDGE__KAFKA__BROKERS", bootstrap)
        .env("COMM100_BRIDGE__AUTH__TOKENS", TOKEN)
        .run()
        .unwrap()
}

#[test]
fn topics_check_lists_every_topic_and_fails_naming_what_is_wrong() {
    let cluster = bare_cluster();
    let bootstrap = cluster.bootstrap_servers();
    let defaults =
        comm100_bridge::config::Config::load_with_env(None, Some(Default::default())).unwrap();
    let expected = comm100_bridge::topics::expected(&defaults);
    for topic in &expected {
        let partitions = if topic == "comm100.chat_ended" { 3 } else { 6 };
        if topic != "comm100.dlq" {
            cluster.create_topic(topic, partitions, 1).unwrap();
        }
    }
    let out = topics_command(&["check"], &bootstrap);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().count(),
        expected.len(),
        "one line per topic: {stdout}"
    );
    assert!(
        stdout.contains("comm100.dlq                        missing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("comm100.chat_ended                 3 partitions"),
        "{stdout}"
    );
    assert!(
        stderr.contains("missing: comm100.dlq (create them: comm100-bridge topics ensure)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("partition counts differ: 3 (comm100.chat_ended), 6 ("),
        "{stderr}"
    );

    // With every topic there and the same count everywhere, it passes.
    let good = bare_cluster();
    for topic in &expected {
        good.create_topic(topic, 6, 1).unwrap();
    }
    let out = topics_command(&["check"], &good.bootstrap_servers());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("6 partitions")
            .count(),
        9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_without_its_dead_letter_topic_is_not_ready_until_it_exists() {
    let cluster = bare_cluster();
    let defaults =
        comm100_bridge::config::Config::load_with_env(None, Some(Default::default())).unwrap();
    for topic in comm100_bridge::topics::expected(&defaults) {
        if topic != "comm100.dlq" {
            cluster.create_topic(&topic, 3, 1).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &cluster.bootstrap_servers(),
        &dir.path().join("spool"),
        &[],
    );
    let mut process = Process::start(&config);
    let readyz = process.admin("/readyz");
    let reason = wait_for_reason(&readyz, "missing topics", Duration::from_secs(20)).await;
    assert_eq!(
        reason,
        "missing topics: comm100.dlq; create them (comm100-bridge topics ensure)"
    );

    cluster.create_topic("comm100.dlq", 3, 1).unwrap();
    // The bridge looks again every 10 s while a topic is missing.
    wait_for_status(&readyz, StatusCode::OK, Duration::from_secs(30)).await;
    let errors = process.errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["fields"]["topics"], "comm100.dlq");
    report("topics: a missing DLQ kept /readyz 503 with one ERROR line, until it was created");
}
