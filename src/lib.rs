//! comm100-bridge: Comm100 Live Chat webhooks in, one normalized record per event out, on its
//! own Kafka topic.
//!
//! The pipeline, one module per stage: [`http`] (routes, auth, limits) → [`event`] (parse +
//! normalize) → [`route`] (topic, key, headers) → [`kafka`] (idempotent `acks=all` producer).
//! [`serve`] runs it as a function of a configuration, a listener and a shutdown signal.

pub mod auth;
pub mod config;
pub mod dev;
pub mod event;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod route;
pub mod spool;
pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::config::Config;
use crate::kafka::Publisher;
use crate::metrics::Metrics;
use crate::route::Router;
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
}

/// Upper bound on flushing the producer at shutdown.
const FLUSH_BOUND: Duration = Duration::from_secs(10);

/// Runs the bridge on `listener` until `shutdown` resolves, then drains: `/readyz` turns
/// 503, the listener closes, in-flight requests finish (each within the delivery deadline,
/// in Kafka or in the spool), spool replay stops, the producer is flushed within a bound
/// and the spool is synced.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let auth = Auth::from_config(&config.auth);
    if auth.is_open() && !config.auth.allow_unauthenticated {
        return Err(ServeError::NoToken);
    }
    let certificates = match &config.http.tls {
        Some(files) => Some(tls::Certificates::load(files)?),
        None => None,
    };
    let acceptor = certificates.as_ref().map(|c| c.acceptor()).transpose()?;
    let reloader = certificates.map(|c| tokio::spawn(c.watch()));
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
            max_connections: config.http.max_connections,
            header_read_timeout: Duration::from_millis(config.http.header_read_timeout_ms),
            keep_alive_timeout: Duration::from_millis(config.http.keep_alive_timeout_ms),
            max_header_bytes: config.http.max_header_bytes,
            max_headers: config.http.max_headers,
        },
    });
    if app.auth.is_open() {
        tracing::warn!("auth.allow_unauthenticated is set and no token is configured: anyone who can reach the listener can publish");
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = acceptor.is_some(), brokers = %config.kafka.brokers.join(","), spool = config.spool.enabled, "comm100-bridge listening");
    }

    let (stop_replay, stop_rx) = watch::channel(false);
    let replay = spool
        .clone()
        .map(|s| tokio::spawn(spool::replay::run(s, publisher.clone(), metrics, stop_rx)));

    let draining = {
        let app = app.clone();
        async move {
            shutdown.await;
            app.draining.store(true, Ordering::SeqCst);
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
    if let Some(reloader) = reloader {
        reloader.abort();
    }

    let _ = stop_replay.send(true);
    if let Some(replay) = replay {
        let _ = replay.await;
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
