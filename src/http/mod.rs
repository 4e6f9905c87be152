//! HTTP: the two listeners ([`server`]), routing, and one handler per route: [`webhook`]
//! (authorize → read → parse → deliver → answer) within the in-flight [`budget`], the
//! [`admin`] routes, and one answer per way a request is refused ([`refusal`]).

mod admin;
mod body;
pub mod budget;
pub mod refusal;
pub mod server;
mod webhook;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::auth::LiveAuth;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::event::Site;
use crate::metrics::Metrics;
use crate::route::Router;
use crate::trace::TraceParent;

pub use body::{gunzip_within, Gunzip};
pub use budget::{Budget, Crowded, Room};
pub use refusal::{refusal_codes, Refusal};
pub use server::{run, ConnectionLimits};

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub(crate) auth: Arc<LiveAuth>,
    pub(crate) router: Router,
    pub(crate) delivery: Delivery,
    pub(crate) metrics: Metrics,
    pub(crate) budget: Budget,
    max_body_bytes: usize,
    /// Publish the bodies of 400/422 answers to the dead-letter topic.
    dead_letter_rejected: bool,
    /// `Retry-After` of a 503, in seconds.
    retry_after_secs: u64,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    draining: AtomicBool,
    body_read_timeout: Duration,
    limits: ConnectionLimits,
    /// The admin listener's limits.
    admin_limits: ConnectionLimits,
    /// Whether the webhook listener also answers `/healthz`, `/readyz` and `/metrics`.
    admin_routes_on_webhook: bool,
}

impl App {
    /// The handler of `config`'s listeners, delivering through `delivery`; `admin` says
    /// whether an admin listener serves the admin routes (else the webhook listener does).
    pub fn from_config(
        config: &Config,
        auth: Arc<LiveAuth>,
        delivery: Delivery,
        metrics: Metrics,
        admin: bool,
    ) -> Self {
        let http = &config.http;
        Self {
            auth,
            router: Router::new(&config.topics),
            retry_after_secs: delivery.deadline().as_secs().max(1),
            delivery,
            metrics,
            budget: Budget::new(http),
            max_body_bytes: http.max_body_bytes,
            dead_letter_rejected: config.dlq.rejected_bodies,
            draining: AtomicBool::new(false),
            body_read_timeout: Duration::from_millis(http.body_read_timeout_ms),
            limits: ConnectionLimits::webhook(http),
            admin_limits: ConnectionLimits::admin(http, &config.admin),
            admin_routes_on_webhook: !admin || http.expose_admin_routes,
        }
    }

    /// From now on `/readyz` answers 503: shutdown has begun.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
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

    /// One route of each label.
    const EACH: [Route; 5] = [
        Self::Webhook(None),
        Self::Healthz,
        Self::Readyz,
        Self::Metrics,
        Self::NotFound,
    ];

    /// Every status the route answers with.
    fn statuses(&self) -> Vec<u16> {
        match self {
            Self::Webhook(_) => refusal::webhook_statuses(),
            Self::Healthz | Self::Metrics => vec![200, 405],
            Self::Readyz => vec![200, 405, 503],
            Self::BadSite | Self::NotFound => vec![404],
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

/// The route labels of `http_requests_total` and `http_request_duration_seconds`, each
/// with every status it answers with.
pub fn routes() -> Vec<(&'static str, Vec<u16>)> {
    Route::EACH
        .iter()
        .map(|r| (r.label(), r.statuses()))
        .collect()
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
    let trace = response.extensions().get::<TraceParent>();
    tracing::debug!(%method, target = target.as_deref().unwrap_or(""), status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, traceparent = trace.map(TraceParent::as_str), "request");
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
        Route::Webhook(site) if req.method() == Method::POST => {
            webhook::webhook(app, peer, site, req).await
        }
        Route::Webhook(_) => refusal::method_not_allowed("POST"),
        Route::Healthz if get => admin::healthz(),
        Route::Readyz if get => admin::readyz(app),
        Route::Metrics if get => admin::metrics(app),
        Route::Healthz | Route::Readyz | Route::Metrics => refusal::method_not_allowed("GET, HEAD"),
        Route::BadSite | Route::NotFound => {
            let bad_site = matches!(route, Route::BadSite);
            if req.method() == Method::POST {
                misdirected(app, peer, req);
            }
            not_found(bad_site)
        }
    }
}

/// Counts a POST to a path that is not a webhook path in `webhooks_refused_total` when it
/// carries a token the bridge takes (for the global tokens, or for the site the path ends
/// in): a webhook sent to a mistyped URL, not a scanner.
fn misdirected(app: &App, peer: SocketAddr, req: Request<Incoming>) {
    let auth = app.auth.current();
    let (parts, _body) = req.into_parts();
    let site = parts
        .uri
        .path()
        .rsplit('/')
        .find(|s| !s.is_empty())
        .and_then(Site::parse);
    let authorized = auth.check(&parts, peer.ip(), None).is_ok()
        || site.is_some_and(|s| auth.check(&parts, peer.ip(), Some(&s)).is_ok());
    if authorized {
        app.metrics.webhook_refused(refusal::NOT_FOUND);
    }
}

/// The answer to a path no route takes.
fn not_found(bad_site: bool) -> Response<Body> {
    let message = match bad_site {
        true => "no such route: a site label is 1 to 64 of A-Z a-z 0-9 _ . -",
        false => {
            "no such route; webhooks are posted to /webhooks/comm100 or /webhooks/comm100/{site}"
        }
    };
    refusal::error(StatusCode::NOT_FOUND, refusal::NOT_FOUND, message)
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
