//! Production's own life, with the real binary: a record Kafka can never take, rolling
//! restarts, scale-in (shutdown drain, `spool drain`, the spool lock) and SIGHUP. Each test
//! reports its counts to `target/tmp/test-report.txt`.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::Value;

const TOPIC: &str = "comm100.chat_transferred";

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
        &bridge.admin("/metrics"),
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
    let letter = assert_envelope(&bootstrap, &big_id, TOPIC, 1_000_000)
        .raw
        .len();
    let metrics = get(&bridge.admin("/metrics")).await.text;
    assert_eq!(
        metric(
            &metrics,
            r#"comm100_bridge_dlq_total{reason="record_too_large"}"#
        ),
        1.0
    );
    report(&format!(
        "oversized record: 1 record of 1.0 MB spooled as its {letter}-byte envelope, \
         {} normal records published behind it, spool back to 0",
        acked.ids.len()
    ));

    // With Kafka up (and known to be), the same record is dead-lettered at once.
    wait_for_metric(
        &bridge.admin("/metrics"),
        "comm100_bridge_kafka_brokers_up",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    let again = post(&hook, &[], oversized_event("big-2")).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
    assert_eq!(again.json["status"], "dead_lettered");
    assert_eq!(again.json["reason"], "record_too_large");
    assert_envelope(
        &bootstrap,
        again.json["id"].as_str().unwrap(),
        TOPIC,
        1_000_000,
    );
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
    let mut bridge = Process::start(&config);
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    // Known down, so the record goes straight to the spool: a produce tried first would
    // still be held by librdkafka and meet the refusal below itself.
    eventually(Duration::from_secs(10), "brokers known down", async || {
        let log = bridge.log();
        log.iter()
            .any(|l| l.contains("brokers are down"))
            .then_some(())
    })
    .await;
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
        &bridge.admin("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(30),
    )
    .await;
    let mut acked = Acked::default();
    acked.record("next", 1, Some(post(&hook, &[], event("next", 1)).await));
    assert_eq!(acked.ids.len(), 1, "{:?}", acked.statuses);
    verify("replay dead letter", &bootstrap, TOPIC, &acked, true);

    let letter = dead_letter(&bootstrap, &refused_id);
    assert_eq!(letter.header("dlq_reason"), Some("record_too_large"));
    assert_eq!(letter.value["original_topic"], TOPIC);
    let prefix: Value =
        serde_json::from_str(letter.value["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(prefix["chat_id"], "refused", "a short record is kept whole");
    report("replay dead letter: 1 spooled record refused by the broker, dead-lettered, replay moved on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_shutdown_delay_keeps_serving_until_the_delay_passes() {
    const DELAY: Duration = Duration::from_secs(2);
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &bootstrap,
        &dir.path().join("spool"),
        &[("http", "shutdown_delay_ms = 2000")],
    );
    let (acked, summary) = post_across_sigterm(Process::start(&config), DELAY).await;
    verify("rolling restart", &bootstrap, TOPIC, &acked, true);
    report(&format!("rolling restart: {summary}"));
}

/// Runs the binary with `args` to completion: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comm100-bridge"))
        .args(args)
        .run()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn inspect(spool: &Path) -> Value {
    let (code, out, err) = run(&["spool", "inspect", "--dir", spool.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Posts `per_chat` events to each of three chats, one after another; all must be 2xx.
async fn post_chats(hook: &str, prefix: &str, per_chat: usize) -> Acked {
    let mut acked = Acked::default();
    for seq in 0..per_chat * 3 {
        let chat = format!("{prefix}-{}", seq % 3);
        acked.record(&chat, seq, Some(post(hook, &[], event(&chat, seq)).await));
    }
    assert_eq!(acked.ids.len(), per_chat * 3, "{:?}", acked.statuses);
    acked
}

fn log_line(log: &[String], message: &str) -> Value {
    log.iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == message)
        .unwrap_or_else(|| panic!("no log line `{message}` in:\n{}", log.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_with_kafka_back_drains_the_spool_before_exit() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = write_config(dir.path(), &bootstrap, &spool, &[]);

    cluster.broker_down(-1).unwrap();
    let mut bridge = Process::start(&config);
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let acked = post_chats(&hook, "scale-in", 20).await;
    assert_eq!(acked.statuses.get(&202), Some(&60), "{:?}", acked.statuses);
    // Replay is waiting on Kafka (librdkafka keeps its records for 30 s) when Kafka
    // returns and, at once, the pod is told to go.
    cluster.broker_up(-1).unwrap();
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    let log = bridge.log();
    let started = log_line(&log, "replaying the spool to Kafka before exit");
    assert_eq!(started["fields"]["spooled"], 60, "{started}");
    log_line(&log, "spool drained");
    let left = inspect(&spool);
    assert_eq!(left["records"], 0, "{left}");
    assert_eq!(left["held_by"], Value::Null, "{left}");
    verify("scale-in, Kafka back", &bootstrap, TOPIC, &acked, true);
    report(
        "scale-in, Kafka back: 60 spooled records replayed during shutdown, spool empty at exit 0",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_with_kafka_down_keeps_the_spool_for_spool_drain() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = write_config(dir.path(), &bootstrap, &spool, &[]);
    let (config_arg, spool_arg) = (config.to_str().unwrap(), spool.to_str().unwrap());

    cluster.broker_down(-1).unwrap();
    let mut bridge = Process::start(&config);
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let acked = post_chats(&hook, "stranded", 10).await;

    // The directory is held: a second bridge and `spool drain` refuse it, naming the pid.
    let pid = bridge.child.id().to_string();
    for args in [
        vec!["serve", "--config", config_arg],
        vec!["spool", "drain", "--dir", spool_arg, "--config", config_arg],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("in use by process {pid}")),
            "{args:?}: {err}"
        );
    }
    let held = inspect(&spool);
    assert_eq!(held["records"], 30, "{held}");
    assert_eq!(held["held_by"], pid.as_str(), "{held}");
    assert_eq!(held["types"]["chat_transferred"]["records"], 30, "{held}");
    assert!(
        held["oldest_received_at"].as_str().unwrap()
            <= held["newest_received_at"].as_str().unwrap()
    );

    let stopping = std::time::Instant::now();
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    let stopped_in = stopping.elapsed();
    let log = bridge.log();
    let kept = log_line(&log, "spool not drained before exit; its records are replayed at the next start on this directory, or with `comm100-bridge spool drain`");
    assert_eq!(kept["fields"]["spooled"], 30, "{kept}");
    let kept = inspect(&spool);
    assert_eq!(
        (kept["records"].as_u64(), &kept["held_by"]),
        (Some(30), &Value::Null)
    );

    cluster.broker_up(-1).unwrap();
    let (code, out, err) = run(&["spool", "drain", "--dir", spool_arg, "--config", config_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("drained 30 records"), "{out}");
    assert_eq!(inspect(&spool)["records"], 0);
    verify(
        "scale-in, Kafka down, spool drain",
        &bootstrap,
        TOPIC,
        &acked,
        true,
    );
    report(&format!(
        "scale-in, Kafka down: exit 0 in {} ms with 30 records kept; a second bridge and spool \
         drain refused the held directory; spool drain then published all 30",
        stopped_in.as_millis()
    ));
}

/// The status of a post with `token` to `path`.
async fn status_with(bridge: &Process, path: &str, token: &str) -> StatusCode {
    let url = bridge.url(&format!("{path}?token={token}"));
    post(&url, &[], event("rotation", 0)).await.status
}

/// Waits until a post with `token` to `path` is answered 2xx.
async fn wait_accepted(bridge: &Process, path: &str, token: &str) -> Duration {
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        &format!("{token} accepted"),
        async || {
            status_with(bridge, path, token)
                .await
                .is_success()
                .then_some(())
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_token_files_and_never_ends_the_process() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let (tokens, eu_tokens) = (dir.path().join("tokens"), dir.path().join("eu-tokens"));
    std::fs::write(&tokens, "token-a\n").unwrap();
    std::fs::write(&eu_tokens, "eu-a\n").unwrap();
    let config = write_config(
        dir.path(),
        &bootstrap,
        &dir.path().join("spool"),
        &[
            (
                "auth",
                &format!("tokens_file = {:?}", tokens.display().to_string()),
            ),
            (
                "auth.site_tokens_files",
                &format!("eu = {:?}", eu_tokens.display().to_string()),
            ),
        ],
    );
    let mut bridge = Process::start(&config);
    let (hook, eu) = ("/webhooks/comm100", "/webhooks/comm100/eu");
    assert!(status_with(&bridge, hook, "token-a").await.is_success());
    assert!(status_with(&bridge, eu, "eu-a").await.is_success());
    assert_eq!(
        status_with(&bridge, hook, "eu-a").await,
        StatusCode::UNAUTHORIZED
    );

    rewrite_unnoticed(&tokens, "token-b\n");
    rewrite_unnoticed(&eu_tokens, "eu-b\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        status_with(&bridge, hook, "token-b").await,
        StatusCode::UNAUTHORIZED,
        "reloaded without SIGHUP although the files looked unchanged"
    );
    bridge.signal("-HUP");
    let took = wait_accepted(&bridge, hook, "token-b").await;
    assert_eq!(
        status_with(&bridge, hook, "token-a").await,
        StatusCode::UNAUTHORIZED
    );
    assert!(status_with(&bridge, eu, "eu-b").await.is_success());
    assert_eq!(
        status_with(&bridge, eu, "eu-a").await,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        status_with(&bridge, hook, TOKEN).await.is_success(),
        "inline tokens stay"
    );

    // A file that cannot be read keeps the tokens in force.
    std::fs::remove_file(&tokens).unwrap();
    bridge.signal("-HUP");
    eventually(
        Duration::from_secs(10),
        "the reload failure logged",
        async || {
            bridge
                .log()
                .iter()
                .any(|l| l.contains("token files not reloaded after SIGHUP"))
                .then_some(())
        },
    )
    .await;
    assert!(status_with(&bridge, hook, "token-b").await.is_success());
    assert_eq!(
        bridge.child.try_wait().unwrap(),
        None,
        "SIGHUP ended the process"
    );

    // A changed file is picked up without a signal too.
    std::fs::write(&tokens, "token-c\n").unwrap();
    wait_accepted(&bridge, hook, "token-c").await;
    assert_eq!(
        status_with(&bridge, hook, "token-b").await,
        StatusCode::UNAUTHORIZED
    );

    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    report(&format!(
        "sighup: 2 SIGHUPs, process alive; added token accepted {} ms after SIGHUP, removed \
         ones refused (global and site files); an unreadable file kept the tokens in force",
        took.as_millis()
    ));
}

#[tokio::test]
async fn a_dead_letter_topic_that_takes_smaller_records_gets_the_envelope() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let bridge = Bridge::start(config(&bootstrap)).await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    assert_eq!(
        post(&hook, &[], event("warm-up", 0)).await.status,
        StatusCode::OK
    );
    // The record's topic refuses it for good, then the dead-letter topic refuses the
    // whole record as too large.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        ],
    );
    let answer = post(&hook, &[], event("denied", 1)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert_eq!(answer.json["status"], "dead_lettered");
    assert_eq!(answer.json["reason"], "topic_authorization_failed");
    let id = answer.json["id"].as_str().unwrap();
    let letter = dead_letter(&bootstrap, id);
    assert_eq!(
        letter.header("dlq_reason"),
        Some("topic_authorization_failed")
    );
    assert_eq!(letter.value["dlq_reason"], "topic_authorization_failed");
    assert_eq!(letter.value["original_topic"], TOPIC);
    let prefix: Value =
        serde_json::from_str(letter.value["body_prefix"].as_str().unwrap()).unwrap();
    assert_eq!(prefix["id"], id);
    report("dead letter too large for the dead-letter topic: sent again as its envelope");
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_start_is_a_clean_shutdown() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &cluster.bootstrap_servers(),
        &dir.path().join("spool"),
        &[],
    );
    // The handler is installed before the listening line, so a SIGTERM sent as soon as it
    // is printed never meets the default action (which ends the process by the signal).
    for _ in 0..10 {
        let mut bridge = Process::start(&config);
        bridge.signal("-TERM");
        assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    }
    report("startup: 10 SIGTERMs sent as soon as the bridge said it listened: 10 clean exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_token_file_never_lets_everyone_in() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");

    // At start: a token file with nothing in it (blank lines only) is no token at all.
    std::fs::write(&tokens, "\n  \n").unwrap();
    let mut c = config(&cluster.bootstrap_servers());
    c.auth.tokens.clear();
    c.auth.tokens_file = Some(tokens.clone());
    let listeners = comm100_bridge::Listeners {
        webhook: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
    };
    let refused = comm100_bridge::serve(c, listeners, std::future::pending()).await;
    assert!(
        matches!(refused, Err(comm100_bridge::ServeError::NoToken)),
        "{refused:?}"
    );

    // While running: the file emptied is not taken, the token in force stays.
    std::fs::write(&tokens, "token-a\n").unwrap();
    let config = tokens_file_config(dir.path(), &cluster.bootstrap_servers(), &tokens);
    let config_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!("tokens = [\"{TOKEN}\"]"), "tokens = []");
    std::fs::write(&config, config_text).unwrap();
    let mut bridge = Process::start(&config);
    let hook = "/webhooks/comm100";
    assert!(status_with(&bridge, hook, "token-a").await.is_success());
    std::fs::write(&tokens, "").unwrap();
    bridge.signal("-HUP");
    eventually(Duration::from_secs(10), "the refusal logged", async || {
        bridge
            .log()
            .iter()
            .any(|l| l.contains("hold no token"))
            .then_some(())
    })
    .await;
    let anyone = post(&bridge.url(hook), &[], event("anyone", 0)).await;
    assert_eq!(anyone.status, StatusCode::UNAUTHORIZED, "{}", anyone.text);
    assert!(status_with(&bridge, hook, "token-a").await.is_success());
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
}

/// A Kubernetes Secret volume as the kubelet writes it: each key a symlink through `..data`
/// to a timestamped directory, and an update a new directory swapped in by renaming a
/// symlink over `..data`.
struct SecretVolume {
    dir: std::path::PathBuf,
    version: usize,
}

impl SecretVolume {
    fn new(dir: &Path, key: &str, value: &str) -> Self {
        let mut volume = Self {
            dir: dir.to_owned(),
            version: 0,
        };
        volume.update(key, value);
        std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).unwrap();
        volume
    }

    fn update(&mut self, key: &str, value: &str) {
        self.version += 1;
        let version = format!(
            "..2026_12_03_00_00_0{}.{}",
            self.version,
            100 + self.version
        );
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join(key), value).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_volume_is_honoured_without_a_restart_or_a_signal() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    // As the chart's Secret holds them: comma-separated, no final newline.
    let mut volume = SecretVolume::new(&secrets, "tokens", "token-a,token-b");
    let config = tokens_file_config(
        dir.path(),
        &cluster.bootstrap_servers(),
        &secrets.join("tokens"),
    );
    let mut bridge = Process::start(&config);
    let hook = "/webhooks/comm100";
    assert!(status_with(&bridge, hook, "token-a").await.is_success());
    assert!(status_with(&bridge, hook, "token-b").await.is_success());

    // Rotation: token-a revoked, token-c added.
    volume.update("tokens", "token-b,token-c");
    let took = wait_accepted(&bridge, hook, "token-c").await;
    assert_eq!(
        status_with(&bridge, hook, "token-a").await,
        StatusCode::UNAUTHORIZED,
        "the revoked token is still accepted"
    );
    assert!(status_with(&bridge, hook, "token-b").await.is_success());
    assert!(
        took < Duration::from_secs(3),
        "took {} ms: more than the settle time and a few polls",
        took.as_millis()
    );
    assert_eq!(bridge.child.try_wait().unwrap(), None);
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    report(&format!(
        "secret volume rotation (kubelet's symlink swap): new token accepted {} ms after the \
         swap, the revoked one refused, no signal, no restart",
        took.as_millis()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_rewritten_in_two_halves_is_never_half_believed() {
    use std::io::Write;
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "token-a\n").unwrap();
    let config = tokens_file_config(dir.path(), &cluster.bootstrap_servers(), &tokens);
    let mut bridge = Process::start(&config);
    let hook = "/webhooks/comm100";
    assert!(status_with(&bridge, hook, "token-a").await.is_success());

    let mut half_probes = 0;
    for round in 0..3 {
        let (first, rest) = (format!("round{round}-"), "second-half-of-the-token\n");
        let whole = format!("{first}{}", rest.trim_end());
        let mut file = std::fs::File::create(&tokens).unwrap();
        file.write_all(first.as_bytes()).unwrap();
        file.flush().unwrap();
        // The pause between the two writes, longer than two checks of the file: every
        // check in it sees the first half.
        let pause = std::time::Instant::now();
        while pause.elapsed() < Duration::from_millis(600) {
            let status = status_with(&bridge, hook, &first).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "round {round}: the first half of a token being written was accepted"
            );
            half_probes += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        file.write_all(rest.as_bytes()).unwrap();
        drop(file);
        wait_accepted(&bridge, hook, &whole).await;
        assert_eq!(
            status_with(&bridge, hook, &first).await,
            StatusCode::UNAUTHORIZED,
            "round {round}"
        );
    }
    assert_eq!(
        status_with(&bridge, hook, "token-a").await,
        StatusCode::UNAUTHORIZED
    );
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    report(&format!(
        "token file written in two halves 600 ms apart, 3 times: {half_probes} posts with the \
         first half during the pauses, all 401; each whole token accepted after"
    ));
}

/// A child bridge's configuration (as [`write_config`]) that also reads `tokens`.
fn tokens_file_config(dir: &Path, bootstrap: &str, tokens: &Path) -> std::path::PathBuf {
    write_config(
        dir,
        bootstrap,
        &dir.join("spool"),
        &[(
            "auth",
            &format!("tokens_file = {:?}", tokens.display().to_string()),
        )],
    )
}
