//! HTTPS on the listener with a certificate generated at test time, and its reload when
//! the files change, without dropping established connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use comm100_bridge::config::TlsConfig;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM, certificate DER).
fn self_signed() -> (String, String, CertificateDer<'static>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (cert.pem(), signing_key.serialize_pem(), cert.der().clone())
}

fn connector(trusted: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An HTTP/1.1 connection over TLS to `addr`, trusting only `trusted`.
async fn connect(
    addr: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
) -> std::io::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector(trusted)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends `request` once the connection can take it: after a response is read, hyper's
/// connection task may not yet have marked the connection idle again.
async fn request(sender: &mut Sender, request: Request<Full<Bytes>>) -> (StatusCode, String) {
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get_healthz() -> Request<Full<Bytes>> {
    Request::get("/healthz")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_certificate_that_reloads_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsConfig {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let (cert, key, old_der) = self_signed();
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();

    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.http.tls = Some(files.clone());
    c.http.expose_admin_routes = true;
    c.http.keep_alive_timeout_ms = 60_000;
    c.http.header_read_timeout_ms = 60_000;
    let bridge = Bridge::start(c).await;

    let mut old = connect(bridge.addr, &old_der).await.unwrap();
    assert_eq!(request(&mut old, get_healthz()).await.0, StatusCode::OK);
    let body = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();
    let post = Request::post(format!("/webhooks/comm100?token={TOKEN}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (status, text) = request(&mut old, post).await;
    assert_eq!(status, StatusCode::OK, "{text}");

    // Plain HTTP to the TLS listener gets nowhere.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        client().request(
            Request::get(bridge.url("/healthz"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await;
    assert!(
        !matches!(plain, Ok(Ok(ref r)) if r.status().is_success()),
        "plain HTTP was served"
    );
    // ...and is counted as a failed handshake.
    let series = "comm100_bridge_connections_refused_total{reason=\"tls_handshake_failed\"}";
    eventually(Duration::from_secs(5), series, async || {
        let metrics = get(&bridge.admin("/metrics")).await.text;
        (metric(&metrics, series) == 1.0).then_some(())
    })
    .await;

    // A new certificate and key: new handshakes get them once the change is seen.
    let (cert, key, new_der) = self_signed();
    std::fs::write(&files.key, key).unwrap();
    std::fs::write(&files.cert, cert).unwrap();
    let started = Instant::now();
    let mut new = eventually(
        Duration::from_secs(10),
        "the new certificate served",
        async || connect(bridge.addr, &new_der).await.ok(),
    )
    .await;
    let reloaded_after = started.elapsed();
    assert_eq!(request(&mut new, get_healthz()).await.0, StatusCode::OK);
    assert!(
        connect(bridge.addr, &old_der).await.is_err(),
        "the old certificate is still served"
    );

    // The connection made with the old certificate still works.
    assert_eq!(request(&mut old, get_healthz()).await.0, StatusCode::OK);
    report(&format!(
        "tls: HTTPS served; new certificate served {} ms after the files changed; the open connection kept working",
        reloaded_after.as_millis()
    ));
    drop((old, new));
    bridge.stop().await.unwrap();
}

#[test]
fn an_unreadable_certificate_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsConfig {
        cert: dir.path().join("missing.pem"),
        key: dir.path().join("key.pem"),
    };
    let err = comm100_bridge::tls::Certificates::load(&files)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing.pem") && err.contains("http.tls.cert"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_tls_reloads_the_certificate_and_the_token_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, tokens) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("tokens"),
    );
    let (cert, key, old_der) = self_signed();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&tokens, "token-a\n").unwrap();
    let cluster = cluster();
    let config = write_config(
        dir.path(),
        &cluster.bootstrap_servers(),
        &dir.path().join("spool"),
        &[
            (
                "auth",
                &format!("tokens_file = {:?}", tokens.display().to_string()),
            ),
            ("http", "expose_admin_routes = true"),
            (
                "http.tls",
                &format!("cert = {:?}", cert_path.display().to_string()),
            ),
            (
                "http.tls",
                &format!("key = {:?}", key_path.display().to_string()),
            ),
        ],
    );
    let mut bridge = Process::start(&config);
    let post_with = |token: &str| {
        Request::post(format!("/webhooks/comm100?token={token}"))
            .header("host", "localhost")
            .body(Full::new(Bytes::from(event("tls-rotation", 0))))
            .unwrap()
    };
    let mut old = connect(bridge.addr, &old_der).await.unwrap();
    assert_eq!(
        request(&mut old, post_with("token-a")).await.0,
        StatusCode::OK
    );

    let (cert, key, new_der) = self_signed();
    rewrite_unnoticed(&key_path, &key);
    rewrite_unnoticed(&cert_path, &cert);
    rewrite_unnoticed(&tokens, "token-b\n");
    bridge.signal("-HUP");
    let started = Instant::now();
    let mut new = eventually(
        Duration::from_secs(10),
        "the new certificate served",
        async || connect(bridge.addr, &new_der).await.ok(),
    )
    .await;
    assert_eq!(
        request(&mut new, post_with("token-b")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        request(&mut new, post_with("token-a")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(request(&mut old, get_healthz()).await.0, StatusCode::OK);
    assert_eq!(
        bridge.child.try_wait().unwrap(),
        None,
        "SIGHUP ended the process"
    );
    drop((old, new));
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
    report(&format!(
        "tls sighup: process alive; new certificate and token served {} ms after SIGHUP, the \
         removed token refused, the open connection kept working",
        started.elapsed().as_millis()
    ));
}

/// Replaces `path` with `text` by renaming a complete file over it.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_the_certificates_is_refused_and_the_old_pair_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (cert, key, old_der) = self_signed();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let cluster = cluster();
    let config = write_config(
        dir.path(),
        &cluster.bootstrap_servers(),
        &dir.path().join("spool"),
        &[
            ("http", "expose_admin_routes = true"),
            (
                "http.tls",
                &format!("cert = {:?}", cert_path.display().to_string()),
            ),
            (
                "http.tls",
                &format!("key = {:?}", key_path.display().to_string()),
            ),
        ],
    );
    let mut bridge = Process::start(&config);

    // Only the key of a new pair arrives: the files no longer match.
    let (new_cert, new_key, new_der) = self_signed();
    replace(&key_path, &new_key);
    eventually(Duration::from_secs(10), "the refusal logged", async || {
        bridge
            .log()
            .iter()
            .any(|l| {
                l.contains("TLS certificate not reloaded") && l.contains("is not the key of the")
            })
            .then_some(())
    })
    .await;
    let mut old = connect(bridge.addr, &old_der)
        .await
        .expect("the old pair is no longer served");
    assert_eq!(request(&mut old, get_healthz()).await.0, StatusCode::OK);
    bridge.signal("-HUP");
    eventually(
        Duration::from_secs(10),
        "the refusal after SIGHUP",
        async || {
            bridge
                .log()
                .iter()
                .any(|l| {
                    l.contains("not reloaded after SIGHUP") && l.contains("is not the key of the")
                })
                .then_some(())
        },
    )
    .await;
    assert!(connect(bridge.addr, &old_der).await.is_ok());

    // Its certificate follows: the new pair is served.
    replace(&cert_path, &new_cert);
    let mut new = eventually(Duration::from_secs(10), "the new pair served", async || {
        connect(bridge.addr, &new_der).await.ok()
    })
    .await;
    assert_eq!(request(&mut new, get_healthz()).await.0, StatusCode::OK);
    drop((old, new));
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
}
