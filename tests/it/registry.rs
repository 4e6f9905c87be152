//! `kafka.value_format = "json_sr"` against the mock cluster and a stand-in registry that
//! answers schema lookups with fixed ids: the exact bytes of framed values, dead letters
//! left plain, `dlq redrive` framing what it puts back, ids looked up once, and a registry
//! that fails at start. (Apicurio Registry and confluent-kafka's deserializer: kafka.rs.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use comm100_bridge::config::ValueFormat;
use http::StatusCode;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::net::TcpListener;

use crate::common::*;

/// Answers `POST /subjects/<subject>` with the id it was given for the subject (any schema),
/// 404 with error code 40401 for other subjects, and `status` instead when it is not 200;
/// 401 to a request without the `Authorization` value it may be given; over TLS with a
/// certificate for `localhost` when it has one.
struct StandIn {
    addr: SocketAddr,
    lookups: Arc<AtomicUsize>,
    tls: bool,
}

#[derive(Default)]
struct Options {
    authorization: Option<String>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl StandIn {
    async fn start(ids: HashMap<String, u32>, status: StatusCode) -> Self {
        Self::start_with(ids, status, Options::default()).await
    }

    async fn start_with(ids: HashMap<String, u32>, status: StatusCode, options: Options) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lookups = Arc::new(AtomicUsize::new(0));
        let tls = options.tls.is_some();
        let (ids, counted) = (Arc::new(ids), lookups.clone());
        let authorization = Arc::new(options.authorization);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (ids, counted, authorization) =
                    (ids.clone(), counted.clone(), authorization.clone());
                let service = service_fn(move |request: hyper::Request<Incoming>| {
                    let authorized = authorization.as_deref().is_none_or(|wanted| {
                        request
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            == Some(wanted)
                    });
                    let subject = request
                        .uri()
                        .path()
                        .strip_prefix("/subjects/")
                        .map(str::to_owned);
                    counted.fetch_add(1, Ordering::SeqCst);
                    let (code, body) = match subject.and_then(|s| ids.get(&s).map(|id| (s, *id))) {
                        _ if !authorized => (StatusCode::UNAUTHORIZED, "{}".into()),
                        _ if status != StatusCode::OK => (status, "{\"message\":\"down\"}".into()),
                        Some((s, id)) => (
                            StatusCode::OK,
                            format!("{{\"subject\":\"{s}\",\"id\":{id},\"version\":1,\"schema\":\"{{}}\"}}"),
                        ),
                        None => (
                            StatusCode::NOT_FOUND,
                            "{\"error_code\":40401,\"message\":\"Subject not found\"}".to_owned(),
                        ),
                    };
                    async move {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(code)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let acceptor = options.tls.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Self { addr, lookups, tls }
    }

    fn url(&self) -> String {
        match self.tls {
            true => format!("https://localhost:{}", self.addr.port()),
            false => format!("http://{}", self.addr),
        }
    }
}

/// Why `serve` refused to start with `config`.
async fn refused_to_start(config: comm100_bridge::config::Config) -> String {
    let listeners = comm100_bridge::Listeners {
        webhook: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
    };
    comm100_bridge::serve(config, listeners, std::future::pending())
        .await
        .unwrap_err()
        .to_string()
}

fn hook(bridge: &Bridge) -> String {
    bridge.url(&format!("/webhooks/comm100?token={TOKEN}"))
}

/// Subject → id: 101 for the first record type's topic, 102 for the next, ….
fn ids() -> HashMap<String, u32> {
    let config = config("127.0.0.1:9");
    comm100_bridge::route::Router::new(&config.topics)
        .topics()
        .iter()
        .zip(101..)
        .map(|(topic, id)| (format!("{topic}-value"), id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_sr_values_are_byte_zero_the_topics_schema_id_and_the_json() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let registry = StandIn::start(ids(), StatusCode::OK).await;
    let mut json_sr = config(&bootstrap);
    json_sr.kafka.value_format = ValueFormat::JsonSr;
    json_sr.schema_registry.url = Some(registry.url());
    let framed = Bridge::start(json_sr).await;
    let unframed = Bridge::start(config(&bootstrap)).await;
    framed.connected().await;
    unframed.connected().await;
    assert_eq!(
        registry.lookups.load(Ordering::SeqCst),
        8,
        "one lookup per type"
    );

    for sample in samples() {
        let body = std::fs::read(&sample).unwrap();
        let answer = post(&hook(&framed), &[], body.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{sample:?}: {}", answer.text);
        let record = consume_answered(&bootstrap, &answer);
        let id = ids()[&format!("{}-value", record.topic)];
        assert_eq!(record.raw[0], 0, "{sample:?}");
        assert_eq!(record.raw[1..5], id.to_be_bytes(), "{sample:?}");
        let value: serde_json::Value = serde_json::from_slice(&record.raw[5..]).unwrap();
        // The same JSON as without framing, but for the request's own id and time.
        let other = consume_answered(&bootstrap, &post(&hook(&unframed), &[], body).await);
        let without = |mut v: serde_json::Value| {
            let object = v.as_object_mut().unwrap();
            object.remove("id");
            object.remove("received_at");
            v
        };
        assert_eq!(without(value), without(other.value), "{sample:?}");
        assert_eq!(record.header("content-type"), Some("application/json"));
    }
    assert_eq!(
        registry.lookups.load(Ordering::SeqCst),
        8,
        "never looked up again"
    );
    framed.stop().await.unwrap();
    unframed.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_frames_what_it_puts_back_and_the_dead_letter_topic_stays_plain() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let registry = StandIn::start(ids(), StatusCode::OK).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let letter = FutureRecord::<str, str>::to("comm100.dlq")
        .key("chat-a")
        .payload("{\"id\":\"id-1\"}")
        .headers(
            rdkafka::message::OwnedHeaders::new()
                .insert(rdkafka::message::Header {
                    key: "dlq_reason",
                    value: Some("unknown_topic"),
                })
                .insert(rdkafka::message::Header {
                    key: "dlq_original_topic",
                    value: Some("comm100.chat_ended"),
                }),
        );
    producer
        .send(letter, Duration::from_secs(10))
        .await
        .unwrap();

    let out = bridge_command()
        .args(["dlq", "redrive"])
        .env("COMM100_BRIDGE__KAFKA__BROKERS", &bootstrap)
        .env("COMM100_BRIDGE__AUTH__TOKENS", TOKEN)
        .env("COMM100_BRIDGE__KAFKA__VALUE_FORMAT", "json_sr")
        .env("COMM100_BRIDGE__SCHEMA_REGISTRY__URL", registry.url())
        .run()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = consume_all(
        &bootstrap,
        "comm100.chat_ended",
        Duration::from_secs(10),
        |r| !r.is_empty(),
    );
    let id = ids()["comm100.chat_ended-value"];
    let mut expected = vec![0];
    expected.extend_from_slice(&id.to_be_bytes());
    expected.extend_from_slice(b"{\"id\":\"id-1\"}");
    assert_eq!(back[0].raw, expected);
    let letters = consume_all(&bootstrap, "comm100.dlq", Duration::from_secs(10), |r| {
        !r.is_empty()
    });
    assert_eq!(
        letters[0].raw, b"{\"id\":\"id-1\"}",
        "the dead letter is plain JSON"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_whose_registry_fails_or_lacks_a_schema_does_not_start() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let start = |url: String| {
        let mut c = config(&bootstrap);
        c.kafka.value_format = ValueFormat::JsonSr;
        c.schema_registry.url = Some(url);
        c
    };
    let failing = StandIn::start(ids(), StatusCode::INTERNAL_SERVER_ERROR).await;
    let err = refused_to_start(start(failing.url())).await;
    assert!(
        err.contains("json_sr") && err.contains("500") && err.contains(&failing.url()),
        "{err}"
    );
    let mut some = ids();
    some.remove("comm100.chat_transferred-value");
    let partial = StandIn::start(some, StatusCode::OK).await;
    let err = refused_to_start(start(partial.url())).await;
    assert!(
        err.contains("comm100.chat_transferred-value")
            && err.contains("comm100-bridge schemas register"),
        "{err}"
    );
}

/// A TLS acceptor with a self-signed certificate for `localhost`, and the certificate's PEM.
fn localhost_tls() -> (tokio_rustls::TlsAcceptor, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        cert.pem(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_registry_with_basic_authentication_is_reached_with_its_ca_and_credentials() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let (acceptor, ca) = localhost_tls();
    let registry = StandIn::start_with(
        ids(),
        StatusCode::OK,
        Options {
            // base64("bridge-key:registry-secret")
            authorization: Some("Basic YnJpZGdlLWtleTpyZWdpc3RyeS1zZWNyZXQ=".into()),
            tls: Some(acceptor),
        },
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("registry-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let with = |ca: Option<&std::path::Path>, password: &str| {
        let mut c = config(&bootstrap);
        c.kafka.value_format = ValueFormat::JsonSr;
        c.schema_registry.url = Some(registry.url());
        c.schema_registry.ca_location = ca.map(Into::into);
        c.schema_registry.username = Some("bridge-key".into());
        c.schema_registry.password = Some(comm100_bridge::config::Secret::new(password));
        c
    };

    // Not the system's CAs' certificate; then the wrong password.
    let err = refused_to_start(with(None, "registry-secret")).await;
    assert!(
        err.contains("cannot reach the schema registry") && err.contains("certificate"),
        "{err}"
    );
    let err = refused_to_start(with(Some(&ca_file), "wrong")).await;
    assert!(
        err.contains("401") && err.contains("schema_registry.password"),
        "{err}"
    );

    // Its CA and the right password: records are framed.
    let bridge = Bridge::start(with(Some(&ca_file), "registry-secret")).await;
    bridge.connected().await;
    let sample = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();
    let answer = post(&hook(&bridge), &[], sample).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let record = consume_answered(&bootstrap, &answer);
    assert_eq!(record.raw[0], 0);
    assert_eq!(
        record.raw[1..5],
        ids()["comm100.chat_ended-value"].to_be_bytes()
    );
    bridge.stop().await.unwrap();
}
