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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::config::Config;
use crate::kafka::Publisher;
use crate::metrics::Metrics;
use crate::route::Router;

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
}

/// Upper bound on flushing the producer at shutdown.
const FLUSH_BOUND: Duration = Duration::from_secs(10);

/// Runs the bridge on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (each waits at most the delivery deadline) and flushes the
/// producer within a bound.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if config.auth.tokens.is_empty() && !config.auth.allow_unauthenticated {
        return Err(ServeError::NoToken);
    }
    let metrics = Metrics::new();
    let publisher = Publisher::new(&config, metrics.clone())?;
    let deadline = config.delivery.deadline();
    let app = Arc::new(http::App {
        auth: Auth::new(&config.auth.tokens),
        router: Router::new(&config.topics),
        publisher: publisher.clone(),
        metrics,
        max_body_bytes: config.http.max_body_bytes,
        retry_after_secs: deadline.as_secs().max(1),
    });
    if app.auth.is_open() {
        tracing::warn!("auth.allow_unauthenticated is set and no token is configured: anyone who can reach the listener can publish");
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, brokers = %config.kafka.brokers.join(","), "comm100-bridge listening");
    }

    // A request can take the deadline to publish, plus time to read its body.
    http::run(app, listener, shutdown, deadline + Duration::from_secs(5)).await;

    match publisher.flush(FLUSH_BOUND).await {
        Ok(()) => tracing::info!("producer flushed; bye"),
        Err(e) => tracing::warn!(error = %e, "producer not fully flushed at shutdown"),
    }
    Ok(())
}
