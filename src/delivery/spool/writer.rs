//! The writer thread: owns the newest segment, writes and fsyncs the appends waiting at
//! each moment as one group, and notices and heals a spool whose disk fails.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{
    create_private_dir, lock, private_file, recover, segment_path, sync_dir, write_cursor, Fault,
    FaultKind, Inner, Position, SpoolError, LOCK_FILE,
};
use crate::config::FsyncPolicy;
use crate::sync::Unpoisoned;

/// What the writer thread is asked to do.
pub(super) enum Command {
    Append(Append),
    /// Check that the directory and the open segment are still in place (replay could not
    /// read them).
    Check,
}

pub(super) struct Append {
    pub(super) frame: Vec<u8>,
    pub(super) reply: oneshot::Sender<Result<(), Fault>>,
}

/// While the spool is faulted, the writer tries to recover this often.
const HEAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Inner {
    /// A test's injected failure of `op`, if one is due.
    #[inline]
    fn inject(&self, _op: Op) -> io::Result<()> {
        #[cfg(test)]
        self.faults.due(_op)?;
        Ok(())
    }
}

/// File operations the writer performs, for injected failures in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(super) enum Op {
    Write,
    Sync,
    SyncDir,
}

/// The writer thread: owns the newest segment file.
pub(super) struct Writer {
    inner: Arc<Inner>,
    /// The newest segment, open for appending and reading (what it holds can be recovered
    /// through it after the directory was removed).
    file: File,
    segment: u64,
    segment_bytes: u64,
    /// The last fault logged, and when: one ERROR line per cause.
    logged: Option<(FaultKind, std::time::Instant)>,
}

impl Writer {
    /// A writer appending to `file`, segment `segment`, rolling at `segment_bytes`.
    pub(super) fn new(inner: Arc<Inner>, file: File, segment: u64, segment_bytes: u64) -> Self {
        Self {
            inner,
            file,
            segment,
            segment_bytes,
            logged: None,
        }
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            let first = if self.inner.fault().is_some() {
                match rx.recv_timeout(HEAL_INTERVAL) {
                    Ok(command) => Some(command),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                }
            };
            let mut batch = Vec::new();
            let mut check = false;
            let mut next = first;
            while let Some(command) = next {
                match command {
                    Command::Append(append) => batch.push(append),
                    Command::Check => check = true,
                }
                next = if batch.len() < 4096 {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if check || self.inner.fault().is_some() {
                self.heal();
            }
            if batch.is_empty() {
                continue;
            }
            let result = match self.inner.fault() {
                Some(fault) => Err(fault),
                None => self.write(&batch),
            };
            let written: u64 = batch.iter().map(|a| a.frame.len() as u64).sum();
            let count = batch.len() as u64;
            {
                let mut state = self.inner.state();
                state.reserved -= written;
                state.appending -= count;
                if result.is_ok() {
                    state.pending_events += count;
                    state.pending_bytes += written;
                }
                self.inner.update_gauges(&state);
            }
            if result.is_ok() {
                self.inner.added.notify_waiters();
            } else {
                // Recover at once where that is possible, so the next request is not refused.
                self.heal();
            }
            for append in batch {
                let _ = append.reply.send(result.clone());
            }
        }
        if let Err(e) = self.file.sync_all() {
            tracing::error!(error = %e, "cannot sync the spool at shutdown");
        }
    }

    /// Writes every frame, rolling segments as needed, then syncs once and checks that the
    /// segment is still the file in `spool.dir`. On failure, what was written past the last
    /// committed point is cut off and the spool is faulted.
    fn write(&mut self, batch: &[Append]) -> Result<(), Fault> {
        let start = self.committed_len();
        let result = (|| {
            let mut len = start;
            for append in batch {
                let size = append.frame.len() as u64;
                if len > 0 && len + size > self.segment_bytes {
                    self.sync()?;
                    self.set_committed(len);
                    self.roll()?;
                    len = 0;
                }
                self.inner.inject(Op::Write)?;
                self.file.write_all(&append.frame)?;
                len += size;
            }
            self.sync()?;
            if !self.in_place()? {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the segment being written is no longer in the directory",
                ));
            }
            self.set_committed(len);
            Ok(())
        })();
        result.map_err(|e| {
            // Cut off what was written past the last committed point, so the log stays whole.
            let _ = self.file.set_len(self.committed_len());
            self.fail(Fault::of(&e));
            self.inner.fault().unwrap_or_else(|| Fault::of(&e))
        })
    }

    fn sync(&self) -> io::Result<()> {
        match self.inner.fsync {
            FsyncPolicy::Always => {
                self.inner.inject(Op::Sync)?;
                self.file.sync_data()
            }
            FsyncPolicy::Never => Ok(()),
        }
    }

    /// Starts the next segment. The writer switches to it only once it exists on disk, so a
    /// failure leaves the current segment as it was.
    fn roll(&mut self) -> io::Result<()> {
        let next = self.segment + 1;
        let path = segment_path(&self.inner.dir, next);
        let file = segment_file(&path)?;
        let synced = match self.inner.fsync {
            FsyncPolicy::Always => self
                .inner
                .inject(Op::SyncDir)
                .and_then(|()| sync_dir(&self.inner.dir)),
            FsyncPolicy::Never => Ok(()),
        };
        if let Err(e) = synced {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.file = file;
        self.segment = next;
        self.inner.state().segments.insert(next, 0);
        Ok(())
    }

    /// Whether the open segment is still the file at its path in `spool.dir`.
    fn in_place(&self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let open = self.file.metadata()?;
        match fs::metadata(segment_path(&self.inner.dir, self.segment)) {
            Ok(on_disk) => Ok(on_disk.dev() == open.dev() && on_disk.ino() == open.ino()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Records `fault`, logging it once per cause (again after a quiet hour).
    fn fail(&mut self, fault: Fault) {
        let repeat = self.logged.is_some_and(|(kind, at)| {
            kind == fault.kind && at.elapsed() < std::time::Duration::from_secs(3600)
        });
        if !repeat {
            tracing::error!(dir = %self.inner.dir.display(), cause = %fault, "the spool cannot take records; webhooks that need it are answered 503 until it can");
            self.logged = Some((fault.kind, std::time::Instant::now()));
        }
        self.inner.metrics.spool.faulted.set(1);
        *self.inner.fault.locked() = Some(fault);
    }

    fn clear(&mut self) {
        let was = self.inner.fault.locked().take();
        if let Some(fault) = was {
            self.inner.metrics.spool.faulted.set(0);
            tracing::info!(dir = %self.inner.dir.display(), was = %fault, "the spool takes records again");
        }
    }

    /// Recovers from a fault, or finds one: recreates a removed directory (keeping what the
    /// open segment holds), or proves with a probe write that the disk takes writes again.
    fn heal(&mut self) {
        let result = match self.in_place() {
            Ok(true) if self.inner.fault().is_none() => return,
            Ok(true) => self.probe(),
            Ok(false) | Err(_) => self.restore(),
        };
        match result {
            Ok(()) => self.clear(),
            Err(e) => {
                let mut fault = Fault::of(&e);
                if self.in_place().ok() != Some(true) {
                    fault.kind = FaultKind::Vanished;
                }
                self.fail(fault);
            }
        }
    }

    /// Writes, syncs and removes a small file in `spool.dir`, and trims the open segment to
    /// its committed length (a failed write may have left bytes past it).
    fn probe(&mut self) -> io::Result<()> {
        let path = self.inner.dir.join("probe");
        let result = (|| {
            let mut file = private_file().write(true).truncate(true).open(&path)?;
            file.write_all(&[0u8; 64 << 10])?;
            self.inner.inject(Op::Sync)?;
            file.sync_data()?;
            self.file.set_len(self.committed_len())?;
            self.sync()
        })();
        let _ = fs::remove_file(&path);
        result
    }

    /// Recreates `spool.dir` after it was removed or replaced: takes its lock again, copies
    /// what the open segment holds after the cursor into a new segment (the records of
    /// closed segments went with the directory: counted and logged) and goes on there.
    fn restore(&mut self) -> io::Result<()> {
        let dir = self.inner.dir.clone();
        create_private_dir(&dir)?;
        {
            let mut held = self.inner.lock.locked();
            let still_ours = held
                .as_ref()
                .is_some_and(|file| same_file(file, &dir.join(LOCK_FILE)));
            if !still_ours {
                *held = Some(lock(&dir).map_err(|e| match e {
                    SpoolError::Io { error, .. } => error,
                    other => io::Error::other(other.to_string()),
                })?);
            }
        }
        let (from, committed, before, read) = {
            let state = self.inner.state();
            let from = match state.read.segment == self.segment {
                true => state.read.offset,
                false => 0,
            };
            let committed = state.segments.get(&self.segment).copied().unwrap_or(0);
            (from, committed, state.pending_events, state.read)
        };
        let next = self.segment + 1;
        let path = segment_path(&dir, next);
        let mut copy = private_file().write(true).truncate(true).open(&path)?;
        {
            use std::os::unix::fs::FileExt;
            let mut chunk = vec![0u8; 256 << 10];
            let mut at = from;
            while at < committed {
                let n = chunk.len().min((committed - at) as usize);
                self.file.read_exact_at(&mut chunk[..n], at)?;
                copy.write_all(&chunk[..n])?;
                at += n as u64;
            }
        }
        copy.sync_all()?;
        sync_dir(&dir)?;
        let cursor = match read.segment == self.segment {
            true => Position {
                segment: next,
                offset: 0,
            },
            false => read,
        };
        write_cursor(&dir, cursor)?;
        let recovered = recover(&dir, self.inner.frame_limit)?;
        self.file = segment_file(&path)?;
        self.segment = next;
        let lost = before.saturating_sub(recovered.pending_events);
        {
            let mut state = self.inner.state();
            state.segments = recovered.segments;
            state.read = recovered.read;
            state.pending_events = recovered.pending_events;
            state.pending_bytes = recovered.pending_bytes;
            state.epoch += 1;
            self.inner.update_gauges(&state);
        }
        self.inner.metrics.spool.lost_events.inc_by(lost);
        tracing::error!(
            dir = %dir.display(),
            lost,
            kept = recovered.pending_events,
            "the spool directory was removed and is recreated: records in its closed segments are lost, those in the open segment are kept"
        );
        if recovered.pending_events > 0 {
            self.inner.added.notify_waiters();
        }
        Ok(())
    }

    fn committed_len(&self) -> u64 {
        let state = self.inner.state();
        state.segments.get(&self.segment).copied().unwrap_or(0)
    }

    fn set_committed(&self, len: u64) {
        self.inner.state().segments.insert(self.segment, len);
    }
}

/// Opens (creating) a segment for appending and reading, readable by its owner only.
pub(super) fn segment_file(path: &Path) -> io::Result<File> {
    private_file().read(true).append(true).open(path)
}

/// Whether `file` is the file at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Injected I/O failures, for the tests of what the spool does when its disk fails.
#[cfg(test)]
pub(super) mod faults {
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use super::Op;
    use crate::sync::Unpoisoned;

    #[derive(Default)]
    pub(in crate::delivery::spool) struct Plan {
        /// Per planned failure: the operation, calls of it to let pass first, failures left.
        due: Mutex<Vec<(Op, u32, u32, io::ErrorKind)>>,
        /// fsync calls made on segments and the probe file.
        pub(in crate::delivery::spool) syncs: AtomicU64,
    }

    impl Plan {
        /// Lets `after` calls of `op` pass, then fails the next `times` with `kind`.
        pub(in crate::delivery::spool) fn fail(
            &self,
            op: Op,
            after: u32,
            times: u32,
            kind: io::ErrorKind,
        ) {
            self.due.locked().push((op, after, times, kind));
        }

        pub(in crate::delivery::spool) fn due(&self, op: Op) -> io::Result<()> {
            if op == Op::Sync {
                self.syncs.fetch_add(1, Ordering::SeqCst);
            }
            let mut due = self.due.locked();
            for (planned, after, times, kind) in due.iter_mut() {
                if *planned != op || *times == 0 {
                    continue;
                }
                if *after > 0 {
                    *after -= 1;
                    continue;
                }
                *times -= 1;
                return Err(io::Error::new(*kind, format!("injected {op:?} failure")));
            }
            Ok(())
        }
    }
}
