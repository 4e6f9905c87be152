//! The harness itself: what would make a test fail for a reason outside the bridge.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// A broker going down binds its port again at once; a fork holding its old listener
/// makes that fail and librdkafka abort the binary. Without [`Spawn`]'s guard this
/// aborted within its first three cycles in each of five runs.
#[test]
fn brokers_go_down_and_up_while_children_are_spawned() {
    let cluster = cluster();
    let stop = Arc::new(AtomicBool::new(false));
    let spawners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut spawned = 0;
                while !stop.load(Ordering::Relaxed) {
                    assert!(Command::new("true").run_status().unwrap().success());
                    spawned += 1;
                }
                spawned
            })
        })
        .collect();
    let started = Instant::now();
    let mut cycles = 0;
    while started.elapsed() < Duration::from_secs(3) {
        cluster.broker_down(-1).unwrap();
        cluster.broker_up(-1).unwrap();
        cycles += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let spawned: usize = spawners.into_iter().map(|s| s.join().unwrap()).sum();
    assert!(cycles > 0 && spawned > 0);
}
