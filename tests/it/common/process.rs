//! The real binary as a child process, and its configuration file.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use http::StatusCode;
use serde_json::Value;

use super::*;

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

    /// The bridge's own ERROR lines so far, as JSON (not librdkafka's, which report the
    /// Kafka trouble tests make).
    pub fn errors(&mut self) -> Vec<Value> {
        self.log()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| v["level"] == "ERROR")
            .filter(|v| {
                v["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("comm100_bridge"))
            })
            .collect()
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

/// The bridge's binary, with none of the tests' own `COMM100_BRIDGE__*` or `RUST_LOG`
/// variables: the tests' environment must not leak configuration into it.
pub fn bridge_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_comm100-bridge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COMM100_BRIDGE__") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `command` to its end: whether it succeeded, its standard output and its errors.
pub fn outcome(command: &mut Command) -> (bool, String, String) {
    let out = command.run().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`outcome`] off the async runtime's threads.
pub async fn outcome_blocking(mut command: Command) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || outcome(&mut command))
        .await
        .unwrap()
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
