//! The shell commands of the README and docs/ work when pasted: every fenced shell block is
//! either run here as written (translated only where it names what this machine lacks: a
//! fixed port, a Kubernetes cluster) by the test named for it, or listed with the reason it
//! cannot be; a new or changed block fails until it is one or the other.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{repo, Spawn};

/// A fenced `sh` block: its file, the line of its first command, and its text.
struct Block {
    file: String,
    line: usize,
    text: String,
}

impl Block {
    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or_default()
    }
}

fn blocks() -> Vec<Block> {
    let mut files = vec![repo("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(repo("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut blocks = Vec::new();
    for path in files {
        let name = path.strip_prefix(repo("")).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut open: Option<Block> = None;
        for (i, line) in text.lines().enumerate() {
            let fence = line.trim_start().starts_with("```");
            match open.take() {
                None if fence
                    && ["sh", "bash", "shell"].contains(&line.trim().trim_start_matches('`')) =>
                {
                    open = Some(Block {
                        file: name.clone(),
                        line: i + 2,
                        text: String::new(),
                    });
                }
                None => {}
                Some(block) if fence => blocks.push(block),
                Some(mut block) => {
                    block.text.push_str(line);
                    block.text.push('\n');
                    open = Some(block);
                }
            }
        }
    }
    blocks
}

/// Every block, by file and first line: the test that runs it, or why it cannot run here.
const BLOCKS: &[(&str, &str, &str)] = &[
    ("README.md", "cargo run --release -- dev", "runs: cli::dev_publishes_a_posted_sample_prints_it_and_exits_0_on_sigterm (on port 0), and the next block against it"),
    ("README.md", "cargo test", "runs: it is .ci/run's test command"),
    ("README.md", "curl -sS http://127.0.0.1:8080/webhooks/comm100 \\", "runs: commands::the_commands_that_need_no_kafka_run_as_written"),
    ("README.md", "comm100-bridge normalize tests/fixtures/chat_ended.json      # or: … normalize - < payload.json", "runs: commands::the_commands_that_need_no_kafka_run_as_written"),
    ("README.md", "eval \"$(tests/kafka/cluster start --dir /tmp/comm100-kafka)\" && tests/kafka/cluster topics --dir \"$DIR\"", "cannot: starts Apache Kafka and a bridge that serves until stopped; the Kafka tests run tests/kafka/cluster start and topics"),
    ("README.md", "cargo build --release                       # target/release/comm100-bridge", "runs: commands::the_commands_that_need_no_kafka_run_as_written (check-config for serve, which needs the brokers it names)"),
    ("README.md", "docker compose up --build", "cannot: no Docker engine here"),
    ("README.md", "helm install comm100-bridge deploy/helm/comm100-bridge \\", "runs: render::the_readmes_helm_and_kubectl_commands_render (helm template for helm install)"),
    ("README.md", "kubectl create namespace comm100", "runs: render::the_readmes_helm_and_kubectl_commands_render (kustomize build for kubectl apply -k; no cluster for kubectl create)"),
    ("README.md", "benches/run.sh                     # Apache Kafka (tests/kafka/cluster), wrk and oha (installed into ~/.cache/comm100-bridge once)", "cannot: the benchmark takes minutes of a quiet machine; docs/benchmarks.md has its figures"),
    ("README.md", "cargo fmt --check && cargo clippy --all-targets -- -D warnings && cargo test", "runs: .ci/run runs each"),
    ("README.md", "cargo install cargo-fuzz", "runs: .ci/run runs every fuzz target (20 s each)"),
    ("docs/comm100-setup.md", "export COMM100_BRIDGE__COMM100__API_BASE=https://api15.comm100.io/v4", "cannot: calls Comm100's API with a real site's credentials; comm100::webhooks_register_creates_the_missing_seven_once_and_unregister_removes_them runs the same command against a stand-in"),
    ("docs/configuration.md", "COMM100_BRIDGE__KAFKA__PROPERTIES__SECURITY_PROTOCOL=SASL_SSL", "runs: commands::the_commands_that_need_no_kafka_run_as_written (as the environment of check-config)"),
    ("docs/consumers.md", "kcat -b localhost:9094 -C -t comm100.chat_ended -o beginning \\", "cannot: reads a running Kafka; the Kafka tests read the topics with independent clients"),
    ("docs/consumers.md", "cargo run --example consumer -- localhost:9094 my-group", "runs: examples::the_consumer_example_reads_the_topics_of_its_prefix_with_properties_from_the_environment"),
    ("docs/consumers.md", "KAFKA_SECURITY_PROTOCOL=SASL_SSL KAFKA_SASL_MECHANISMS=SCRAM-SHA-512 \\", "runs: examples::the_consumer_example_reads_the_topics_of_its_prefix_with_properties_from_the_environment (a property from KAFKA_*)"),
    ("docs/operations.md", "eval \"$(tests/kafka/cluster start --dir /tmp/comm100-kafka)\" && tests/kafka/cluster topics --dir \"$DIR\"", "cannot: as the README's (the same block)"),
];

#[test]
fn every_shell_block_of_the_docs_is_run_or_says_why_it_cannot_be() {
    let blocks = blocks();
    let found: BTreeSet<(String, String)> = blocks
        .iter()
        .map(|b| (b.file.clone(), b.first_line().to_owned()))
        .collect();
    let listed: BTreeSet<(String, String)> = BLOCKS
        .iter()
        .map(|(file, first, _)| ((*file).to_owned(), (*first).to_owned()))
        .collect();
    let new: Vec<String> = blocks
        .iter()
        .filter(|b| !listed.contains(&(b.file.clone(), b.first_line().to_owned())))
        .map(|b| format!("{}:{}: {}", b.file, b.line, b.first_line()))
        .collect();
    assert!(
        new.is_empty(),
        "shell blocks not in tests/it/commands.rs BLOCKS (run them in a test, or say why they cannot run here): {new:#?}"
    );
    let gone: Vec<_> = listed.difference(&found).collect();
    assert!(
        gone.is_empty(),
        "BLOCKS lists blocks the docs no longer have: {gone:#?}"
    );
}

/// The block of `file` that starts with `first`.
pub fn block(file: &str, first: &str) -> String {
    blocks()
        .into_iter()
        .find(|b| b.file == file && b.first_line() == first)
        .unwrap_or_else(|| panic!("no block in {file} starting {first:?}"))
        .text
}

/// Runs `script` with bash from the repository's root, the bridge's binary on `PATH`;
/// its standard output, or a panic with its errors.
pub fn bash(script: &str, env: &[(&str, &str)]) -> String {
    let binary = Path::new(env!("CARGO_BIN_EXE_comm100-bridge"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(repo(""))
        .env("PATH", path)
        .envs(env.iter().copied())
        .run()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\nfailed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_that_need_no_kafka_run_as_written() {
    // normalize, as written.
    let normalized = bash(
        &block(
            "README.md",
            "comm100-bridge normalize tests/fixtures/chat_ended.json      # or: … normalize - < payload.json",
        ),
        &[],
    );
    let record: serde_json::Value = serde_json::from_str(&normalized).unwrap();
    assert_eq!(record["topic"], "comm100.chat_ended", "{normalized}");
    assert_eq!(record["value"]["type"], "chat_ended", "{normalized}");

    // The quickstart's curl, against `dev` (on a free port rather than 8080).
    let mut dev = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_comm100-bridge"))
            .args(["dev", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn_child()
            .unwrap(),
    );
    // Everything dev prints is read to the end: with its output closed it would fail to
    // print the records it publishes.
    let lines = BufReader::new(dev.0.stdout.take().unwrap()).lines();
    let (found, url) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in lines.map_while(Result::ok) {
            if line.contains("webhook URL:") {
                if let (Some(tx), Some(url)) = (
                    found.take(),
                    line.split_whitespace().find(|w| w.starts_with("http://")),
                ) {
                    let _ = tx.send(url.to_owned());
                }
            }
        }
    });
    let url = tokio::time::timeout(Duration::from_secs(60), url)
        .await
        .expect("dev started")
        .expect("dev printed its webhook URL");
    let origin = url.trim_end_matches("/webhooks/comm100");
    let curl = block(
        "README.md",
        "curl -sS http://127.0.0.1:8080/webhooks/comm100 \\",
    )
    .replace("http://127.0.0.1:8080", origin);
    let answered = bash(&curl, &[]);
    drop(dev);
    let answer: serde_json::Value = serde_json::from_str(&answered).unwrap();
    assert_eq!(answer["topic"], "comm100.chat_ended", "{answered}");
    assert!(answer["offset"].is_i64(), "{answered}");

    // The build-and-serve block's settings, as check-config (serve needs their brokers).
    let serve = block(
        "README.md",
        "cargo build --release                       # target/release/comm100-bridge",
    );
    let settings: String = serve
        .lines()
        .filter(|l| l.starts_with("export "))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = bash(&format!("{settings}comm100-bridge check-config"), &[]);
    let config: toml::Value = toml::from_str(&config).unwrap();
    assert_eq!(
        config["kafka"]["brokers"],
        toml::Value::try_from(["kafka-1:9092", "kafka-2:9092"]).unwrap()
    );
    assert!(
        serve.contains("./target/release/comm100-bridge serve"),
        "{serve}"
    );

    // configuration.md's SASL variables, as the environment of check-config.
    let sasl = block(
        "docs/configuration.md",
        "COMM100_BRIDGE__KAFKA__PROPERTIES__SECURITY_PROTOCOL=SASL_SSL",
    );
    let exports: String = sasl.lines().map(|l| format!("export {l}\n")).collect();
    let config = bash(
        &format!("{exports}comm100-bridge check-config"),
        &[("COMM100_BRIDGE__AUTH__TOKENS", "t")],
    );
    for expected in [
        "\"security.protocol\" = \"SASL_SSL\"",
        "\"sasl.mechanisms\" = \"SCRAM-SHA-512\"",
        "\"sasl.password\" = \"<redacted>\"",
    ] {
        assert!(config.contains(expected), "{expected}: {config}");
    }
}
