//! The durable spool: records Kafka could not acknowledge in time, in an append-only,
//! checksummed log on disk, replayed in order once Kafka is reachable.
//!
//! On disk, `spool.dir` holds segment files `<20-digit id>.seg` and a `cursor` file. A
//! segment is a sequence of frames `[payload length: u32 LE][CRC-32 of payload: u32 LE]
//! [payload: the JSON of a route::Message]`. Appends go to the newest segment through one
//! writer thread, which writes every append waiting at that moment and then calls fsync
//! once for all of them (group commit) before any of them is acknowledged. The cursor is
//! the position of the first record not yet acknowledged by Kafka; segments wholly before
//! it are deleted. On open, every segment is scanned: a torn tail (no intact frame after
//! it) is logged and cut off; a damaged span followed by intact frames is kept, and replay
//! sends it to the dead-letter topic and goes on after it (`frame.rs`).
//!
//! An append is acknowledged only once it is fsynced and its segment is still the file in
//! `spool.dir`. Anything else faults the spool ([`Fault`]): appends are refused until the
//! writer heals it, recreating a removed directory with what the open segment holds, or
//! proving with a probe write that the disk takes writes again (`writer.rs`).

mod disk;
mod frame;
pub mod inspect;
pub mod replay;
mod writer;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, Notify};

use crate::config::{FsyncPolicy, SpoolConfig};
use crate::metrics::Metrics;
use crate::route::Message;
use crate::sync::Unpoisoned;
pub use disk::holder;
use disk::{
    create_private_dir, lock, private_file, read_cursor, recover, segment_path, sync_dir,
    write_cursor,
};
use frame::{encode_frame, Found, SegmentReader};
use writer::{segment_file, Append, Command, Writer};
#[cfg(test)]
use {
    frame::FRAME_HEADER,
    writer::{faults, Op},
};

const CURSOR_FILE: &str = "cursor";
const LOCK_FILE: &str = "lock";
const SEGMENT_SUFFIX: &str = ".seg";

/// Why a record could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full (spool.max_bytes = {0} bytes); records are being refused until Kafka drains it")]
    Full(u64),
    /// Reading or writing failed; the I/O error is in the message (not a `source`, so an
    /// error chain prints it once).
    #[error("spool I/O error in {dir} (spool.dir): {error}")]
    Io { dir: PathBuf, error: io::Error },
    /// The spool cannot take records until the cause is gone; it retries on its own.
    #[error("the spool cannot take records: {0}")]
    Faulted(Fault),
    #[error("the spool is closed")]
    Closed,
    #[error(
        "the spool directory {dir} is in use by process {holder} (it holds {dir}/lock): one \
         process per spool directory; stop that one first, or give this one its own spool.dir"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("a record of {size} bytes is over the spool's frame limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

/// What keeps the spool from taking records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The directory, or the segment being written, was removed or replaced.
    Vanished,
    /// No space (or quota) left on the spool's file system.
    NoSpace,
    /// The spool's file system is read-only.
    ReadOnly,
    /// Any other I/O error, fsync's among them.
    Io,
}

/// A spool fault: its kind, and the error that showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub detail: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            FaultKind::Vanished => {
                "the spool directory (spool.dir) or its open segment was removed; it is recreated as soon as it can be"
            }
            FaultKind::NoSpace => "no space left on the spool's file system",
            FaultKind::ReadOnly => "the spool's file system is read-only",
            FaultKind::Io => "the spool's disk failed an I/O operation",
        };
        write!(f, "{what} ({})", self.detail)
    }
}

impl Fault {
    fn of(error: &io::Error) -> Self {
        let kind = match error.kind() {
            io::ErrorKind::NotFound => FaultKind::Vanished,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => FaultKind::NoSpace,
            io::ErrorKind::ReadOnlyFilesystem => FaultKind::ReadOnly,
            _ => FaultKind::Io,
        };
        Self {
            kind,
            detail: error.to_string(),
        }
    }
}

/// The largest frame payload the spool writes, for a producer whose `message.max.bytes` is
/// `max_message_bytes`: the spool only takes records the producer can send, and a record's
/// key, headers and value, written as JSON strings, take at most six times their bytes
/// (a control character becomes `\u00XX`), plus the id, type and topic.
pub fn frame_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_mul(6).saturating_add(4096)
}

/// A place in the log: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Records read from the spool, oldest first, with the position after each.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Spooled>,
    pub ends: Vec<Position>,
    pub sizes: Vec<u64>,
    /// Which life of the spool directory the batch was read from (see [`Spool::commit`]).
    epoch: u64,
}

impl Batch {
    /// Bytes on disk of the first `count` entries.
    pub fn bytes(&self, count: usize) -> u64 {
        self.sizes[..count].iter().sum()
    }
}

/// One frame read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Spooled {
    Record(Message),
    /// Bytes that are not a record: a frame whose checksum holds but that does not parse
    /// (written by an incompatible version, or altered on disk), or a damaged span up to the
    /// next intact frame. For the dead-letter topic: the first bytes (`prefix`, at most
    /// 64 KiB) and how many there were (`len`), so it holds up nothing behind it.
    Unreadable {
        prefix: Vec<u8>,
        len: u64,
    },
}

/// An issued append.
pub struct Appending(oneshot::Receiver<Result<(), Fault>>);

impl Appending {
    /// Waits until the record is on disk (see [`Spool::append`]).
    pub async fn written(self) -> Result<(), SpoolError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(fault)) => Err(SpoolError::Faulted(fault)),
            Err(_) => Err(SpoolError::Closed),
        }
    }
}

/// A handle on the spool; clones share it.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Held (locked) until the spool is closed.
    lock: Mutex<Option<File>>,
    max_bytes: u64,
    frame_limit: usize,
    fsync: FsyncPolicy,
    state: Mutex<State>,
    /// Set while the spool cannot take records; the writer clears it.
    fault: Mutex<Option<Fault>>,
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Signalled whenever records are added.
    added: Notify,
    metrics: Metrics,
    #[cfg(test)]
    faults: faults::Plan,
}

struct State {
    /// Segment id → committed length, oldest first. The last is the one being written.
    segments: BTreeMap<u64, u64>,
    read: Position,
    pending_events: u64,
    pending_bytes: u64,
    /// Bytes of appends accepted but not yet written.
    reserved: u64,
    /// Appends accepted but not yet written.
    appending: u64,
    /// Bumped when the directory is recreated: positions read before then mean nothing.
    epoch: u64,
}

impl State {
    fn disk_bytes(&self) -> u64 {
        self.segments.values().sum::<u64>() + self.reserved
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `config.dir`, recovering what a previous run
    /// left: every complete record after the saved cursor is pending again. Appends whose
    /// payload is over `frame_limit` bytes are refused.
    pub fn open(
        config: &SpoolConfig,
        frame_limit: usize,
        metrics: Metrics,
    ) -> Result<Self, SpoolError> {
        let dir = config.dir.clone();
        let io_err = |error| SpoolError::Io {
            dir: dir.clone(),
            error,
        };
        create_private_dir(&dir).map_err(io_err)?;
        let lock = lock(&dir)?;
        let recovered = recover(&dir, frame_limit).map_err(io_err)?;
        let active = *recovered.segments.keys().next_back().unwrap_or(&1);
        let mut segments = recovered.segments;
        if segments.is_empty() {
            private_file()
                .write(true)
                .open(segment_path(&dir, active))
                .map_err(io_err)?;
            sync_dir(&dir).map_err(io_err)?;
            segments.insert(active, 0);
        }
        let file = segment_file(&segment_path(&dir, active)).map_err(io_err)?;
        if recovered.pending_events > 0 {
            tracing::info!(
                events = recovered.pending_events,
                bytes = recovered.pending_bytes,
                dir = %dir.display(),
                "spool holds records from a previous run; they will be replayed"
            );
        }
        let state = State {
            read: recovered.read,
            pending_events: recovered.pending_events,
            pending_bytes: recovered.pending_bytes,
            reserved: 0,
            appending: 0,
            epoch: 0,
            segments,
        };
        metrics.spool.capacity_bytes.set(config.max_bytes as i64);
        metrics.spool.faulted.set(0);
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            dir: dir.clone(),
            lock: Mutex::new(Some(lock)),
            max_bytes: config.max_bytes,
            frame_limit,
            fsync: config.fsync,
            state: Mutex::new(state),
            fault: Mutex::new(None),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(None),
            added: Notify::new(),
            metrics,
            #[cfg(test)]
            faults: faults::Plan::default(),
        });
        let writer = Writer::new(inner.clone(), file, active, config.segment_bytes);
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err)?;
        *inner.writer.locked() = Some(handle);
        let spool = Self { inner };
        spool.update_gauges(&spool.state());
        Ok(spool)
    }

    /// Appends `message` and returns once it is on disk: fsynced, and its segment still in
    /// `spool.dir`, unless `fsync = "never"` (then written to the OS only, see
    /// [`Spool::durable`]).
    pub async fn append(&self, message: &Message) -> Result<(), SpoolError> {
        self.submit(message)?.written().await
    }

    /// Issues the append of `message`: appends are written in the order they are issued.
    /// [`Appending::written`] says when it is on disk.
    pub fn submit(&self, message: &Message) -> Result<Appending, SpoolError> {
        let payload = serde_json::to_vec(message).map_err(|e| self.io(io::Error::other(e)))?;
        if payload.len() > self.inner.frame_limit {
            return Err(SpoolError::TooLarge {
                size: payload.len(),
                limit: self.inner.frame_limit,
            });
        }
        let frame = encode_frame(&payload);
        let len = frame.len() as u64;
        {
            let mut state = self.state();
            if state.disk_bytes() + len > self.inner.max_bytes {
                return Err(SpoolError::Full(self.inner.max_bytes));
            }
            state.reserved += len;
            state.appending += 1;
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.command(Command::Append(Append { frame, reply }));
        if !sent {
            let mut state = self.state();
            state.reserved -= len;
            state.appending -= 1;
            return Err(SpoolError::Closed);
        }
        Ok(Appending(answer))
    }

    /// Whether a record the spool took survives a machine crash (`spool.fsync = "always"`).
    pub fn durable(&self) -> bool {
        self.inner.fsync == FsyncPolicy::Always
    }

    /// What keeps the spool from taking records, while something does.
    pub fn fault(&self) -> Option<Fault> {
        self.inner.fault()
    }

    /// Asks the writer to check that the directory and its open segment are in place, and
    /// to recover if they are not (replay calls it when it cannot read the spool).
    pub fn check(&self) {
        self.command(Command::Check);
    }

    /// Records waiting to be replayed, including appends not yet written.
    pub fn pending_events(&self) -> u64 {
        let state = self.state();
        state.pending_events + state.appending
    }

    /// Waits until written records are pending.
    pub async fn wait_for_records(&self) {
        loop {
            let added = self.inner.added.notified();
            if self.state().pending_events > 0 {
                return;
            }
            added.await;
        }
    }

    /// Whether one more record of ordinary size fits under `spool.max_bytes`.
    pub fn has_room(&self) -> bool {
        self.state().disk_bytes() + (64 << 10) <= self.inner.max_bytes
    }

    /// Reads records from the cursor on, without moving it: up to `max_events`, and no more
    /// once `max_bytes` (frames on disk) are read, but always at least one.
    pub fn read_batch(&self, max_events: usize, max_bytes: u64) -> Result<Batch, SpoolError> {
        let start = self.state().read;
        self.read_from(start, max_events, max_bytes)
    }

    /// Calls `each` with every pending record, oldest first (for the keys of what a
    /// previous run left, before replay starts). Unreadable frames are skipped.
    pub fn for_each_pending(&self, mut each: impl FnMut(&Message)) -> Result<(), SpoolError> {
        let mut pos = self.state().read;
        loop {
            let batch = self.read_from(pos, 4096, 16 << 20)?;
            let Some(&end) = batch.ends.last() else {
                return Ok(());
            };
            for entry in &batch.entries {
                if let Spooled::Record(message) = entry {
                    each(message);
                }
            }
            pos = end;
        }
    }

    fn read_from(
        &self,
        start: Position,
        max_events: usize,
        max_bytes: u64,
    ) -> Result<Batch, SpoolError> {
        let (mut pos, segments, epoch) = {
            let state = self.state();
            (start, state.segments.clone(), state.epoch)
        };
        let mut batch = Batch {
            epoch,
            ..Batch::default()
        };
        let mut bytes = 0;
        while batch.entries.len() < max_events && (bytes < max_bytes || batch.entries.is_empty()) {
            let end = match segments.get(&pos.segment) {
                Some(&end) if pos.offset < end => end,
                // Past the end of this segment, or the segment is gone: on to the next one.
                _ => match segments.range(pos.segment + 1..).next() {
                    Some((&next, _)) => {
                        pos = Position {
                            segment: next,
                            offset: 0,
                        };
                        continue;
                    }
                    None => break,
                },
            };
            let path = segment_path(&self.inner.dir, pos.segment);
            let mut reader =
                SegmentReader::open(path, pos.offset, Some(end), self.inner.frame_limit)
                    .map_err(|e| self.io(e))?;
            while batch.entries.len() < max_events
                && (bytes < max_bytes || batch.entries.is_empty())
            {
                let Some((found, at, size)) = reader.next().map_err(|e| self.io(e))? else {
                    break;
                };
                let entry = match found {
                    Found::Intact(payload) => match serde_json::from_slice::<Message>(&payload) {
                        Ok(message) => Spooled::Record(message),
                        Err(e) => {
                            tracing::debug!(segment = pos.segment, offset = at, error = %e, "a spooled frame is not a record");
                            Spooled::Unreadable {
                                len: payload.len() as u64,
                                prefix: payload,
                            }
                        }
                    },
                    Found::Damaged { prefix, .. } => {
                        tracing::debug!(
                            segment = pos.segment,
                            offset = at,
                            bytes = size,
                            "a damaged span in the spool"
                        );
                        Spooled::Unreadable { prefix, len: size }
                    }
                };
                pos.offset = at + size;
                bytes += size;
                batch.entries.push(entry);
                batch.ends.push(pos);
                batch.sizes.push(size);
            }
        }
        Ok(batch)
    }

    /// Marks the first `count` entries of `batch` as delivered: moves and saves the cursor
    /// and deletes segments wholly before it. A batch read before the directory was
    /// recreated moves nothing (its records are replayed again from the new directory).
    pub fn commit(&self, batch: &Batch, count: usize) -> Result<(), SpoolError> {
        if count == 0 {
            return Ok(());
        }
        let upto = batch.ends[count - 1];
        let mut state = self.state();
        if state.epoch != batch.epoch {
            return Ok(());
        }
        state.read = upto;
        state.pending_events = state.pending_events.saturating_sub(count as u64);
        state.pending_bytes = state.pending_bytes.saturating_sub(batch.bytes(count));
        let done: Vec<u64> = state
            .segments
            .range(..upto.segment)
            .map(|(&id, _)| id)
            .collect();
        for id in done {
            state.segments.remove(&id);
            if let Err(e) = fs::remove_file(segment_path(&self.inner.dir, id)) {
                tracing::warn!(segment = id, error = %e, "cannot delete a replayed spool segment");
            }
        }
        self.update_gauges(&state);
        drop(state);
        write_cursor(&self.inner.dir, upto).map_err(|e| self.io(e))
    }

    /// Stops the writer after it has written (and synced) every accepted append, and
    /// releases the directory's lock.
    pub fn close(&self) {
        self.inner.tx.locked().take();
        let handle = self.inner.writer.locked().take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        self.inner.lock.locked().take();
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn command(&self, command: Command) -> bool {
        match &*self.inner.tx.locked() {
            Some(tx) => tx.send(command).is_ok(),
            None => false,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state()
    }

    fn update_gauges(&self, state: &State) {
        self.inner.update_gauges(state);
    }

    fn io(&self, error: io::Error) -> SpoolError {
        SpoolError::Io {
            dir: self.inner.dir.clone(),
            error,
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    fn fault(&self) -> Option<Fault> {
        self.fault.locked().clone()
    }

    fn update_gauges(&self, state: &State) {
        self.metrics.spool.events.set(state.pending_events as i64);
        self.metrics.spool.bytes.set(state.disk_bytes() as i64);
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::fs::OpenOptions;
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
}
