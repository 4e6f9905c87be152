//! The release binary against Apache Kafka itself: a KRaft cluster of `tests/kafka/cluster`
//! on loopback. Every sample round-trips and is read by Kafka's own Java consumer and by the
//! Python CloudEvents SDK; a leader is SIGKILLed under load; the quorum is lost; one
//! replica is left with `min.insync.replicas` 2; SASL_SSL with SCRAM, a wrong password, a topic denied by
//! ACL and a missing topic; records over `message.max.bytes` or a topic's
//! `max.message.bytes`, at once and in spool replay; a spool left by a shutdown during an
//! outage, published by `spool drain`; `schemas register` against Apicurio Registry
//! (`tests/kafka/registry`) and `json_sr` records read by confluent-kafka's schema-registry
//! deserializer. The chaos tests report sent / 2xx / found / missing to
//! `target/tmp/test-report.txt`.
//!
//! Needs Java 17+ and Maven (the broker and the registry come from Maven Central) and, for
//! the Python readers, a Python with `tests/kafka/requirements.txt` in `KAFKA_TEST_PYTHON`; so it is
//! ignored by a plain `cargo test`. `.ci/run` runs it:
//!     cargo test --release --test kafka -- --ignored --test-threads=1

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use http::StatusCode;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::Value;
use tokio::task::JoinSet;

/// Pause of each sender between two events.
const PACE: Duration = Duration::from_millis(10);

/// The topic of the chaos tests' events.
const TOPIC: &str = "comm100.chat_transferred";

/// A cluster of `tests/kafka/cluster`, stopped when dropped.
struct Kafka {
    dir: PathBuf,
    /// What `start` printed: BOOTSTRAP, DIR, and with `--sasl` SASL_BOOTSTRAP, CA, ….
    vars: HashMap<String, String>,
    /// Whether dropping it stops the cluster: false for the shared one.
    owned: bool,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/cluster")
}

fn run(command: &mut Command) -> Output {
    let output = command.run().expect("cannot run tests/kafka/cluster");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Kafka {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("comm100-kafka-")
            .tempdir()
            .unwrap()
            .keep();
        let output = run(Command::new(script())
            .arg("start")
            .arg("--dir")
            .arg(&dir)
            .args(args));
        let vars = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self {
            dir,
            vars,
            owned: true,
        }
    }

    /// Three brokers for tests that kill none and change no setting, each on topics of
    /// its own prefix: the cluster `.ci/run` started (`COMM100_TEST_KAFKA_DIR` and
    /// `COMM100_TEST_KAFKA_BOOTSTRAP`), else one of its own.
    fn shared() -> Self {
        match (
            std::env::var("COMM100_TEST_KAFKA_DIR"),
            std::env::var("COMM100_TEST_KAFKA_BOOTSTRAP"),
        ) {
            (Ok(dir), Ok(bootstrap)) => Self {
                dir: dir.into(),
                vars: HashMap::from([("BOOTSTRAP".to_owned(), bootstrap)]),
                owned: false,
            },
            _ => Self::start(&["--brokers", "3"]),
        }
    }

    /// An admin client on the plaintext listener (a super user with `--sasl`).
    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap()
    }

    async fn delete_topic(&self, topic: &str) {
        for result in self
            .admin()
            .delete_topics(&[topic], &AdminOptions::new())
            .await
            .unwrap()
        {
            result.unwrap();
        }
    }

    fn var(&self, name: &str) -> &str {
        &self.vars[name]
    }

    fn bootstrap(&self) -> &str {
        self.var("BOOTSTRAP")
    }

    fn topics(&self, args: &[&str]) {
        run(Command::new(script())
            .arg("topics")
            .arg("--dir")
            .arg(&self.dir)
            .args(args));
    }

    fn kill(&self, id: i32) {
        run(Command::new(script())
            .args(["kill", &id.to_string(), "--dir"])
            .arg(&self.dir));
    }

    fn restart(&self, id: i32) {
        run(Command::new(script())
            .args(["restart", &id.to_string(), "--dir"])
            .arg(&self.dir));
    }

    /// Runs a Kafka tool class on the broker's classpath.
    fn tool(&self, args: &[&str]) -> String {
        let output = run(Command::new(script()).arg("tool").args(args));
        String::from_utf8(output.stdout).unwrap()
    }

    /// A consumer of the plaintext listener, for metadata and watermarks.
    fn consumer(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap()
    }

    /// The sum over `topic`'s partitions of their high watermarks: every record it holds.
    fn records_in(&self, topic: &str) -> i64 {
        let consumer = self.consumer();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .unwrap()
                    .1
            })
            .sum()
    }

    /// Each partition of `topic`, as (leader, in-sync replica count), per the metadata.
    fn partitions(&self, topic: &str) -> Vec<(i32, usize)> {
        let consumer = self.consumer();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| (p.leader(), p.isr().len()))
            .collect()
    }

    /// The broker that leads most partitions of `topic`.
    fn busiest_leader(&self, topic: &str) -> i32 {
        let mut led: BTreeMap<i32, usize> = BTreeMap::new();
        for (leader, _) in self.partitions(topic) {
            *led.entry(leader).or_default() += 1;
        }
        led.into_iter().max_by_key(|&(_, n)| n).unwrap().0
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new(script())
            .arg("stop")
            .arg("--dir")
            .arg(&self.dir)
            .run();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bridge configuration file: the given brokers, [`TOKEN`], JSON logs, a spool under
/// `dir` unless `spool` is false, then the TOML in `extra`.
fn bridge_config(dir: &Path, name: &str, brokers: &str, spool: bool, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let toml = format!(
        r#"
[http]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[auth]
tokens = ["{TOKEN}"]
[kafka]
brokers = ["{brokers}"]
[spool]
enabled = {spool}
dir = "{}"
[log]
format = "json"
level = "info"
{extra}
"#,
        dir.join(format!("{name}-spool")).display()
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// The webhook URL of `bridge`, with [`TOKEN`].
fn webhook_url(bridge: &Process) -> String {
    bridge.url(&format!("/webhooks/comm100?token={TOKEN}"))
}

/// A second bridge on `kafka`, without a spool: it shows the answers and readiness when
/// nothing can make a record durable.
fn bridge_without_spool(work: &Path, kafka: &Kafka) -> Process {
    Process::start(&bridge_config(work, "bare", kafka.bootstrap(), false, ""))
}

/// A bridge on `kafka` with a spool: its directory, its configuration (`extra` added) and
/// the process.
fn spooling_bridge(kafka: &Kafka, extra: &str) -> (tempfile::TempDir, PathBuf, Process) {
    let work = tempfile::tempdir().unwrap();
    let config = bridge_config(work.path(), "bridge", kafka.bootstrap(), true, extra);
    let bridge = Process::start(&config);
    (work, config, bridge)
}

/// Three brokers (`start` adds arguments) with every topic at replication 3 and
/// `min_insync`, and a bridge on them with a spool under the returned directory.
fn three_brokers(start: &[&str], min_insync: &str) -> (Kafka, tempfile::TempDir, Process) {
    let kafka = Kafka::start(&[&["--brokers", "3"], start].concat());
    kafka.topics(&["--replication", "3", "--min-insync", min_insync]);
    let (work, _, bridge) = spooling_bridge(&kafka, "");
    (kafka, work, bridge)
}

/// Waits until the bridge's spool is empty, then checks that every record answered 2xx is
/// in `TOPIC`, in per-chat order.
async fn drained_and_verified(test: &str, bridge: &Process, kafka: &Kafka, acked: &Acked) {
    wait_for_metric(
        &bridge.admin("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(120),
    )
    .await;
    verify(test, kafka.bootstrap(), TOPIC, acked, true);
}

/// Senders posting continuously, each chat's events one after another, until stopped. Each
/// pauses [`PACE`] between events: a busy webhook source, not a saturation benchmark (a
/// bridge saturated while it spools keeps spooling, since new records queue behind the
/// spooled ones, and would never show direct publishing resume).
struct Load {
    counts: Arc<Counts>,
    tasks: JoinSet<Acked>,
}

/// What the senders share: the stop flag, the window, and counts of answers.
#[derive(Default)]
struct Counts {
    stop: AtomicBool,
    /// While set, a 200 answer to a request sent while it was set is counted in `violations`.
    window: AtomicBool,
    violations: AtomicUsize,
    answered: AtomicUsize,
    spooled: AtomicUsize,
    published: AtomicUsize,
}

impl Load {
    fn start(hook: &str, senders: usize, prefix: &str) -> Self {
        let counts = Arc::new(Counts::default());
        let mut tasks = JoinSet::new();
        for s in 0..senders {
            let hook = hook.to_owned();
            let prefix = prefix.to_owned();
            let c = counts.clone();
            tasks.spawn(async move {
                let mut acked = Acked::default();
                // Bounded: at most 5,000 events per sender whatever happens.
                for seq in 0..5_000 {
                    if c.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let chat = format!("{prefix}-{s}-{}", seq % 3);
                    let in_window = c.window.load(Ordering::SeqCst);
                    let answer = post(&hook, &[], event(&chat, seq)).await;
                    if answer.status == StatusCode::OK {
                        c.published.fetch_add(1, Ordering::SeqCst);
                        if in_window && c.window.load(Ordering::SeqCst) {
                            c.violations.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    if answer.json["status"] == "spooled" {
                        c.spooled.fetch_add(1, Ordering::SeqCst);
                    }
                    acked.record(&chat, seq, Some(answer));
                    c.answered.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(PACE).await;
                }
                acked
            });
        }
        Self { counts, tasks }
    }

    fn answered(&self) -> usize {
        self.counts.answered.load(Ordering::SeqCst)
    }

    /// Waits until `n` more answers than now have come back.
    async fn wait_for_answers(&self, n: usize, bound: Duration) {
        let target = self.answered() + n;
        wait_until(|| self.answered() >= target, bound).await;
    }

    async fn finish(mut self) -> Acked {
        self.counts.stop.store(true, Ordering::SeqCst);
        let mut all = Acked::default();
        while let Some(part) = self.tasks.join_next().await {
            all.merge(part.unwrap());
        }
        all
    }
}

/// The share of answers with `status`, in percent.
fn share(acked: &Acked, status: u16) -> f64 {
    100.0 * acked.statuses.get(&status).copied().unwrap_or(0) as f64 / acked.sent.max(1) as f64
}

/// What `comm100-bridge normalize` says the sample publishes as: topic, key, headers.
fn normalized(sample: &Path) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_comm100-bridge"))
        .arg("normalize")
        .arg(sample)
        .run()
        .unwrap();
    assert!(output.status.success(), "{sample:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka; .ci/run runs it"]
async fn every_sample_round_trips_and_independent_clients_read_cloudevents() {
    let kafka = Kafka::shared();
    kafka.topics(&["--replication", "3", "--min-insync", "2"]);
    let (_work, _, bridge) = spooling_bridge(&kafka, "");
    let hook = webhook_url(&bridge);

    // id → (the answer, the golden record, what normalize says); each with a traceparent of
    // its own, but the last, which gets a new one.
    let mut posted: BTreeMap<String, (Value, Value, Value)> = BTreeMap::new();
    let mut traces: BTreeMap<String, (String, String)> = BTreeMap::new();
    let samples = samples();
    for (i, sample) in samples.iter().enumerate() {
        let (trace_id, parent) = (
            format!("{:032x}", 0x7e57_0000 + i),
            format!("{:016x}", 0xb0_0000 + i),
        );
        let traceparent = format!("00-{trace_id}-{parent}-01");
        let headers = match i + 1 < samples.len() {
            true => vec![("traceparent", traceparent.as_str())],
            false => vec![],
        };
        let answer = post(&hook, &headers, std::fs::read(sample).unwrap()).await;
        if !headers.is_empty() {
            traces.insert(
                answer.json["id"].as_str().unwrap().to_owned(),
                (trace_id, parent),
            );
        }
        assert_eq!(answer.status, StatusCode::OK, "{sample:?}: {}", answer.text);
        let golden: Value =
            serde_json::from_slice(&std::fs::read(sample.with_extension("expected.json")).unwrap())
                .unwrap();
        posted.insert(
            answer.json["id"].as_str().unwrap().to_owned(),
            (answer.json.clone(), golden, normalized(sample)),
        );
    }
    assert_eq!(posted.len(), samples.len());

    // Read back with rdkafka, exactly where each answer points.
    for (id, (answer, golden, expected)) in &posted {
        let record = consume_at(
            kafka.bootstrap(),
            answer["topic"].as_str().unwrap(),
            answer["partition"].as_i64().unwrap() as i32,
            answer["offset"].as_i64().unwrap(),
        );
        assert_eq!(record.topic, expected["topic"].as_str().unwrap());
        assert_eq!(record.key.as_deref(), expected["key"].as_str(), "{id}");
        let value = &record.value;
        let time = value["occurred_at"]
            .as_str()
            .or(value["received_at"].as_str())
            .unwrap();
        let mut headers: BTreeMap<String, String> = record.headers.iter().cloned().collect();
        assert_eq!(headers.remove("ce_id").as_deref(), Some(id.as_str()));
        assert_eq!(headers.remove("ce_time").as_deref(), Some(time));
        // The request's traceparent, or a new one (normalize shows another new one).
        let trace = headers.remove("traceparent").unwrap();
        match traces.get(id) {
            Some((trace_id, parent)) => {
                assert_eq!(trace, format!("00-{trace_id}-{parent}-01"), "{id}")
            }
            None => assert!(
                comm100_bridge::trace::TraceParent::parse(&trace).is_some(),
                "{id}: {trace}"
            ),
        }
        let mut wanted: BTreeMap<String, String> = expected["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        wanted.remove("ce_id");
        wanted.remove("ce_time");
        wanted.remove("traceparent");
        assert_eq!(headers, wanted, "{id}");
        let mut value = value.clone();
        let object = value.as_object_mut().unwrap();
        object.remove("id");
        object.remove("received_at");
        assert_eq!(&value, golden, "{id}");
    }

    // Kafka's own Java consumer, headers printed.
    let count = posted.len().to_string();
    let java = kafka.tool(&[
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--bootstrap-server",
        kafka.bootstrap(),
        "--include",
        "comm100\\..*",
        "--from-beginning",
        "--max-messages",
        &count,
        "--timeout-ms",
        "60000",
        "--formatter-property",
        "print.headers=true",
        "--formatter-property",
        "print.key=true",
        "--formatter-property",
        "headers.separator=|",
    ]);
    let mut java_seen = 0;
    for line in java.lines() {
        // name:value|name:value… <TAB> key <TAB> value
        let fields: Vec<&str> = line.splitn(3, '\t').collect();
        let [headers, key, value] = fields[..] else {
            panic!("unexpected console consumer line: {line}");
        };
        let headers: HashMap<&str, &str> = headers
            .split('|')
            .filter_map(|h| h.split_once(':'))
            .collect();
        let value: Value = serde_json::from_str(value).unwrap();
        let id = value["id"].as_str().unwrap();
        let (_, golden, expected) = &posted[id];
        assert_eq!(headers["ce_id"], id);
        assert_eq!(headers["ce_type"], expected["headers"]["ce_type"]);
        assert_eq!(headers["ce_source"], expected["headers"]["ce_source"]);
        assert_eq!(headers["ce_specversion"], "1.0");
        assert_eq!(headers["content-type"], "application/json");
        let time = value["occurred_at"]
            .as_str()
            .or(value["received_at"].as_str());
        assert_eq!(Some(headers["ce_time"]), time, "{id}");
        assert_eq!(
            key,
            expected["key"].as_str().unwrap_or("null"),
            "the Java consumer prints a missing key as null"
        );
        assert_eq!(value["type"], golden["type"]);
        java_seen += 1;
    }
    assert_eq!(java_seen, posted.len(), "{java}");

    // The Python CloudEvents SDK's Kafka binding, reading with confluent-kafka.
    let python = std::env::var("KAFKA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut topics: Vec<String> = comm100_bridge::route::Router::new(
        &comm100_bridge::config::Config::load_with_env(None, Some(Default::default()))
            .unwrap()
            .topics,
    )
    .topics()
    .to_vec();
    topics.sort();
    topics.dedup();
    let output = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/cloudevents_reader.py"))
        .arg(kafka.bootstrap())
        .arg(&count)
        .args(&topics)
        .run()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "the CloudEvents reader failed (KAFKA_TEST_PYTHON={python}):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut python_seen = 0;
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let id = event["id"].as_str().unwrap();
        let (answer, _, expected) = &posted[id];
        assert_eq!(event["data_id"], id);
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], expected["headers"]["ce_type"]);
        assert_eq!(event["source"], expected["headers"]["ce_source"]);
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["topic"], answer["topic"]);
        assert_eq!(event["partition"], answer["partition"]);
        assert_eq!(event["offset"], answer["offset"]);
        assert_eq!(event["time"], event["data_time"], "{id}");
        assert!(event["time_utc_ms"].as_i64().unwrap() > 0, "{id}");
        if let Some(occurred) = expected["value"]["occurred_at"].as_str() {
            assert_eq!(event["time"], occurred, "{id}");
        }
        // The OpenTelemetry SDK's span continues the request's trace, as a child of its span.
        match traces.get(id) {
            Some((trace_id, parent)) => {
                assert_eq!(event["trace_id"], trace_id.as_str(), "{id}");
                assert_eq!(event["parent_span_id"], parent.as_str(), "{id}");
            }
            None => {
                let trace_id = event["trace_id"].as_str().unwrap();
                assert!(
                    trace_id.len() == 32 && trace_id != "0".repeat(32),
                    "{id}: {trace_id}"
                );
                assert!(
                    event["parent_span_id"].is_string(),
                    "{id}: a new trace, not none"
                );
            }
        }
        python_seen += 1;
    }
    assert_eq!(python_seen, posted.len());
    report(&format!(
        "kafka: {python_seen} of {} samples round-tripped through 3 brokers (replication 3, min.insync 2); \
         Java console consumer read {java_seen}, Python CloudEvents SDK decoded {python_seen}, \
         the OpenTelemetry SDK continued {} sent traces and one new one",
        posted.len(),
        traces.len()
    ));
    bridge.signal("-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka; .ci/run runs it"]
async fn leader_failover_under_load_loses_nothing() {
    let (kafka, _work, bridge) = three_brokers(&[], "2");
    let hook = webhook_url(&bridge);

    let load = Load::start(&hook, 8, "failover");
    load.wait_for_answers(300, Duration::from_secs(60)).await;
    let leader = kafka.busiest_leader(TOPIC);
    kafka.kill(leader);
    let killed = Instant::now();
    // The controller moves leadership once the broker's session times out; the spool then
    // drains and records are published directly again, all while the broker stays down.
    let published = load.counts.published.load(Ordering::SeqCst);
    wait_until(
        || load.counts.published.load(Ordering::SeqCst) >= published + 100,
        Duration::from_secs(120),
    )
    .await;
    let recovered = killed.elapsed();
    kafka.restart(leader);
    load.wait_for_answers(300, Duration::from_secs(120)).await;
    let acked = load.finish().await;

    drained_and_verified(
        &format!("kafka: leader failover (broker {leader} SIGKILLed, restarted)"),
        &bridge,
        &kafka,
        &acked,
    )
    .await;
    let unavailable = share(&acked, 503);
    report(&format!(
        "kafka: leader failover: answered 200 again {:.1} s after the kill, the broker still down; 503 share {unavailable:.2} %",
        recovered.as_secs_f64()
    ));
    assert!(unavailable <= 5.0, "{:?}", acked.statuses);
    bridge.signal("-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka; .ci/run runs it"]
async fn losing_the_quorum_spools_then_drains_in_order() {
    let (kafka, work, bridge) = three_brokers(&[], "2");
    let bare = bridge_without_spool(work.path(), &kafka);
    let hook = webhook_url(&bridge);
    let bare_hook = webhook_url(&bare);
    assert_eq!(
        post(&bare_hook, &[], event("bare", 0)).await.status,
        StatusCode::OK
    );

    let load = Load::start(&hook, 8, "quorum");
    load.wait_for_answers(300, Duration::from_secs(60)).await;
    kafka.kill(2);
    kafka.kill(3);
    let killed = Instant::now();
    wait_until(
        || load.counts.spooled.load(Ordering::SeqCst) >= 100,
        Duration::from_secs(60),
    )
    .await;
    let ready = get(&bridge.admin("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json["spooling"], true, "{}", ready.text);

    let mut tries = JoinSet::new();
    for seq in 1..=3 {
        let bare_hook = bare_hook.clone();
        tries.spawn(async move { post(&bare_hook, &[], event("bare", seq)).await });
    }
    while let Some(answer) = tries.join_next().await {
        let answer = answer.unwrap();
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.text
        );
    }
    wait_for_status(
        &bare.admin("/readyz"),
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    let bare_ready = get(&bare.admin("/readyz")).await;
    report(&format!(
        "kafka: quorum lost: spooling bridge ready and spooling; bridge without spool answered 503 and /readyz 503 {:.1} s after the kill ({})",
        (killed.elapsed()).as_secs_f64(),
        bare_ready.json["reason"]
    ));

    kafka.restart(2);
    kafka.restart(3);
    load.wait_for_answers(200, Duration::from_secs(120)).await;
    let acked = load.finish().await;
    drained_and_verified(
        "kafka: quorum lost (2 of 3 brokers SIGKILLed, restarted)",
        &bridge,
        &kafka,
        &acked,
    )
    .await;
    wait_for_status(
        &bare.admin("/readyz"),
        StatusCode::OK,
        Duration::from_secs(60),
    )
    .await;
    bridge.signal("-TERM");
    bare.signal("-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka; .ci/run runs it"]
async fn an_isr_below_min_insync_is_never_answered_200_and_nothing_is_lost() {
    // Node 1 is the only controller, so with nodes 2 and 3 down the quorum stays and one
    // broker is left of each partition's three replicas, with min.insync.replicas 2.
    let (kafka, work, bridge) = three_brokers(&["--controllers", "1"], "2");
    let bare = bridge_without_spool(work.path(), &kafka);
    let hook = webhook_url(&bridge);
    let bare_hook = webhook_url(&bare);

    let load = Load::start(&hook, 8, "insync");
    load.wait_for_answers(300, Duration::from_secs(60)).await;
    kafka.kill(3);
    kafka.kill(2);
    // Requests already acknowledged by the replicas may still be answering.
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.counts.window.store(true, Ordering::SeqCst);
    // The controller fences the dead brokers and shrinks every ISR to the survivor.
    let started = Instant::now();
    eventually(Duration::from_secs(60), "the ISR shrunk", async || {
        (!kafka.partitions(TOPIC).iter().any(|&(_, isr)| isr > 1)).then_some(())
    })
    .await;
    let shrunk = started.elapsed();
    // Now Kafka refuses acks=all writes (NOT_ENOUGH_REPLICAS): a bridge without a spool
    // must say so, and the spooling bridge keeps spooling.
    let answer = post(&bare_hook, &[], event("bare", 0)).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text
    );
    let spooled = load.counts.spooled.load(Ordering::SeqCst);
    wait_until(
        || load.counts.spooled.load(Ordering::SeqCst) >= spooled + 100,
        Duration::from_secs(60),
    )
    .await;
    load.counts.window.store(false, Ordering::SeqCst);
    kafka.restart(2);
    kafka.restart(3);
    load.wait_for_answers(200, Duration::from_secs(120)).await;
    let violations = load.counts.violations.load(Ordering::SeqCst);
    let acked = load.finish().await;
    drained_and_verified(
        "kafka: ISR below min.insync.replicas (2 of 3 brokers SIGKILLed, restarted)",
        &bridge,
        &kafka,
        &acked,
    )
    .await;
    report(&format!(
        "kafka: ISR below min.insync.replicas: one replica left {:.1} s after the kills; {violations} answers 200 \
         while it was short; the bridge without a spool answered 503 ({})",
        shrunk.as_secs_f64(),
        answer.json["error"]["message"]
    ));
    assert_eq!(violations, 0);
    bridge.signal("-TERM");
    bare.signal("-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka; .ci/run runs it"]
async fn sasl_scram_over_tls_acls_and_missing_topics() {
    let kafka = Kafka::start(&[
        "--brokers",
        "1",
        "--sasl",
        "--property",
        "auto.create.topics.enable=false",
    ]);
    kafka.topics(&[]);
    // One topic is missing, another is denied to the bridge's user.
    kafka.delete_topic("comm100.chat_ended").await;
    kafka.tool(&[
        "org.apache.kafka.tools.AclCommand",
        "--bootstrap-server",
        kafka.bootstrap(),
        "--add",
        "--deny-principal",
        "User:bridge",
        "--operation",
        "Write",
        "--topic",
        "comm100.chat_started",
    ]);
    let sasl = |password: &str| {
        format!(
            "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"{}\"\n\"sasl.password\" = \"{password}\"\n\"ssl.ca.location\" = \"{}\"\n",
            kafka.var("SASL_USERNAME"),
            kafka.var("CA")
        )
    };
    let work = tempfile::tempdir().unwrap();
    // This bridge has its Kafka properties, the password among them, only from the
    // environment (`.` written as `_`); the others from their file.
    let good = bridge_config(work.path(), "bridge", kafka.var("SASL_BOOTSTRAP"), true, "");
    let bridge = Process::start_with_env(
        &good,
        &[
            (
                "COMM100_BRIDGE__KAFKA__PROPERTIES__SECURITY_PROTOCOL",
                "SASL_SSL",
            ),
            (
                "COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_MECHANISMS",
                "SCRAM-SHA-512",
            ),
            (
                "COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_USERNAME",
                kafka.var("SASL_USERNAME"),
            ),
            (
                "COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_PASSWORD",
                kafka.var("SASL_PASSWORD"),
            ),
            (
                "COMM100_BRIDGE__KAFKA__PROPERTIES__SSL_CA_LOCATION",
                kafka.var("CA"),
            ),
        ],
    );
    assert!(!std::fs::read_to_string(&good).unwrap().contains("sasl"));
    let hook = webhook_url(&bridge);

    let mut published = Vec::new();
    let mut dead = BTreeMap::new();
    for name in [
        "chat_requested",
        "chat_started",
        "chat_transferred",
        "chat_ended",
        "chat_wrapped_up",
        "offline_message_submitted",
        "agent_status_changed_online",
    ] {
        let body = std::fs::read(fixtures_dir().join(format!("{name}.json"))).unwrap();
        let answer = post(&hook, &[], body).await;
        match name {
            "chat_started" | "chat_ended" => {
                assert_eq!(
                    answer.status,
                    StatusCode::ACCEPTED,
                    "{name}: {}",
                    answer.text
                );
                assert_eq!(answer.json["status"], "dead_lettered", "{name}");
                dead.insert(
                    answer.json["id"].as_str().unwrap().to_owned(),
                    answer.json["reason"].as_str().unwrap().to_owned(),
                );
            }
            _ => {
                assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text);
                published.push(answer);
            }
        }
    }
    assert_eq!(dead.len(), 2);
    assert!(dead.values().any(|r| r == "topic_authorization_failed"));
    assert!(dead.values().any(|r| r == "unknown_topic"));
    // The bridge keeps serving the other topics, at full speed.
    let started = Instant::now();
    let after = post(
        &hook,
        &[],
        std::fs::read(fixtures_dir().join("agent_status_changed_away.json")).unwrap(),
    )
    .await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
    assert!(started.elapsed() < Duration::from_secs(1));
    for answer in &published {
        let record = consume_answered(kafka.bootstrap(), answer);
        assert_eq!(record.value["id"], answer.json["id"]);
    }
    let ids: Vec<&str> = dead.keys().map(|id| id.as_str()).collect();
    let letters = dead_letters(kafka.bootstrap(), &ids);
    for ((_, reason), letter) in dead.iter().zip(&letters) {
        assert_eq!(letter.header("dlq_reason"), Some(reason.as_str()));
    }

    // A wrong password: readiness names authentication at once; records are spooled, and a
    // bridge started on the same spool with the right password publishes them.
    let wrong_config = bridge_config(
        work.path(),
        "wrong",
        kafka.var("SASL_BOOTSTRAP"),
        true,
        &sasl("not-the-password"),
    );
    let mut wrong = Process::start(&wrong_config);
    let started = std::time::Instant::now();
    let readyz = wrong.admin("/readyz");
    let reason = eventually(
        Duration::from_secs(15),
        "/readyz 503 naming authentication",
        async || {
            let ready = get(&readyz).await;
            let reason = ready.json["reason"].as_str().unwrap_or_default().to_owned();
            (ready.status == StatusCode::SERVICE_UNAVAILABLE && reason.contains("authentication"))
                .then_some(reason)
        },
    )
    .await;
    let took = started.elapsed();
    let spooled = post(&webhook_url(&wrong), &[], event("wrong-password", 0)).await;
    assert_eq!(spooled.status, StatusCode::ACCEPTED, "{}", spooled.text);
    assert_eq!(spooled.json["status"], "spooled");
    let log = wrong.log().join("\n");
    assert!(
        log.contains("ERROR") && log.to_lowercase().contains("authentication"),
        "{log}"
    );
    wrong.signal("-TERM");
    assert_eq!(wrong.child.wait().unwrap().code(), Some(0));
    let fixed = std::fs::read_to_string(&wrong_config)
        .unwrap()
        .replace("not-the-password", kafka.var("SASL_PASSWORD"));
    std::fs::write(&wrong_config, fixed).unwrap();
    let fixed = Process::start(&wrong_config);
    wait_for_metric(
        &fixed.admin("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(60),
    )
    .await;
    let replayed = consume_all(kafka.bootstrap(), TOPIC, Duration::from_secs(30), |got| {
        got.iter().any(|r| r.value["id"] == spooled.json["id"])
    });
    assert!(replayed.iter().any(|r| r.value["id"] == spooled.json["id"]));
    report(&format!(
        "kafka: SASL_SSL/SCRAM-SHA-512 with every Kafka property from the environment: 6 published, denied topic → DLQ topic_authorization_failed, \
         missing topic → DLQ unknown_topic; wrong password → /readyz 503 in {:.1} s (\"{reason}\"), \
         its spooled record published once the password was fixed",
        took.as_secs_f64()
    ));
    bridge.signal("-TERM");
    fixed.signal("-TERM");
}

/// A valid event of about `bytes` bytes that LZ4 cannot shrink (random hex), so a broker
/// counts nearly all of it against the topic's `max.message.bytes`.
fn incompressible_event(chat: &str, bytes: usize) -> String {
    let noise: String = (0..bytes / 16)
        .map(|_| format!("{:016x}", fastrand::u64(..)))
        .collect();
    serde_json::json!({"event": "chat_transferred", "visitor": {"chat_id": chat}, "seq": 0, "noise": noise})
        .to_string()
}

/// Waits until every partition's leader refuses a record over `limit` bytes for [`TOPIC`]:
/// a changed topic configuration reaches the leaders a moment after the controller took it.
/// The probe is a producer of the test's own, so the bridge's posts are each sent once.
async fn topic_limit_in_force(bootstrap: &str, limit: usize) {
    use rdkafka::error::KafkaError;
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    use rdkafka::types::RDKafkaErrorCode;
    let probe: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", "none")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let partitions = probe
        .client()
        .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
        .unwrap()
        .topics()[0]
        .partitions()
        .len() as i32;
    // A record with an `id`, as the topic's readers expect; one that gets through is one of
    // "other records in the topic".
    let payload =
        serde_json::json!({"id": "max-message-bytes-probe", "pad": "x".repeat(2 * limit)})
            .to_string();
    let started = Instant::now();
    for partition in 0..partitions {
        loop {
            let record = FutureRecord::<(), _>::to(TOPIC)
                .payload(&payload)
                .partition(partition);
            match probe.send(record, Duration::from_secs(10)).await {
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    break
                }
                Ok(_) => {}
                Err((e, _)) => panic!("probing partition {partition}: {e}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "max.message.bytes = {limit} not in force on partition {partition} after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Kills every broker, then starts them again at once (one alone has no controller quorum).
fn all_brokers_down(kafka: &Kafka) {
    for id in 1..=3 {
        kafka.kill(id);
    }
}

fn all_brokers_up(kafka: &Kafka) {
    std::thread::scope(|s| {
        for id in 1..=3 {
            s.spawn(move || kafka.restart(id));
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka; .ci/run runs it"]
async fn records_kafka_can_never_take_and_a_spool_left_at_shutdown() {
    let kafka = Kafka::start(&["--brokers", "3"]);
    kafka.topics(&["--replication", "3", "--min-insync", "2"]);
    // The event topic takes records of at most 20,000 bytes, as a topic whose
    // max.message.bytes is below the producer's message.max.bytes would.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    let limit = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(TOPIC))
        .set("max.message.bytes", "20000");
    for result in admin
        .alter_configs([&limit], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    topic_limit_in_force(kafka.bootstrap(), 20_000).await;
    let (work, config, mut bridge) = spooling_bridge(&kafka, "");
    let hook = webhook_url(&bridge);
    let mut acked = Acked::default();
    acked.record(
        "normal",
        0,
        Some(post(&hook, &[], event("normal", 0)).await),
    );
    assert_eq!(acked.statuses.get(&200), Some(&1), "{:?}", acked.statuses);

    // The broker refuses a record over the topic's limit: dead-lettered, answered 202.
    let refused = post(&hook, &[], incompressible_event("limit-http", 40_000)).await;
    assert_eq!(refused.status, StatusCode::ACCEPTED, "{}", refused.text);
    assert_eq!(refused.json["status"], "dead_lettered", "{}", refused.text);
    assert_eq!(refused.json["reason"], "record_too_large");
    assert_envelope(
        kafka.bootstrap(),
        refused.json["id"].as_str().unwrap(),
        TOPIC,
        20_000,
    );

    // Brokers down: a record over message.max.bytes, one over the topic's limit and a
    // normal one are spooled; brought back, replay dead-letters the first two and moves on.
    all_brokers_down(&kafka);
    let big = post(&hook, &[], oversized_event("big")).await;
    let over_topic = post(&hook, &[], incompressible_event("limit-replay", 40_000)).await;
    for answer in [&big, &over_topic] {
        assert_eq!(answer.json["status"], "spooled", "{}", answer.text);
    }
    acked.record(
        "normal",
        1,
        Some(post(&hook, &[], event("normal", 1)).await),
    );
    all_brokers_up(&kafka);
    acked.record(
        "normal",
        2,
        Some(post(&hook, &[], event("normal", 2)).await),
    );
    assert_eq!(acked.ids.len(), 3, "{:?}", acked.statuses);
    drained_and_verified(
        "kafka: records Kafka can never take (1 over message.max.bytes, 2 over the topic's max.message.bytes)",
        &bridge,
        &kafka,
        &acked,
    )
    .await;
    assert_envelope(
        kafka.bootstrap(),
        big.json["id"].as_str().unwrap(),
        TOPIC,
        1_000_000,
    );
    assert_envelope(
        kafka.bootstrap(),
        over_topic.json["id"].as_str().unwrap(),
        TOPIC,
        20_000,
    );
    report("kafka: oversized records: 3 dead-lettered as envelopes (1 refused by the broker at once, 2 in replay), 3 normal records published in order, spool back to 0");

    // Scale-in during an outage: the bridge exits 0 keeping its spool, which `spool
    // drain` then publishes.
    all_brokers_down(&kafka);
    let mut stranded = Acked::default();
    for seq in 0..30 {
        let chat = format!("stranded-{}", seq % 3);
        stranded.record(&chat, seq, Some(post(&hook, &[], event(&chat, seq)).await));
    }
    assert_eq!(
        stranded.statuses.get(&202),
        Some(&30),
        "{:?}",
        stranded.statuses
    );
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    assert!(
        bridge
            .log()
            .iter()
            .any(|l| l.contains("spool not drained before exit") && l.contains("\"spooled\":30")),
        "{:?}",
        bridge.log()
    );
    all_brokers_up(&kafka);
    let spool = work.path().join("bridge-spool");
    let drained = Command::new(env!("CARGO_BIN_EXE_comm100-bridge"))
        .args(["spool", "drain", "--dir"])
        .arg(&spool)
        .arg("--config")
        .arg(&config)
        .run()
        .unwrap();
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    assert!(String::from_utf8_lossy(&drained.stdout).contains("drained 30 records"));
    verify(
        "kafka: scale-in during an outage, then spool drain",
        kafka.bootstrap(),
        TOPIC,
        &stranded,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka; .ci/run runs it"]
async fn a_rolling_restart_and_a_scale_in_with_kafka_back() {
    let kafka = Kafka::start(&["--brokers", "3"]);
    kafka.topics(&["--replication", "3", "--min-insync", "2"]);
    let work = tempfile::tempdir().unwrap();

    let rolling = work.path().join("rolling");
    std::fs::create_dir(&rolling).unwrap();
    let config = write_config(
        &rolling,
        kafka.bootstrap(),
        &rolling.join("spool"),
        &[("http", "shutdown_delay_ms = 2000")],
    );
    let (acked, summary) =
        post_across_sigterm(Process::start(&config), Duration::from_secs(2)).await;
    verify(
        "kafka: rolling restart",
        kafka.bootstrap(),
        TOPIC,
        &acked,
        true,
    );
    report(&format!("kafka: rolling restart: {summary}"));

    // A replica stopped during an outage keeps its spool; started again once the brokers
    // are back, it is told to go at once, while it is still replaying: it finishes the
    // replay before it exits.
    let scale_in = work.path().join("scale-in");
    std::fs::create_dir(&scale_in).unwrap();
    let spool = scale_in.join("spool");
    let config = write_config(&scale_in, kafka.bootstrap(), &spool, &[]);
    let mut bridge = Process::start(&config);
    let hook = webhook_url(&bridge);
    all_brokers_down(&kafka);
    let mut acked = Acked::default();
    for seq in 0..30 {
        let chat = format!("scale-in-{}", seq % 3);
        acked.record(&chat, seq, Some(post(&hook, &[], event(&chat, seq)).await));
    }
    assert_eq!(acked.statuses.get(&202), Some(&30), "{:?}", acked.statuses);
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    all_brokers_up(&kafka);
    let mut bridge = Process::start(&config);
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    let inspected = Command::new(env!("CARGO_BIN_EXE_comm100-bridge"))
        .args(["spool", "inspect", "--dir"])
        .arg(&spool)
        .run()
        .unwrap();
    let inspected: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["records"], 0, "{inspected}");
    verify(
        "kafka: scale-in with Kafka back",
        kafka.bootstrap(),
        TOPIC,
        &acked,
        true,
    );
    let at_shutdown = bridge
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "replaying the spool to Kafka before exit")
        .map_or(0, |v| v["fields"]["spooled"].as_u64().unwrap());
    report(&format!(
        "kafka: scale-in with Kafka back: exit 0 with the spool empty; {at_shutdown} of 30 \
         records were still spooled at SIGTERM and replayed before exit"
    ));
}

/// `comm100-bridge ARGS --config CONFIG`: success, standard output, errors.
fn cli(args: &[&str], config: &Path) -> (bool, String, String) {
    outcome(bridge_command().args(args).arg("--config").arg(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka; .ci/run runs it"]
async fn topics_ensure_creates_what_is_missing_changes_nothing_else_and_obeys_acls() {
    use rdkafka::admin::{NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
    let kafka = Kafka::start(&[
        "--brokers",
        "1",
        "--sasl",
        "--property",
        "auto.create.topics.enable=false",
    ]);
    let admin = kafka.admin();
    // One topic exists already, with another partition count.
    let existing = NewTopic::new("comm100.chat_ended", 3, TopicReplication::Fixed(1));
    for result in admin
        .create_topics([&existing], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let settings = "[topics]\npartitions = 6\n[topics.config]\n\"retention.ms\" = \"3600000\"\n";
    let comm100_topics = || -> Vec<String> {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        let mut names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|n| n.starts_with("comm100."))
            .collect();
        names.sort();
        names
    };

    // A principal that may not create topics: ensure fails naming why, and creates nothing.
    kafka.tool(&[
        "org.apache.kafka.tools.AclCommand",
        "--bootstrap-server",
        kafka.bootstrap(),
        "--add",
        "--deny-principal",
        "User:bridge",
        "--operation",
        "Create",
        "--cluster",
        "--topic",
        "*",
    ]);
    let sasl = format!(
        "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"{}\"\n\"sasl.password\" = \"{}\"\n\"ssl.ca.location\" = \"{}\"\n{settings}",
        kafka.var("SASL_USERNAME"),
        kafka.var("SASL_PASSWORD"),
        kafka.var("CA")
    );
    let denied = bridge_config(
        work.path(),
        "denied",
        kafka.var("SASL_BOOTSTRAP"),
        true,
        &sasl,
    );
    let (ok, _, said) = cli(&["topics", "ensure"], &denied);
    assert!(!ok, "ensure passed without Create");
    assert!(
        said.contains("Kafka did not create")
            && said.contains("comm100.dlq")
            && said.contains("may not create topics"),
        "{said}"
    );
    assert_eq!(
        comm100_topics(),
        ["comm100.chat_ended"],
        "a denied ensure created topics"
    );

    // serve, meanwhile: not ready, naming what is missing.
    let plain = bridge_config(work.path(), "plain", kafka.bootstrap(), true, settings);
    let bridge = Process::start(&plain);
    let readyz = bridge.admin("/readyz");
    let reason = wait_for_reason(&readyz, "missing topics:", Duration::from_secs(30)).await;
    assert!(
        reason.contains("comm100.dlq") && !reason.contains("comm100.chat_ended"),
        "{reason}"
    );

    // A principal that may: the eight missing topics with the settings; the existing one
    // untouched, so the check that follows names the unequal counts.
    let (ok, out, said) = cli(&["topics", "ensure"], &plain);
    assert!(!ok, "{out}");
    assert_eq!(out.matches("created ").count(), 8, "{out}");
    assert!(
        out.contains("comm100.chat_ended                 3 partitions"),
        "{out}"
    );
    assert!(
        out.contains("comm100.dlq                        6 partitions"),
        "{out}"
    );
    assert!(
        said.contains("partition counts differ: 3 (comm100.chat_ended), 6 ("),
        "{said}"
    );
    let described = admin
        .describe_configs(
            [&ResourceSpecifier::Topic("comm100.dlq")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let dlq = described[0].as_ref().unwrap();
    assert_eq!(
        dlq.get("retention.ms").and_then(|e| e.value.as_deref()),
        Some("3600000")
    );
    let (_, again, _) = cli(&["topics", "ensure"], &plain);
    assert_eq!(again.matches("created ").count(), 0, "{again}");

    // The operator adds partitions: check passes, and serve turns ready.
    for result in admin
        .create_partitions(
            [&NewPartitions::new("comm100.chat_ended", 6)],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        result.unwrap();
    }
    // (the broker answers before its metadata shows the new partitions)
    eventually(
        Duration::from_secs(30),
        "6 partitions in the metadata",
        async || (kafka.partitions("comm100.chat_ended").len() == 6).then_some(()),
    )
    .await;
    let (ok, out, said) = cli(&["topics", "check"], &plain);
    assert!(ok, "{out}{said}");
    assert_eq!(out.matches("6 partitions").count(), 9, "{out}");
    let ready_after = wait_for_status(&readyz, StatusCode::OK, Duration::from_secs(30)).await;
    report(&format!(
        "kafka topics: ensure without Create refused naming the ACL, nothing created; with it 8 created (6 partitions, retention.ms), the 3-partition topic untouched and named by check; ready {:.1} s after the last fix",
        ready_after.as_secs_f64()
    ));
    bridge.signal("-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka; .ci/run runs it"]
async fn a_missing_topic_then_topics_ensure_then_dlq_redrive_puts_its_records_back_in_order() {
    let kafka = Kafka::start(&[
        "--brokers",
        "1",
        "--property",
        "auto.create.topics.enable=false",
    ]);
    kafka.topics(&[]);
    kafka.delete_topic("comm100.chat_ended").await;
    let (_work, config, bridge) = spooling_bridge(&kafka, "[topics]\npartitions = 3\n");
    let hook = webhook_url(&bridge);
    // Two chats' chat_ended events, interleaved: each dead-lettered (unknown_topic).
    let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for seq in 0..10 {
        let chat = format!("redrive-{}", seq % 2);
        let body = serde_json::json!({"event": "chat_ended", "chat": {"id": chat, "seq": seq}})
            .to_string();
        let answer = post(&hook, &[], body).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
        assert_eq!(answer.json["reason"], "unknown_topic", "{}", answer.text);
        sent.entry(chat)
            .or_default()
            .push(answer.json["id"].as_str().unwrap().to_owned());
    }
    let (ok, out, said) = cli(&["topics", "ensure"], &config);
    assert!(ok, "{out}{said}");
    assert!(out.contains("created comm100.chat_ended"), "{out}");

    let run = || {
        let (ok, out, said) = cli(&["dlq", "redrive"], &config);
        assert!(ok, "{said}");
        out
    };
    let first = run();
    assert!(first.contains("unknown_topic: 10 re-published"), "{first}");
    let records = consume_all(
        kafka.bootstrap(),
        "comm100.chat_ended",
        Duration::from_secs(30),
        |got| got.len() >= 10,
    );
    assert_eq!(records.len(), 10);
    for (chat, ids) in &sent {
        let mut of_chat: Vec<_> = records
            .iter()
            .filter(|r| r.key.as_deref() == Some(chat.as_str()))
            .collect();
        of_chat.sort_by_key(|r| r.offset);
        let got: Vec<&str> = of_chat
            .iter()
            .map(|r| r.value["id"].as_str().unwrap())
            .collect();
        assert_eq!(&got, ids, "{chat}: the records came back out of order");
        for record in of_chat {
            assert_eq!(record.header("ce_id"), record.value["id"].as_str());
            assert!(record.header("dlq_reason").is_none());
            assert!(record.header("traceparent").is_some());
        }
    }
    let second = run();
    assert!(second.contains("unknown_topic: 0 re-published"), "{second}");
    report("kafka: missing topic → 10 dead letters → topics ensure → dlq redrive: 10 back in their topic in per-chat order; a second run re-published 0");
    bridge.signal("-TERM");
}

/// Apicurio Registry of `tests/kafka/registry` (its Confluent-compatible API), stopped when
/// dropped; or the one at `COMM100_TEST_REGISTRY_URL`, which `.ci/run` starts once for all
/// (the tests use subjects of their own topic prefixes).
struct SchemaRegistry {
    dir: Option<tempfile::TempDir>,
    url: String,
}

impl SchemaRegistry {
    fn start() -> Self {
        if let Ok(url) = std::env::var("COMM100_TEST_REGISTRY_URL") {
            return Self { dir: None, url };
        }
        let dir = tempfile::Builder::new()
            .prefix("comm100-registry-")
            .tempdir()
            .unwrap();
        let output = run(Command::new(repo("tests/kafka/registry"))
            .arg("start")
            .arg("--dir")
            .arg(dir.path()));
        let url = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("URL=").map(str::to_owned))
            .expect("the registry script prints URL=");
        Self {
            dir: Some(dir),
            url,
        }
    }

    /// The subjects the registry holds of topics of `prefix`, sorted.
    async fn subjects(&self, prefix: &str) -> Vec<String> {
        let answer = get(&format!("{}/subjects", self.url)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let mut subjects: Vec<String> = serde_json::from_value(answer.json).unwrap();
        subjects.retain(|s| s.starts_with(&format!("{prefix}.")));
        subjects.sort();
        subjects
    }

    /// The id of the latest schema of `subject`.
    async fn latest_id(&self, subject: &str) -> u64 {
        let answer = get(&format!("{}/subjects/{subject}/versions/latest", self.url)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json["id"].as_u64().unwrap()
    }

    /// POSTs `schema` (a JSON Schema document) as a JSON schema to `path`.
    async fn post_schema(&self, path: &str, schema: &Value) -> Answer {
        let body = serde_json::json!({ "schemaType": "JSON", "schema": schema.to_string() });
        post(
            &format!("{}{path}", self.url),
            &[("content-type", "application/vnd.schemaregistry.v1+json")],
            body.to_string(),
        )
        .await
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(repo("tests/kafka/registry"))
                .arg("stop")
                .arg("--dir")
                .arg(dir.path())
                .run();
        }
    }
}

/// The schema subjects of the default configuration with `prefix`, sorted.
fn subjects_of(prefix: &str) -> Vec<String> {
    let mut config =
        comm100_bridge::config::Config::load_with_env(None, Some(Default::default())).unwrap();
    config.topics.prefix = prefix.to_owned();
    let mut subjects: Vec<String> = comm100_bridge::route::Router::new(&config.topics)
        .topics()
        .iter()
        .map(|t| format!("{t}-value"))
        .collect();
    subjects.sort();
    subjects
}

/// An address nothing listens on.
fn closed_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `comm100-bridge ARGS --config CONFIG`: whether it succeeded, its stdout and stderr, or
/// a panic when it runs for longer than 60 s (a bridge that should have refused to start).
async fn refused_or_timeout(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = bridge_command();
    command.args(args).arg("--config").arg(config);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || command.run().unwrap()),
    )
    .await
    .expect("the command ran for over 60 s: it did not refuse to start")
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apicurio Registry; .ci/run runs it"]
async fn schemas_register_registers_every_type_once_and_the_registry_refuses_an_incompatible_change(
) {
    let registry = SchemaRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let config = bridge_config(work.path(), "bridge", "127.0.0.1:9", false, "");

    // Every record type, once, with the mode asked for; a second run registers nothing.
    let (ok, out, err) = cli(
        &[
            "schemas",
            "register",
            "--registry",
            &registry.url,
            "--compatibility",
            "BACKWARD",
        ],
        &config,
    );
    assert!(ok, "{err}");
    assert!(out.contains("8 registered, 0 already registered"), "{out}");
    assert_eq!(registry.subjects("comm100").await, subjects_of("comm100"));
    let mut ids = BTreeMap::new();
    for subject in subjects_of("comm100") {
        let answer = get(&format!("{}/config/{subject}", registry.url)).await;
        assert_eq!(answer.json["compatibilityLevel"], "BACKWARD", "{subject}");
        ids.insert(subject.clone(), registry.latest_id(&subject).await);
        assert!(
            out.contains(&format!(
                "{subject}: registered, id {}, version 1, compatibility BACKWARD",
                ids[&subject]
            )),
            "{out}"
        );
    }
    let (ok, out, err) = cli(
        &["schemas", "register", "--registry", &registry.url],
        &config,
    );
    assert!(ok, "{err}");
    assert!(out.contains("0 registered, 8 already registered"), "{out}");
    for (subject, id) in &ids {
        assert_eq!(registry.latest_id(subject).await, *id, "{subject}");
    }

    // The registry itself refuses a change of the record format that breaks BACKWARD: the
    // record id as an integer cannot read the records written with it as a string.
    let schema: Value =
        serde_json::from_slice(&std::fs::read(repo("schemas/chat_ended.schema.json")).unwrap())
            .unwrap();
    let mut broken = schema.clone();
    broken["properties"]["id"] = serde_json::json!({ "type": "integer" });
    let refused = registry
        .post_schema("/subjects/comm100.chat_ended-value/versions", &broken)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert!(refused.text.contains("/properties/id"), "{}", refused.text);

    // A subject that holds a schema the bridge's would break: nothing is registered, and
    // the error names the subject. (Set up as an older record format under prefix acme.)
    let acme = bridge_config(
        work.path(),
        "acme",
        "127.0.0.1:9",
        false,
        "[topics]\nprefix = \"acme\"\n",
    );
    let mut older = schema;
    older["properties"]["id"] = serde_json::json!({ "type": "integer" });
    let answer = registry
        .post_schema("/subjects/acme.chat_ended-value/versions", &older)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let put = send(
        http::Request::put(format!("{}/config/acme.chat_ended-value", registry.url))
            .header("content-type", "application/json")
            .body(r#"{"compatibility":"BACKWARD"}"#.into())
            .unwrap(),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let (ok, out, err) = cli(&["schemas", "register", "--registry", &registry.url], &acme);
    assert!(!ok, "{out}");
    assert!(
        err.contains("incompatible")
            && err.contains("acme.chat_ended-value")
            && err.contains("nothing was registered"),
        "{err}"
    );
    let acme_subjects = registry.subjects("acme").await;
    assert_eq!(
        acme_subjects,
        ["acme.chat_ended-value"],
        "no partial registration"
    );

    // A wrong URL (the registry's root, not its Confluent-compatible API) and no registry.
    let root = registry.url.trim_end_matches("/apis/ccompat/v7");
    let (ok, _, err) = cli(&["schemas", "register", "--registry", root], &config);
    assert!(!ok);
    assert!(
        err.contains("is not a Confluent-compatible schema registry API")
            && err.contains("/apis/ccompat/v7"),
        "{err}"
    );
    let closed = format!("http://{}", closed_addr());
    let (ok, _, err) = cli(&["schemas", "register", "--registry", &closed], &config);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot reach the schema registry at {closed}")),
        "{err}"
    );
    report(
        "kafka: schemas register: 8 subjects registered in Apicurio Registry with BACKWARD, none \
         again on a second run; an incompatible change refused by the registry (409); an \
         incompatible existing subject registered nothing",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka and Apicurio Registry; .ci/run runs it"]
async fn json_sr_records_of_every_type_are_read_by_confluent_kafkas_schema_registry_deserializer() {
    let kafka = Kafka::shared();
    kafka.topics(&["--prefix", "framed"]);
    let registry = SchemaRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let registry_toml =
        |url: &str| format!("[topics]\nprefix = \"framed\"\n[schema_registry]\nurl = \"{url}\"\n");
    let config = bridge_config(
        work.path(),
        "bridge",
        kafka.bootstrap(),
        true,
        &registry_toml(&registry.url),
    );
    let json_sr = [("COMM100_BRIDGE__KAFKA__VALUE_FORMAT", "json_sr")];

    // Never a silently unframed record: without the registry, or before the schemas are
    // registered, the bridge does not start and says what to do.
    let down = bridge_config(
        work.path(),
        "down",
        kafka.bootstrap(),
        true,
        &registry_toml(&format!("http://{}", closed_addr())),
    );
    let (ok, err) = refused_or_timeout(&["serve"], &down, &json_sr).await;
    assert!(!ok);
    assert!(
        err.contains("cannot reach the schema registry") && err.contains("schema_registry.url"),
        "{err}"
    );
    let (ok, err) = refused_or_timeout(&["serve"], &config, &json_sr).await;
    assert!(!ok);
    assert!(
        err.contains("framed.offline_message_submitted-value")
            && err.contains("comm100-bridge schemas register"),
        "{err}"
    );
    let (ok, _, err) = cli(&["schemas", "register"], &config);
    assert!(ok, "{err}");

    let bridge = Process::start_with_env(&config, &json_sr);
    let hook = webhook_url(&bridge);
    let mut posted = BTreeMap::new();
    let mut bodies: Vec<Vec<u8>> = samples()
        .iter()
        .map(|s| std::fs::read(s).unwrap())
        .collect();
    bodies.push(br#"{"event":"chat_rated","chat_id":"c-1","rating":5}"#.to_vec());
    for body in bodies {
        let answer = post(&hook, &[], body).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        posted.insert(answer.json["id"].as_str().unwrap().to_owned(), answer.json);
    }

    // A consumer this project did not write: confluent-kafka's schema-registry JSON
    // deserializer fetches each record's schema by the id in its frame and validates it.
    let python = std::env::var("KAFKA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut subjects = BTreeMap::new();
    for subject in subjects_of("framed") {
        subjects.insert(subject.clone(), registry.latest_id(&subject).await);
    }
    let topics: Vec<&str> = subjects
        .keys()
        .map(|s| s.trim_end_matches("-value"))
        .collect();
    let output = Command::new(&python)
        .arg(repo("tests/kafka/schema_registry_reader.py"))
        .arg(&registry.url)
        .arg(kafka.bootstrap())
        .arg(posted.len().to_string())
        .args(&topics)
        .run()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "the schema-registry reader failed (KAFKA_TEST_PYTHON={python}):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut types = std::collections::BTreeSet::new();
    let mut read = 0;
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let id = record["id"].as_str().unwrap();
        let answer = &posted[id];
        assert_eq!(record["topic"], answer["topic"], "{id}");
        assert_eq!(record["offset"], answer["offset"], "{id}");
        let topic = record["topic"].as_str().unwrap();
        assert_eq!(
            record["schema_id"],
            subjects[&format!("{topic}-value")],
            "{id}"
        );
        types.insert(record["type"].as_str().unwrap().to_owned());
        read += 1;
    }
    assert_eq!(read, posted.len());
    assert_eq!(
        types.len(),
        8,
        "every record type, unknown included: {types:?}"
    );
    report(&format!(
        "kafka: json_sr: {read} records of 8 types framed with their schema ids and read by \
         confluent-kafka's schema-registry JSON deserializer; the bridge refused to start \
         with the registry down and with the schemas unregistered"
    ));
    bridge.signal("-TERM");
}

/// An RFC 3339 time `minutes` from `base`.
fn at(base: chrono::DateTime<chrono::Utc>, minutes: i64) -> String {
    (base + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Maven for Apache Kafka; .ci/run runs it"]
async fn backfill_publishes_exactly_what_the_webhooks_missed_resumes_and_then_publishes_nothing() {
    let kafka = Kafka::shared();
    kafka.topics(&["--prefix", "recovered"]);
    let comm100 = FakeComm100::start().await;
    let (work, config, bridge) = spooling_bridge(&kafka, "[topics]\nprefix = \"recovered\"\n");
    let hook = webhook_url(&bridge);

    // The window: from three hours ago to one hour ago.
    let base = chrono::Utc::now() - chrono::Duration::hours(3);
    let (from, to) = (at(base, 0), at(base, 120));
    let guid = |name: &str| format!("{name}-0000-4000-8000-{:012}", name.len());
    {
        let mut s = comm100.state.lock().unwrap();
        // m1..m3 in the window, m4 after it.
        for (i, minutes) in [(1, 10), (2, 20), (3, 30), (4, 150)] {
            s.offline_messages.push(serde_json::json!({
                "id": i, "guid": guid(&format!("m{i}")), "createdTime": at(base, minutes),
                "subject": "Call back", "message": format!("message {i}"), "name": "Ann",
                "email": "ann@example.com", "departmentId": 7, "visitorId": 100 + i
            }));
        }
        // c0 ended before the window; c5 started before it and ended in it; c3 comes
        // without its guid (GET livechat/chats/3 has it); c1 and c2 have wrap-ups.
        for (i, start, end, wrapup) in [
            (0, -120, -60, false),
            (1, 5, 15, true),
            (2, 10, 25, true),
            (3, 20, 40, false),
            (4, 30, 50, false),
            (5, -60, 12, false),
        ] {
            let mut chat = serde_json::json!({
                "id": i, "startTime": at(base, start), "endTime": at(base, end),
                "preChatName": "Ann", "waitingTime": 4, "status": "normal",
                "messages": [{"senderName": "Walid", "content": format!("hello {i}")}],
                "chatAgents": [{"agent": {"displayName": "Walid"}}],
            });
            if i != 3 {
                chat["guid"] = guid(&format!("c{i}")).into();
            }
            if wrapup {
                chat["chatWrapup"] = serde_json::json!({
                    "categoriesName": "Support", "comment": "done", "fields": [],
                    "time": at(base, end + 2)
                });
            }
            s.chats.push(chat);
        }
        s.guids.push(("3".into(), guid("c3")));
    }

    // The webhooks that arrived: c1 and c2 ended, c1 wrapped up, m1.
    let webhook_bodies = [
        serde_json::json!({"event": "chat_ended", "chat": {"id": guid("c1"), "end_time": at(base, 15)}}),
        serde_json::json!({"event": "chat_ended", "chat": {"id": guid("c2"), "end_time": at(base, 25)}}),
        serde_json::json!({"event": "chat_wrapped_up", "chat_id": guid("c1"), "wrapup": {"category": "Support", "time": at(base, 17)}}),
        serde_json::json!({"event": "offline_message_submitted", "offline_message": {"id": guid("m1"), "time": at(base, 10)}}),
    ];
    for body in &webhook_bodies {
        let answer = post(&hook, &[], body.to_string()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    bridge.signal("-TERM");

    let checkpoint = work.path().join("backfill.json");
    let backfill = |extra: &[&str]| {
        let mut args = vec![
            "backfill",
            "--from",
            &from,
            "--to",
            &to,
            "--page-size",
            "2",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut command = bridge_command();
        command.args(&args).arg("--config").arg(&config);
        outcome(command.envs(comm100.env()))
    };

    // A dry run names the six missing records and publishes none.
    let (ok, out, err) = backfill(&["--dry-run"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("would publish ").count(), 6, "{out}");
    for id in ["c3", "c4", "c5"] {
        assert!(
            out.contains(&format!("would publish chat_ended {}", guid(id))),
            "{out}"
        );
    }
    assert!(
        out.contains(&format!("would publish chat_wrapped_up {}", guid("c2"))),
        "{out}"
    );
    assert!(out.contains("chat_ended: 5 in Comm100's API for the window, 2 already in their topic, 3 would be published"), "{out}");
    assert_eq!(kafka.records_in("recovered.chat_ended"), 2);
    assert!(!checkpoint.exists(), "a dry run keeps no checkpoint");

    // Interrupted at the second page of chats (Comm100 refuses it): the offline messages
    // are published and the checkpoint remembers the pages done.
    comm100.state.lock().unwrap().fail = Some(("chats:Search?pageIndex=2".into(), 401));
    let (ok, out, err) = backfill(&[]);
    assert!(!ok, "{out}");
    assert!(err.contains("comm100.api_key"), "{err}");
    assert_eq!(
        out.matches("published offline_message_submitted").count(),
        2,
        "{out}"
    );
    assert_eq!(kafka.records_in("recovered.offline_message_submitted"), 3);
    assert!(checkpoint.exists());

    // Resumed: no offline message page and no first chat page asked again.
    comm100.state.lock().unwrap().fail = None;
    let offline_searches = comm100.requests("POST /v4/livechat/offlineMessages:search");
    let first_pages = comm100.requests("POST /v4/livechat/chats:Search?pageIndex=1");
    let (ok, out, err) = backfill(&[]);
    assert!(ok, "{err}");
    assert!(out.contains("continuing from"), "{out}");
    assert_eq!(
        comm100.requests("POST /v4/livechat/offlineMessages:search"),
        offline_searches
    );
    assert_eq!(
        comm100.requests("POST /v4/livechat/chats:Search?pageIndex=1"),
        first_pages
    );
    assert_eq!(out.matches("published chat_ended").count(), 3, "{out}");
    assert_eq!(out.matches("published chat_wrapped_up").count(), 1, "{out}");
    assert!(
        comm100.requests("GET /v4/livechat/chats/3") >= 1,
        "the chat without guid is looked up"
    );
    assert!(!checkpoint.exists(), "a finished run leaves no checkpoint");

    // Exactly the missing ones are in the topics, each once, valid, marked as backfilled.
    let expected = [
        ("chat_ended", vec!["c1", "c2", "c3", "c4", "c5"]),
        ("chat_wrapped_up", vec!["c1", "c2"]),
        ("offline_message_submitted", vec!["m1", "m2", "m3"]),
    ];
    for (kind, names) in &expected {
        let topic = format!("recovered.{kind}");
        assert_eq!(kafka.records_in(&topic), names.len() as i64, "{topic}");
        let records = consume_all(kafka.bootstrap(), &topic, Duration::from_secs(30), |r| {
            r.len() >= names.len()
        });
        let schema = validator(kind);
        let mut ids: Vec<String> = Vec::new();
        for record in &records {
            let value = &record.value;
            assert!(schema.is_valid(value), "{topic}: {value}");
            let id = match *kind {
                "offline_message_submitted" => value["offline_message"]["id"].as_str(),
                _ => value["chat_id"].as_str(),
            }
            .unwrap()
            .to_owned();
            assert_eq!(
                record.key.as_deref(),
                Some(id.as_str()),
                "keyed as a webhook's record"
            );
            let webhook = webhook_bodies
                .iter()
                .any(|b| b.to_string().contains(&id) && b["event"] == *kind);
            assert_eq!(
                value["origin"],
                if webhook { "webhook" } else { "backfill" },
                "{value}"
            );
            assert_eq!(record.header("ce_id"), value["id"].as_str());
            ids.push(id);
        }
        ids.sort();
        let mut wanted: Vec<String> = names.iter().map(|n| guid(n)).collect();
        wanted.sort();
        assert_eq!(ids, wanted, "{topic}");
    }
    let c5 = consume_all(
        kafka.bootstrap(),
        "recovered.chat_ended",
        Duration::from_secs(30),
        |r| r.len() >= 5,
    )
    .into_iter()
    .find(|r| r.value["chat_id"] == guid("c5").as_str())
    .unwrap();
    assert_eq!(
        c5.value["occurred_at"].as_str(),
        Some(at(base, 12).as_str())
    );
    assert_eq!(
        c5.value["chat"]["transcript"],
        serde_json::json!(["Walid: hello 5"])
    );

    // A second run over the same window publishes nothing.
    let (ok, out, err) = backfill(&[]);
    assert!(ok, "{err}");
    assert!(
        !out.contains("published chat") && !out.contains("published offline"),
        "{out}"
    );
    assert!(
        out.contains(
            "chat_ended: 5 in Comm100's API for the window, 5 already in their topic, 0 published"
        ),
        "{out}"
    );
    report(
        "kafka: backfill: of 10 events in the window, the 6 no webhook delivered published \
         with origin backfill; an interrupted run resumed from its checkpoint; a second run \
         published nothing",
    );
}
