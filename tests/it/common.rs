//! Shared test harness: a bridge on port 0 against an in-process mock Kafka cluster, an HTTP
//! client and a consumer that reads back exactly what a 200 answer points at.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use comm100_bridge::config::{Config, Secret};
use comm100_bridge::route::Router;
use comm100_bridge::{serve, Listeners, ServeError};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-token-0123456789";
pub const PARTITIONS: i32 = 3;

/// Forking copies every descriptor of this process until the child has exec'd and closed
/// its close-on-exec ones, the mock brokers' listening sockets included. A broker taken
/// down closes its listener and binds the same port again at once; if a child still holds
/// the old listener, that bind fails and librdkafka aborts the whole test binary. So a
/// spawn ([`Spawn`]) and a broker going down or up ([`Cluster`]) never overlap.
/// `clippy.toml` forbids the unguarded calls.
static FORKING: RwLock<()> = RwLock::new(());

fn forking() -> RwLockReadGuard<'static, ()> {
    FORKING.read().unwrap_or_else(PoisonError::into_inner)
}

/// The sockets (`socket:[inode]`) among the descriptors in `fd_dir`; `None` once the
/// process is gone.
fn sockets(fd_dir: &str) -> Option<HashSet<String>> {
    let entries = std::fs::read_dir(fd_dir).ok()?;
    Some(
        entries
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.starts_with("socket:"))
            .collect(),
    )
}

/// This process's sockets that a child must not keep: those marked close-on-exec (the mock
/// brokers' listeners among them).
fn close_on_exec_sockets() -> HashSet<String> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            let cloexec = u32::from_str_radix(flags.trim(), 8).ok()? & 0o2_000_000 != 0;
            (cloexec && target.starts_with("socket:")).then_some(target)
        })
        .collect()
}

/// A mock cluster whose brokers go down and up only while no child is being spawned.
pub struct Cluster(MockCluster<'static, DefaultProducerContext>);

impl Cluster {
    #[allow(clippy::disallowed_methods)]
    pub fn broker_down(&self, broker_id: i32) -> rdkafka::error::KafkaResult<()> {
        let _alone = FORKING.write().unwrap_or_else(PoisonError::into_inner);
        self.0.broker_down(broker_id)
    }

    #[allow(clippy::disallowed_methods)]
    pub fn broker_up(&self, broker_id: i32) -> rdkafka::error::KafkaResult<()> {
        let _alone = FORKING.write().unwrap_or_else(PoisonError::into_inner);
        self.0.broker_up(broker_id)
    }
}

impl std::ops::Deref for Cluster {
    type Target = MockCluster<'static, DefaultProducerContext>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// `Command`'s spawning methods, each while no mock broker is going down or up.
pub trait Spawn {
    fn spawn_child(&mut self) -> std::io::Result<Child>;
    /// Like `Command::output`: standard input closed, output and errors captured.
    fn run(&mut self) -> std::io::Result<Output>;
    /// Like `Command::status`: the child's standard streams are this process's.
    fn run_status(&mut self) -> std::io::Result<ExitStatus>;
}

impl Spawn for Command {
    #[allow(clippy::disallowed_methods)]
    fn spawn_child(&mut self) -> std::io::Result<Child> {
        let _spawning = forking();
        let ours = close_on_exec_sockets();
        let child = self.spawn()?;
        // `spawn` returns once the child execs, and Linux closes the child's close-on-exec
        // descriptors just after that: until then it still holds this process's listeners.
        let fds = format!("/proc/{}/fd", child.id());
        while sockets(&fds).is_some_and(|held| !held.is_disjoint(&ours)) {
            std::thread::yield_now();
        }
        Ok(child)
    }

    fn run(&mut self) -> std::io::Result<Output> {
        self.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_child()?
            .wait_with_output()
    }

    fn run_status(&mut self) -> std::io::Result<ExitStatus> {
        self.spawn_child()?.wait()
    }
}

/// A mock cluster with every bridge topic created.
pub fn cluster() -> Cluster {
    cluster_of(1)
}

/// A mock cluster of `brokers` brokers with every bridge topic created.
pub fn cluster_of(brokers: i32) -> Cluster {
    let cluster = Cluster(MockCluster::new(brokers).unwrap());
    for topic in Router::new(
        &Config::load_with_env(None, Some(Default::default()))
            .unwrap()
            .topics,
    )
    .topics()
    {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    cluster
}

/// Defaults (no environment), pointed at `bootstrap`, with [`TOKEN`] and a fresh spool
/// directory of its own (removed by [`Bridge::stop`]).
pub fn config(bootstrap: &str) -> Config {
    let mut c = Config::load_with_env(None, Some(Default::default())).unwrap();
    c.kafka.brokers = vec![bootstrap.to_owned()];
    c.auth.tokens = vec![Secret::new(TOKEN)];
    c.log.level = "warn".into();
    c.spool.dir = spool_dir();
    c
}

/// A new, empty directory for a spool, under the system temp dir.
pub fn spool_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("comm100-bridge-test-spool-")
        .tempdir()
        .unwrap()
        .keep()
}

/// A running bridge; stop it with [`Bridge::stop`].
pub struct Bridge {
    pub addr: SocketAddr,
    /// The admin listener's address, when `admin.listen` is not `""`.
    pub admin_addr: Option<SocketAddr>,
    spool_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServeError>>,
}

impl Bridge {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = match config.admin.listen {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let admin_addr = admin.as_ref().map(|a| a.local_addr().unwrap());
        let listeners = Listeners {
            webhook: listener,
            admin,
        };
        let spool_dir = config.spool.dir.clone();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(serve(config, listeners, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            admin_addr,
            spool_dir,
            shutdown: Some(tx),
            handle,
        }
    }

    /// Signals shutdown and returns what `serve` returned; removes a test spool directory.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        let _ = self.shutdown.take().unwrap().send(());
        self.join().await
    }

    /// Signals shutdown without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `serve` to return; removes a test spool directory.
    pub async fn join(self) -> Result<(), ServeError> {
        let result = self.handle.await.unwrap();
        let name = self
            .spool_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if name.starts_with("comm100-bridge-test-spool-") {
            let _ = std::fs::remove_dir_all(&self.spool_dir);
        }
        result
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// A URL on the admin listener (the webhook listener when there is none).
    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr.unwrap_or(self.addr), path)
    }
}

/// An HTTP answer with its body parsed as JSON (Null when it is not JSON).
#[derive(Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    let response = match client().request(request).await {
        Ok(response) => response,
        Err(e) => panic!("no answer: {e:?}"),
    };
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
    let mut b = Request::post(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(body.into())).unwrap()).await
}

/// Posts `body` on a new connection; the error when the bridge could not be reached.
pub async fn try_post(url: &str, body: String) -> Result<Answer, String> {
    let request = http::Request::post(url)
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = client()
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        headers: Default::default(),
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

pub async fn get(url: &str) -> Answer {
    send(Request::get(url).body(Full::new(Bytes::new())).unwrap()).await
}

/// A consumer for assigning partitions by hand (no group membership is used).
fn test_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "comm100-bridge-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// Every record of `topic` (all partitions, from the beginning) until `done` says so or
/// `bound` passes.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    bound: Duration,
    mut done: impl FnMut(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    let consumer = test_consumer(bootstrap);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    assert!(tpl.count() > 0, "{topic} has no partitions");
    consumer.assign(&tpl).unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    while !done(&out) && started.elapsed() < bound {
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            out.push(Consumed::from(&result.unwrap()));
        }
    }
    out
}

/// Reads the single record at `topic`/`partition`/`offset`.
pub fn consume_at(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> Consumed {
    let consumer = test_consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    for _ in 0..100 {
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            return Consumed::from(&result.unwrap());
        }
    }
    panic!("no record at {topic}/{partition}@{offset} within 10 s");
}

/// Reads the record a 200 answer points at (its `topic`, `partition` and `offset`).
pub fn consume_answered(bootstrap: &str, answer: &Answer) -> Consumed {
    let j = &answer.json;
    consume_at(
        bootstrap,
        j["topic"].as_str().expect("a 200 answer names the topic"),
        j["partition"]
            .as_i64()
            .expect("a 200 answer names the partition") as i32,
        j["offset"].as_i64().expect("a 200 answer names the offset"),
    )
}

/// A consumed Kafka record.
#[derive(Debug)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// The record's timestamp (the producer's create time), in ms.
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, String)>,
    pub value: Value,
    pub raw: Vec<u8>,
}

impl From<&BorrowedMessage<'_>> for Consumed {
    fn from(m: &BorrowedMessage<'_>) -> Self {
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8(k.to_vec()).unwrap()),
            timestamp: m.timestamp().to_millis(),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            value: serde_json::from_slice(m.payload().unwrap()).unwrap_or(Value::Null),
            raw: m.payload().unwrap_or_default().to_vec(),
        }
    }
}

impl Consumed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Appends a line to `target/tmp/test-report.txt`, which `.ci/run` prints.
pub fn report(line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-report.txt");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// A value in a Prometheus exposition: one series, named as exposed (`name{label="v"}`), or
/// for a bare name the sum over its series.
pub fn metric(exposition: &str, selector: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next();
            let chosen = match selector.contains('{') {
                true => series == selector,
                false => name == Some(selector),
            };
            chosen.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// `path` in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn fixtures_dir() -> PathBuf {
    repo("tests/fixtures")
}

/// The documents of a multi-document YAML text, empty ones left out.
pub fn yaml_documents(text: &str) -> Vec<serde_yaml_ng::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| <serde_yaml_ng::Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Every sample payload (not the `.expected.json` golden records).
pub fn samples() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".json") && !name.ends_with(".expected.json")
        })
        .collect();
    paths.sort();
    paths
}

/// Polls `check` until it gives a value, failing the test after `bound` with `what` it
/// waited for.
pub async fn eventually<T>(
    bound: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `url` until it answers `status`, up to `bound`; how long that took.
pub async fn wait_for_status(url: &str, status: StatusCode, bound: Duration) -> Duration {
    let started = Instant::now();
    eventually(bound, &format!("{url} answering {status}"), async || {
        (get(url).await.status == status).then_some(())
    })
    .await;
    started.elapsed()
}

/// The real binary as a child process.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin listener's address, when it is on.
    pub admin_addr: Option<SocketAddr>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    pub fn start(config_file: &Path) -> Self {
        Self::start_with_env(config_file, &[])
    }

    /// Starts `serve --config config_file` with `env` added to its environment.
    pub fn start_with_env(config_file: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_comm100-bridge"))
            .args(["serve", "--config"])
            .arg(config_file)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn_child()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        let addr = loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "the bridge did not report its address:\n{}",
                        seen.join("\n")
                    )
                });
            seen.push(line.clone());
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "comm100-bridge listening" {
                let admin = v["fields"]["admin"].as_str().unwrap().parse().ok();
                break (
                    v["fields"]["addr"].as_str().unwrap().parse().unwrap(),
                    admin,
                );
            }
        };
        let (addr, admin_addr) = addr;
        Self {
            child,
            addr,
            admin_addr,
            lines,
            seen,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A URL on the admin listener (the webhook listener when there is none).
    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr.unwrap_or(self.addr), path)
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .run_status()
            .unwrap();
        assert!(ok.success());
    }

    /// Peak resident memory (VmHWM) of the process, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// Log lines so far.
    pub fn log(&mut self) -> Vec<String> {
        self.seen.extend(self.lines.try_iter());
        self.seen.clone()
    }
}

/// A test that fails must not leave its bridge running.
impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes `bridge.toml` in `dir` for a child bridge: port 0, [`TOKEN`], `bootstrap`, the
/// spool in `spool`, a short delivery deadline, fast reconnects, JSON logs; plus each
/// `(table, "key = value")` of `settings`.
pub fn write_config(
    dir: &Path,
    bootstrap: &str,
    spool: &Path,
    settings: &[(&str, &str)],
) -> PathBuf {
    let mut tables: Vec<(String, Vec<String>)> = [
        ("http", vec![r#"listen = "127.0.0.1:0""#.to_owned()]),
        ("admin", vec![r#"listen = "127.0.0.1:0""#.to_owned()]),
        ("auth", vec![format!(r#"tokens = ["{TOKEN}"]"#)]),
        ("kafka", vec![format!(r#"brokers = ["{bootstrap}"]"#)]),
        (
            "kafka.properties",
            vec![
                r#""reconnect.backoff.ms" = "50""#.to_owned(),
                r#""reconnect.backoff.max.ms" = "500""#.to_owned(),
            ],
        ),
        ("delivery", vec!["deadline_ms = 1500".to_owned()]),
        (
            "spool",
            vec![
                format!(r#"dir = "{}""#, spool.display()),
                "append_budget_ms = 500".to_owned(),
            ],
        ),
        (
            "log",
            vec![
                r#"format = "json""#.to_owned(),
                r#"level = "info""#.to_owned(),
            ],
        ),
    ]
    .into_iter()
    .map(|(t, lines)| (t.to_owned(), lines))
    .collect();
    for (table, line) in settings {
        match tables.iter_mut().find(|(t, _)| t == table) {
            Some((_, lines)) => lines.push((*line).to_owned()),
            None => tables.push(((*table).to_owned(), vec![(*line).to_owned()])),
        }
    }
    let toml: String = tables
        .iter()
        .map(|(table, lines)| format!("[{table}]\n{}\n", lines.join("\n")))
        .collect();
    let path = dir.join("bridge.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Rewrites `path` with `text`, keeping its modification time, so that only SIGHUP (not
/// the file watch) can notice.
pub fn rewrite_unnoticed(path: &Path, text: &str) {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

/// A valid event whose record is over the producer's default `message.max.bytes`
/// (1,000,000).
pub fn oversized_event(chat: &str) -> String {
    // Each `a\n` (3 bytes) becomes a transcript line `"a",` (4 bytes): a 750 KB body that
    // fits http.max_body_bytes makes a record over message.max.bytes.
    json!({
        "event": "chat_transferred",
        "visitor": {"chat_id": chat},
        "chat": {"chat_transcript": "a\n".repeat(250_000)},
        "seq": 0,
    })
    .to_string()
}

/// Finds the dead-letter envelope of record `id`, meant for `topic` and larger than
/// `larger_than` bytes, in the dead-letter topic, and checks its fields and headers.
pub fn assert_envelope(bootstrap: &str, id: &str, topic: &str, larger_than: u64) -> Consumed {
    let dlq = consume_all(bootstrap, "comm100.dlq", Duration::from_secs(30), |got| {
        got.iter().any(|r| r.value["id"] == id)
    });
    let letter = dlq
        .into_iter()
        .find(|r| r.value["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in the dead-letter topic"));
    let v = &letter.value;
    assert_eq!(letter.header("dlq_reason"), Some("record_too_large"));
    assert_eq!(letter.header("dlq_original_topic"), Some(topic));
    assert_eq!(letter.header("ce_id"), Some(id));
    assert_eq!(v["dlq_reason"], "record_too_large");
    assert_eq!(v["original_topic"], topic);
    let original = v["original_bytes"].as_u64().unwrap();
    assert!(original > larger_than, "{original}");
    let prefix = v["body_prefix"].as_str().unwrap();
    assert!(prefix.starts_with("{\"schema_version\":1,"), "{prefix:.80}");
    assert_eq!(prefix.len() as u64, original.min(64 << 10));
    assert!(letter.raw.len() < 100 << 10, "{}", letter.raw.len());
    letter
}

/// Posts without pause, each request on a new connection, across a SIGTERM to `bridge`
/// (whose `http.shutdown_delay_ms` is `delay`) until a connection is refused. Checks that
/// no connection was refused and every request was answered 2xx until the delay passed,
/// that `/readyz` answered 503 meanwhile, and that the bridge exited 0. Returns what was
/// acknowledged and a summary.
pub async fn post_across_sigterm(mut bridge: Process, delay: Duration) -> (Acked, String) {
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    let readyz = bridge.admin("/readyz");
    assert!(post(&hook, &[], event("warm-up", 0))
        .await
        .status
        .is_success());

    // One client posts without pause, each request on a new connection, until refused.
    let poster = tokio::spawn(async move {
        let mut answers = Vec::new();
        for seq in 1.. {
            let result = try_post(&hook, event("rolling", seq)).await;
            let refused = result.is_err();
            answers.push((tokio::time::Instant::now(), seq, result));
            if refused {
                return answers;
            }
        }
        unreachable!()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = tokio::time::Instant::now();
    bridge.signal("-TERM");
    // Readiness turns 503 once the process has handled the signal, and stays 503.
    let mut readiness = Vec::new();
    while signalled.elapsed() < delay - Duration::from_millis(300) {
        if let Ok(answer) = tokio::time::timeout(Duration::from_secs(1), get(&readyz)).await {
            readiness.push((signalled.elapsed(), answer.status));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let turned = readiness
        .iter()
        .position(|(_, s)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .unwrap_or_else(|| panic!("/readyz never answered 503: {readiness:?}"));
    assert!(
        readiness[turned].0 < Duration::from_secs(1),
        "/readyz turned 503 only {:?} after SIGTERM",
        readiness[turned].0
    );
    let readiness: Vec<StatusCode> = readiness[turned..].iter().map(|(_, s)| *s).collect();
    let answers = poster.await.unwrap();
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));

    let (refused_at, _, refusal) = answers.last().unwrap();
    assert!(refusal.is_err());
    assert!(
        *refused_at >= signalled + delay,
        "a connection was refused {:?} after SIGTERM, within the {delay:?} delay",
        refused_at.duration_since(signalled)
    );
    let mut acked = Acked::default();
    let mut during = 0;
    for (at, seq, result) in &answers[..answers.len() - 1] {
        let answer = result.as_ref().unwrap();
        assert!(answer.status.is_success(), "{seq}: {}", answer.text);
        if *at > signalled {
            during += 1;
        }
        acked.record("rolling", *seq, Some(answer.clone()));
    }
    assert!(
        during > 10,
        "only {during} requests answered during the delay"
    );
    assert!(!readiness.is_empty());
    assert!(
        readiness
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{readiness:?}"
    );
    let summary = format!(
        "{during} requests answered 2xx during the {delay:?} delay after SIGTERM, /readyz 503 \
         in all {} polls once the signal was handled ({turned} earlier), first refused \
         connection {} ms after SIGTERM, exit 0",
        readiness.len(),
        refused_at.duration_since(signalled).as_millis()
    );
    (acked, summary)
}

/// The event a sender posts: `seq` orders the events of one chat.
pub fn event(chat: &str, seq: usize) -> String {
    json!({"event": "chat_transferred", "visitor": {"chat_id": chat}, "seq": seq}).to_string()
}

/// What the senders were told: id → (chat, seq) for every 2xx.
#[derive(Default)]
pub struct Acked {
    pub ids: HashMap<String, (String, u64)>,
    pub statuses: HashMap<u16, usize>,
    pub sent: usize,
}

impl Acked {
    /// Adds what another sender was told.
    pub fn merge(&mut self, other: Acked) {
        self.ids.extend(other.ids);
        self.sent += other.sent;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
    }

    pub fn record(&mut self, chat: &str, seq: usize, answer: Option<Answer>) {
        self.sent += 1;
        let Some(answer) = answer else {
            *self.statuses.entry(0).or_default() += 1;
            return;
        };
        *self.statuses.entry(answer.status.as_u16()).or_default() += 1;
        if answer.status.is_success() {
            let id = answer.json["id"].as_str().unwrap().to_owned();
            self.ids.insert(id, (chat.to_owned(), seq as u64));
        }
    }
}

/// Consumes `topic` until every acknowledged id is found, reports the counts, and with
/// `ordered` (each chat's events were posted one after another) checks per-chat order on
/// every copy: a duplicate may follow its original at once, never a later event of its
/// chat. Returns how many duplicates of acknowledged records the topic holds.
pub fn verify(test: &str, bootstrap: &str, topic: &str, acked: &Acked, ordered: bool) -> usize {
    let wanted: HashSet<&str> = acked.ids.keys().map(String::as_str).collect();
    // Counted as records arrive: rescanning every record at each poll is quadratic.
    let (mut found, mut scanned) = (HashSet::new(), 0);
    let records = consume_all(bootstrap, topic, Duration::from_secs(60), |got| {
        for r in &got[scanned..] {
            if let Some(id) = r.value["id"].as_str().filter(|id| wanted.contains(id)) {
                found.insert(id.to_owned());
            }
        }
        scanned = got.len();
        found.len() == wanted.len()
    });
    let mut seen = HashSet::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut duplicates = 0;
    // Records answered with something other than 2xx may be in Kafka all the same (a
    // broker can write a record whose acknowledgement came too late); they are owed
    // nothing and not part of the order checked.
    let mut unacknowledged = 0;
    for r in &records {
        let id = r.value["id"].as_str().unwrap();
        if !wanted.contains(id) {
            unacknowledged += 1;
            continue;
        }
        let copy = !seen.insert(id.to_owned());
        duplicates += usize::from(copy);
        let chat = r.key.clone().unwrap();
        assert_eq!(r.value["chat_id"].as_str(), Some(chat.as_str()));
        let seq = r.value["extra"]["seq"].as_u64().unwrap();
        if let Some(prev) = last_seq.insert(chat.clone(), seq).filter(|_| ordered) {
            assert!(
                prev < seq || (copy && prev == seq),
                "{test}: chat {chat}: seq {seq}{} arrived after {prev}",
                if copy { " (a copy)" } else { "" }
            );
        }
    }
    let missing: Vec<&&str> = wanted.iter().filter(|id| !seen.contains(**id)).collect();
    let mut statuses: Vec<_> = acked.statuses.iter().collect();
    statuses.sort();
    report(&format!(
        "{test}: sent {}, 2xx {}, found in Kafka {}, missing {}, duplicates {duplicates}, statuses {statuses:?}, other records in the topic {unacknowledged}",
        acked.sent,
        acked.ids.len(),
        wanted.len() - missing.len(),
        missing.len(),
    ));
    assert!(
        missing.is_empty(),
        "{test}: {} acknowledged ids never reached Kafka",
        missing.len()
    );
    duplicates
}

pub async fn wait_until(mut condition: impl FnMut() -> bool, bound: Duration) {
    eventually(bound, "condition", async || condition().then_some(())).await
}

/// Polls the exposition at `url` until `name` (summed over its series) is `value`.
pub async fn wait_for_metric(url: &str, name: &str, value: f64, bound: Duration) {
    eventually(bound, &format!("{name} reaching {value}"), async || {
        (metric(&get(url).await.text, name) == value).then_some(())
    })
    .await
}

/// The JSON Schema of records of type `kind`, from `schemas/`, checking formats.
pub fn validator(kind: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/{kind}.schema.json"));
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
