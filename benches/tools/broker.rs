//! Broker helpers for the end-to-end benchmark.
//!
//!     bench_broker mock [N]                 host a librdkafka mock cluster with every topic;
//!                                           prints `bootstrap <address>`, runs until killed;
//!                                           a line `down` or `up` on its standard input
//!                                           takes every broker down or up, answered `ok`
//!     bench_broker create-topics ADDR [N]   create every topic on the broker at ADDR (tansu
//!                                           does not auto-create), then exit
//!
//! Topics: the bridge's defaults plus the dead-letter topic, N partitions each (default 3).

use std::time::Duration;

use comm100_bridge::config::Config;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;

/// Every topic of the built-in configuration, the DLQ among them.
fn topics() -> Vec<String> {
    let config = Config::load_with_env(None, Some(Default::default())).expect("built-in defaults");
    comm100_bridge::topics::expected(&config)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let partitions = |at: usize| -> Result<i32, Box<dyn std::error::Error>> {
        Ok(args.get(at).map_or(Ok(3), |n| n.parse())?)
    };
    match args.first().map(String::as_str) {
        Some("mock") => {
            let cluster = MockCluster::new(1)?;
            for topic in topics() {
                cluster.create_topic(&topic, partitions(1)?, 1)?;
            }
            println!("bootstrap {}", cluster.bootstrap_servers());
            let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    command = commands.recv() => match command.as_deref() {
                        // This process spawns no child: no fork can hold a listener.
                        #[allow(clippy::disallowed_methods)]
                        Some("down") => cluster.broker_down(-1)?,
                        #[allow(clippy::disallowed_methods)]
                        Some("up") => cluster.broker_up(-1)?,
                        Some(other) => return Err(format!("unknown command {other}").into()),
                        None => std::future::pending().await,
                    },
                }
                println!("ok");
            }
            drop(cluster);
        }
        Some("create-topics") => {
            let bootstrap = args
                .get(1)
                .ok_or("create-topics needs the broker address")?;
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .create()?;
            let names = topics();
            let partitions = partitions(2)?;
            let new: Vec<NewTopic> = names
                .iter()
                .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
                .collect();
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            for result in admin.create_topics(&new, &options).await? {
                match result {
                    Ok(topic) => println!("created {topic}"),
                    Err((topic, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                        println!("exists {topic}")
                    }
                    Err((topic, e)) => return Err(format!("cannot create {topic}: {e}").into()),
                }
            }
        }
        _ => return Err("usage: bench_broker mock [N] | create-topics ADDR [N]".into()),
    }
    Ok(())
}
