//! The `comm100-bridge` binary: normalize, check-config, serve's refusal, and dev end to end.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{fixtures_dir, Spawn};
use serde_json::Value;

fn bridge() -> Command {
    crate::common::bridge_command()
}

#[test]
fn normalize_prints_topic_key_headers_and_value() {
    let out = bridge()
        .args(["normalize", "--site", "eu"])
        .arg(fixtures_dir().join("chat_wrapped_up.json"))
        .run()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["topic"], "comm100.chat_wrapped_up");
    assert_eq!(v["key"], "db120346-2fa5-4957-a62b-e6765ab2691b");
    assert_eq!(
        v["headers"]["ce_type"],
        "com.comm100.livechat.chat_wrapped_up"
    );
    assert_eq!(v["headers"]["ce_source"], "/comm100/livechat/eu");
    assert_eq!(v["headers"]["ce_time"], "2020-03-17T05:18:44.807Z");
    assert_eq!(v["value"]["site"], "eu");
    assert_eq!(v["value"]["wrapup"]["category"], "Support");
}

#[test]
fn normalize_reads_standard_input_and_honours_topic_configuration() {
    let mut child = bridge()
        .args(["normalize", "-"])
        .env("COMM100_BRIDGE__TOPICS__PREFIX", "acme")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn_child()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"event":"brand_new_event","x":1}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["topic"], "acme.unknown");
    assert_eq!(v["key"], Value::Null);
    assert_eq!(v["value"]["extra"]["x"], 1);
}

#[test]
fn schemas_write_writes_the_repositorys_schemas_with_the_configured_topics() {
    let dir = tempfile::tempdir().unwrap();
    let out = bridge()
        .args(["schemas", "write", "--dir"])
        .arg(dir.path().join("new"))
        .run()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut written = 0;
    for entry in std::fs::read_dir(&repo).unwrap() {
        let name = entry.unwrap().file_name();
        let new = std::fs::read(dir.path().join("new").join(&name)).unwrap();
        assert!(new == std::fs::read(repo.join(&name)).unwrap(), "{name:?}");
        written += 1;
    }
    assert_eq!(written, 8);

    let out = bridge()
        .args(["schemas", "write", "--dir"])
        .arg(dir.path())
        .env("COMM100_BRIDGE__TOPICS__PREFIX", "acme")
        .run()
        .unwrap();
    assert!(out.status.success());
    let schema: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("chat_ended.schema.json")).unwrap())
            .unwrap();
    let description = schema["description"].as_str().unwrap();
    assert!(
        description.contains("topic `acme.chat_ended`"),
        "{description}"
    );
}

#[test]
fn normalize_exits_1_on_a_payload_the_bridge_would_reject() {
    let dir = tempfile::tempdir().unwrap();
    for (body, code) in [
        ("{\"no_event\":1}", "missing_event"),
        ("<xml/>", "invalid_json"),
    ] {
        let path = dir.path().join("bad.json");
        std::fs::write(&path, body).unwrap();
        let out = bridge().arg("normalize").arg(&path).run().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(code), "{err}");
    }
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let out = bridge()
        .arg("check-config")
        .env(
            "COMM100_BRIDGE__AUTH__TOKENS",
            "very-secret-1,very-secret-2",
        )
        .env("COMM100_BRIDGE__KAFKA__BROKERS", "k1:9092,k2:9092")
        .run()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("very-secret"), "{text}");
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(parsed["auth"]["tokens"].as_array().unwrap().len(), 2);
    assert_eq!(parsed["kafka"]["brokers"][1].as_str(), Some("k2:9092"));
}

#[test]
fn check_config_names_a_bad_key_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, "[delivery]\ndeadline = 5\n").unwrap();
    let out = bridge()
        .args(["check-config", "--config"])
        .arg(&path)
        .run()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deadline"), "{err}");
    assert_eq!(err.matches("unknown field").count(), 1, "said once: {err}");
}

#[test]
fn check_config_refuses_what_serve_would_across_stages() {
    let token = ("COMM100_BRIDGE__AUTH__TOKENS", "t");
    let property = |name: &str| format!("COMM100_BRIDGE__KAFKA__PROPERTIES__{name}");
    let (protocol, mechanisms, username, password, ca) = (
        property("SECURITY_PROTOCOL"),
        property("SASL_MECHANISMS"),
        property("SASL_USERNAME"),
        property("SASL_PASSWORD"),
        property("SSL_CA_LOCATION"),
    );
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "no token is configured"),
        (
            vec![token, ("COMM100_BRIDGE__HTTP__MAX_BODY_BYTES", "1048576")],
            "http.max_body_bytes",
        ),
        (
            vec![token, ("COMM100_BRIDGE__KAFKA__PROPERTIES__ACKS", "1")],
            "kafka.properties.acks",
        ),
        (
            vec![
                token,
                (
                    "COMM100_BRIDGE__AUTH__SITE_TOKENS_FILES__BAD!SITE",
                    "/run/x",
                ),
            ],
            "auth.site_tokens_files.bad!site",
        ),
        (
            vec![
                token,
                (&protocol, "SASL_SSL"),
                (&mechanisms, "SCRAM-SHA-999"),
                (&username, "bridge-user"),
                (&password, "pw-not-printed"),
            ],
            "kafka.properties.sasl.mechanisms",
        ),
        (
            vec![
                token,
                (&protocol, "SASL_SSL"),
                (&mechanisms, "SCRAM-SHA-512"),
                (&username, "bridge-user"),
            ],
            "kafka.properties.sasl.password",
        ),
        (
            vec![token, (&protocol, "SSL"), (&ca, "/nonexistent/ca.pem")],
            "kafka.properties.ssl.ca.location",
        ),
    ];
    for (env, says) in cases {
        let out = bridge()
            .arg("check-config")
            .envs(env.clone())
            .run()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?}: {err}");
        assert!(err.contains(says), "{env:?}: {err}");
        assert!(!err.contains("pw-not-printed"), "{err}");
    }
}

#[test]
fn check_config_takes_kafka_properties_and_rust_log_from_the_environment() {
    let out = bridge()
        .arg("check-config")
        .env("COMM100_BRIDGE__AUTH__TOKENS", "t")
        .env(
            "COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_PASSWORD",
            "pw-from-env",
        )
        .env(
            "COMM100_BRIDGE__KAFKA__PROPERTIES__SECURITY_PROTOCOL",
            "SASL_SSL",
        )
        // A combination librdkafka takes: GSSAPI, the default mechanism, is not built in.
        .env(
            "COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_MECHANISMS",
            "SCRAM-SHA-512",
        )
        .env("COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_USERNAME", "bridge")
        .env("RUST_LOG", "debug,rdkafka=trace")
        .run()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    let properties = &parsed["kafka"]["properties"];
    assert_eq!(properties["sasl.password"].as_str(), Some("<redacted>"));
    assert_eq!(properties["security.protocol"].as_str(), Some("SASL_SSL"));
    assert_eq!(parsed["log"]["level"].as_str(), Some("debug,rdkafka=trace"));
    assert!(!text.contains("pw-from-env"));

    let out = bridge()
        .arg("check-config")
        .env("COMM100_BRIDGE__AUTH__TOKENS", "t")
        .env("COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_PASWORD", "x")
        .run()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kafka.properties.sasl.pasword"), "{err}");
}

#[test]
fn version_names_the_commit_and_every_option_has_help() {
    let out = bridge().arg("--version").run().unwrap();
    let version = String::from_utf8(out.stdout).unwrap();
    let want = format!("comm100-bridge {}", comm100_bridge::LONG_VERSION);
    assert_eq!(version.trim(), want);
    assert!(comm100_bridge::COMMIT.len() == 12 || comm100_bridge::COMMIT == "unknown");
    for command in [
        &["serve"][..],
        &["dev"],
        &["normalize"],
        &["check-config"],
        &["spool", "inspect"],
        &["spool", "drain"],
        &["schemas", "write"],
    ] {
        let out = bridge().args(command).arg("--help").run().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        // clap prints `--flag <VALUE>` and its help on one line, or the help on the next.
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let option = line.trim_start();
            if !option.starts_with("--") || option.starts_with("--help") {
                continue;
            }
            let described = option.split("  ").filter(|p| !p.trim().is_empty()).count() > 1
                || lines.get(i + 1).is_some_and(|next| {
                    let next = next.trim_start();
                    !next.is_empty() && !next.starts_with('-')
                });
            assert!(described, "{command:?}: `{option}` has no help:\n{help}");
        }
    }
}

#[test]
fn serve_without_a_token_refuses_to_start() {
    let out = bridge()
        .arg("serve")
        .env("COMM100_BRIDGE__HTTP__LISTEN", "127.0.0.1:0")
        .run()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.tokens"), "{err}");
}

/// Lines of a child's stdout, read on a thread.
fn lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line_containing(
    rx: &mpsc::Receiver<String>,
    needle: &str,
    seen: &mut Vec<String>,
) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(e) => panic!(
                "no line containing {needle:?} ({e}); output so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[tokio::test]
async fn dev_publishes_a_posted_sample_prints_it_and_exits_0_on_sigterm() {
    let mut child = bridge()
        .args(["dev", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn_child()
        .unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let bootstrap = next_line_containing(&rx, "Kafka bootstrap:", &mut seen);
    assert!(bootstrap.contains("127.0.0.1:"), "{bootstrap}");
    assert!(seen.iter().any(|l| l.contains("NOT FOR PRODUCTION")));
    let url_line = next_line_containing(&rx, "webhook URL:", &mut seen);
    let url = url_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let curl = next_line_containing(&rx, "curl ", &mut seen);
    let sample = curl.rsplit('@').next().unwrap().trim().to_owned();
    assert!(sample.ends_with("chat_ended.json"), "{curl}");

    let body = std::fs::read(&sample).unwrap();
    let answer = crate::common::post(&url, &[], body).await;
    assert_eq!(answer.status, http::StatusCode::OK, "{}", answer.text);

    let published = next_line_containing(&rx, "--- published:", &mut seen);
    assert!(
        published.contains("topic=comm100.chat_ended"),
        "{published}"
    );
    assert!(
        published.contains("key=16c2cc3a-1b15-4b4f-9298-1cd04d6cec15"),
        "{published}"
    );
    next_line_containing(&rx, "\"type\": \"chat_ended\"", &mut seen);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .run_status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "dev did not exit 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_only_on_a_2xx_answer() {
    let cluster = crate::common::cluster();
    let running =
        crate::common::Bridge::start(crate::common::config(&cluster.bootstrap_servers())).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let cases = [
        (running.admin("/healthz"), true, "200 OK"),
        (running.admin("/nope"), false, "404"),
        (format!("http://{closed}/healthz"), false, "cannot connect"),
        (
            "https://127.0.0.1:1/healthz".to_owned(),
            false,
            "http:// URL",
        ),
    ];
    for (url, ok, says) in cases {
        let out = tokio::task::spawn_blocking(move || {
            bridge().args(["healthcheck", "--url", &url]).run().unwrap()
        })
        .await
        .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), ok, "{said}");
        assert!(said.contains(says), "{said}");
    }
    running.stop().await.unwrap();
}
