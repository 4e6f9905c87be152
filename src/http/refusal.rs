//! Every way a request is refused, each with its status, code and headers, and the JSON
//! answers they share.

use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use super::{App, Body};

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
pub(super) struct Refused {
    pub(super) refusal: Refusal,
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
    pub(super) fn plain(self) -> Refused {
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
    pub(super) fn because(self, detail: impl std::fmt::Display) -> Refused {
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
    /// The answer, counted in `webhooks_refused_total`.
    pub(super) fn response(self, app: &App) -> Response<Body> {
        let Self { refusal, message } = self;
        app.metrics.webhook_refused(refusal.code());
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

/// The `code` of a 404. In `webhooks_refused_total` it counts the POSTs that carry a token
/// the bridge takes to a path that is not a webhook path: a webhook URL mistyped where it
/// is configured.
pub const NOT_FOUND: &str = "not_found";

/// The `reason` values of `webhooks_refused_total`: every refusal's code and
/// [`NOT_FOUND`].
pub fn refusal_codes() -> Vec<&'static str> {
    Refusal::ALL
        .map(Refusal::code)
        .into_iter()
        .chain([NOT_FOUND])
        .collect()
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

pub(super) fn method_not_allowed(allow: &'static str) -> Response<Body> {
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
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

pub(super) fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // Bodies are strings, numbers and string-keyed maps, which always serialize.
    let body = serde_json::to_vec(value).expect("a response body always serializes");
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
