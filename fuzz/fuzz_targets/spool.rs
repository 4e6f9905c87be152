//! Spool recovery from any bytes on disk (a segment, and a cursor from its first 20
//! bytes): opening never panics, everything counted as pending reads back (a frame that
//! is not a record as unreadable, never as an error that would stop replay), and each
//! frame is read at most once.
#![no_main]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use comm100_bridge::config::{FsyncPolicy, SpoolConfig};
use comm100_bridge::metrics::Metrics;
use comm100_bridge::delivery::spool::{frame_limit, Spool, Spooled};
use comm100_bridge::event::EventType;
use comm100_bridge::route::Message;
use libfuzzer_sys::fuzz_target;

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!(
        "comm100-bridge-fuzz-spool-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{:020}.seg", 1)), data).unwrap();
    if data.len() >= 20 {
        std::fs::write(dir.join("cursor"), &data[..20]).unwrap();
    }
    let config = SpoolConfig {
        enabled: true,
        dir: dir.clone(),
        max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
        fsync: FsyncPolicy::Never,
        append_budget_ms: 1000,
        drain_on_shutdown_ms: 0,
    };
    // Whatever the bytes, the spool opens: damage is cut off or kept for the DLQ, never a
    // reason to refuse to start.
    let spool = Spool::open(&config, frame_limit(1 << 20), Metrics::new())
        .expect("a spool opens whatever its segment holds");
    let pending = spool.pending_events();
    let batch = spool
        .read_batch(usize::MAX, u64::MAX)
        .expect("recovered data reads back");
    assert_eq!(batch.entries.len() as u64, pending);
    let mut ends = HashSet::new();
    for end in &batch.ends {
        assert!(ends.insert((end.segment, end.offset)), "a record read twice");
    }
    // A record appended after recovery reads back whole, after everything recovered.
    let appended = Message {
        id: uuid::Uuid::nil(),
        kind: EventType::ChatEnded,
        topic: "comm100.chat_ended".into(),
        key: Some("fuzz".into()),
        headers: Vec::new(),
        value: br#"{"fuzz":true}"#.to_vec(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(spool.append(&appended)).expect("the recovered spool takes a record");
    let after = spool.read_batch(usize::MAX, u64::MAX).expect("reads back");
    assert_eq!(after.entries.len(), batch.entries.len() + 1);
    assert_eq!(after.entries.last(), Some(&Spooled::Record(appended)));
    spool.close();
    let _ = std::fs::remove_dir_all(&dir);
});
