//! HTTP/2 with a real client (hyper's, prior-knowledge h2c): off by default, bounded when
//! on; and requests that end mid-body, over HTTP/1.1 and HTTP/2, give back what they held.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

type H2Sender<B> = hyper::client::conn::http2::SendRequest<B>;

/// An HTTP/2 connection without TLS (prior knowledge) to `addr`.
async fn h2<B>(addr: std::net::SocketAddr) -> Result<H2Sender<B>, hyper::Error>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn webhook(body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(format!("http://localhost/webhooks/comm100?token={TOKEN}"))
        .body(Full::new(body.into()))
        .unwrap()
}

/// Waits until the in-flight gauge reads 0.
async fn inflight_back_to_zero(bridge: &Bridge) {
    wait_for_metric(
        &bridge.admin("/metrics"),
        "comm100_bridge_inflight_requests",
        0.0,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_off_by_default() {
    let cluster = cluster();
    let bridge = Bridge::start(config(&cluster.bootstrap_servers())).await;
    let refused = match h2::<Full<Bytes>>(bridge.addr).await {
        Err(_) => true,
        Ok(mut sender) => sender.send_request(webhook(event("h2", 0))).await.is_err(),
    };
    assert!(refused, "an h2c request was served with http.http2 = false");
    assert_eq!(
        post(
            &bridge.url(&format!("/webhooks/comm100?token={TOKEN}")),
            &[],
            event("h1", 0)
        )
        .await
        .status,
        StatusCode::OK
    );
    report("http2: off by default: a prior-knowledge h2c request is refused, HTTP/1.1 served");
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_when_on_bounds_streams_survives_resets_and_header_floods() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.http.http2 = true;
    let bridge = Bridge::start(c).await;

    // 1,000 concurrent streams on one connection: the server takes 100 at a time, and every
    // one is answered.
    let sender = h2::<Full<Bytes>>(bridge.addr).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..1000 {
        let mut sender = sender.clone();
        tasks.spawn(async move {
            sender.ready().await.unwrap();
            let response = sender
                .send_request(webhook(event(&format!("h2-{}", seq % 10), seq)))
                .await
                .unwrap();
            response.status()
        });
    }
    let mut ok = 0;
    while let Some(status) = tasks.join_next().await {
        assert!(status.unwrap().is_success());
        ok += 1;
    }
    assert_eq!(ok, 1000);

    // Streams reset while their record waits for a slow Kafka: hyper drops the request's
    // future, and its in-flight slot comes back all the same.
    cluster
        .broker_round_trip_time(-1, Duration::from_millis(1000))
        .unwrap();
    for seq in 0..20 {
        let mut sender = h2::<Full<Bytes>>(bridge.addr).await.unwrap();
        let pending =
            tokio::spawn(async move { sender.send_request(webhook(event("reset", seq))).await });
        wait_for_metric(
            &bridge.admin("/metrics"),
            "comm100_bridge_inflight_requests",
            1.0,
            Duration::from_secs(10),
        )
        .await;
        pending.abort();
    }
    inflight_back_to_zero(&bridge).await;
    cluster.broker_round_trip_time(-1, Duration::ZERO).unwrap();

    // A header list over http.max_header_bytes is refused, and the connection survives it.
    let mut sender = h2::<Full<Bytes>>(bridge.addr).await.unwrap();
    let mut flood = Request::post(format!("http://localhost/webhooks/comm100?token={TOKEN}"));
    for i in 0..400 {
        flood = flood.header(format!("x-flood-{i}"), "y".repeat(64));
    }
    let flooded = sender
        .send_request(
            flood
                .body(Full::new(Bytes::from(event("flood", 0))))
                .unwrap(),
        )
        .await;
    assert!(
        flooded.as_ref().map_or(true, |r| r.status()
            == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        "{:?}",
        flooded.map(|r| r.status())
    );
    let mut fresh = h2::<Full<Bytes>>(bridge.addr).await.unwrap();
    let after = fresh
        .send_request(webhook(event("after-flood", 0)))
        .await
        .unwrap();
    assert!(after.status().is_success());
    let body = after.into_body().collect().await.unwrap().to_bytes();
    assert!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"].is_string());
    report("http2: on: 1,000 concurrent streams on one connection all answered 2xx; 20 streams reset while waiting for Kafka, in-flight gauge back to 0; a 400-header flood refused, the bridge kept serving");
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_that_leave_mid_request_give_back_what_they_held() {
    let cluster = cluster();
    let bridge = Bridge::start(config(&cluster.bootstrap_servers())).await;
    // Cut off mid-body.
    for _ in 0..20 {
        let head = format!(
            "POST /webhooks/comm100?token={TOKEN} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{{\"event\""
        );
        drop(raw_request(bridge.addr, head).await);
    }
    // Gone while the record waits for a slow Kafka: hyper drops the request's future.
    cluster
        .broker_round_trip_time(-1, Duration::from_millis(1000))
        .unwrap();
    for seq in 0..20 {
        let body = event("gone", seq);
        let request = format!(
            "POST /webhooks/comm100?token={TOKEN} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let stream = raw_request(bridge.addr, request).await;
        wait_for_metric(
            &bridge.admin("/metrics"),
            "comm100_bridge_inflight_requests",
            1.0,
            Duration::from_secs(10),
        )
        .await;
        drop(stream);
    }
    inflight_back_to_zero(&bridge).await;
    report("http1: 20 requests cut off mid-body and 20 clients gone while Kafka was slow: in-flight gauge back to 0");
    bridge.stop().await.unwrap();
}
