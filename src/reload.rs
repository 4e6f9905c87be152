//! Rotation without restart: on SIGHUP, and when one of the files changes and then stays
//! unchanged for a second (checked every quarter second, so a Kubernetes Secret update needs
//! no signal), the token files and the TLS certificate are read again. A file that cannot
//! be used, or changes while it is read, is logged and the previous tokens or certificate
//! stay in force; SIGHUP never ends the process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::auth::LiveAuth;
use crate::sync::Unpoisoned;
use crate::tls::Certificates;

/// How often the files are checked for changes.
const POLL: Duration = Duration::from_millis(250);

/// SIGHUP, taken over from its default action (ending the process) as soon as this exists.
pub struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangup {
    /// Installs the handler. Without it (an error is logged) SIGHUP keeps its default action.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::hangup()) {
                Ok(s) => Self(Some(s)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot handle SIGHUP; files are still reloaded when they change");
                    Self(None)
                }
            }
        }
        #[cfg(not(unix))]
        Self()
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.0.as_mut() {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

/// Reloads on SIGHUP and on changed files until the task is dropped.
pub async fn run(mut hangup: Hangup, auth: Arc<LiveAuth>, tls: Option<Arc<Certificates>>) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let signalled = tokio::select! {
            () = hangup.recv() => true,
            _ = poll.tick() => false,
        };
        let why = if signalled {
            "SIGHUP"
        } else {
            "a changed file"
        };
        if signalled {
            tracing::info!("SIGHUP: reading the token files and the TLS certificate again");
        }
        if auth.has_files() && (signalled || auth.files_changed()) {
            match auth.reload() {
                Ok(()) => tracing::info!("token files reloaded after {why}"),
                Err(e) => {
                    tracing::error!(error = %e, "token files not reloaded after {why}; the tokens in force stay")
                }
            }
        }
        if let Some(tls) = &tls {
            if signalled || tls.changed() {
                match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded after {why}"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded after {why}; keeping the previous one")
                    }
                }
            }
        }
    }
}

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
