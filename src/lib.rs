//! comm100-bridge: Comm100 Live Chat webhooks in, one normalized record per event out, on its
//! own Kafka topic.
//!
//! The pipeline, one module per stage: [`http`] (routes, auth, limits) → [`event`] (parse +
//! normalize) → [`route`] (topic, key, headers) → [`kafka`] (idempotent `acks=all` producer,
//! dead letters) or, when Kafka cannot acknowledge in time, [`spool`] (durable local log,
//! replayed in order). [`reload`] re-reads token files and the certificate on SIGHUP.
//! [`serve`] runs it as a function of a configuration, a listener and a shutdown signal.

pub mod auth;
pub mod config;
pub mod dev;
pub mod event;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod reload;
pub mod route;
pub mod spool;
pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::LiveAuth;
use crate::config::Config;
use crate::kafka::Publisher;
use crate::metrics::Metrics;
use crate::route::Router;
use crate::spool::replay::Replay;
use crate::spool::{Spool, SpoolError};

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "no token is configured: set auth.tokens (or COMM100_BRIDGE__AUTH__TOKENS), \
         or set auth.allow_unauthenticated = true to accept anyone"
    )]
    NoToken,
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot open the spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Config(#[from] config::ConfigError),
}

/// Upper bound on flushing the producer at shutdown.
const FLUSH_BOUND: Duration = Duration::from_secs(10);

/// Runs the bridge on `listener` until `shutdown` resolves, then winds down: `/readyz`
/// turns 503 while the listener keeps serving for `http.shutdown_delay_ms`; the listener
/// closes and in-flight requests finish (each within the delivery deadline, in Kafka or in
/// the spool); the spool is replayed to Kafka for up to `spool.drain_on_shutdown_ms`; the
/// producer is flushed within a bound and the spool is synced. SIGHUP, from the start,
/// re-reads the token files and the TLS certificate.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let hangup = reload::Hangup::install();
    let auth = Arc::new(LiveAuth::load(&config.auth)?);
    if auth.current().is_open() && !config.auth.allow_unauthenticated {
        return Err(ServeError::NoToken);
    }
    let certificates = match &config.http.tls {
        Some(files) => Some(tls::Certificates::load(files)?),
        None => None,
    };
    let acceptor = certificates
        .as_ref()
        .map(|c| c.acceptor(config.http.http2))
        .transpose()?;
    let reloader = tokio::spawn(reload::run(hangup, auth.clone(), certificates));
    let metrics = Metrics::new();
    let spool = match config.spool.enabled {
        true => Some(Spool::open(
            &config.spool,
            config.spool_frame_limit(),
            metrics.clone(),
        )?),
        false => None,
    };
    let publisher = Publisher::new(&config, metrics.clone())?;
    let deadline = config.delivery.deadline();
    let app = Arc::new(http::App {
        auth,
        router: Router::new(&config.topics),
        publisher: publisher.clone(),
        spool: spool.clone(),
        metrics: metrics.clone(),
        max_body_bytes: config.http.max_body_bytes,
        deadline,
        dead_letter_rejected: config.dlq.rejected_bodies,
        retry_after_secs: deadline.as_secs().max(1),
        draining: AtomicBool::new(false),
        body_read_timeout: Duration::from_millis(config.http.body_read_timeout_ms),
        budget: http::Budget::new(
            config.http.max_inflight_requests,
            config.http.max_inflight_bytes,
        ),
        limits: http::ConnectionLimits {
            http2: config.http.http2,
            max_connections: config.http.max_connections,
            header_read_timeout: Duration::from_millis(config.http.header_read_timeout_ms),
            keep_alive_timeout: Duration::from_millis(config.http.keep_alive_timeout_ms),
            max_header_bytes: config.http.max_header_bytes,
            max_headers: config.http.max_headers,
        },
    });
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    if app.auth.current().is_open() {
        tracing::warn!("auth.allow_unauthenticated is set and no token is configured: anyone who can reach the listener can publish");
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = acceptor.is_some(), brokers = %config.kafka.brokers.join(","), spool = config.spool.enabled, "comm100-bridge listening");
    }

    let replay = spool
        .clone()
        .map(|s| Replay::spawn(s, publisher.clone(), metrics));

    let shutdown_delay = Duration::from_millis(config.http.shutdown_delay_ms);
    let draining = {
        let app = app.clone();
        async move {
            shutdown.await;
            app.draining.store(true, Ordering::SeqCst);
            if !shutdown_delay.is_zero() {
                tracing::info!(
                    delay_ms = shutdown_delay.as_millis() as u64,
                    "shutting down: /readyz answers 503; still serving until the delay passes"
                );
                tokio::time::sleep(shutdown_delay).await;
            }
        }
    };
    // A request can take the deadline to become durable, plus time to read its body.
    http::run(
        app,
        listener,
        acceptor,
        draining,
        deadline + Duration::from_secs(5),
    )
    .await;
    reloader.abort();

    if let Some(replay) = replay {
        let bound = Duration::from_millis(config.spool.drain_on_shutdown_ms);
        let pending = spool.as_ref().map_or(0, Spool::pending_events);
        if bound.is_zero() || pending == 0 {
            replay.stop().await;
        } else {
            tracing::info!(
                spooled = pending,
                bound_ms = bound.as_millis() as u64,
                "replaying the spool to Kafka before exit"
            );
            let left = replay.drain(tokio::time::sleep(bound), true).await;
            match left {
                0 => tracing::info!(replayed = pending, "spool drained"),
                n => tracing::warn!(
                    spooled = n,
                    replayed = pending.saturating_sub(n),
                    "spool not drained before exit; its records are replayed at the next start \
                     on this directory, or with `comm100-bridge spool drain`"
                ),
            }
        }
    }
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
    Ok(())
}
