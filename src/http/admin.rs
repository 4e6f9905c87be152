//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::atomic::Ordering;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use serde_json::json;

use super::refusal::json_response;
use super::{App, Body};
use crate::delivery::Readiness;

pub(super) fn healthz() -> Response<Body> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

pub(super) fn metrics(app: &App) -> Response<Body> {
    let mut r = Response::new(Body::from(app.metrics.encode()));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// 200 while the bridge can make records durable, else 503 with the reason.
pub(super) fn readyz(app: &App) -> Response<Body> {
    let readiness = match app.draining.load(Ordering::SeqCst) {
        true => Readiness::NotReady {
            reason: "shutting down".into(),
            brokers_up: app.delivery.brokers_up(),
        },
        false => app.delivery.readiness(),
    };
    match readiness {
        Readiness::Ready {
            brokers_up,
            spooling: Some(spooling),
        } => json_response(
            StatusCode::OK,
            &json!({"status": "ready", "brokers_up": brokers_up, "spooling": spooling}),
        ),
        Readiness::Ready {
            brokers_up,
            spooling: None,
        } => json_response(
            StatusCode::OK,
            &json!({"status": "ready", "brokers_up": brokers_up}),
        ),
        Readiness::NotReady { reason, brokers_up } => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not_ready", "reason": reason, "brokers_up": brokers_up}),
        ),
    }
}
