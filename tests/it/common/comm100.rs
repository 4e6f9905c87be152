//! A stand-in for Comm100's REST API (v4) on port 0, answering in the documented shapes:
//! webhook subscriptions, HTTP Basic with `siteId`, and faults queued by the test (429 with
//! `Retry-After`, 5xx, malformed JSON, a slow answer).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub const COMM100_EMAIL: &str = "agent@example.com";
pub const COMM100_KEY: &str = "comm100-api-key";
pub const COMM100_SITE: u64 = 10100000;

/// What the stand-in answers to the next request instead of the real thing.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status, with `Retry-After` seconds when given.
    Status(u16, Option<u64>),
    /// 200 with a body that is not JSON.
    Malformed,
    /// The real answer, after this long.
    Slow(Duration),
    /// The real answer.
    Pass,
}

#[derive(Default)]
pub struct State {
    pub webhooks: Vec<Value>,
    /// Offline messages, searched by `createdTime`.
    pub offline_messages: Vec<Value>,
    /// Chats, searched by `startTime`; `GET livechat/chats/{id}` answers each whole, with the
    /// `guid` of `guids` when the search leaves it out.
    pub chats: Vec<Value>,
    pub guids: Vec<(String, String)>,
    /// Requests whose line contains this get this status.
    pub fail: Option<(String, u16)>,
    pub next_id: u64,
    pub faults: VecDeque<Fault>,
    /// Each request: "METHOD /path?query".
    pub requests: Vec<String>,
}

pub struct FakeComm100 {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl FakeComm100 {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let service = service_fn(move |request: hyper::Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, request).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    /// The API's base URL.
    pub fn base(&self) -> String {
        format!("http://{}/v4", self.addr)
    }

    /// The environment that points the bridge's `[comm100]` settings at it.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("COMM100_BRIDGE__COMM100__API_BASE".into(), self.base()),
            (
                "COMM100_BRIDGE__COMM100__SITE_ID".into(),
                COMM100_SITE.to_string(),
            ),
            (
                "COMM100_BRIDGE__COMM100__API_EMAIL".into(),
                COMM100_EMAIL.into(),
            ),
            (
                "COMM100_BRIDGE__COMM100__API_KEY".into(),
                COMM100_KEY.into(),
            ),
        ]
    }

    pub fn fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push_back(fault);
    }

    pub fn add_webhook(&self, event: &str, target: &str) {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = format!("00000000-0000-0000-0000-{:012}", state.next_id);
        state
            .webhooks
            .push(json!({ "id": id, "event": event, "targetUrl": target }));
    }

    /// The requests so far whose line starts with `prefix`.
    pub fn requests(&self, prefix: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }
}

/// The page `pageIndex` of `pageSize` (from the query) of the items whose `field` is within
/// the body's `startTime`..=`endTime`.
fn search(items: &[Value], field: &str, body: &[u8], query: &str) -> Vec<Value> {
    let body: Value = serde_json::from_slice(body).unwrap();
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let (from, to) = (time(&body["startTime"]), time(&body["endTime"]));
    let param = |name: &str| -> usize {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .map_or(50, |v| v.parse().unwrap())
    };
    let (index, size) = (param("pageIndex"), param("pageSize"));
    items
        .iter()
        .filter(|i| (from..=to).contains(&time(&i[field])))
        .skip((index - 1) * size)
        .take(size)
        .cloned()
        .collect()
}

fn reply(status: StatusCode, body: Value) -> hyper::Response<Full<Bytes>> {
    let text = match body {
        Value::Null => String::new(),
        body => body.to_string(),
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap()
}

async fn answer(
    state: &Mutex<State>,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let fault = {
        let mut s = state.lock().unwrap();
        let line = format!("{method} {path}?{query}");
        s.requests.push(line.clone());
        match &s.fail {
            Some((part, code)) if line.contains(part.as_str()) => Some(Fault::Status(*code, None)),
            _ => s.faults.pop_front(),
        }
    };
    match fault {
        Some(Fault::Status(code, retry_after)) => {
            let mut response = reply(
                StatusCode::from_u16(code).unwrap(),
                json!({ "message": "fault" }),
            );
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().unwrap());
            }
            return response;
        }
        Some(Fault::Malformed) => {
            return hyper::Response::new(Full::new(Bytes::from_static(b"<html>oops")));
        }
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Pass) | None => {}
    }
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{COMM100_EMAIL}:{COMM100_KEY}"))
    );
    if authorization != expected {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({ "message": "Unauthorized" }),
        );
    }
    if !query
        .split('&')
        .any(|p| p == format!("siteId={COMM100_SITE}"))
    {
        return reply(
            StatusCode::NOT_FOUND,
            json!({ "message": "Site not found" }),
        );
    }
    let mut s = state.lock().unwrap();
    match (method.as_str(), path.as_str()) {
        ("GET", "/v4/livechat/webhooks") => reply(StatusCode::OK, Value::Array(s.webhooks.clone())),
        ("POST", "/v4/livechat/webhooks") => {
            let body: Value = serde_json::from_slice(&body).unwrap();
            s.next_id += 1;
            let id = format!("00000000-0000-0000-0000-{:012}", s.next_id);
            let created =
                json!({ "id": id, "event": body["event"], "targetUrl": body["targetUrl"] });
            s.webhooks.push(created.clone());
            reply(StatusCode::CREATED, created)
        }
        ("POST", "/v4/livechat/offlineMessages:search") => {
            let items = search(&s.offline_messages, "createdTime", &body, &query);
            reply(StatusCode::OK, json!({ "list": items }))
        }
        ("POST", "/v4/livechat/chats:Search") => {
            let items = search(&s.chats, "startTime", &body, &query);
            reply(StatusCode::OK, json!({ "list": items }))
        }
        ("GET", p) if p.starts_with("/v4/livechat/chats/") => {
            let id = &p["/v4/livechat/chats/".len()..];
            let number: i64 = id.parse().unwrap_or(-1);
            let found = s.chats.iter().find(|c| c["id"] == number).cloned();
            match found {
                Some(mut chat) => {
                    if let Some((_, guid)) = s.guids.iter().find(|(i, _)| i == id) {
                        chat["guid"] = guid.clone().into();
                    }
                    reply(StatusCode::OK, chat)
                }
                None => reply(StatusCode::NOT_FOUND, json!({ "message": "no such chat" })),
            }
        }
        ("DELETE", p) if p.starts_with("/v4/livechat/webhooks/") => {
            let id = &p["/v4/livechat/webhooks/".len()..];
            let before = s.webhooks.len();
            s.webhooks.retain(|w| w["id"] != id);
            match s.webhooks.len() < before {
                true => reply(StatusCode::NO_CONTENT, Value::Null),
                false => reply(StatusCode::NOT_FOUND, json!({ "message": "not found" })),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({ "message": "no such resource" }),
        ),
    }
}
