//! comm100-bridge: Comm100 Live Chat webhooks in, one normalized record per event out, on its
//! own Kafka topic.
//!
//! The pipeline, one module per stage: [`http`] (routes, auth, limits, one answer per way a
//! request is refused) → [`event`] (parse + normalize, memory metered) → [`route`] (topic,
//! key, headers) → [`delivery`] (make it durable: [`delivery::kafka`], an idempotent
//! `acks=all` producer with dead letters, or, when Kafka cannot acknowledge in time,
//! [`delivery::spool`], a durable local log replayed in order), with [`metrics`] beside
//! every stage. [`reload`]
//! re-reads token files and the certificate on SIGHUP.
//! [`serve`] runs it as a function of a configuration, listeners and a shutdown signal:
//! [`Bridge::build`] loads what the configuration names, [`Bridge::run`] serves.

pub mod auth;
pub mod backfill;
pub mod client;
pub mod comm100;
pub mod config;
pub mod delivery;
pub mod dev;
pub mod event;
pub mod http;
pub mod metrics;
pub mod redrive;
pub mod registry;
pub mod reload;
pub mod route;
mod sync;
pub mod tls;
pub mod topics;
pub mod trace;
pub mod watched;

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this binary was built from (12 hex digits), or "unknown".
pub const COMMIT: &str = env!("COMM100_BRIDGE_COMMIT");

/// What `--version` prints after the program's name: `0.2.0 (commit 0123456789ab)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("COMM100_BRIDGE_COMMIT"),
    ")"
);

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::LiveAuth;
use crate::config::Config;
use crate::delivery::spool::replay::Replay;
use crate::delivery::spool::Spool;
use crate::delivery::Delivery;
use crate::metrics::Metrics;

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "no token is configured: set auth.tokens (or COMM100_BRIDGE__AUTH__TOKENS), \
         or set auth.allow_unauthenticated = true to accept anyone"
    )]
    NoToken,
    #[error("{0}")]
    Delivery(#[from] delivery::OpenError),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Tokens(#[from] auth::ReloadError),
    #[error("kafka.value_format = \"json_sr\": {0}")]
    Registry(#[from] registry::RegistryError),
    #[error(
        "cannot listen on {addr} ({key}): {source}; choose another address or stop what uses it"
    )]
    Listen {
        key: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The sockets the bridge serves.
pub struct Listeners {
    /// Webhooks (`http.listen`).
    pub webhook: TcpListener,
    /// `/healthz`, `/readyz` and `/metrics` (`admin.listen`); with `None` the webhook
    /// listener answers them.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds `http.listen` and, unless it is `""`, `admin.listen`.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let bind = |key: &'static str, addr: std::net::SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Listen { key, addr, source })
        };
        let webhook = bind("http.listen", config.http.listen).await?;
        let admin = match config.admin.listen {
            Some(addr) => Some(bind("admin.listen", addr).await?),
            None => None,
        };
        Ok(Self { webhook, admin })
    }
}

/// Checks what `config` asks of the stages beyond its own settings: librdkafka takes every
/// Kafka property, none of them one the bridge sets itself; the record of the largest body
/// fits `message.max.bytes`; every site of the token settings is a valid site label. [`Bridge::build`] and `check-config` run it.
pub fn check(config: &Config) -> Result<(), config::ConfigError> {
    delivery::kafka::properties::check(&config.kafka.properties)?;
    delivery::kafka::properties::check_producer(config)?;
    route::check_record_room(config)?;
    auth::check_site_labels(&config.auth)?;
    Ok(())
}

/// The tokens `config` names, read from their files; none at all is refused unless
/// `auth.allow_unauthenticated` is set. [`Bridge::build`] and `check-config` run it.
pub fn load_tokens(config: &Config) -> Result<LiveAuth, ServeError> {
    let auth = LiveAuth::load(&config.auth)?;
    if auth.current().is_open() && !config.auth.allow_unauthenticated {
        return Err(ServeError::NoToken);
    }
    Ok(auth)
}

/// Upper bound on flushing the producer at shutdown.
const FLUSH_BOUND: Duration = Duration::from_secs(10);

/// Runs the bridge on `listeners` until `shutdown` resolves: [`Bridge::build`], then
/// [`Bridge::run`].
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    Bridge::build(config, listeners.admin.is_some())
        .await?
        .run(listeners, shutdown)
        .await
}

/// A bridge built from its configuration: tokens, certificate, producer and spool loaded,
/// nothing served yet. Everything that can refuse to start fails here.
pub struct Bridge {
    config: Config,
    app: Arc<http::App>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    reloader: tokio::task::JoinHandle<()>,
}

impl Bridge {
    /// Loads what `config` names; `admin` says whether an admin listener will serve
    /// `/healthz`, `/readyz` and `/metrics` (else the webhook listener does). SIGHUP, from
    /// here on, re-reads the token files and the TLS certificate: call it inside a Tokio
    /// runtime. With `kafka.value_format = "json_sr"` it first looks up the schema ids.
    pub async fn build(config: Config, admin: bool) -> Result<Self, ServeError> {
        check(&config)?;
        let framing = registry::Framing::from_config(&config).await?;
        let hangup = reload::Hangup::install();
        let auth = Arc::new(load_tokens(&config)?);
        let certificates = match &config.http.tls {
            Some(files) => Some(tls::Certificates::load(files)?),
            None => None,
        };
        let acceptor = certificates
            .as_ref()
            .map(|c| c.acceptor(config.http.http2))
            .transpose()?;
        let reloader = tokio::spawn(reload::run(hangup, auth.clone(), certificates));
        let metrics = Metrics::new()
            .with_routes(&http::routes())
            .with_refusals(&http::refusal_codes());
        let delivery = Delivery::from_config(&config, metrics.clone(), framing)?;
        let app = Arc::new(http::App::from_config(
            &config, auth, delivery, metrics, admin,
        ));
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        if app.auth.current().is_open() {
            tracing::warn!("auth.allow_unauthenticated is set and no token is configured: anyone who can reach the listener can publish");
        }
        Ok(Self {
            config,
            app,
            acceptor,
            reloader,
        })
    }

    /// Serves `listeners` until `shutdown` resolves, then winds down: `/readyz` turns 503
    /// while the listeners keep serving for `http.shutdown_delay_ms`; they close and
    /// in-flight requests finish (each within the delivery deadline, in Kafka or in the
    /// spool); the spool is replayed to Kafka for up to `spool.drain_on_shutdown_ms`; the
    /// producer is flushed within a bound and the spool is synced.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let Self {
            config,
            app,
            acceptor,
            reloader,
        } = self;
        let publisher = app.delivery.publisher.clone();
        let spool = app.delivery.spool.clone();
        let metrics = app.metrics.clone();
        let Listeners {
            webhook: listener,
            admin,
        } = listeners;
        let deadline = config.delivery.deadline();
        // librdkafka connects only to brokers it has requests for: learn the cluster, and
        // whether it has the bridge's topics, now, not on the first webhook.
        tokio::spawn(topics::watch(
            publisher.clone(),
            topics::expected(&config),
            app.delivery.missing_topics.clone(),
        ));
        log_listening(&config, &listener, admin.as_ref(), acceptor.is_some());

        let replay = spool.clone().map(|s| {
            Replay::spawn(
                s,
                publisher.clone(),
                app.delivery.order.clone(),
                metrics,
                app.budget.replay_memory(),
            )
        });

        let shutdown_delay = Duration::from_millis(config.http.shutdown_delay_ms);
        let (stop, stopped) = watch::channel(false);
        let draining = begin_shutdown(shutdown, app.clone(), shutdown_delay, stop);
        let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        // A request can take the deadline to become durable, plus time to read its body.
        let drain = deadline + Duration::from_secs(5);
        let admin = admin.map(|listener| {
            tokio::spawn(http::run(
                app.clone(),
                http::Listener::Admin,
                listener,
                None,
                until_stopped(stopped.clone()),
                drain,
            ))
        });
        tokio::join!(
            draining,
            http::run(
                app,
                http::Listener::Webhook,
                listener,
                acceptor,
                until_stopped(stopped),
                drain,
            )
        );
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        reloader.abort();

        if let Some(replay) = replay {
            let bound = Duration::from_millis(config.spool.drain_on_shutdown_ms);
            replay_before_exit(replay, spool.as_ref(), bound).await;
        }
        close(&publisher, spool).await;
        Ok(())
    }
}

/// Logs where the bridge listens and what it publishes to.
fn log_listening(config: &Config, webhook: &TcpListener, admin: Option<&TcpListener>, tls: bool) {
    if let Ok(addr) = webhook.local_addr() {
        let admin = admin
            .and_then(|a| a.local_addr().ok())
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        tracing::info!(%addr, %admin, tls, brokers = %config.kafka.brokers.join(","), spool = config.spool.enabled, "comm100-bridge listening");
    }
}

/// Once `shutdown` resolves: `/readyz` answers 503, the listeners keep serving for `delay`,
/// then `stop` tells them to close.
async fn begin_shutdown(
    shutdown: impl Future<Output = ()>,
    app: Arc<http::App>,
    delay: Duration,
    stop: watch::Sender<bool>,
) {
    shutdown.await;
    app.drain();
    if !delay.is_zero() {
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "shutting down: /readyz answers 503; still serving until the delay passes"
        );
        tokio::time::sleep(delay).await;
    }
    let _ = stop.send(true);
}

/// Replays the spool to Kafka for up to `bound` (no time: stops replay at once).
async fn replay_before_exit(replay: Replay, spool: Option<&Spool>, bound: Duration) {
    let pending = spool.map_or(0, Spool::pending_events);
    if bound.is_zero() || pending == 0 {
        replay.stop().await;
        return;
    }
    tracing::info!(
        spooled = pending,
        bound_ms = bound.as_millis() as u64,
        "replaying the spool to Kafka before exit"
    );
    match replay.drain(tokio::time::sleep(bound), true).await {
        0 => tracing::info!(replayed = pending, "spool drained"),
        n => tracing::warn!(
            spooled = n,
            replayed = pending.saturating_sub(n),
            "spool not drained before exit; its records are replayed at the next start \
             on this directory, or with `comm100-bridge spool drain`"
        ),
    }
}

/// Flushes the producer within [`FLUSH_BOUND`] and syncs the spool.
async fn close(publisher: &delivery::kafka::Publisher, spool: Option<Spool>) {
    match publisher.flush(FLUSH_BOUND).await {
        Ok(()) => tracing::info!("producer flushed"),
        Err(e) => tracing::warn!(error = %e, "producer not fully flushed at shutdown"),
    }
    if let Some(spool) = spool {
        let remaining = spool.pending_events();
        tokio::task::spawn_blocking(move || spool.close())
            .await
            .ok();
        tracing::info!(spooled = remaining, "spool synced; bye");
    }
}
