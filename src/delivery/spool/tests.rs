use std::borrow::Cow;
use std::io::Write;

use uuid::Uuid;

use super::*;
use crate::config::{FsyncPolicy, SpoolConfig};
use crate::event::EventType;

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        enabled: true,
        dir: dir.to_owned(),
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        fsync: FsyncPolicy::Always,
        append_budget_ms: 1000,
        drain_on_shutdown_ms: 0,
    }
}

fn message(n: usize) -> Message {
    Message {
        id: Uuid::now_v7(),
        kind: EventType::ChatEnded,
        topic: "comm100.chat_ended".into(),
        key: Some(format!("chat-{}", n % 3)),
        headers: vec![(Cow::Borrowed("ce_id"), Cow::Owned(n.to_string()))],
        value: format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes(),
    }
}

fn open(dir: &Path) -> Spool {
    Spool::open(&config(dir), frame_limit(1 << 20), Metrics::new()).unwrap()
}

fn read_all(spool: &Spool) -> Vec<Message> {
    spool
        .read_batch(usize::MAX)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| match e {
            Spooled::Record(m) => m,
            Spooled::Unreadable(bytes) => panic!("unreadable: {bytes:?}"),
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn appended_records_read_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let sent: Vec<Message> = (0..40).map(message).collect();
    for m in &sent {
        spool.append(m).await.unwrap();
    }
    assert_eq!(spool.pending_events(), 40);
    assert!(
        segments(dir.path()).len() > 1,
        "40 records of ~300 bytes span several 4 KiB segments"
    );
    assert_eq!(read_all(&spool), sent);
    // Reading does not consume.
    assert_eq!(read_all(&spool).len(), 40);
    spool.close();
}

#[tokio::test]
async fn commit_moves_the_cursor_deletes_replayed_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let sent: Vec<Message> = (0..40).map(message).collect();
    for m in &sent {
        spool.append(m).await.unwrap();
    }
    let before = segments(dir.path()).len();
    let batch = spool.read_batch(25).unwrap();
    assert_eq!(batch.entries.len(), 25);
    let bytes = batch.sizes.iter().sum();
    spool.commit(batch.ends[24], 25, bytes).unwrap();
    assert_eq!(spool.pending_events(), 15);
    assert!(
        segments(dir.path()).len() < before,
        "replayed segments are deleted"
    );
    assert_eq!(read_all(&spool), sent[25..]);
    spool.close();

    let reopened = open(dir.path());
    assert_eq!(reopened.pending_events(), 15);
    assert_eq!(read_all(&reopened), sent[25..]);
    reopened.close();
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_everything_before_it_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let sent: Vec<Message> = (0..5).map(message).collect();
    for m in &sent {
        spool.append(m).await.unwrap();
    }
    spool.close();
    let last = segments(dir.path()).pop().unwrap();
    let intact = fs::metadata(&last).unwrap().len();
    // A crash in the middle of a write: a header and half a payload.
    let payload = serde_json::to_vec(&message(99)).unwrap();
    let frame = encode_frame(&payload);
    OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&frame[..frame.len() / 2])
        .unwrap();

    let reopened = open(dir.path());
    assert_eq!(
        fs::metadata(&last).unwrap().len(),
        intact,
        "the torn tail is cut off"
    );
    assert_eq!(reopened.pending_events(), 5);
    assert_eq!(read_all(&reopened), sent);
    // New records go after the intact ones.
    let next = message(5);
    reopened.append(&next).await.unwrap();
    assert_eq!(read_all(&reopened).last(), Some(&next));
    reopened.close();
}

#[tokio::test]
async fn a_corrupt_last_record_is_detected_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    for m in (0..3).map(message) {
        spool.append(&m).await.unwrap();
    }
    spool.close();
    let last = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0xff;
    fs::write(&last, &bytes).unwrap();

    let reopened = open(dir.path());
    assert_eq!(reopened.pending_events(), 2);
    assert_eq!(read_all(&reopened).len(), 2);
    reopened.close();
}

#[tokio::test]
async fn a_lost_cursor_replays_from_the_oldest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    for m in (0..4).map(message) {
        spool.append(&m).await.unwrap();
    }
    let batch = spool.read_batch(2).unwrap();
    spool
        .commit(batch.ends[1], 2, batch.sizes.iter().sum())
        .unwrap();
    spool.close();
    fs::write(dir.path().join(CURSOR_FILE), b"garbage").unwrap();
    let reopened = open(dir.path());
    // At least once: the two delivered records come again rather than anything being lost.
    assert_eq!(reopened.pending_events(), 4);
    reopened.close();
}

#[tokio::test]
async fn a_full_spool_refuses_new_records_and_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_bytes = 8192;
    let spool = Spool::open(&c, frame_limit(1 << 20), Metrics::new()).unwrap();
    let mut accepted = 0;
    let mut refused = 0;
    for m in (0..60).map(message) {
        match spool.append(&m).await {
            Ok(()) => accepted += 1,
            Err(SpoolError::Full(8192)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        accepted > 10 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
    assert_eq!(read_all(&spool).len(), accepted);
    spool.close();
}

#[tokio::test]
async fn concurrent_appends_are_all_written() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(&message(n)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(spool.pending_events(), 200);
    let mut ns: Vec<u64> = read_all(&spool)
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.value).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..200).collect::<Vec<_>>());
    spool.close();
}

#[tokio::test]
async fn appends_after_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.close();
    assert!(matches!(
        spool.append(&message(1)).await,
        Err(SpoolError::Closed)
    ));
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_and_a_large_one_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let limit = frame_limit(1000);
    assert_eq!(limit, 10_096);
    let spool = Spool::open(&config(dir.path()), limit, Metrics::new()).unwrap();
    let mut big = message(0);
    big.value = format!("\"{}\"", "x".repeat(limit)).into_bytes();
    assert!(matches!(
        spool.append(&big).await,
        Err(SpoolError::TooLarge { limit: l, .. }) if l == limit
    ));
    // A frame larger than a segment (4096 here) and than any fixed bound still reads back.
    let mut large = message(1);
    large.value = format!("\"{}\"", "y".repeat(limit - 1000)).into_bytes();
    spool.append(&large).await.unwrap();
    spool.close();
    drop(spool);
    let reopened = open(dir.path());
    assert_eq!(read_all(&reopened), vec![large]);
}

#[tokio::test]
async fn one_process_per_directory_and_inspect_reads_without_changing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    for n in 0..5 {
        spool.append(&message(n)).await.unwrap();
    }
    let second = Spool::open(&config(dir.path()), frame_limit(1 << 20), Metrics::new());
    let Err(SpoolError::Locked { holder, .. }) = second else {
        panic!("a second open of a held directory must be refused");
    };
    assert_eq!(holder, std::process::id().to_string());
    let seen = inspect::inspect(dir.path()).unwrap();
    assert_eq!(seen.held_by, Some(std::process::id().to_string()));
    assert_eq!((seen.records, seen.types["chat_ended"].records), (5, 5));
    assert_eq!(seen.torn_bytes, 0);
    let batch = spool.read_batch(2).unwrap();
    spool
        .commit(batch.ends[1], 2, batch.sizes.iter().sum())
        .unwrap();
    assert_eq!(inspect::inspect(dir.path()).unwrap().records, 3);
    spool.close();
    drop(spool);
    assert_eq!(inspect::inspect(dir.path()).unwrap().held_by, None);
    let reopened = open(dir.path());
    assert_eq!(reopened.pending_events(), 3);
}

#[tokio::test]
async fn the_spool_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("spool");
    let spool = open(&dir);
    for n in 0..40 {
        spool.append(&message(n)).await.unwrap();
    }
    let batch = spool.read_batch(1).unwrap();
    spool.commit(batch.ends[0], 1, batch.sizes[0]).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() > 3, "{files:?}");
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    // An existing directory open to others is made private.
    spool.close();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let _reopened = open(&dir);
    assert_eq!(mode(&dir), 0o700);
}

#[tokio::test]
async fn a_frame_that_is_not_a_record_reads_back_as_unreadable_and_holds_up_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.append(&message(0)).await.unwrap();
    spool.close();
    drop(spool);
    // A frame whose checksum holds but which is not a record, then a good one.
    let segment = segments(dir.path()).pop().unwrap();
    let mut file = fs::OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&encode_frame(b"not a record")).unwrap();
    file.write_all(&encode_frame(&serde_json::to_vec(&message(2)).unwrap()))
        .unwrap();
    drop(file);
    let spool = open(dir.path());
    assert_eq!(spool.pending_events(), 3);
    let batch = spool.read_batch(usize::MAX).unwrap();
    assert_eq!(batch.entries.len(), 3);
    assert_eq!(
        batch.entries[1],
        Spooled::Unreadable(b"not a record".to_vec())
    );
    assert!(matches!(&batch.entries[2], Spooled::Record(m) if m.value == message(2).value));
}
