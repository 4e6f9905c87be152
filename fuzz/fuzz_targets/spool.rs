//! Spool recovery from any bytes on disk (a segment of those bytes followed by one intact
//! record, and a cursor from their first 20 bytes): opening never fails or panics, the
//! intact record after the damage is recovered (damage costs only the bytes it spans),
//! everything counted as pending reads back (a frame that is not a record as unreadable,
//! never as an error that would stop replay), each frame is read at most once, and the
//! spool takes and reads back a new record after.
#![no_main]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use comm100_bridge::config::{FsyncPolicy, SpoolConfig};
use comm100_bridge::delivery::spool::{frame_limit, Spool, Spooled};
use comm100_bridge::event::EventType;
use comm100_bridge::metrics::Metrics;
use comm100_bridge::route::Message;
use libfuzzer_sys::fuzz_target;

static RUN: AtomicU64 = AtomicU64::new(0);

fn record(key: &str) -> Message {
    Message {
        id: uuid::Uuid::nil(),
        kind: EventType::ChatEnded,
        topic: "comm100.chat_ended".into(),
        key: Some(key.into()),
        headers: Vec::new(),
        value: br#"{"fuzz":true}"#.to_vec(),
    }
}

/// A frame as the spool writes it: length and CRC-32 of the payload (little-endian u32s),
/// then the payload.
fn frame(message: &Message) -> Vec<u8> {
    let payload = serde_json::to_vec(message).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!(
        "comm100-bridge-fuzz-spool-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let earlier = record("written-earlier");
    let mut segment = data.to_vec();
    segment.extend_from_slice(&frame(&earlier));
    std::fs::write(dir.join(format!("{:020}.seg", 1)), &segment).unwrap();
    // A cursor that holds (its checksum matches) at the very end says the intact record
    // was replayed already.
    let mut replayed = false;
    if data.len() >= 20 {
        let cursor = &data[..20];
        std::fs::write(dir.join("cursor"), cursor).unwrap();
        replayed = crc32fast::hash(&cursor[..16]).to_le_bytes() == cursor[16..]
            && cursor[..8] == 1u64.to_le_bytes()
            && cursor[8..16] == (segment.len() as u64).to_le_bytes();
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
    if !replayed {
        assert_eq!(
            batch.entries.last(),
            Some(&Spooled::Record(earlier)),
            "the intact record after {} bytes of anything was lost",
            data.len()
        );
    }
    let appended = record("appended");
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime
        .block_on(spool.append(&appended))
        .expect("the recovered spool takes a record");
    let after = spool.read_batch(usize::MAX, u64::MAX).expect("reads back");
    assert_eq!(after.entries.len(), batch.entries.len() + 1);
    assert_eq!(after.entries.last(), Some(&Spooled::Record(appended)));
    spool.close();
    let _ = std::fs::remove_dir_all(&dir);
});
