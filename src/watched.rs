//! Files read again once they change and settle: a change is believed after the file stayed
//! unchanged for [`SETTLE`], and not when it changed while it was read.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::sync::Unpoisoned;

/// How long a changed file must stay as it is before it is read: a file rewritten in place
/// in several writes is not believed half-written.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What a watched file looked like: modification time, size and inode. A rewrite in place
/// changes the time or the size (even within one tick of a coarse clock); a replacement,
/// such as Kubernetes swapping a Secret volume's symlink, the inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64, u64)>);

impl Stamp {
    fn of(path: &Path) -> Self {
        Self(std::fs::metadata(path).ok().map(|m| {
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let inode = 0;
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                inode,
            )
        }))
    }
}

/// Files that are read together (the token files; a certificate and its key) and what they
/// looked like when they were last read.
#[derive(Debug)]
pub struct Watched {
    paths: Vec<PathBuf>,
    state: Mutex<WatchState>,
}

#[derive(Debug)]
struct WatchState {
    /// The files as they were read.
    read: Vec<Stamp>,
    /// The files as they differ from that, and since when they have looked so.
    changed: Option<(Vec<Stamp>, Instant)>,
}

/// The files changed while they were being read.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the files changed while they were read (a write in progress?): they are read again once \
     they have not changed for a second; write them by renaming a complete file into place"
)]
pub struct Changing;

impl Watched {
    pub fn new(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        let paths: Vec<PathBuf> = paths.into_iter().collect();
        Self {
            state: Mutex::new(WatchState {
                read: stamps(&paths),
                changed: None,
            }),
            paths,
        }
    }

    /// Whether the files differ from when they were last read and have looked the same for
    /// at least [`SETTLE`].
    pub fn settled_change(&self) -> bool {
        let now = stamps(&self.paths);
        let mut state = self.state.locked();
        if now == state.read {
            state.changed = None;
            return false;
        }
        match &state.changed {
            Some((seen, since)) if *seen == now => since.elapsed() >= SETTLE,
            _ => {
                state.changed = Some((now, Instant::now()));
                false
            }
        }
    }

    /// Runs `read` on the files. What it read, or its error, counts only if no file changed
    /// meanwhile: otherwise the answer is [`Changing`] and the next check reads them again.
    /// After an error the files count as read, so a bad file is not retried until it changes.
    pub fn read<T, E: From<Changing>>(&self, read: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let before = stamps(&self.paths);
        let result = read();
        if stamps(&self.paths) != before {
            return Err(Changing.into());
        }
        let mut state = self.state.locked();
        state.read = before;
        state.changed = None;
        result
    }
}

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths.iter().map(|p| Stamp::of(p)).collect()
}
