//! The webhook route: authorize → read the body → parse → deliver → answer.

use std::borrow::Cow;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::body::{gunzip_within, read_body, Gunzip, ReadError};
use super::budget::{Crowded, Held, Room, START_BYTES};
use super::refusal::{json_response, Refusal, Refused};
use super::{App, Body};
use crate::delivery::Outcome;
use crate::event::{Exceeded, Meter, RejectError, Site, Timestamp};
use crate::metrics::DlqReason;
use crate::route::Message;
use crate::trace::{TraceParent, TRACEPARENT};

pub(super) async fn webhook(
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
pub(super) async fn accept(
    app: &App,
    peer: SocketAddr,
    site: Option<Site>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Refused> {
    let (parts, body) = req.into_parts();
    authorize(app, &parts, peer, site.as_ref())?;
    let trace = TraceParent::of_request(&parts.headers);
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
    let site_label = site.as_ref().map(|s| s.as_str().to_owned());
    let raw = read(app, body, declared, &held).await?;
    let body = match gzip {
        false => raw,
        true => gunzip(app, &raw, &held).inspect_err(|refused| {
            if refused.refusal == Refusal::InvalidGzip {
                dead_letter(app, raw, DlqReason::InvalidGzip, site_label.as_deref());
            }
        })?,
    };

    let parsed = {
        let grow = |n| app.budget.grow(&held, n);
        let meter = Meter::new(START_BYTES, &grow);
        app.router.route_body(&body, site, Timestamp::now(), &meter)
    };
    let mut message = match parsed {
        Ok(message) => message,
        Err(RejectError::Memory(Exceeded::Busy)) => return Err(Refusal::Busy.plain()),
        Err(e) => {
            let (refusal, reason) = match e {
                RejectError::InvalidJson(_) => (Refusal::InvalidJson, DlqReason::InvalidJson),
                RejectError::MissingEvent => (Refusal::MissingEvent, DlqReason::MissingEvent),
                RejectError::Memory(_) => (Refusal::TooComplex, DlqReason::BodyTooComplex),
            };
            dead_letter(app, body, reason, site_label.as_deref());
            return Err(refusal.because(e));
        }
    };
    message
        .headers
        .push((Cow::Borrowed(TRACEPARENT), Cow::Owned(trace.to_string())));
    app.metrics.of(message.kind).received.inc();
    // The record's memory stays reserved until the answer: the producer holds its copy.
    let _held = held;
    let mut response = answer(&message, app.delivery.deliver(&message).await)?;
    response.extensions_mut().insert(trace);
    Ok(response)
}

/// Checks the token, the site and the client's address.
pub(super) fn authorize(
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
pub(super) fn content_encoding(headers: &http::HeaderMap) -> Result<bool, Refused> {
    match headers.get(CONTENT_ENCODING).map(HeaderValue::as_bytes) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case(b"identity") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip") => Ok(true),
        Some(_) => Err(Refusal::UnsupportedEncoding.plain()),
    }
}

/// Copies a rejected body to the dead-letter topic, as the request received it, when
/// `dlq.rejected_bodies` is on; a body not copied is counted in `dlq_dropped_total`.
fn dead_letter(app: &App, body: Bytes, reason: DlqReason, site: Option<&str>) {
    if !app.dead_letter_rejected {
        app.metrics.dead_letter_dropped(reason);
        return;
    }
    let room = app.budget.try_dead_letter(body.len());
    app.delivery
        .publisher
        .dead_letter_body(body, reason, site, room);
}

/// The whole body as sent, within the body timeout, the size limit and the budget: each
/// buffer is paid for from `held` before it is allocated.
pub(super) async fn read(
    app: &App,
    body: Incoming,
    declared: Option<u64>,
    held: &Held,
) -> Result<Bytes, Refused> {
    let mut room = |room: Room| app.budget.room(held, room);
    let read = read_body(
        body,
        declared.map_or(0, |n| n as usize),
        app.max_body_bytes,
        &mut room,
    );
    match tokio::time::timeout(app.body_read_timeout, read).await {
        Err(_) => Err(Refusal::BodyTimeout.plain()),
        Ok(Ok(body)) => Ok(body),
        Ok(Err(ReadError::TooLarge)) => Err(Refusal::TooLarge.because("the body")),
        Ok(Err(ReadError::Crowded(c))) => Err(c.refused()),
        Ok(Err(ReadError::Hyper(e))) => Err(Refusal::BodyUnreadable.because(e)),
    }
}

/// `body` decompressed, within the size limit and the budget.
fn gunzip(app: &App, body: &[u8], held: &Held) -> Result<Bytes, Refused> {
    let mut room = |room: Room| app.budget.room(held, room);
    gunzip_within(body, app.max_body_bytes, &mut room).map_err(|e| match e {
        Gunzip::TooLarge => Refusal::TooLarge.because("the decompressed body"),
        Gunzip::Invalid(e) => Refusal::InvalidGzip.because(e),
        Gunzip::Crowded(c) => c.refused(),
    })
}

/// The answer to a delivered record: 200, 202, or a refusal (503).
pub(super) fn answer(message: &Message, outcome: Outcome) -> Result<Response<Body>, Refused> {
    let (id, kind) = (message.id, message.kind.as_str());
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
        Outcome::Spooled { durable } => json_response(
            StatusCode::ACCEPTED,
            &json!({"id": id, "type": kind, "status": "spooled", "durable": durable}),
        ),
        Outcome::DeadLettered(reason) => json_response(
            StatusCode::ACCEPTED,
            &json!({"id": id, "type": kind, "status": "dead_lettered", "reason": reason}),
        ),
        Outcome::Failed { message: text, .. } => {
            tracing::warn!(id = %id, r#type = kind, topic = message.topic, error = %text, "record not made durable; answering 503");
            return Err(Refusal::Unavailable.because(format_args!("{text}; retry later")));
        }
    })
}
