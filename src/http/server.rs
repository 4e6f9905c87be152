//! The accept loop: connection limits (in all, per client address), TLS, HTTP/1.1 and
//! HTTP/2, idle keep-alive connections closed, and a drain at shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::{handle, App, Listener};
use crate::config::{AdminConfig, HttpConfig};
use crate::metrics::{Metrics, RefusedConnection};
use crate::sync::Unpoisoned;

/// Concurrent streams on one HTTP/2 connection (each also takes a slot of the in-flight
/// budget once it is a webhook request).
pub(super) const HTTP2_MAX_STREAMS: u32 = 100;

impl ConnectionLimits {
    /// The webhook listener's: `http.*`.
    pub fn webhook(http: &HttpConfig) -> Self {
        Self {
            http2: http.http2,
            max_connections: http.max_connections,
            max_connections_per_client: Some(http.max_connections_per_client),
            header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
            keep_alive_timeout: Duration::from_millis(http.keep_alive_timeout_ms),
            max_header_bytes: http.max_header_bytes,
            max_headers: http.max_headers,
        }
    }

    /// The admin listener's: HTTP/1.1, `admin.max_connections`, the webhook's timeouts and
    /// header limits.
    pub fn admin(http: &HttpConfig, admin: &AdminConfig) -> Self {
        Self {
            http2: false,
            max_connections: admin.max_connections,
            max_connections_per_client: None,
            ..Self::webhook(http)
        }
    }
}

/// What one connection may do.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Serve HTTP/2 (h2c and by ALPN) besides HTTP/1.1.
    pub http2: bool,
    pub max_connections: usize,
    /// Connections one address may hold at once (trusted proxies excepted); `None`: any.
    pub max_connections_per_client: Option<usize>,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// Accepts connections for `role` until `shutdown` resolves, then waits up to `drain` for
/// the connections' in-flight requests to finish. At most `max_connections` are served at
/// once; further ones wait in the listen backlog. On the webhook listener, a connection
/// from an address the allowlist refuses, or one past its address's
/// `max_connections_per_client`, is closed as soon as it is accepted. With `tls`, each
/// connection first completes a TLS handshake within the header read timeout.
pub async fn run(
    app: Arc<App>,
    role: Listener,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let limits = match role {
        Listener::Webhook => app.limits.clone(),
        Listener::Admin => app.admin_limits.clone(),
    };
    let clients = Clients::default();
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(connection_builder(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Admitted(held) = match role {
            Listener::Webhook => match admit(&app, peer, &limits, &clients) {
                Some(admitted) => admitted,
                None => continue,
            },
            Listener::Admin => Admitted(None),
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            role,
            app: app.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            peer,
            keep_alive: limits.keep_alive_timeout,
        };
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _slot = (slot, held);
            let Some(acceptor) = tls else {
                return connection.serve(stream).await;
            };
            let failed =
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => return connection.serve(stream).await,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_owned(),
                };
            tracing::debug!(%peer, error = failed, "TLS handshake failed");
            if role == Listener::Webhook {
                connection
                    .app
                    .metrics
                    .connection_refused(RefusedConnection::TlsHandshakeFailed);
            }
        });
    }
    drop(listener);
    drain_connections(graceful, drain).await;
}

/// Waits up to `bound` for the connections' in-flight requests to finish.
async fn drain_connections(graceful: GracefulShutdown, bound: Duration) {
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting; draining in-flight requests"
    );
    if tokio::time::timeout(bound, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?bound,
            "connections still open after the drain bound; closing them"
        );
    }
}

/// The HTTP server of one listener: HTTP/1.1, and HTTP/2 when `limits` allow it, within
/// the header limits and timeouts of `limits`.
fn connection_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !limits.http2 {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    if limits.http2 {
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(Some(HTTP2_MAX_STREAMS))
            // Streams a client opens and resets at once (CVE-2023-44487, "rapid reset").
            .max_pending_accept_reset_streams(Some(20))
            .max_local_error_reset_streams(Some(256))
            // A peer that stops answering pings is gone: close its connection.
            .keep_alive_interval(Some(limits.keep_alive_timeout))
            .keep_alive_timeout(limits.header_read_timeout);
    }
    builder
}

/// A webhook connection let in, counted against its client address when it has a limit.
struct Admitted(Option<ClientConnection>);

/// Whether a webhook connection from `peer` is served; refused before any byte is read (or
/// a TLS handshake is spent on it): an address the allowlist refuses, and one over its
/// connection limit.
fn admit(
    app: &App,
    peer: SocketAddr,
    limits: &ConnectionLimits,
    clients: &Clients,
) -> Option<Admitted> {
    let ip = peer.ip().to_canonical();
    let auth = app.auth.current();
    if !auth.connection_allowed(ip) {
        app.metrics
            .auth_failed(crate::auth::AuthError::AddressNotAllowed);
        app.metrics
            .connection_refused(RefusedConnection::AddressNotAllowed);
        return None;
    }
    let Some(max) = limits.max_connections_per_client else {
        return Some(Admitted(None));
    };
    if auth.is_trusted_proxy(ip) {
        return Some(Admitted(None));
    }
    match clients.take(ip, max) {
        Some(guard) => Some(Admitted(Some(guard))),
        None => {
            tracing::debug!(%peer, max, "closing a connection over http.max_connections_per_client");
            app.metrics
                .connection_refused(RefusedConnection::PerClientLimit);
            None
        }
    }
}

/// Connections held per client address.
#[derive(Default, Clone)]
pub(super) struct Clients(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Clients {
    /// One more connection for `ip`, unless it holds `max` already.
    fn take(&self, ip: IpAddr, max: usize) -> Option<ClientConnection> {
        let mut counts = self.0.locked();
        let count = counts.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientConnection(self.clone(), ip))
    }
}

/// A connection counted against its client address until dropped.
pub(super) struct ClientConnection(Clients, IpAddr);

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let mut counts = self.0 .0.locked();
        if let Some(count) = counts.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.1);
            }
        }
    }
}

/// One accepted connection, ready to be served over plain TCP or TLS.
pub(super) struct Connection {
    role: Listener,
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
    keep_alive: Duration,
}

impl Connection {
    /// Serves HTTP on `io` until the client leaves, shutdown drains it, or it has had no
    /// request in flight for the keep-alive timeout.
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            role,
            app,
            builder,
            watcher,
            peer,
            keep_alive,
        } = self;
        let activity = Arc::new(Activity::new());
        let service = {
            let (app, activity) = (app.clone(), activity.clone());
            service_fn(move |req| {
                let (app, activity) = (app.clone(), activity.clone());
                async move {
                    let _active = activity.begin();
                    handle(app, role, peer, req).await
                }
            })
        };
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let conn = watcher.watch(conn);
        tokio::pin!(conn);
        loop {
            tokio::select! {
                result = &mut conn => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                        if role == Listener::Webhook {
                            refused_by_hyper(&app.metrics, e.as_ref());
                        }
                    }
                    return;
                }
                () = tokio::time::sleep_until(activity.idle_deadline(keep_alive)) => {
                    if activity.idle_for(keep_alive) {
                        tracing::debug!(%peer, "closing an idle keep-alive connection");
                        return;
                    }
                }
            }
        }
    }
}

/// Counts a request the HTTP layer answered itself, before any route: a head over the
/// limits (431) or not HTTP (400).
fn refused_by_hyper(metrics: &Metrics, error: &(dyn std::error::Error + 'static)) {
    let Some(error) = error.downcast_ref::<hyper::Error>() else {
        return;
    };
    if error.is_parse_too_large() {
        metrics.connection_refused(RefusedConnection::HeadTooLarge);
    } else if error.is_parse() {
        metrics.connection_refused(RefusedConnection::MalformedRequest);
    }
}

/// Requests in flight on one connection, and when the last one ended.
pub(super) struct Activity {
    inflight: AtomicUsize,
    last: Mutex<tokio::time::Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            inflight: 0.into(),
            last: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// A request begins; it ends when the returned guard is dropped, however it ends.
    fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        ActiveRequest(self.clone())
    }

    fn idle_deadline(&self, keep_alive: Duration) -> tokio::time::Instant {
        *self.last.locked() + keep_alive
    }

    fn idle_for(&self, keep_alive: Duration) -> bool {
        self.inflight.load(Ordering::SeqCst) == 0
            && tokio::time::Instant::now() >= self.idle_deadline(keep_alive)
    }
}

/// One request in flight on a connection.
pub(super) struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        *self.0.last.locked() = tokio::time::Instant::now();
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}
