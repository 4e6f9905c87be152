//! A 2xx is durable whatever the spool's disk does, with the real binary over real HTTP:
//! its directory removed (and recreated), replaced by something that is not a directory,
//! or its file system full. Each test reports its counts to `target/tmp/test-report.txt`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use http::StatusCode;

const TOPIC: &str = "comm100.chat_transferred";

/// Takes every broker of `cluster` down and starts a bridge against it, its config in
/// `dir`, its spool in `spool`.
/// A child bridge that reached Kafka and then lost it: records go to the spool, and it
/// stays ready while the spool can take them.
async fn start_with_kafka_down(cluster: &Cluster, dir: &Path, spool: &Path) -> Process {
    let config = write_config(dir, &cluster.bootstrap_servers(), spool, &[]);
    let process = Process::start(&config);
    let metrics = process.admin("/metrics");
    let brokers = "comm100_bridge_kafka_brokers_up";
    eventually(Duration::from_secs(20), "a connected broker", async || {
        (metric(&get(&metrics).await.text, brokers) > 0.0).then_some(())
    })
    .await;
    cluster.broker_down(-1).unwrap();
    // Kafka is down from here on; until the producer notices, a record waits the Kafka
    // wait (1 s) before it is spooled, which these tests do not time.
    process
}

/// Posts one event of `chat` and records the answer in `acked`.
async fn post_one(process: &Process, acked: &mut Acked, chat: &str, seq: usize) -> Answer {
    let answer = post(
        &process.url(&format!("/webhooks/comm100?token={TOKEN}")),
        &[],
        event(chat, seq),
    )
    .await;
    acked.record(chat, seq, Some(answer.clone()));
    answer
}

fn assert_spooled(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert_eq!(answer.json["status"], "spooled", "{}", answer.text);
    assert_eq!(answer.json["durable"], true, "{}", answer.text);
}

fn assert_refused(answer: &Answer) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text
    );
    assert!(
        answer.headers.contains_key("retry-after"),
        "{:?}",
        answer.headers
    );
}

/// The messages of the bridge's own ERROR lines so far.
fn errors(process: &mut Process) -> Vec<String> {
    process
        .errors()
        .iter()
        .map(|v| {
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Asserts the ERROR lines so far are one per cause: each of `expected` (a part of its
/// message) once, in that order, and nothing else.
fn assert_errors(process: &mut Process, expected: &[&str]) {
    let errors = errors(process);
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (line, text) in errors.iter().zip(expected) {
        assert!(line.contains(text), "{errors:#?}");
    }
}

async fn readyz(process: &Process) -> Answer {
    get(&process.admin("/readyz")).await
}

/// Brings Kafka back, waits until the spool is empty and checks every 2xx is in Kafka.
async fn deliver_and_verify(test: &str, cluster: &Cluster, process: &mut Process, acked: &Acked) {
    cluster.broker_up(-1).unwrap();
    wait_for_metric(
        &process.admin("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(60),
    )
    .await;
    verify(test, &cluster.bootstrap_servers(), TOPIC, acked, true);
    process.signal("-TERM");
    assert_eq!(process.child.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_spool_directory_loses_no_record_answered_2xx() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut process = start_with_kafka_down(&cluster, dir.path(), &spool).await;
    let mut acked = Acked::default();

    assert_spooled(&post_one(&process, &mut acked, "gone", 0).await);
    std::fs::remove_dir_all(&spool).unwrap();
    // The append that finds the directory gone is refused, unless replay (which reads the
    // spool while Kafka is down) found it first: either way the directory is recreated with
    // the records of the open segment, and appends are durable in it.
    let first = post_one(&process, &mut acked, "gone", 1).await;
    let noticed_by_append = first.status == StatusCode::SERVICE_UNAVAILABLE;
    match noticed_by_append {
        true => assert_refused(&first),
        false => assert_spooled(&first),
    }
    assert!(spool.join("lock").is_file(), "the directory is recreated");
    assert_spooled(&post_one(&process, &mut acked, "gone", 2).await);
    assert_spooled(&post_one(&process, &mut acked, "gone", 3).await);
    let ready = readyz(&process).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let metrics = get(&process.admin("/metrics")).await.text;
    assert_eq!(
        metric(&metrics, "comm100_bridge_spool_events"),
        acked.ids.len() as f64
    );
    assert_eq!(
        metric(&metrics, "comm100_bridge_spool_lost_events_total"),
        0.0
    );
    match noticed_by_append {
        true => assert_errors(
            &mut process,
            &["the spool cannot take records", "is recreated"],
        ),
        false => assert_errors(&mut process, &["is recreated"]),
    }
    deliver_and_verify("removed spool directory", &cluster, &mut process, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_directory_that_cannot_be_recreated_is_reported_until_it_can() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut process = start_with_kafka_down(&cluster, dir.path(), &spool).await;
    let mut acked = Acked::default();

    assert_spooled(&post_one(&process, &mut acked, "blocked", 0).await);
    std::fs::remove_dir_all(&spool).unwrap();
    std::fs::write(&spool, b"not a directory").unwrap();
    for seq in 1..6 {
        assert_refused(&post_one(&process, &mut acked, "blocked", seq).await);
    }
    let ready = readyz(&process).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text
    );
    let reason = ready.json["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("spool directory") && reason.contains("removed"),
        "{reason}"
    );
    let metrics = get(&process.admin("/metrics")).await.text;
    assert_eq!(metric(&metrics, "comm100_bridge_spool_faulted"), 1.0);
    // Five refusals and the writer's own retries: one ERROR line for the cause.
    assert_errors(&mut process, &["the spool cannot take records"]);

    std::fs::remove_file(&spool).unwrap();
    eventually(Duration::from_secs(10), "readiness back", async || {
        (readyz(&process).await.status == StatusCode::OK).then_some(())
    })
    .await;
    assert_spooled(&post_one(&process, &mut acked, "blocked", 6).await);
    assert_eq!(acked.ids.len(), 2);
    assert_errors(
        &mut process,
        &["the spool cannot take records", "is recreated"],
    );
    deliver_and_verify("spool directory in the way", &cluster, &mut process, &acked).await;
}

/// Mounts a tmpfs of `size` at `at`; false where mounting is not allowed (outside CI).
fn mount_tmpfs(at: &Path, size: &str) -> bool {
    std::fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(at)
        .run_status()
        .is_ok_and(|s| s.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "CI runs as root and must be able to mount a tmpfs"
    );
    ok
}

/// Unmounts on drop, so a failed test leaves no mount behind.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).run_status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_answered_503_and_heals_when_space_returns() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    if !mount_tmpfs(&mount, "192k") {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let _mounted = Mounted(&mount);
    let spool = mount.join("spool");
    let mut process = start_with_kafka_down(&cluster, dir.path(), &spool).await;
    let mut acked = Acked::default();

    let mut seq = 0;
    let refused = loop {
        assert!(seq < 5000, "a 192 KiB disk never filled");
        let answer = post_one(&process, &mut acked, "full", seq).await;
        seq += 1;
        if answer.status.is_success() {
            assert_spooled(&answer);
        } else {
            break answer;
        }
    };
    assert_refused(&refused);
    let ready = readyz(&process).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text
    );
    let reason = ready.json["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no space left"), "{reason}");
    assert_refused(&post_one(&process, &mut acked, "full", seq).await);
    seq += 1;
    assert_errors(&mut process, &["the spool cannot take records"]);

    // Kafka back while the disk is still full: replay reads the spool and publishes all of
    // it (saving its cursor may fail on the full disk, which is logged once).
    cluster.broker_up(-1).unwrap();
    wait_for_metric(
        &process.admin("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(60),
    )
    .await;
    verify(
        "full spool disk, replayed while full",
        &cluster.bootstrap_servers(),
        TOPIC,
        &acked,
        true,
    );
    let logged = errors(&mut process);
    assert!(
        logged.len() <= 2
            && logged[0].contains("the spool cannot take records")
            && logged
                .get(1)
                .is_none_or(|e| e.contains("cannot save the spool cursor")),
        "{logged:#?}"
    );

    // Room again: ready without a restart, and the spool takes records again.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=4m"])
        .arg(&mount)
        .run_status()
        .unwrap();
    assert!(grown.success());
    eventually(Duration::from_secs(10), "readiness back", async || {
        (readyz(&process).await.status == StatusCode::OK).then_some(())
    })
    .await;
    cluster.broker_down(-1).unwrap();
    assert_spooled(&post_one(&process, &mut acked, "full", seq).await);
    deliver_and_verify("full spool disk", &cluster, &mut process, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fsync_never_a_spooled_record_is_answered_not_durable() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.spool.fsync = comm100_bridge::config::FsyncPolicy::Never;
    c.delivery.deadline_ms = 1500;
    c.spool.append_budget_ms = 500;
    cluster.broker_down(-1).unwrap();
    let bridge = Bridge::start(c).await;
    let answer = post(
        &bridge.url(&format!("/webhooks/comm100?token={TOKEN}")),
        &[],
        event("lazy", 0),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert_eq!(answer.json["status"], "spooled", "{}", answer.text);
    assert_eq!(answer.json["durable"], false, "{}", answer.text);
    bridge.stop().await.unwrap();
}

/// Resident memory now (VmRSS) of `process`, and resets its peak (VmHWM) to it.
fn reset_peak(process: &Process) -> u64 {
    let pid = process.child.id();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_of_large_records_replays_within_the_memory_budget() {
    const RECORDS: usize = 400;
    const PAD: usize = 700_000;
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut process = start_with_kafka_down(&cluster, dir.path(), &spool).await;
    let hook = process.url(&format!("/webhooks/comm100?token={TOKEN}"));
    // Four chats posted at once, each one's events one after another (so each chat's order
    // is checked in Kafka).
    const CHATS: usize = 4;
    let pad = std::sync::Arc::new("p".repeat(PAD));
    let mut senders = tokio::task::JoinSet::new();
    for c in 0..CHATS {
        let (hook, pad) = (hook.clone(), pad.clone());
        senders.spawn(async move {
            let chat = format!("large-{c}");
            let mut acked = Acked::default();
            for seq in (c..RECORDS).step_by(CHATS) {
                let body = serde_json::json!({
                    "event": "chat_transferred", "visitor": {"chat_id": chat}, "seq": seq,
                    "pad": *pad,
                });
                let answer = post(&hook, &[], body.to_string()).await;
                assert_spooled(&answer);
                acked.record(&chat, seq, Some(answer));
            }
            acked
        });
    }
    let mut acked = Acked::default();
    while let Some(done) = senders.join_next().await {
        acked.merge(done.unwrap());
    }
    let before = reset_peak(&process);
    cluster.broker_up(-1).unwrap();
    wait_for_metric(
        &process.admin("/metrics"),
        "comm100_bridge_spool_events",
        0.0,
        Duration::from_secs(120),
    )
    .await;
    let peak = process.peak_rss();
    // A replay round holds at most 16 MiB (a quarter of the default 64 MiB budget):
    // the records it read and the producer's copies of them.
    const ROUND: u64 = 16 << 20;
    const SLACK: u64 = 16 << 20;
    report(&format!(
        "large spool replay: {RECORDS} records of {} KB ({} MiB) spooled, replayed with peak RSS {} MiB ({} MiB before replay, bound before + {} MiB)",
        PAD / 1000,
        (RECORDS * PAD) >> 20,
        peak >> 20,
        before >> 20,
        (ROUND + SLACK) >> 20
    ));
    assert!(
        peak < before + ROUND + SLACK,
        "replay peaked at {} MiB from {} MiB",
        peak >> 20,
        before >> 20
    );
    deliver_and_verify("large spool replay", &cluster, &mut process, &acked).await;
}
