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

mod frame;
pub mod inspect;
pub mod replay;
mod writer;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, Notify};

use crate::config::{FsyncPolicy, SpoolConfig};
use crate::metrics::Metrics;
use crate::route::Message;
use crate::sync::Unpoisoned;
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

/// Takes the directory's lock (an advisory `flock` on `lock`, released when the process
/// ends however it ends) and writes this process's pid in it.
fn lock(dir: &Path) -> Result<File, SpoolError> {
    let io_err = |error| SpoolError::Io {
        dir: dir.to_owned(),
        error,
    };
    let path = dir.join(LOCK_FILE);
    let mut file = private_file()
        .read(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    // `spool inspect` takes a shared lock for an instant to see whether anyone holds it:
    // a few tries tell that apart from a holder.
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) if tries < 10 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    dir: dir.to_owned(),
                    holder: holder(dir).unwrap_or_else(|| "unknown".into()),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
    }
    file.set_len(0).map_err(io_err)?;
    writeln!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(file)
}

/// The pid written by the process that holds `dir`'s lock, or `None` when no one holds it.
pub fn holder(dir: &Path) -> Option<String> {
    let file = File::open(dir.join(LOCK_FILE)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(_) => {
            let pid = fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
            Some(pid.trim().to_owned()).filter(|p| !p.is_empty())
        }
    }
}

/// Creates `dir` (and its parents) if needed, and makes it the owner's alone (0700): the
/// spool holds chat transcripts and visitor details. A directory the process may not
/// change (a mounted volume owned by another user) is logged and left as it is.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), error = %e, "the spool directory is readable by others and cannot be made private (0700); its files are 0600");
        }
    }
    Ok(())
}

/// Options that create a file readable and writable by its owner only (0600).
fn private_file() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.create(true).mode(0o600);
    options
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The cursor file: segment and offset, then a CRC-32 of both.
fn write_cursor(dir: &Path, pos: Position) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&pos.segment.to_le_bytes());
    bytes.extend_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("cursor.tmp");
    private_file()
        .write(true)
        .truncate(true)
        .open(&tmp)?
        .write_all(&bytes)?;
    fs::rename(&tmp, dir.join(CURSOR_FILE))
}

fn read_cursor(dir: &Path) -> Option<Position> {
    let bytes = fs::read(dir.join(CURSOR_FILE)).ok()?;
    if bytes.len() != 20 || crc32fast::hash(&bytes[..16]).to_le_bytes() != bytes[16..] {
        tracing::warn!(dir = %dir.display(), "spool cursor is unreadable; replaying from the oldest segment");
        return None;
    }
    Some(Position {
        segment: u64::from_le_bytes(bytes[..8].try_into().ok()?),
        offset: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
    })
}

struct Recovered {
    segments: BTreeMap<u64, u64>,
    read: Position,
    pending_events: u64,
    pending_bytes: u64,
}

/// The ids of the segments in `dir`, oldest first.
fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if let Ok(id) = stem.parse() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Scans every segment, cuts off torn tails, and counts what follows the cursor. A damaged
/// span followed by intact frames is kept: replay sends it to the dead-letter topic and goes
/// on with the frames after it.
fn recover(dir: &Path, limit: usize) -> io::Result<Recovered> {
    let ids = segment_ids(dir)?;
    let oldest = ids.first().copied().unwrap_or(1);
    let newest = ids.last().copied().unwrap_or(1);
    let mut read = read_cursor(dir).unwrap_or(Position {
        segment: oldest,
        offset: 0,
    });
    if read.segment < oldest || read.segment > newest {
        read = Position {
            segment: oldest,
            offset: 0,
        };
    }

    let mut segments = BTreeMap::new();
    let (mut pending_events, mut pending_bytes) = (0, 0);
    for id in ids {
        let path = segment_path(dir, id);
        let mut reader = SegmentReader::open(path.clone(), 0, None, limit)?;
        let file_len = reader.end;
        let mut offset = 0u64;
        let mut boundaries_hit_cursor = read.segment != id || read.offset == 0;
        let mut frames = Vec::new();
        while let Some((found, at, size)) = reader.next()? {
            match found {
                Found::Intact(_) => {}
                Found::Damaged { tail: false, .. } => tracing::warn!(
                    segment = %path.display(),
                    offset = at,
                    damaged_bytes = size,
                    "spool segment has a damaged frame; it goes to the dead-letter topic and the records after it are kept"
                ),
                Found::Damaged { tail: true, .. } => {
                    tracing::warn!(
                        segment = %path.display(),
                        valid_bytes = at,
                        dropped_bytes = file_len - at,
                        "spool segment has a torn or corrupt tail (a crash during a write); cutting it off"
                    );
                    let file = OpenOptions::new().write(true).open(&path)?;
                    file.set_len(at)?;
                    file.sync_all()?;
                    break;
                }
            }
            frames.push((at, size));
            offset = at + size;
            if read.segment == id && offset == read.offset {
                boundaries_hit_cursor = true;
            }
        }
        if read.segment == id && (!boundaries_hit_cursor || read.offset > offset) {
            tracing::warn!(segment = %path.display(), "spool cursor is not on a record boundary; replaying the segment from its start");
            read.offset = 0;
        }
        for (start, size) in frames {
            if (id, start) >= (read.segment, read.offset) {
                pending_events += 1;
                pending_bytes += size;
            }
        }
        segments.insert(id, offset);
    }
    Ok(Recovered {
        segments,
        read,
        pending_events,
        pending_bytes,
    })
}

#[cfg(test)]
mod tests;
