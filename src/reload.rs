//! Rotation without restart: on SIGHUP, and when one of the files changes and then stays
//! unchanged for a second (checked every quarter second, so a Kubernetes Secret update needs
//! no signal), the token files and the TLS certificate are read again. A file that cannot
//! be used, or changes while it is read, is logged and the previous tokens or certificate
//! stay in force; SIGHUP never ends the process.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::LiveAuth;
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
