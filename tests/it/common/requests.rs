//! HTTP clients: requests through hyper, raw bytes on a socket, metrics read back.

use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::*;

/// An HTTP answer with its body parsed as JSON (Null when it is not JSON).
#[derive(Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    let response = match client().request(request).await {
        Ok(response) => response,
        Err(e) => panic!("no answer: {e:?}"),
    };
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
    let mut b = Request::post(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(body.into())).unwrap()).await
}

/// Posts `body` on a new connection; the error when the bridge could not be reached.
pub async fn try_post(url: &str, body: String) -> Result<Answer, String> {
    let request = http::Request::post(url)
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = client()
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        headers: Default::default(),
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Connects to `addr` and writes `bytes` as they are: a request hyper's client would not
/// send (a partial head, a body shorter than declared, chunks past a limit). The stream is
/// left open for the test to write more or read the answer.
pub async fn raw_request(
    addr: std::net::SocketAddr,
    bytes: impl AsRef<[u8]>,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes.as_ref()).await.unwrap();
    stream
}

pub async fn get(url: &str) -> Answer {
    send(Request::get(url).body(Full::new(Bytes::new())).unwrap()).await
}

/// Polls `url` until it answers `status`, up to `bound`; how long that took.
pub async fn wait_for_status(url: &str, status: StatusCode, bound: Duration) -> Duration {
    let started = Instant::now();
    eventually(bound, &format!("{url} answering {status}"), async || {
        (get(url).await.status == status).then_some(())
    })
    .await;
    started.elapsed()
}

/// Polls `/readyz` at `url` until it answers 503 with a reason starting with `prefix`, up
/// to `bound`; that reason.
pub async fn wait_for_reason(url: &str, prefix: &str, bound: Duration) -> String {
    eventually(
        bound,
        &format!("{url} answering 503 \"{prefix}…\""),
        async || {
            let answer = get(url).await;
            let reason = answer.json["reason"].as_str().unwrap_or_default();
            (answer.status == StatusCode::SERVICE_UNAVAILABLE && reason.starts_with(prefix))
                .then(|| reason.to_owned())
        },
    )
    .await
}

/// A value in a Prometheus exposition: one series, named as exposed (`name{label="v"}`), or
/// for a bare name the sum over its series.
pub fn metric(exposition: &str, selector: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next();
            let chosen = match selector.contains('{') {
                true => series == selector,
                false => name == Some(selector),
            };
            chosen.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Polls the exposition at `url` until `name` (summed over its series) is `value`.
pub async fn wait_for_metric(url: &str, name: &str, value: f64, bound: Duration) {
    eventually(bound, &format!("{name} reaching {value}"), async || {
        (metric(&get(url).await.text, name) == value).then_some(())
    })
    .await
}
