//! A bridge in this process, on port 0, against a mock cluster.

use std::net::SocketAddr;
use std::path::PathBuf;

use comm100_bridge::config::{Config, Secret};
use comm100_bridge::{serve, Listeners, ServeError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

/// Defaults (no environment), pointed at `bootstrap`, with [`TOKEN`] and a fresh spool
/// directory of its own (removed by [`Bridge::stop`]).
pub fn config(bootstrap: &str) -> Config {
    let mut c = Config::load_with_env(None, Some(Default::default())).unwrap();
    c.kafka.brokers = vec![bootstrap.to_owned()];
    c.auth.tokens = vec![Secret::new(TOKEN)];
    c.log.level = "warn".into();
    c.spool.dir = spool_dir();
    c
}

/// A new, empty directory for a spool, under the system temp dir.
pub fn spool_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("comm100-bridge-test-spool-")
        .tempdir()
        .unwrap()
        .keep()
}

/// A running bridge; stop it with [`Bridge::stop`].
pub struct Bridge {
    pub addr: SocketAddr,
    /// The admin listener's address, when `admin.listen` is not `""`.
    pub admin_addr: Option<SocketAddr>,
    spool_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServeError>>,
}

impl Bridge {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = match config.admin.listen {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let admin_addr = admin.as_ref().map(|a| a.local_addr().unwrap());
        let listeners = Listeners {
            webhook: listener,
            admin,
        };
        let spool_dir = config.spool.dir.clone();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(serve(config, listeners, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            admin_addr,
            spool_dir,
            shutdown: Some(tx),
            handle,
        }
    }

    /// Waits until the producer is connected to a broker: before that, a record goes to the
    /// spool (202) rather than to Kafka (200).
    pub async fn connected(&self) {
        let readyz = self.admin("/readyz");
        eventually(Duration::from_secs(20), "a connected broker", async || {
            (get(&readyz).await.json["brokers_up"].as_i64() > Some(0)).then_some(())
        })
        .await
    }

    /// Signals shutdown and returns what `serve` returned; removes a test spool directory.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        let _ = self.shutdown.take().unwrap().send(());
        self.join().await
    }

    /// Signals shutdown without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `serve` to return; removes a test spool directory.
    pub async fn join(self) -> Result<(), ServeError> {
        let result = self.handle.await.unwrap();
        let name = self
            .spool_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if name.starts_with("comm100-bridge-test-spool-") {
            let _ = std::fs::remove_dir_all(&self.spool_dir);
        }
        result
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// A URL on the admin listener (the webhook listener when there is none).
    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr.unwrap_or(self.addr), path)
    }
}
