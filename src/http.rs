//! HTTP: routes, body limit, auth and JSON answers; the accept loop with graceful shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{
    ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use uuid::Uuid;

use crate::auth::LiveAuth;
use crate::config::HttpConfig;
use crate::delivery::spool::replay::Memory;
use crate::delivery::{Delivery, Outcome};
use crate::event::{Exceeded, Meter, RejectError, Site, Timestamp};
use crate::metrics::{DlqReason, Metrics};
use crate::route::Message;
use crate::route::Router;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub auth: Arc<LiveAuth>,
    pub router: Router,
    pub delivery: Delivery,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// Publish the bodies of 400/422 answers to the dead-letter topic.
    pub dead_letter_rejected: bool,
    /// `Retry-After` of a 503, in seconds.
    pub retry_after_secs: u64,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
    pub body_read_timeout: Duration,
    pub budget: Budget,
    pub limits: ConnectionLimits,
    /// The admin listener's limits.
    pub admin_limits: ConnectionLimits,
    /// Whether the webhook listener also answers `/healthz`, `/readyz` and `/metrics`.
    pub admin_routes_on_webhook: bool,
}

/// Concurrent streams on one HTTP/2 connection (each also takes a slot of the in-flight
/// budget once it is a webhook request).
const HTTP2_MAX_STREAMS: u32 = 100;

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

type Body = Full<Bytes>;

/// Where a request path leads.
enum Route {
    Webhook(Option<Site>),
    BadSite,
    Healthz,
    Readyz,
    Metrics,
    NotFound,
}

/// Which of the two listeners a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `http.listen`: webhooks, and the admin routes only when configured so.
    Webhook,
    /// `admin.listen`: `/healthz`, `/readyz` and `/metrics` only.
    Admin,
}

impl Listener {
    /// `route`, or [`Route::NotFound`] where this listener does not serve it.
    fn serves(self, route: Route, app: &App) -> Route {
        match (self, route) {
            (Self::Admin, Route::Webhook(_) | Route::BadSite) => Route::NotFound,
            (Self::Webhook, Route::Healthz | Route::Readyz | Route::Metrics)
                if !app.admin_routes_on_webhook =>
            {
                Route::NotFound
            }
            (_, route) => route,
        }
    }
}

impl Route {
    fn of(path: &str) -> Self {
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        match path {
            "/webhooks/comm100" => Self::Webhook(None),
            "/healthz" => Self::Healthz,
            "/readyz" => Self::Readyz,
            "/metrics" => Self::Metrics,
            _ => match path.strip_prefix("/webhooks/comm100/") {
                Some(label) => Site::parse(label).map_or(Self::BadSite, |s| Self::Webhook(Some(s))),
                None => Self::NotFound,
            },
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Healthz => "healthz",
            Self::Readyz => "readyz",
            Self::Metrics => "metrics",
            Self::BadSite | Self::NotFound => "other",
        }
    }
}

/// Serves one request; never fails (errors are JSON answers).
pub async fn handle(
    app: Arc<App>,
    listener: Listener,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let route = listener.serves(Route::of(req.uri().path()), &app);
    // A guard, not inc/dec: hyper drops this future when the client resets the stream or
    // goes away mid-request, and the gauge must come down all the same.
    let _inflight =
        matches!(route, Route::Webhook(_)).then(|| GaugeGuard::inc(&app.metrics.inflight_requests));
    let label = route.label();
    let method = req.method().clone();
    // The per-request line is at debug: build its redacted target only when it is logged.
    let target = tracing::enabled!(tracing::Level::DEBUG).then(|| loggable_target(req.uri()));

    let response = dispatch(&app, peer, route, req).await;

    let status = response.status();
    app.metrics
        .observe_request(label, status.as_u16(), started.elapsed().as_secs_f64());
    tracing::debug!(%method, target = target.as_deref().unwrap_or(""), status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    Ok(response)
}

/// The request target for logs, with the value of every `token` query parameter redacted.
fn loggable_target(uri: &http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let decoded: String = form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            if decoded == "token" {
                format!("{key}=REDACTED")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

async fn dispatch(
    app: &App,
    peer: SocketAddr,
    route: Route,
    req: Request<Incoming>,
) -> Response<Body> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match route {
        Route::Webhook(site) if req.method() == Method::POST => webhook(app, peer, site, req).await,
        Route::Webhook(_) => method_not_allowed("POST"),
        Route::Healthz if get => json_response(StatusCode::OK, &json!({"status": "ok"})),
        Route::Readyz if get => readyz(app),
        Route::Metrics if get => {
            let mut r = Response::new(Body::from(app.metrics.encode()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Route::Healthz | Route::Readyz | Route::Metrics => method_not_allowed("GET, HEAD"),
        Route::BadSite => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route: a site label is 1 to 64 of A-Z a-z 0-9 _ . -",
        ),
        Route::NotFound => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route; webhooks are posted to /webhooks/comm100 or /webhooks/comm100/{site}",
        ),
    }
}

fn readyz(app: &App) -> Response<Body> {
    let known = app.delivery.publisher.brokers_up();
    let up = known.max(0);
    let not_ready = |reason: &str| {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not_ready", "reason": reason, "brokers_up": up}),
        )
    };
    if app.draining.load(Ordering::SeqCst) {
        return not_ready("shutting down");
    }
    // A configuration error: traffic should stay with replicas that can publish.
    if let Some(problem) = app.delivery.publisher.authentication_error() {
        return not_ready(&problem);
    }
    // Until the first statistics (or a report that every broker is down), requests would
    // find a producer that does not know the cluster yet.
    if known < 0 {
        return not_ready("connecting to Kafka");
    }
    if let Some(fault) = app.delivery.spool.as_ref().and_then(|s| s.fault()) {
        return not_ready(&format!("the spool cannot take records: {fault}"));
    }
    match &app.delivery.spool {
        Some(spool) if up > 0 || spool.has_room() => json_response(
            StatusCode::OK,
            &json!({
                "status": "ready",
                "brokers_up": up,
                "spooling": up == 0 || spool.pending_events() > 0,
            }),
        ),
        Some(_) => not_ready("no Kafka broker is connected and the spool is full"),
        None if up == 0 => not_ready("no Kafka broker is connected"),
        None if app.delivery.publisher.not_acknowledging() => {
            not_ready("Kafka is not acknowledging records and there is no spool")
        }
        None => json_response(
            StatusCode::OK,
            &json!({"status": "ready", "brokers_up": up}),
        ),
    }
}

async fn webhook(
    app: &App,
    peer: SocketAddr,
    site: Option<Site>,
    req: Request<Incoming>,
) -> Response<Body> {
    match accept(app, peer, site, req).await {
        Ok(response) => response,
        Err(refused) => refused.response(app),
    }
}

/// Authorize, read the body, parse, deliver, answer.
async fn accept(
    app: &App,
    peer: SocketAddr,
    site: Option<Site>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Refused> {
    let (parts, body) = req.into_parts();
    authorize(app, &parts, peer, site.as_ref())?;
    let gzip = content_encoding(&parts.headers)?;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body_bytes as u64) {
        return Err(Refusal::TooLarge.because("the body"));
    }

    // A request slot and a start for its record and parse tree, from the budget and from
    // its client's share; the body's memory is added as it arrives, so a slow sender holds
    // only what it has sent.
    let client = app
        .auth
        .current()
        .client_address(&parts, peer.ip())
        .unwrap_or_else(|| peer.ip().to_canonical());
    let held = app
        .budget
        .try_acquire(client, START_BYTES)
        .map_err(Crowded::refused)?;
    let body = read(app, body, declared, gzip, &held).await?;

    let site_label = site.as_ref().map(|s| s.as_str().to_owned());
    let parsed = {
        let grow = |n| app.budget.grow(&held, n);
        let meter = Meter::new(START_BYTES, &grow);
        app.router.route_body(&body, site, Timestamp::now(), &meter)
    };
    let message = match parsed {
        Ok(message) => message,
        Err(RejectError::Memory(Exceeded::Busy)) => return Err(Refusal::Busy.plain()),
        Err(e) => {
            let (refusal, reason) = match e {
                RejectError::InvalidJson(_) => (Refusal::InvalidJson, DlqReason::InvalidJson),
                RejectError::MissingEvent => (Refusal::MissingEvent, DlqReason::MissingEvent),
                RejectError::Memory(_) => (Refusal::TooComplex, DlqReason::BodyTooComplex),
            };
            if app.dead_letter_rejected {
                let room = app.budget.try_dead_letter(body.len());
                app.delivery
                    .publisher
                    .dead_letter_body(body, reason, site_label.as_deref(), room);
            }
            return Err(refusal.because(e));
        }
    };
    app.metrics.of(message.kind).received.inc();
    // The record's memory stays reserved until the answer: the producer holds its copy.
    let _held = held;
    answer(app, &message, app.delivery.deliver(&message).await)
}

/// Checks the token, the site and the client's address.
fn authorize(
    app: &App,
    parts: &http::request::Parts,
    peer: SocketAddr,
    site: Option<&Site>,
) -> Result<(), Refused> {
    app.auth
        .current()
        .check(parts, peer.ip(), site)
        .map_err(|e| {
            app.metrics.auth_failed(e);
            match e.is_forbidden() {
                true => Refusal::Forbidden.plain(),
                false => Refusal::Unauthorized.plain(),
            }
        })
}

/// Whether the body is gzip: `gzip`, `x-gzip` or `identity` (any case) are accepted.
fn content_encoding(headers: &http::HeaderMap) -> Result<bool, Refused> {
    match headers.get(CONTENT_ENCODING).map(HeaderValue::as_bytes) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case(b"identity") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip") => Ok(true),
        Some(_) => Err(Refusal::UnsupportedEncoding.plain()),
    }
}

/// The whole body, decompressed, within the body timeout, the size limit and the budget:
/// each buffer is paid for from `held` before it is allocated.
async fn read(
    app: &App,
    body: Incoming,
    declared: Option<u64>,
    gzip: bool,
    held: &Held,
) -> Result<Bytes, Refused> {
    let mut room = |room: Room| app.budget.room(held, room);
    let read = read_body(
        body,
        declared.map_or(0, |n| n as usize),
        app.max_body_bytes,
        &mut room,
    );
    let body = match tokio::time::timeout(app.body_read_timeout, read).await {
        Err(_) => return Err(Refusal::BodyTimeout.plain()),
        Ok(Ok(body)) => body,
        Ok(Err(ReadError::TooLarge)) => return Err(Refusal::TooLarge.because("the body")),
        Ok(Err(ReadError::Crowded(c))) => return Err(c.refused()),
        Ok(Err(ReadError::Hyper(e))) => return Err(Refusal::BodyUnreadable.because(e)),
    };
    if !gzip {
        return Ok(body);
    }
    gunzip_within(&body, app.max_body_bytes, &mut room).map_err(|e| match e {
        Gunzip::TooLarge => Refusal::TooLarge.because("the decompressed body"),
        Gunzip::Invalid(e) => Refusal::InvalidGzip.because(e),
        Gunzip::Crowded(c) => c.refused(),
    })
}

/// The answer to a delivered record: 200, 202, or a refusal (503).
fn answer(app: &App, message: &Message, outcome: Outcome) -> Result<Response<Body>, Refused> {
    let (id, kind) = (message.id, message.kind.as_str());
    let type_metrics = app.metrics.of(message.kind);
    Ok(match outcome {
        Outcome::Published(delivered) => {
            #[derive(Serialize)]
            struct Published<'a> {
                id: Uuid,
                r#type: &'a str,
                topic: &'a str,
                partition: i32,
                offset: i64,
            }
            json_response(
                StatusCode::OK,
                &Published {
                    id,
                    r#type: kind,
                    topic: &message.topic,
                    partition: delivered.partition,
                    offset: delivered.offset,
                },
            )
        }
        Outcome::Spooled { durable } => {
            type_metrics.spooled.inc();
            json_response(
                StatusCode::ACCEPTED,
                &json!({"id": id, "type": kind, "status": "spooled", "durable": durable}),
            )
        }
        Outcome::DeadLettered(reason) => json_response(
            StatusCode::ACCEPTED,
            &json!({"id": id, "type": kind, "status": "dead_lettered", "reason": reason}),
        ),
        Outcome::Failed {
            reason,
            message: text,
        } => {
            type_metrics.failed(reason).inc();
            tracing::warn!(id = %id, r#type = kind, topic = message.topic, error = %text, "record not made durable; answering 503");
            return Err(Refusal::Unavailable.because(format_args!("{text}; retry later")));
        }
    })
}

/// Every way a webhook request is refused. Each knows its status, its error code and its
/// headers; the statuses of `http_requests_total{route="webhook"}` come from [`Refusal::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unauthorized,
    Forbidden,
    UnsupportedEncoding,
    TooLarge,
    Busy,
    BodyTimeout,
    BodyUnreadable,
    InvalidGzip,
    InvalidJson,
    MissingEvent,
    TooComplex,
    Unavailable,
}

/// A refusal with what to tell the sender.
#[derive(Debug)]
struct Refused {
    refusal: Refusal,
    message: String,
}

impl Refusal {
    pub const ALL: [Self; 12] = [
        Self::Unauthorized,
        Self::Forbidden,
        Self::UnsupportedEncoding,
        Self::TooLarge,
        Self::Busy,
        Self::BodyTimeout,
        Self::BodyUnreadable,
        Self::InvalidGzip,
        Self::InvalidJson,
        Self::MissingEvent,
        Self::TooComplex,
        Self::Unavailable,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge | Self::TooComplex => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Busy => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyUnreadable | Self::InvalidGzip | Self::InvalidJson => StatusCode::BAD_REQUEST,
            Self::MissingEvent => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `code` of the JSON error body.
    pub fn code(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::TooLarge => "body_too_large",
            Self::Busy => "too_many_requests",
            Self::BodyTimeout => "body_timeout",
            Self::BodyUnreadable => "body_unreadable",
            Self::InvalidGzip => "invalid_gzip",
            Self::InvalidJson => "invalid_json",
            Self::MissingEvent => "missing_event",
            Self::TooComplex => "body_too_complex",
            Self::Unavailable => "kafka_unavailable",
        }
    }

    /// With the message it always carries.
    fn plain(self) -> Refused {
        let message = match self {
            Self::Unauthorized => "a valid token is required",
            Self::Forbidden => "this client may not post here",
            Self::UnsupportedEncoding => "Content-Encoding may be gzip or identity",
            Self::Busy => "the bridge is at its in-flight limit (http.max_inflight_requests / http.max_inflight_bytes); retry shortly",
            Self::BodyTimeout => "the body was not received within http.body_read_timeout_ms",
            _ => self.code(),
        };
        Refused {
            refusal: self,
            message: message.to_owned(),
        }
    }

    /// With a message about `detail`.
    fn because(self, detail: impl std::fmt::Display) -> Refused {
        let message = match self {
            Self::TooLarge => format!("{detail} exceeds http.max_body_bytes"),
            Self::BodyUnreadable => format!("the request body could not be read: {detail}"),
            Self::InvalidGzip => format!("the body is not valid gzip: {detail}"),
            _ => detail.to_string(),
        };
        Refused {
            refusal: self,
            message,
        }
    }
}

impl Refused {
    fn response(self, app: &App) -> Response<Body> {
        let Self { refusal, message } = self;
        let message = match refusal {
            Refusal::TooLarge => format!("{message} ({} bytes)", app.max_body_bytes),
            _ => message,
        };
        let mut r = error(refusal.status(), refusal.code(), &message);
        let headers = r.headers_mut();
        match refusal {
            Refusal::Unauthorized => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"comm100-bridge\""),
                );
            }
            Refusal::Busy => {
                headers.insert(RETRY_AFTER, HeaderValue::from(1u64));
            }
            Refusal::Unavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from(app.retry_after_secs));
            }
            _ => {}
        }
        r
    }
}

/// The statuses the webhook route answers with: 200, 202, 405 and every refusal's.
pub fn webhook_statuses() -> Vec<u16> {
    let mut statuses: Vec<u16> = [200, 202, 405]
        .into_iter()
        .chain(Refusal::ALL.map(|r| r.status().as_u16()))
        .collect();
    statuses.sort_unstable();
    statuses.dedup();
    statuses
}

/// Why a body was not read.
enum ReadError {
    TooLarge,
    Crowded(Crowded),
    Hyper(hyper::Error),
}

/// A buffer's memory, as it grows: its new capacity is taken before it is allocated, and the
/// old one given back once the contents moved, so both are counted while they coexist.
#[derive(Debug, Clone, Copy)]
pub enum Room {
    Take(usize),
    GiveBack(usize),
}

/// Grows a buffer of capacity `from` to `to` with `grow`, paying for it through `room`.
fn regrow(
    from: usize,
    to: usize,
    grow: impl FnOnce(),
    room: &mut impl FnMut(Room) -> Result<(), Crowded>,
) -> Result<(), Crowded> {
    room(Room::Take(to))?;
    grow();
    room(Room::GiveBack(from))
}

/// The capacity a buffer of `capacity` bytes grows to when it must hold `need`: doubling
/// (at least 16 KiB), never past `max`, nor past `expected` when that is known.
fn next_capacity(capacity: usize, need: usize, expected: usize, max: usize) -> usize {
    let mut to = need.max(2 * capacity).max(16 << 10).min(max);
    if expected > 0 {
        to = to.min(expected.max(need));
    }
    to.max(need)
}

/// Reads a body of at most `max` bytes into one buffer, sized for `expected` bytes when
/// that is known, asking `room` for each growth before it is made.
async fn read_body(
    mut body: Incoming,
    expected: usize,
    max: usize,
    room: &mut impl FnMut(Room) -> Result<(), Crowded>,
) -> Result<Bytes, ReadError> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(ReadError::Hyper)?.into_data() else {
            continue;
        };
        let need = buffer.len() + data.len();
        if need > max {
            return Err(ReadError::TooLarge);
        }
        if need > buffer.capacity() {
            let (from, to) = (
                buffer.capacity(),
                next_capacity(buffer.capacity(), need, expected, max),
            );
            let grow = || {
                let mut grown = BytesMut::with_capacity(to);
                grown.extend_from_slice(&buffer);
                buffer = grown;
            };
            regrow(from, to, grow, room).map_err(ReadError::Crowded)?;
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer.freeze())
}

/// Why a gzip body was refused.
#[derive(Debug)]
pub enum Gunzip {
    /// It decompresses to more than the limit.
    TooLarge,
    Invalid(std::io::Error),
    /// The budget has no room for what it decompresses to.
    Crowded(Crowded),
}

/// Decompresses a gzip body (one or more members), refusing to produce more than `max`
/// bytes, asking `room` for each growth of the output before it is made.
pub fn gunzip_within(
    body: &[u8],
    max: usize,
    room: &mut impl FnMut(Room) -> Result<(), Crowded>,
) -> Result<Bytes, Gunzip> {
    use std::io::Read;
    let mut decoder = flate2::read::MultiGzDecoder::new(body);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Gunzip::Invalid(e)),
        };
        let need = out.len() + n;
        if need > max {
            return Err(Gunzip::TooLarge);
        }
        if need > out.capacity() {
            let (from, to) = (out.capacity(), next_capacity(out.capacity(), need, 0, max));
            let grow = || {
                let mut grown = Vec::with_capacity(to);
                grown.extend_from_slice(&out);
                out = grown;
            };
            regrow(from, to, grow, room).map_err(Gunzip::Crowded)?;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Bytes::from(out))
}

/// Which limit a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// `http.max_inflight_requests` / `http.max_inflight_bytes`.
    Everyone,
    /// Its client's share: `http.max_inflight_requests_per_client` /
    /// `http.max_inflight_bytes_per_client`.
    Client,
}

impl Crowded {
    fn refused(self) -> Refused {
        match self {
            Self::Everyone => Refusal::Busy.plain(),
            Self::Client => Refusal::Busy.because(
                "this client address holds its share of the in-flight budget \
                 (http.max_inflight_requests_per_client / http.max_inflight_bytes_per_client); \
                 retry shortly",
            ),
        }
    }
}

/// The global in-flight budget: webhook requests, and the memory they may hold (their
/// bodies, parse trees and records), each client address within its share of both; and,
/// apart, the memory of rejected bodies on their way to the dead-letter topic.
pub struct Budget {
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    total_bytes: usize,
    /// The most one request may hold.
    per_request: usize,
    dead_letters: Arc<Semaphore>,
    clients: Arc<Shares>,
}

/// What each client address holds, and the most it may.
struct Shares {
    held: Mutex<HashMap<IpAddr, Share>>,
    max_requests: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Share {
    requests: usize,
    bytes: usize,
}

impl Shares {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Share>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn give_back(&self, client: IpAddr, requests: usize, bytes: usize) {
        let mut held = self.lock();
        if let Some(share) = held.get_mut(&client) {
            share.requests -= requests;
            share.bytes -= bytes;
            if share.requests == 0 {
                held.remove(&client);
            }
        }
    }
}

/// What a request is granted past its body before it asks for more: the record of a typical
/// payload twice over and its parse tree.
const START_BYTES: usize = 48 << 10;

/// One request may hold at most this many times `http.max_body_bytes`.
pub const REQUEST_BODIES: usize = 24;

impl Budget {
    /// The budget of `http.max_inflight_*`, each client within `http.max_inflight_*_per_client`.
    pub fn new(http: &HttpConfig) -> Self {
        let max_bytes = http.max_inflight_bytes;
        Self {
            requests: Arc::new(Semaphore::new(http.max_inflight_requests)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            total_bytes: max_bytes,
            per_request: http
                .max_body_bytes
                .saturating_mul(REQUEST_BODIES)
                .min(max_bytes),
            dead_letters: Arc::new(Semaphore::new(max_bytes / 4)),
            clients: Arc::new(Shares {
                held: Mutex::new(HashMap::new()),
                max_requests: http.max_inflight_requests_per_client,
                max_bytes: http.max_inflight_bytes_per_client,
            }),
        }
    }

    /// Spool replay's share of the byte budget: its rounds take their memory from the
    /// same bytes as requests.
    pub fn replay_memory(&self) -> Memory {
        Memory::shared(self.bytes.clone(), self.total_bytes)
    }

    /// One request and `bytes` bytes for `client`, or at once which limit refused them.
    fn try_acquire(&self, client: IpAddr, bytes: usize) -> Result<Held, Crowded> {
        let mut clients = self.clients.lock();
        let share = clients.entry(client).or_default();
        if share.requests >= self.clients.max_requests
            || share.bytes.saturating_add(bytes) > self.clients.max_bytes
        {
            if share.requests == 0 {
                clients.remove(&client);
            }
            return Err(Crowded::Client);
        }
        let granted = self
            .requests
            .clone()
            .try_acquire_owned()
            .ok()
            .zip(self.try_bytes(&self.bytes, bytes));
        let Some((request, bytes_permit)) = granted else {
            if share.requests == 0 {
                clients.remove(&client);
            }
            return Err(Crowded::Everyone);
        };
        share.requests += 1;
        share.bytes += bytes;
        Ok(Held {
            bytes: Mutex::new(bytes_permit),
            _request: request,
            client,
            clients: self.clients.clone(),
        })
    }

    fn try_bytes(&self, from: &Arc<Semaphore>, n: usize) -> Option<OwnedSemaphorePermit> {
        from.clone()
            .try_acquire_many_owned(u32::try_from(n).ok()?)
            .ok()
    }

    /// `n` more bytes for the request holding `held`, from the budget and its client's share.
    fn more(&self, held: &Held, n: usize) -> Result<(), Crowded> {
        let mut clients = self.clients.lock();
        let share = clients.entry(held.client).or_default();
        if share.bytes.saturating_add(n) > self.clients.max_bytes {
            return Err(Crowded::Client);
        }
        let more = self.try_bytes(&self.bytes, n).ok_or(Crowded::Everyone)?;
        share.bytes += n;
        held.permit().merge(more);
        Ok(())
    }

    /// `n` more bytes for the request holding `held`, within what one request may hold.
    fn grow(&self, held: &Held, n: usize) -> Result<(), Exceeded> {
        if held.permit().num_permits().saturating_add(n) > self.per_request {
            return Err(Exceeded::Limit);
        }
        self.more(held, n).map_err(|_| Exceeded::Busy)
    }

    /// Pays for, or gives back, a buffer's memory for the request holding `held`.
    fn room(&self, held: &Held, room: Room) -> Result<(), Crowded> {
        match room {
            Room::Take(n) => self.more(held, n),
            Room::GiveBack(n) => {
                held.give_back(n);
                Ok(())
            }
        }
    }

    /// Room for a rejected body of `len` bytes in the producer's queue, if its share has it.
    fn try_dead_letter(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        self.try_bytes(&self.dead_letters, len.max(1))
    }
}

/// What one request holds: its slot, and the bytes of the budget and of its client's share
/// (more are added as its buffers and parse tree grow). Given back when dropped.
struct Held {
    bytes: Mutex<OwnedSemaphorePermit>,
    _request: OwnedSemaphorePermit,
    client: IpAddr,
    clients: Arc<Shares>,
}

impl Held {
    fn permit(&self) -> std::sync::MutexGuard<'_, OwnedSemaphorePermit> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives back `n` of the bytes held.
    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        let part = self.permit().split(n);
        if let Some(part) = part {
            drop(part);
            self.clients.give_back(self.client, 0, n);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let bytes = self
            .bytes
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .num_permits();
        self.clients.give_back(self.client, 1, bytes);
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this route accepts {allow}"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// The JSON error body of every non-2xx answer: `{"error":{"code","message"}}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // Bodies are strings, numbers and string-keyed maps, which always serialize.
    let body = serde_json::to_vec(value).expect("a response body always serializes");
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
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
    let builder = Arc::new(builder);
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
        // Refused before any byte is read (or a TLS handshake is spent on it): an address
        // the allowlist refuses, and one over its connection limit.
        let ip = peer.ip().to_canonical();
        let mut held = None;
        if role == Listener::Webhook {
            let auth = app.auth.current();
            if !auth.connection_allowed(ip) {
                app.metrics
                    .auth_failed(crate::auth::AuthError::AddressNotAllowed);
                continue;
            }
            if let Some(max) = limits.max_connections_per_client {
                if !auth.is_trusted_proxy(ip) {
                    match clients.take(ip, max) {
                        Some(guard) => held = Some(guard),
                        None => {
                            tracing::debug!(%peer, max, "closing a connection over http.max_connections_per_client");
                            continue;
                        }
                    }
                }
            }
        }
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
            match tls {
                None => connection.serve(stream).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting; draining in-flight requests"
    );
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "connections still open after the drain bound; closing them"
        );
    }
}

/// Connections held per client address.
#[derive(Default, Clone)]
struct Clients(Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>);

impl Clients {
    /// One more connection for `ip`, unless it holds `max` already.
    fn take(&self, ip: IpAddr, max: usize) -> Option<ClientConnection> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientConnection(self.clone(), ip))
    }
}

/// A connection counted against its client address until dropped.
struct ClientConnection(Clients, IpAddr);

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let mut counts = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.1);
            }
        }
    }
}

/// One accepted connection, ready to be served over plain TCP or TLS.
struct Connection {
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
            let activity = activity.clone();
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

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    inflight: std::sync::atomic::AtomicUsize,
    last: std::sync::Mutex<tokio::time::Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            inflight: 0.into(),
            last: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// A request begins; it ends when the returned guard is dropped, however it ends.
    fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        ActiveRequest(self.clone())
    }

    fn idle_deadline(&self, keep_alive: Duration) -> tokio::time::Instant {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) + keep_alive
    }

    fn idle_for(&self, keep_alive: Duration) -> bool {
        self.inflight.load(Ordering::SeqCst) == 0
            && tokio::time::Instant::now() >= self.idle_deadline(keep_alive)
    }
}

/// One request in flight on a connection.
struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One unit of a gauge, given back when dropped.
struct GaugeGuard<'a>(&'a prometheus::IntGauge);

impl<'a> GaugeGuard<'a> {
    fn inc(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(
        requests: usize,
        per_client_requests: usize,
        bytes: usize,
        per_client_bytes: usize,
    ) -> Budget {
        let mut http = crate::config::Config::load_with_env(None, Some(Default::default()))
            .unwrap()
            .http;
        http.max_body_bytes = 1000;
        http.max_inflight_requests = requests;
        http.max_inflight_requests_per_client = per_client_requests;
        http.max_inflight_bytes = bytes;
        http.max_inflight_bytes_per_client = per_client_bytes;
        Budget::new(&http)
    }

    #[test]
    fn a_client_holds_at_most_its_share_and_gives_all_of_it_back() {
        let b = budget(4, 2, 10_000, 6_000);
        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = b.try_acquire(x, 1_000).unwrap();
        let second = b.try_acquire(x, 1_000).unwrap();
        assert_eq!(
            b.try_acquire(x, 1).err(),
            Some(Crowded::Client),
            "a third request"
        );
        assert_eq!(
            b.more(&first, 4_001).err(),
            Some(Crowded::Client),
            "past 6,000 bytes"
        );
        b.more(&first, 4_000).unwrap();
        // The other client still has the rest of the budget, and no more.
        let other = b.try_acquire(y, 1_000).unwrap();
        assert_eq!(b.more(&other, 3_001).err(), Some(Crowded::Everyone));
        b.more(&other, 3_000).unwrap();
        assert_eq!(b.bytes.available_permits(), 0);
        // A buffer's growth: the new capacity is taken, then the old one given back.
        b.room(&other, Room::GiveBack(2_000)).unwrap();
        assert_eq!(b.bytes.available_permits(), 2_000);
        drop((first, second, other));
        assert_eq!(b.bytes.available_permits(), 10_000);
        assert_eq!(b.requests.available_permits(), 4);
        assert!(b.clients.lock().is_empty(), "a share outlived its requests");
        // Refused at once, a client leaves nothing behind either.
        let held: Vec<Held> = (0..4)
            .map(|i| b.try_acquire(IpAddr::from([10, 0, 0, i]), 1).unwrap())
            .collect();
        assert_eq!(b.try_acquire(x, 1).err(), Some(Crowded::Everyone));
        drop(held);
        assert!(b.clients.lock().is_empty());
    }

    #[test]
    fn a_buffer_grows_by_doubling_to_what_is_expected_and_never_past_the_limit() {
        assert_eq!(next_capacity(0, 100, 0, 1 << 20), 16 << 10);
        assert_eq!(
            next_capacity(16 << 10, (16 << 10) + 1, 0, 1 << 20),
            32 << 10
        );
        assert_eq!(next_capacity(0, 100, 5_000, 1 << 20), 5_000);
        assert_eq!(
            next_capacity(512 << 10, (512 << 10) + 1, 700_000, 1 << 20),
            700_000
        );
        assert_eq!(
            next_capacity(768 << 10, (768 << 10) + 1, 0, 1 << 20),
            1 << 20
        );
        assert_eq!(
            next_capacity(0, 9_000, 5_000, 1 << 20),
            9_000,
            "more than declared"
        );
    }

    /// Its place in [`Refusal::ALL`]; the match breaks the build when a refusal is added.
    fn position(refusal: Refusal) -> usize {
        match refusal {
            Refusal::Unauthorized => 0,
            Refusal::Forbidden => 1,
            Refusal::UnsupportedEncoding => 2,
            Refusal::TooLarge => 3,
            Refusal::Busy => 4,
            Refusal::BodyTimeout => 5,
            Refusal::BodyUnreadable => 6,
            Refusal::InvalidGzip => 7,
            Refusal::InvalidJson => 8,
            Refusal::MissingEvent => 9,
            Refusal::TooComplex => 10,
            Refusal::Unavailable => 11,
        }
    }

    #[test]
    fn every_refusal_is_listed_once_with_its_own_code_and_a_status_the_metrics_know() {
        for (i, refusal) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(position(refusal), i, "{refusal:?}");
            assert!(refusal.status().is_client_error() || refusal.status().is_server_error());
            assert!(webhook_statuses().contains(&refusal.status().as_u16()));
        }
        let mut codes: Vec<&str> = Refusal::ALL.map(Refusal::code).to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Refusal::ALL.len());
    }

    #[test]
    fn tokens_in_the_query_are_redacted_for_logs() {
        let cases = [
            (
                "/webhooks/comm100?token=s3cret",
                "/webhooks/comm100?token=REDACTED",
            ),
            (
                "/webhooks/comm100?a=1&token=s3cret&b=2",
                "/webhooks/comm100?a=1&token=REDACTED&b=2",
            ),
            (
                "/webhooks/comm100?t%6Fken=s3cret&token=x&token",
                "/webhooks/comm100?t%6Fken=REDACTED&token=REDACTED&token=REDACTED",
            ),
            (
                "/webhooks/comm100?tokens=kept",
                "/webhooks/comm100?tokens=kept",
            ),
            ("/healthz", "/healthz"),
        ];
        for (uri, expected) in cases {
            let target = loggable_target(&uri.parse().unwrap());
            assert_eq!(target, expected);
            assert!(!target.contains("s3cret"));
        }
    }
}
