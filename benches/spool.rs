//! Spool throughput: appends while spooling (64 concurrent appenders, group commit) with
//! `fsync = "always"` and `"never"`, then replay of the spooled records to an in-process
//! mock Kafka cluster. Run with `cargo bench --bench spool`; prints one line per case.

use std::sync::Arc;
use std::time::{Duration, Instant};

use comm100_bridge::config::{Config, FsyncPolicy};
use comm100_bridge::delivery::kafka::Publisher;
use comm100_bridge::delivery::order::Order;
use comm100_bridge::delivery::spool::replay::{Memory, Replay};
use comm100_bridge::delivery::spool::{frame_limit, Spool};
use comm100_bridge::event::{Record, Timestamp};
use comm100_bridge::metrics::Metrics;
use comm100_bridge::registry::Framing;
use comm100_bridge::route::{Message, Router};
use rdkafka::mocking::MockCluster;

const RECORDS: usize = 20_000;
const APPENDERS: usize = 64;

fn messages(config: &Config) -> Vec<Message> {
    let body = include_bytes!("../tests/fixtures/chat_ended.json");
    let router = Router::new(&config.topics);
    (0..RECORDS)
        .map(|_| router.route(&Record::from_body(body, None, Timestamp::now()).unwrap()))
        .collect()
}

async fn append_all(spool: &Spool, messages: &[Message]) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in messages.chunks(messages.len().div_ceil(APPENDERS)) {
        let (spool, chunk) = (spool.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for m in &chunk {
                spool.append(m).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn line(case: &str, records: usize, bytes: u64, took: Duration) {
    let secs = took.as_secs_f64();
    println!(
        "{case:<40} {records:>6} records in {secs:>6.2} s: {:>8.0} records/s, {:>6.1} MiB/s",
        records as f64 / secs,
        bytes as f64 / secs / (1 << 20) as f64
    );
}

#[tokio::main]
async fn main() {
    let cluster = MockCluster::new(1).unwrap();
    let mut config = Config::load_with_env(None, Some(Default::default())).unwrap();
    config.kafka.brokers = vec![cluster.bootstrap_servers()];
    for topic in Router::new(&config.topics).topics() {
        cluster.create_topic(topic, 3, 1).unwrap();
    }
    let messages = messages(&config);
    let frame_bytes: u64 = messages
        .iter()
        .map(|m| 8 + serde_json::to_vec(m).unwrap().len() as u64)
        .sum();
    println!(
        "spool benchmark: {RECORDS} chat_ended records of {} bytes each on disk, {APPENDERS} concurrent appenders",
        frame_bytes / RECORDS as u64
    );

    for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        config.spool.dir = dir.path().to_owned();
        config.spool.fsync = fsync;
        let metrics = Metrics::new();
        let spool = Spool::open(
            &config.spool,
            frame_limit(config.kafka.message_max_bytes()),
            metrics.clone(),
        )
        .unwrap();
        let took = append_all(&spool, &messages).await;
        line(
            &format!("append (spooling), fsync = {fsync:?}"),
            RECORDS,
            frame_bytes,
            took,
        );

        if fsync == FsyncPolicy::Always {
            let publisher = Publisher::new(&config, metrics.clone(), Framing::plain()).unwrap();
            let started = Instant::now();
            let order = Arc::new(Order::new());
            let left = Replay::spawn(
                spool.clone(),
                publisher.clone(),
                order,
                metrics,
                Memory::own(),
            )
            .drain(std::future::pending(), false)
            .await;
            assert_eq!(left, 0);
            let took = started.elapsed();
            line(
                "replay to mock Kafka (acks=all)",
                RECORDS,
                frame_bytes,
                took,
            );
        }
        spool.close();
    }
}
