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
    open_with(&config(dir))
}

fn open_with(config: &SpoolConfig) -> Spool {
    Spool::open(config, frame_limit(1 << 20), Metrics::new()).unwrap()
}

fn read_all(spool: &Spool) -> Vec<Message> {
    spool
        .read_batch(usize::MAX, u64::MAX)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| match e {
            Spooled::Record(m) => m,
            Spooled::Unreadable { prefix, len } => panic!("unreadable: {len} bytes {prefix:?}"),
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
    let batch = spool.read_batch(25, u64::MAX).unwrap();
    assert_eq!(batch.entries.len(), 25);
    spool.commit(&batch, 25).unwrap();
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
    let batch = spool.read_batch(2, u64::MAX).unwrap();
    spool.commit(&batch, 2).unwrap();
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
    let spool = open_with(&c);
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
    let batch = spool.read_batch(2, u64::MAX).unwrap();
    spool.commit(&batch, 2).unwrap();
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
    let batch = spool.read_batch(1, u64::MAX).unwrap();
    spool.commit(&batch, 1).unwrap();
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
    let batch = spool.read_batch(usize::MAX, u64::MAX).unwrap();
    assert_eq!(batch.entries.len(), 3);
    assert_eq!(
        batch.entries[1],
        Spooled::Unreadable {
            prefix: b"not a record".to_vec(),
            len: 12
        }
    );
    assert!(matches!(&batch.entries[2], Spooled::Record(m) if m.value == message(2).value));
}

/// A config with one large segment, so that every record is in the same one.
fn one_segment(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 1 << 20,
        ..config(dir)
    }
}

/// Offsets of each frame of a segment written by `append`s of `messages`.
fn frame_starts(messages: &[Message]) -> Vec<u64> {
    let mut at = 0;
    messages
        .iter()
        .map(|m| {
            let start = at;
            at += FRAME_HEADER + serde_json::to_vec(m).unwrap().len() as u64;
            start
        })
        .collect()
}

fn records_and_damage(batch: &Batch) -> Vec<Result<Message, u64>> {
    batch
        .entries
        .iter()
        .map(|e| match e {
            Spooled::Record(m) => Ok(m.clone()),
            Spooled::Unreadable { len, .. } => Err(*len),
        })
        .collect()
}

#[tokio::test]
async fn a_damaged_frame_mid_segment_costs_that_frame_only() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_with(&one_segment(dir.path()));
    let sent: Vec<Message> = (0..6).map(message).collect();
    for m in &sent {
        spool.append(m).await.unwrap();
    }
    let starts = frame_starts(&sent);
    let size2 = starts[3] - starts[2];
    let segment = segments(dir.path()).pop().unwrap();
    // One byte of the third record's payload flips on disk while the bridge runs.
    let mut bytes = fs::read(&segment).unwrap();
    bytes[starts[2] as usize + 40] ^= 0x20;
    fs::write(&segment, &bytes).unwrap();
    let expected: Vec<Result<Message, u64>> = sent
        .iter()
        .enumerate()
        .map(|(n, m)| if n == 2 { Err(size2) } else { Ok(m.clone()) })
        .collect();
    let batch = spool.read_batch(usize::MAX, u64::MAX).unwrap();
    assert_eq!(records_and_damage(&batch), expected);
    spool.close();
    drop(spool);

    // After a restart too: the damaged frame is kept (for the DLQ), the records after it are
    // not cut off.
    let reopened = open(dir.path());
    assert_eq!(reopened.pending_events(), 6);
    let batch = reopened.read_batch(usize::MAX, u64::MAX).unwrap();
    assert_eq!(records_and_damage(&batch), expected);
    // Replay moves past it like any record.
    reopened.commit(&batch, 3).unwrap();
    assert_eq!(
        reopened
            .read_batch(usize::MAX, u64::MAX)
            .unwrap()
            .entries
            .len(),
        3
    );
}

#[tokio::test]
async fn zeros_where_frames_were_are_damage_not_an_empty_record() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_with(&one_segment(dir.path()));
    let sent: Vec<Message> = (0..4).map(message).collect();
    for m in &sent {
        spool.append(m).await.unwrap();
    }
    spool.close();
    drop(spool);
    let starts = frame_starts(&sent);
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    // The second record's bytes are zeros (a lost page, a failed write cut back).
    bytes[starts[1] as usize..starts[2] as usize].fill(0);
    fs::write(&segment, &bytes).unwrap();
    let reopened = open(dir.path());
    let batch = reopened.read_batch(usize::MAX, u64::MAX).unwrap();
    assert_eq!(
        records_and_damage(&batch),
        vec![
            Ok(sent[0].clone()),
            Err(starts[2] - starts[1]),
            Ok(sent[2].clone()),
            Ok(sent[3].clone())
        ]
    );
}

#[tokio::test]
async fn a_failed_segment_roll_leaves_every_acknowledged_record_readable() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    // The directory sync of the first roll fails (segments are 4 KiB, records ~300 bytes).
    spool
        .inner
        .faults
        .fail(Op::SyncDir, 0, 1, io::ErrorKind::Other);
    let mut acked = Vec::new();
    let mut refused = 0;
    for m in (0..40).map(message) {
        match spool.append(&m).await {
            Ok(()) => acked.push(m),
            Err(SpoolError::Faulted(fault)) => {
                assert_eq!(fault.kind, FaultKind::Io, "{fault}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        refused, 1,
        "the append that rolled is refused, the next ones are not"
    );
    assert!(spool.fault().is_none(), "{:?}", spool.fault());
    assert_eq!(read_all(&spool), acked);
    spool.close();
    drop(spool);
    let reopened = open(dir.path());
    assert_eq!(reopened.pending_events(), acked.len() as u64);
    assert_eq!(read_all(&reopened), acked);
}

#[tokio::test]
async fn an_append_is_acknowledged_only_after_its_fsync_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let syncs = || {
        spool
            .inner
            .faults
            .syncs
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let first = message(0);
    spool.append(&first).await.unwrap();
    assert!(syncs() >= 1, "an acknowledged append was fsynced");
    spool
        .inner
        .faults
        .fail(Op::Sync, 0, 1, io::ErrorKind::Other);
    let failed = spool.append(&message(1)).await;
    assert!(
        matches!(&failed, Err(SpoolError::Faulted(f)) if f.kind == FaultKind::Io),
        "{failed:?}"
    );
    let third = message(2);
    spool.append(&third).await.unwrap();
    assert_eq!(read_all(&spool), vec![first, third]);
    spool.close();
}

#[tokio::test]
async fn with_fsync_never_nothing_is_synced_and_the_spool_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let c = SpoolConfig {
        fsync: FsyncPolicy::Never,
        ..config(dir.path())
    };
    let spool = open_with(&c);
    for m in (0..40).map(message) {
        spool.append(&m).await.unwrap();
    }
    assert_eq!(
        spool
            .inner
            .faults
            .syncs
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert!(!spool.durable());
    spool.close();
    let other = tempfile::tempdir().unwrap();
    assert!(
        open(other.path()).durable(),
        "fsync = \"always\" is durable"
    );
}

#[tokio::test]
async fn a_full_disk_a_read_only_disk_and_an_io_error_refuse_that_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut acked = vec![message(0)];
    spool.append(&acked[0]).await.unwrap();
    for (kind, fault) in [
        (io::ErrorKind::StorageFull, FaultKind::NoSpace),
        (io::ErrorKind::ReadOnlyFilesystem, FaultKind::ReadOnly),
        (io::ErrorKind::Other, FaultKind::Io),
    ] {
        spool.inner.faults.fail(Op::Write, 0, 1, kind);
        let refused = spool.append(&message(1)).await;
        assert!(
            matches!(&refused, Err(SpoolError::Faulted(f)) if f.kind == fault),
            "{kind:?}: {refused:?}"
        );
        let next = message(2);
        spool.append(&next).await.unwrap();
        acked.push(next);
    }
    assert_eq!(read_all(&spool), acked);
    spool.close();
}

#[tokio::test]
async fn a_fault_that_lasts_keeps_refusing_and_clears_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    // Every fsync fails for a while: the append and the writer's probes.
    spool
        .inner
        .faults
        .fail(Op::Sync, 0, 4, io::ErrorKind::Other);
    assert!(matches!(
        spool.append(&message(0)).await,
        Err(SpoolError::Faulted(_))
    ));
    assert!(matches!(
        spool.append(&message(1)).await,
        Err(SpoolError::Faulted(_))
    ));
    assert!(spool.fault().is_some());
    // The probes use up the planned failures; the fault clears without an append.
    let started = std::time::Instant::now();
    while spool.fault().is_some() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never cleared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let m = message(2);
    spool.append(&m).await.unwrap();
    assert_eq!(read_all(&spool), vec![m]);
    spool.close();
}

#[tokio::test]
async fn a_removed_directory_is_recreated_keeping_the_open_segment() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("spool");
    let metrics = Metrics::new();
    let spool = Spool::open(&config(&dir), frame_limit(1 << 20), metrics.clone()).unwrap();
    // 40 records of ~300 bytes: several closed 4 KiB segments and an open one.
    let sent: Vec<Message> = (0..40).map(message).collect();
    for m in &sent {
        spool.append(m).await.unwrap();
    }
    let closed = segments(&dir).len() - 1;
    assert!(closed >= 2);
    let open_segment = segments(&dir).pop().unwrap();
    // Records in the open segment, read from the file itself.
    let mut in_open = 0;
    let mut reader = SegmentReader::open(open_segment, 0, None, 1 << 30).unwrap();
    while let Some((Found::Intact(_), _, _)) = reader.next().unwrap() {
        in_open += 1;
    }
    assert!(in_open > 0 && in_open < sent.len());
    fs::remove_dir_all(&dir).unwrap();

    // The next append notices: refused, and the directory is recreated at once.
    let refused = spool.append(&message(99)).await;
    assert!(
        matches!(&refused, Err(SpoolError::Faulted(f)) if f.kind == FaultKind::Vanished),
        "{refused:?}"
    );
    assert!(dir.is_dir() && dir.join(LOCK_FILE).is_file());
    assert!(spool.fault().is_none(), "{:?}", spool.fault());
    let after = message(100);
    spool.append(&after).await.unwrap();
    let mut expected = sent[sent.len() - in_open..].to_vec();
    expected.push(after);
    assert_eq!(read_all(&spool), expected);
    assert_eq!(spool.pending_events(), expected.len() as u64);
    assert_eq!(
        metrics.spool.lost_events.get(),
        (sent.len() - in_open) as u64,
        "the records of the closed segments are counted as lost"
    );
    // A second process still cannot take the recreated directory.
    assert!(matches!(
        Spool::open(&config(&dir), frame_limit(1 << 20), Metrics::new()),
        Err(SpoolError::Locked { .. })
    ));
    spool.close();
    drop(spool);
    assert_eq!(read_all(&open(&dir)), expected);
}

#[tokio::test]
async fn a_directory_that_cannot_be_recreated_refuses_until_it_can() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("spool");
    let spool = open(&dir);
    let first = message(0);
    spool.append(&first).await.unwrap();
    fs::remove_dir_all(&dir).unwrap();
    // A file where the directory was: nothing can be created there.
    fs::write(&dir, b"in the way").unwrap();
    for n in 1..4 {
        let refused = spool.append(&message(n)).await;
        assert!(
            matches!(&refused, Err(SpoolError::Faulted(f)) if f.kind == FaultKind::Vanished),
            "{refused:?}"
        );
        assert!(spool.fault().is_some());
    }
    fs::remove_file(&dir).unwrap();
    let started = std::time::Instant::now();
    while spool.fault().is_some() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never recovered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let last = message(9);
    spool.append(&last).await.unwrap();
    assert_eq!(read_all(&spool), vec![first, last]);
    spool.close();
}

#[test]
fn the_frame_limit_follows_message_max_bytes() {
    assert_eq!(frame_limit(1_200_000), 7_204_096);
}
