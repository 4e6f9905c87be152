//! Hostile input over real HTTP: every case gets its documented status and error code (or
//! a normalized record), never a panic or a 500, and the bridge still serves a valid event
//! afterwards. Also slow clients and floods.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One hostile request and what must come back: a status and, for the bridge's own JSON
/// errors, the error code (`None` for a 2xx, or an answer hyper itself gives).
struct Case {
    name: String,
    method: Method,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status: u16,
    code: Option<&'static str>,
}

fn case(
    name: &str,
    target: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: Option<&'static str>,
) -> Case {
    Case {
        name: name.to_owned(),
        method: Method::POST,
        target: target.to_owned(),
        headers: Vec::new(),
        body: body.into(),
        status,
        code,
    }
}

impl Case {
    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }

    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An `online` event with `n` more keys.
fn unknown_keys(n: usize) -> String {
    let mut o = serde_json::Map::new();
    o.insert("event".into(), json!("online"));
    for i in 0..n {
        o.insert(format!("k{i}"), json!(i));
    }
    serde_json::Value::Object(o).to_string()
}

fn cases() -> Vec<Case> {
    let hook = format!("/webhooks/comm100?token={TOKEN}");
    let h = hook.as_str();
    let chat_ended = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();
    let mut c = vec![
        // Routes and methods.
        case("GET on the webhook", h, "", 405, Some("method_not_allowed")).method(Method::GET),
        case("PUT on the webhook", h, "{}", 405, Some("method_not_allowed")).method(Method::PUT),
        case("DELETE on the webhook", h, "", 405, Some("method_not_allowed")).method(Method::DELETE),
        case("PATCH on the webhook", h, "{}", 405, Some("method_not_allowed")).method(Method::PATCH),
        case("OPTIONS on the webhook", h, "", 405, Some("method_not_allowed")).method(Method::OPTIONS),
        // The admin routes are on the admin listener only.
        case("POST on /healthz", "/healthz", "{}", 404, Some("not_found")),
        case("POST on /metrics", "/metrics", "{}", 404, Some("not_found")),
        case("POST on /readyz", "/readyz", "{}", 404, Some("not_found")),
        case("GET /metrics on the webhook port", "/metrics", "", 404, Some("not_found")).method(Method::GET),
        case("GET /readyz on the webhook port", "/readyz", "", 404, Some("not_found")).method(Method::GET),
        case("GET /healthz on the webhook port", "/healthz", "", 404, Some("not_found")).method(Method::GET),
        case("unknown path", "/webhooks/comm1000", "{}", 404, Some("not_found")),
        case("path traversal", "/webhooks/comm100/../../etc/passwd", "{}", 404, Some("not_found")),
        case("encoded slash in the site", "/webhooks/comm100/a%2Fb", "{}", 404, Some("not_found")),
        case("site label of 65 characters", &format!("/webhooks/comm100/{}", "a".repeat(65)), "{}", 404, Some("not_found")),
        case("site label with a space", "/webhooks/comm100/a%20b", "{}", 404, Some("not_found")),
        case("nested site path", "/webhooks/comm100/eu/extra", "{}", 404, Some("not_found")),
        case("root", "/", "", 404, Some("not_found")).method(Method::GET),
        // Authentication.
        case("no token", "/webhooks/comm100", "{}", 401, Some("unauthorized")),
        case("wrong token", "/webhooks/comm100?token=wrong", "{}", 401, Some("unauthorized")),
        case("empty token", "/webhooks/comm100?token=", "{}", 401, Some("unauthorized")),
        case("token in an unknown header", "/webhooks/comm100", "{}", 401, Some("unauthorized")).header("x-token", TOKEN),
        case("empty bearer", "/webhooks/comm100", "{}", 401, Some("unauthorized")).header("authorization", "Bearer "),
        case("token prefix only", &format!("/webhooks/comm100?token={}", &TOKEN[..10]), "{}", 401, Some("unauthorized")),
        case("token with a suffix", &format!("/webhooks/comm100?token={TOKEN}x"), "{}", 401, Some("unauthorized")),
        case("basic without a colon", "/webhooks/comm100", "{}", 401, Some("unauthorized")).header("authorization", "Basic dGVzdA=="),
        // Not a JSON object.
        case("empty body", h, "", 400, Some("invalid_json")),
        case("whitespace body", h, " \n\t ", 400, Some("invalid_json")),
        case("null", h, "null", 400, Some("invalid_json")),
        case("array", h, "[{\"event\":\"online\"}]", 400, Some("invalid_json")),
        case("number", h, "123", 400, Some("invalid_json")),
        case("string", h, "\"chat_ended\"", 400, Some("invalid_json")),
        case("boolean", h, "true", 400, Some("invalid_json")),
        case("truncated object", h, "{\"event\": \"chat_ended\", \"visitor\": {", 400, Some("invalid_json")),
        case("trailing garbage", h, "{\"event\":\"online\",\"operator_id\":1} trailing", 400, Some("invalid_json")),
        case("two objects", h, "{\"event\":\"online\"}{\"event\":\"away\"}", 400, Some("invalid_json")),
        case("invalid UTF-8 in a string", h, b"{\"event\":\"online\",\"x\":\"\xff\xfe\"}".to_vec(), 400, Some("invalid_json")),
        case("UTF-8 byte order mark", h, b"\xef\xbb\xbf{\"event\":\"online\"}".to_vec(), 400, Some("invalid_json")),
        case("raw NUL byte", h, b"{\"event\":\"online\",\0\"x\":1}".to_vec(), 400, Some("invalid_json")),
        case("unescaped control character", h, b"{\"event\":\"on\x01line\"}".to_vec(), 400, Some("invalid_json")),
        case("10,000-deep arrays", h, format!("{{\"event\":\"online\",\"x\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000)), 400, Some("invalid_json")),
        case("10,000-deep objects", h, format!("{{\"event\":\"online\",\"x\":{}1{}}}", "{\"a\":".repeat(10_000), "}".repeat(10_000)), 400, Some("invalid_json")),
        case("number 1e400", h, "{\"event\":\"online\",\"operator_id\":1e400}", 400, Some("invalid_json")),
        case("number -1e400", h, "{\"event\":\"chat_ended\",\"chat\":{\"end_time\":-1e400}}", 400, Some("invalid_json")),
        case("NaN", h, "{\"event\":\"online\",\"operator_id\":NaN}", 400, Some("invalid_json")),
        case("single quotes", h, "{'event':'online'}", 400, Some("invalid_json")),
        case("comment", h, "{\"event\":\"online\" /* hi */}", 400, Some("invalid_json")),
        case("lone surrogate escape", h, "{\"event\":\"online\",\"x\":\"\\ud800\"}", 400, Some("invalid_json")),
        // A JSON object without a string event.
        case("no event", h, "{\"visitor\":{}}", 422, Some("missing_event")),
        case("event null", h, "{\"event\":null}", 422, Some("missing_event")),
        case("event number", h, "{\"event\":1}", 422, Some("missing_event")),
        case("event array", h, "{\"event\":[\"chat_ended\"]}", 422, Some("missing_event")),
        case("event object", h, "{\"event\":{\"name\":\"chat_ended\"}}", 422, Some("missing_event")),
        case("event key in another case", h, "{\"Event\":\"chat_ended\"}", 422, Some("missing_event")),
        // Odd but valid: normalized, nothing lost.
        case("empty event", h, "{\"event\":\"\"}", 200, None),
        case("NUL in the event", h, "{\"event\":\"chat\\u0000ended\"}", 200, None),
        case("duplicate keys", h, "{\"event\":\"online\",\"event\":\"away\",\"operator_id\":1}", 200, None),
        case("visitor is a string", h, json!({"event": "chat_started", "visitor": "x"}).to_string(), 200, None),
        case("visitor is an array", h, json!({"event": "chat_started", "visitor": [1, 2]}).to_string(), 200, None),
        case("chats is text", h, json!({"event": "chat_started", "visitor": {"chats": "many", "chat_id": "c"}}).to_string(), 200, None),
        case("chat is a number", h, json!({"event": "chat_ended", "chat": 5}).to_string(), 200, None),
        case("offline_message is true", h, json!({"event": "offline_message_submitted", "offline_message": true}).to_string(), 200, None),
        case("wrapup is an array", h, json!({"event": "chat_wrapped_up", "wrapup": []}).to_string(), 200, None),
        case("operator_id is an object", h, json!({"event": "online", "operator_id": {"id": 1}}).to_string(), 200, None),
        case("operator_id too big for u64", h, "{\"event\":\"online\",\"operator_id\":100000000000000000000}", 200, None),
        case("custom_variables is text", h, json!({"event": "chat_started", "visitor": {"custom_variables": "x"}}).to_string(), 200, None),
        case("attachment is a number", h, json!({"event": "chat_ended", "chat": {"attachment": 5}}).to_string(), 200, None),
        case("transcript is a number", h, json!({"event": "chat_ended", "chat": {"chat_transcript": 7}}).to_string(), 200, None),
        case("status is text", h, json!({"event": "chat_started", "visitor": {"status": "abc"}}).to_string(), 200, None),
        case("department is an object", h, json!({"event": "chat_started", "visitor": {"department": {}}}).to_string(), 200, None),
        case("dates are nonsense", h, json!({"event": "chat_ended", "chat": {"end_time": "/Date(99999999999999999999)/", "start_time": true}}).to_string(), 200, None),
        case("every value null", h, json!({"event": "chat_ended", "chat": null, "visitor": null, "chat_id": null}).to_string(), 200, None),
        case("deep but allowed nesting", h, format!("{{\"event\":\"online\",\"x\":{}1{}}}", "[".repeat(100), "]".repeat(100)), 200, None),
        case("a 512 KiB string", h, json!({"event": "chat_ended", "chat": {"chat_transcript": "a".repeat(512 << 10)}}).to_string(), 200, None),
        case("a thousand unknown keys", h, {
            let mut o = serde_json::Map::new();
            o.insert("event".into(), json!("online"));
            for i in 0..1000 { o.insert(format!("k{i}"), json!(i)); }
            serde_json::Value::Object(o).to_string()
        }, 200, None),
        case("text/plain content type", h, chat_ended.clone(), 200, None).header("content-type", "text/plain"),
        case("XML content type", h, chat_ended.clone(), 200, None).header("content-type", "application/xml"),
        // Sizes and encodings.
        case("a body over the limit", h, vec![b' '; (1 << 20) + 1], 413, Some("body_too_large")),
        case("a 1 MiB string", h, json!({"event": "chat_ended", "x": "a".repeat(1 << 20)}).to_string(), 413, Some("body_too_large")),
        case("gzip", h, gzip(&chat_ended), 200, None).header("content-encoding", "gzip"),
        case("gzip bomb", h, gzip(&vec![b' '; 64 << 20]), 413, Some("body_too_large")).header("content-encoding", "gzip"),
        case("gzip that is not", h, chat_ended.clone(), 400, Some("invalid_gzip")).header("content-encoding", "gzip"),
        case("truncated gzip", h, { let g = gzip(&chat_ended); g[..g.len() / 2].to_vec() }, 400, Some("invalid_gzip")).header("content-encoding", "gzip"),
        case("brotli", h, chat_ended.clone(), 415, Some("unsupported_encoding")).header("content-encoding", "br"),
        case("identity encoding", h, chat_ended.clone(), 200, None).header("content-encoding", "identity"),
        // Tokens: at most four are looked at per request.
        case("1,000 token= parameters, the valid one first", &format!("/webhooks/comm100?token={TOKEN}{}", "&token=x".repeat(999)), r#"{"event":"online"}"#, 200, None),
        case("1,000 token= parameters, the valid one last", &format!("/webhooks/comm100?{}token={TOKEN}", "token=x&".repeat(999)), r#"{"event":"online"}"#, 401, Some("unauthorized")),
        case("the valid token fifth in the query", &format!("/webhooks/comm100?token=a&token=b&token=c&token=d&token={TOKEN}"), r#"{"event":"online"}"#, 401, Some("unauthorized")),
        case("three wrong in the query, the valid one as Bearer", "/webhooks/comm100?token=a&token=b&token=c", r#"{"event":"online"}"#, 200, None).header("authorization", &format!("Bearer {TOKEN}")),
        case("four wrong in the query, the valid one as Bearer", "/webhooks/comm100?token=a&token=b&token=c&token=d", r#"{"event":"online"}"#, 401, Some("unauthorized")).header("authorization", &format!("Bearer {TOKEN}")),
        case("the valid token second in the query", &format!("/webhooks/comm100?token=x&token={TOKEN}"), r#"{"event":"online"}"#, 200, None),
        case("percent-encoded token", &format!("/webhooks/comm100?token={}", TOKEN.bytes().map(|b| format!("%{b:02X}")).collect::<String>()), r#"{"event":"online"}"#, 200, None),
        case("lowercase bearer", "/webhooks/comm100", r#"{"event":"online"}"#, 200, None).header("authorization", &format!("bearer {TOKEN}")),
        case("basic with an empty password", "/webhooks/comm100", "{}", 401, Some("unauthorized")).header("authorization", "Basic Y29tbTEwMDo="),
        case("token in X-Bridge-Token", "/webhooks/comm100", r#"{"event":"online"}"#, 200, None).header("x-bridge-token", TOKEN),
        case("token as the Basic password", "/webhooks/comm100", r#"{"event":"online"}"#, 200, None).header("authorization", &format!("Basic {}", base64_encode(&format!("comm100:{TOKEN}")))),
        case("HEAD on the webhook", h, "", 405, None).method(Method::HEAD),
        case("1,000 unrelated query parameters", &format!("{h}{}", "&x=1".repeat(1000)), r#"{"event":"online"}"#, 200, None),
        // Forwarded headers from a peer that is not a trusted proxy change nothing.
        case("X-Forwarded-For from an untrusted peer", h, r#"{"event":"online"}"#, 200, None).header("x-forwarded-for", "203.0.113.9"),
        case("Forwarded from an untrusted peer", h, r#"{"event":"online"}"#, 200, None).header("forwarded", "for=203.0.113.9"),
        case("garbage X-Forwarded-For from an untrusted peer", h, r#"{"event":"online"}"#, 200, None).header("x-forwarded-for", "not an address"),
        // Paths.
        case("trailing slash", &format!("/webhooks/comm100/?token={TOKEN}"), r#"{"event":"online"}"#, 200, None),
        case("double slash", &format!("//webhooks/comm100?token={TOKEN}"), "{}", 404, Some("not_found")),
        case("a valid site label", &format!("/webhooks/comm100/eu-1.a_b?token={TOKEN}"), r#"{"event":"online"}"#, 200, None),
        // Event values.
        case("event with spaces around it", h, r#"{"event":"  chat_ended  "}"#, 200, None),
        case("event in capitals", h, r#"{"event":"CHAT_ENDED"}"#, 200, None),
        case("the misspelled wrap-up event", h, r#"{"event":"chat_wraped_up"}"#, 200, None),
        // Encodings, second pass.
        case("GZIP in capitals", h, gzip(&chat_ended), 200, None).header("content-encoding", "GZIP"),
        case("x-gzip", h, gzip(&chat_ended), 200, None).header("content-encoding", "x-gzip"),
        case("a list of encodings", h, gzip(&chat_ended), 415, Some("unsupported_encoding")).header("content-encoding", "gzip, identity"),
        case("gzip of invalid JSON", h, gzip(b"{not json"), 400, Some("invalid_json")).header("content-encoding", "gzip"),
        case("gzip of an array", h, gzip(b"[1,2]"), 400, Some("invalid_json")).header("content-encoding", "gzip"),
        case("two gzip members", h, { let mut g = gzip(b"{\"event\":"); g.extend(gzip(b"\"online\"}")); g }, 200, None).header("content-encoding", "gzip"),
        // Bodies that cost more to parse than their size.
        case("a body exactly at the limit", h, { let mut b = br#"{"event":"online"}"#.to_vec(); b.resize(768 << 10, b' '); b }, 200, None),
        case("one byte over the limit", h, { let mut b = br#"{"event":"online"}"#.to_vec(); b.resize((768 << 10) + 1, b' '); b }, 413, Some("body_too_large")),
        // Past 24 × http.max_body_bytes of parse tree and record, a body is refused.
        case("20,000 zeros in an array", h, format!("{{\"event\":\"online\",\"x\":[{}0]}}", "0,".repeat(20_000)), 200, None),
        case("200,000 zeros in an array", h, format!("{{\"event\":\"online\",\"x\":[{}0]}}", "0,".repeat(200_000)), 413, Some("body_too_complex")),
        case("4,000 unknown keys", h, unknown_keys(4_000), 200, None),
        case("40,000 unknown keys", h, unknown_keys(40_000), 413, Some("body_too_complex")),
        case("100,000 empty objects in a known list", h, format!("{{\"event\":\"chat_ended\",\"chat\":{{\"attachment\":[{}{{}}]}}}}", "{},".repeat(100_000)), 413, Some("body_too_complex")),
        case("100,000 newline escapes", h, format!("{{\"event\":\"chat_ended\",\"chat\":{{\"chat_transcript\":\"{}\"}}}}", "\\n".repeat(100_000)), 200, None),
        case("50,000 unicode escapes", h, format!("{{\"event\":\"online\",\"x\":\"{}\"}}", "\\u00e9".repeat(50_000)), 200, None),
        // Heads hyper refuses before the bridge sees them.
        case("a 20 KiB header", h, "{}", 431, None).header("x-padding", &"a".repeat(20 << 10)),
    ];
    let mut many = case("100 header fields", h, "{}", 431, None);
    for i in 0..100 {
        many = many.header(&format!("x-h{i}"), "v");
    }
    c.push(many);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_their_documented_answers_and_the_bridge_survives() {
    let cluster = cluster();
    let bridge = Bridge::start(config(&cluster.bootstrap_servers())).await;
    let cases = cases();
    let mut failures = Vec::new();
    for c in &cases {
        let mut b = Request::builder()
            .method(c.method.clone())
            .uri(bridge.url(&c.target));
        for (k, v) in &c.headers {
            b = b.header(k, v);
        }
        let answer = send(b.body(Full::new(Bytes::from(c.body.clone()))).unwrap()).await;
        let code = answer.json["error"]["code"].as_str();
        let code_ok = match c.code {
            Some(expected) => code == Some(expected),
            None => code.is_none(),
        };
        // Every error the bridge itself gives is JSON with a message; a 405 says what is allowed.
        let well_formed = c.code.is_none()
            || (answer.headers["content-type"] == "application/json"
                && answer.json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
                && (c.status != 405 || answer.headers.contains_key("allow")));
        if answer.status.as_u16() != c.status || !code_ok || !well_formed {
            failures.push(format!(
                "{}: got {} {:?}, expected {} {:?}: {}",
                c.name,
                answer.status,
                code,
                c.status,
                c.code,
                answer.text.chars().take(200).collect::<String>()
            ));
        }
        assert_ne!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            c.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 120, "{}", cases.len());

    // The admin listener's routes take GET and HEAD only.
    let request = Request::post(bridge.admin("/healthz"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = send(request).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers["allow"], "GET, HEAD");

    let body = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();
    let answer = post(
        &bridge.url(&format!("/webhooks/comm100?token={TOKEN}")),
        &[],
        body,
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "the bridge no longer serves a valid event: {}",
        answer.text
    );
    report(&format!(
        "hostile input: {} cases over HTTP, all answered as documented; a valid event still 200",
        cases.len()
    ));
    bridge.stop().await.unwrap();
}

/// A client that sends its request head one byte every `interval`; returns how long the
/// server took to close the connection (`None` if it never did within `give_up`).
async fn slow_client(
    addr: std::net::SocketAddr,
    interval: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let closed = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    });
    let head = format!(
        "POST /webhooks/comm100?token={TOKEN} HTTP/1.1\r\nhost: x\r\nx-slow: {}\r\n\r\n",
        "a".repeat(400)
    );
    let writer = async {
        for byte in head.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(interval).await;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        took = closed => took.ok(),
        () = writer => None,
        () = tokio::time::sleep(give_up) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_and_do_not_starve_others() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.http.header_read_timeout_ms = 1000;
    let bridge = Bridge::start(c).await;
    const SLOW: usize = 50;
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            tokio::spawn(slow_client(
                bridge.addr,
                Duration::from_millis(200),
                Duration::from_secs(20),
            ))
        })
        .collect();
    // While they dribble, a normal client is served at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let body = std::fs::read(fixtures_dir().join("chat_ended.json")).unwrap();
    let answer = post(
        &bridge.url(&format!("/webhooks/comm100?token={TOKEN}")),
        &[],
        body,
    )
    .await;
    let normal = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        normal < Duration::from_secs(1),
        "a normal client waited {normal:?}"
    );

    let mut cut = Vec::new();
    for s in slow {
        let took = s.await.unwrap().expect("a slow client was never cut off");
        cut.push(took);
    }
    let slowest = cut.iter().max().unwrap();
    // The head needs ~90 s at this pace; the 1 s header timeout must end it.
    assert!(
        *slowest < Duration::from_secs(3),
        "slowest cut-off after {slowest:?}"
    );
    report(&format!(
        "slowloris: {SLOW} clients sending a byte every 200 ms were cut off after {:.1}-{:.1} s (header timeout 1 s); a normal request meanwhile took {} ms",
        cut.iter().min().unwrap().as_secs_f64(),
        slowest.as_secs_f64(),
        normal.as_millis()
    ));
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.http.keep_alive_timeout_ms = 300;
    let bridge = Bridge::start(c).await;
    let mut stream = raw_request(bridge.addr, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the idle connection was never closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 404"));
    assert!(
        closed >= Duration::from_millis(250) && closed < Duration::from_secs(2),
        "{closed:?}"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_with_kafka_down_gets_429_and_503_fast_with_bounded_memory() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[http]
listen = "127.0.0.1:0"
max_inflight_requests = 16
max_inflight_bytes = 4194304
# One address floods here: the in-flight budget, not the per-client limit, is under test.
max_connections_per_client = 1024
[admin]
listen = "127.0.0.1:0"
[auth]
tokens = ["{TOKEN}"]
[kafka]
brokers = ["{}"]
[delivery]
deadline_ms = 2000
[spool]
enabled = false
dir = "{}"
[dlq]
rejected_bodies = false
[log]
format = "json"
level = "info"
"#,
            cluster.bootstrap_servers(),
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let bridge = Process::start(&config_path);
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    assert_eq!(
        post(&hook, &[], "{\"event\":\"online\",\"operator_id\":1}")
            .await
            .status,
        StatusCode::OK
    );
    let baseline = bridge.peak_rss();
    cluster.broker_down(-1).unwrap();

    const FLOOD: usize = 300;
    const BODY: usize = 256 << 10;
    let body = Bytes::from(json!({"event": "chat_ended", "pad": "a".repeat(BODY)}).to_string());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let (hook, body) = (hook.clone(), body.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let request = Request::post(&hook).body(Full::new(body)).unwrap();
            let status = client()
                .request(request)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (status, started.elapsed())
        });
    }
    let mut by_status: std::collections::BTreeMap<u16, (usize, Duration)> = Default::default();
    while let Some(done) = tasks.join_next().await {
        let (status, took) = done.unwrap();
        let entry = by_status.entry(status).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(took);
    }
    let peak = bridge.peak_rss();
    cluster.broker_up(-1).unwrap();

    let (too_many, slowest_429) = by_status.get(&429).copied().unwrap_or_default();
    let (unavailable, slowest_503) = by_status.get(&503).copied().unwrap_or_default();
    assert_eq!(
        too_many + unavailable,
        FLOOD,
        "only 429 and 503 are expected: {by_status:?}"
    );
    assert!(too_many > FLOOD / 2, "{by_status:?}");
    assert!(slowest_503 < Duration::from_secs(4), "{by_status:?}");
    // The budget (4 MiB) and the same slack as the other memory bounds.
    const BOUND: u64 = (4 << 20) + (16 << 20);
    assert!(
        peak - baseline < BOUND,
        "peak RSS {} MiB over a baseline of {} MiB",
        peak >> 20,
        baseline >> 20
    );
    report(&format!(
        "flood: {FLOOD} requests of {} KiB ({} MiB offered) with Kafka down and no spool: {too_many} × 429 (slowest {} ms), {unavailable} × 503 (slowest {} ms); bridge peak RSS {} MiB (baseline {} MiB, bound baseline + {} MiB)",
        BODY >> 10,
        (FLOOD * BODY) >> 20,
        slowest_429.as_millis(),
        slowest_503.as_millis(),
        peak >> 20,
        baseline >> 20,
        BOUND >> 20
    ));
    let mut bridge = bridge;
    bridge.signal("-TERM");
    assert_eq!(bridge.child.wait().unwrap().code(), Some(0));
}

#[tokio::test]
async fn addresses_forwarded_headers_and_site_tokens_over_http() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.auth.allowed_cidrs = vec![
        "10.0.0.0/8".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    c.auth.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    c.auth.site_tokens = toml::from_str("eu = [\"eu-token\"]").unwrap();
    let bridge = Bridge::start(c).await;
    let body = "{\"event\":\"online\",\"operator_id\":1}";
    let hook =
        |path: &str, token: &str| bridge.url(&format!("/webhooks/comm100{path}?token={token}"));

    // The peer (127.0.0.1) is a trusted proxy, so the forwarded client address decides.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], StatusCode);
    let cases: [Case; 12] = [
        ("", TOKEN, &[], StatusCode::FORBIDDEN),
        // Only X-Forwarded-For (auth.forwarded_header) is read: a client's own Forwarded
        // naming an allowed address is not believed, whatever the order.
        (
            "",
            TOKEN,
            &[
                ("forwarded", "for=10.1.2.3"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "",
            TOKEN,
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("forwarded", "for=10.1.2.3"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "",
            TOKEN,
            &[
                ("forwarded", "for=203.0.113.9"),
                ("x-forwarded-for", "10.1.2.3"),
            ],
            StatusCode::OK,
        ),
        (
            "",
            TOKEN,
            &[("forwarded", "for=\"[2001:db8::1]:4711\"")],
            StatusCode::FORBIDDEN,
        ),
        (
            "",
            TOKEN,
            &[("x-forwarded-for", "10.1.2.3")],
            StatusCode::OK,
        ),
        (
            "",
            TOKEN,
            &[("x-forwarded-for", "10.1.2.3, 203.0.113.9")],
            StatusCode::FORBIDDEN,
        ),
        (
            "",
            TOKEN,
            &[("x-forwarded-for", "2001:db8::1")],
            StatusCode::OK,
        ),
        (
            "",
            "wrong",
            &[("x-forwarded-for", "203.0.113.9")],
            StatusCode::FORBIDDEN,
        ),
        (
            "/eu",
            "eu-token",
            &[("x-forwarded-for", "10.0.0.1")],
            StatusCode::OK,
        ),
        (
            "/us",
            "eu-token",
            &[("x-forwarded-for", "10.0.0.1")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "",
            "eu-token",
            &[("x-forwarded-for", "10.0.0.1")],
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (path, token, headers, status) in cases {
        let answer = post(&hook(path, token), headers, body).await;
        assert_eq!(
            answer.status, status,
            "{path} {token} {headers:?}: {}",
            answer.text
        );
        if status == StatusCode::FORBIDDEN {
            assert_eq!(answer.json["error"]["code"], "forbidden");
            assert_eq!(
                answer.json["error"]["message"],
                "this client may not post here"
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            // The same answer whichever check failed.
            assert_eq!(answer.json["error"]["message"], "a valid token is required");
        }
    }
    let metrics = get(&bridge.admin("/metrics")).await.text;
    assert_eq!(metric(&metrics, "comm100_bridge_auth_failures_total"), 8.0);
    assert_eq!(
        metric(
            &metrics,
            "comm100_bridge_auth_failures_total{reason=\"address_not_allowed\"}"
        ),
        6.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "comm100_bridge_auth_failures_total{reason=\"wrong_site\"}"
        ),
        2.0,
        "{metrics}"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.http.body_read_timeout_ms = 500;
    let bridge = Bridge::start(c).await;
    let head = format!("POST /webhooks/comm100?token={TOKEN} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{{\"event\"");
    let mut stream = raw_request(bridge.addr, head).await;
    let started = Instant::now();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !response.ends_with(b"}") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("no answer to a stalled body");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.http.max_connections = 1;
    c.http.keep_alive_timeout_ms = 60_000;
    c.http.header_read_timeout_ms = 60_000;
    let bridge = Bridge::start(c).await;
    // The only slot, held by an idle connection.
    let mut first = raw_request(bridge.addr, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 1024];
    assert!(first.read(&mut buf).await.unwrap() > 0);

    let waiting = tokio::spawn({
        let url = bridge.url("/webhooks/comm100");
        async move { get(&url).await.status }
    });
    // Probes have the admin listener's own budget: they do not wait.
    let probe = tokio::time::timeout(Duration::from_secs(2), get(&bridge.admin("/healthz")))
        .await
        .expect("a probe queued behind the webhook listener's connections");
    assert_eq!(probe.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a second connection was served past max_connections = 1"
    );
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    bridge.stop().await.unwrap();
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.0/8 is all local).
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the server closes `stream` without a byte of answer, within a second.
async fn closed_unanswered(stream: &mut tokio::net::TcpStream) -> bool {
    let _ = stream
        .write_all(b"GET /webhooks/comm100 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_refused_at_accept_by_address_and_per_client_limit() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.http.max_connections_per_client = 50;
    c.http.keep_alive_timeout_ms = 60_000;
    c.http.header_read_timeout_ms = 60_000;
    let bridge = Bridge::start(c.clone()).await;
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));

    // 200 idle connections from one address: 50 are kept, the rest closed at once.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(connect_from("127.0.0.2", bridge.addr).await);
    }
    let mut refused = 0;
    for stream in idle.iter_mut().skip(50) {
        if closed_unanswered(stream).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 150);
    // Meanwhile another sender and the probes get through at once.
    let started = Instant::now();
    assert_eq!(
        post(&hook, &[], event("legit", 0)).await.status,
        StatusCode::OK
    );
    assert_eq!(get(&bridge.admin("/readyz")).await.status, StatusCode::OK);
    assert_eq!(get(&bridge.admin("/metrics")).await.status, StatusCode::OK);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The admin listener serves nothing else.
    assert_eq!(
        post(
            &bridge.admin(&format!("/webhooks/comm100?token={TOKEN}")),
            &[],
            event("a", 0)
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let metrics = get(&bridge.admin("/metrics")).await.text;
    assert_eq!(
        metric(
            &metrics,
            "comm100_bridge_connections_refused_total{reason=\"per_client_limit\"}"
        ),
        150.0,
        "{metrics}"
    );
    drop(idle);
    bridge.stop().await.unwrap();

    // An address outside the allowlist is closed before a byte is read.
    c.auth.allowed_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
    let bridge = Bridge::start(c).await;
    let mut outsider = connect_from("127.0.0.3", bridge.addr).await;
    assert!(closed_unanswered(&mut outsider).await);
    let allowed = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    assert_eq!(
        post(&allowed, &[], event("allowed", 0)).await.status,
        StatusCode::OK
    );
    let metrics = get(&bridge.admin("/metrics")).await.text;
    for series in [
        "comm100_bridge_auth_failures_total{reason=\"address_not_allowed\"}",
        "comm100_bridge_connections_refused_total{reason=\"address_not_allowed\"}",
    ] {
        assert_eq!(metric(&metrics, series), 1.0, "{series}: {metrics}");
    }
    report(&format!(
        "connections: 200 idle from one address, 150 closed at accept (limit 50); another sender and the probes answered in {} ms; an address outside the allowlist closed before a byte was read",
        took.as_millis()
    ));
    bridge.stop().await.unwrap();
}

/// Bodies that cost many times their size once parsed: a long array of zeros, 50,000
/// unknown keys, a transcript of `\n` escapes, and a list of empty objects where the payload
/// has objects of a known shape.
fn costly_bodies(size: usize) -> Vec<(&'static str, Bytes)> {
    let zeros = format!(
        r#"{{"event":"chat_ended","chat":{{"id":"c1"}},"x":[{}0]}}"#,
        "0,".repeat((size - 64) / 2)
    );
    let keys: String = (0..50_000)
        .map(|i| format!(r#""k{i:07}":[0,0,0],"#))
        .collect();
    let keys = format!(r#"{{"event":"chat_ended",{keys}"chat":{{"id":"c1"}}}}"#);
    let escapes = format!(
        r#"{{"event":"chat_ended","chat":{{"id":"c1","transcript":"{}"}}}}"#,
        "\\n".repeat((size - 80) / 2)
    );
    let objects = format!(
        r#"{{"event":"chat_ended","chat":{{"id":"c1","attachment":[{}{{}}]}}}}"#,
        "{},".repeat((size - 80) / 3)
    );
    [
        ("zeros", zeros),
        ("unknown keys", keys),
        ("escapes", escapes),
        ("empty objects", objects),
    ]
    .into_iter()
    .map(|(name, body)| {
        assert!(body.len() <= size, "{name}: {}", body.len());
        (name, Bytes::from(body))
    })
    .collect()
}

/// Posts `body` `times` times on one connection after another; the statuses seen.
async fn post_times(hook: String, body: Bytes, times: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..times {
        let request = Request::post(&hook).body(Full::new(body.clone())).unwrap();
        statuses.push(
            client()
                .request(request)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0),
        );
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bodies_that_cost_more_to_parse_stay_within_the_memory_budget() {
    const BODY: usize = 1 << 20;
    const BUDGET: u64 = 32 << 20;
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &cluster.bootstrap_servers(),
        &dir.path().join("spool"),
        &[
            ("http", &format!("max_body_bytes = {BODY}")),
            ("http", &format!("max_inflight_bytes = {BUDGET}")),
            ("http", "max_connections_per_client = 1024"),
            ("kafka.properties", r#""message.max.bytes" = "1300000""#),
        ],
    );
    let bridge = Process::start(&config);
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    // Until the producer is connected to a broker, a record goes to the spool (202).
    let readyz = bridge.admin("/readyz");
    eventually(Duration::from_secs(20), "a connected broker", async || {
        (get(&readyz).await.json["brokers_up"].as_i64() > Some(0)).then_some(())
    })
    .await;
    assert_eq!(
        post(&hook, &[], r#"{"event":"online","operator_id":1}"#)
            .await
            .status,
        StatusCode::OK
    );
    let baseline = bridge.peak_rss();

    const CLIENTS: usize = 12;
    const TIMES: usize = 4;
    let bodies = costly_bodies(BODY);
    let mut tasks = tokio::task::JoinSet::new();
    for (name, body) in &bodies {
        for _ in 0..CLIENTS {
            let (name, hook, body) = (*name, hook.clone(), body.clone());
            tasks.spawn(async move { (name, post_times(hook, body, TIMES).await) });
        }
    }
    let mut by_body: std::collections::BTreeMap<&str, std::collections::BTreeMap<u16, usize>> =
        Default::default();
    while let Some(done) = tasks.join_next().await {
        let (name, statuses) = done.unwrap();
        for status in statuses {
            *by_body.entry(name).or_default().entry(status).or_default() += 1;
        }
    }
    let peak = bridge.peak_rss();
    eprintln!(
        "peak {} MiB baseline {} MiB {by_body:?}",
        peak >> 20,
        baseline >> 20
    );
    for (name, statuses) in &by_body {
        assert!(
            statuses.keys().all(|s| [200, 202, 413, 429].contains(s)),
            "{name}: {statuses:?}"
        );
    }
    // The escapes and zeros bodies are ordinary enough to be taken when the budget allows.
    assert!(
        by_body["escapes"].get(&200).copied().unwrap_or(0) > 0,
        "{by_body:?}"
    );
    // The budget, plus what the process holds besides requests: librdkafka's copies of the
    // records in flight, hyper's read buffers (at most http.max_header_bytes per
    // connection), the allocator's free lists.
    const SLACK: u64 = 16 << 20;
    assert!(
        peak - baseline < BUDGET + SLACK,
        "peak RSS {} MiB over a baseline of {} MiB, budget {} MiB: {by_body:?}",
        peak >> 20,
        baseline >> 20,
        BUDGET >> 20
    );
    report(&format!(
        "costly bodies: {} clients × {TIMES} posts of {} KiB bodies ({}) at once, in-flight budget {} MiB: {by_body:?}; peak RSS {} MiB (baseline {} MiB)",
        CLIENTS * bodies.len(),
        BODY >> 10,
        bodies.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        BUDGET >> 20,
        peak >> 20,
        baseline >> 20
    ));
    assert_eq!(
        post(&hook, &[], r#"{"event":"online","operator_id":1}"#)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_rejected_bodies_with_the_dlq_on_and_kafka_slow_stays_bounded() {
    const BODY: usize = 256 << 10;
    const BUDGET: u64 = 16 << 20;
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &cluster.bootstrap_servers(),
        &dir.path().join("spool"),
        &[
            ("http", &format!("max_inflight_bytes = {BUDGET}")),
            ("http", "max_connections_per_client = 1024"),
            ("dlq", "rejected_bodies = true"),
        ],
    );
    let bridge = Process::start(&config);
    let hook = bridge.url(&format!("/webhooks/comm100?token={TOKEN}"));
    // Until the producer is connected to a broker, a record goes to the spool (202).
    let readyz = bridge.admin("/readyz");
    eventually(Duration::from_secs(20), "a connected broker", async || {
        (get(&readyz).await.json["brokers_up"].as_i64() > Some(0)).then_some(())
    })
    .await;
    assert_eq!(
        post(&hook, &[], r#"{"event":"online","operator_id":1}"#)
            .await
            .status,
        StatusCode::OK
    );
    let baseline = bridge.peak_rss();
    cluster
        .broker_round_trip_time(1, Duration::from_secs(1))
        .unwrap();

    const CLIENTS: usize = 32;
    const TIMES: usize = 20;
    let body = Bytes::from(format!(
        "{{\"event\":\"chat_ended\",\"x\":\"{}",
        "a".repeat(BODY - 64)
    ));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        tasks.spawn(post_times(hook.clone(), body.clone(), TIMES));
    }
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    while let Some(done) = tasks.join_next().await {
        for status in done.unwrap() {
            *statuses.entry(status).or_default() += 1;
        }
    }
    let took = started.elapsed();
    let peak = bridge.peak_rss();
    assert_eq!(
        statuses.get(&400).copied(),
        Some(CLIENTS * TIMES),
        "{statuses:?}"
    );
    const SLACK: u64 = 16 << 20;
    assert!(
        peak - baseline < BUDGET + SLACK,
        "peak RSS {} MiB over a baseline of {} MiB, budget {} MiB",
        peak >> 20,
        baseline >> 20,
        BUDGET >> 20
    );
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    // Every rejected body is either in the dead-letter topic or counted as not copied.
    let metrics = bridge.admin("/metrics");
    let (copied, dropped) = eventually(
        Duration::from_secs(30),
        "every rejected body copied or counted as not copied",
        async || {
            let text = get(&metrics).await.text;
            let copied = metric(&text, "comm100_bridge_dlq_total");
            let dropped = metric(&text, "comm100_bridge_dlq_dropped_total");
            (copied + dropped == (CLIENTS * TIMES) as f64).then_some((copied, dropped))
        },
    )
    .await;
    assert!(
        dropped > 0.0,
        "the flood should overrun the dead-letter share"
    );
    let found = consume_all(
        &cluster.bootstrap_servers(),
        "comm100.dlq",
        Duration::from_secs(20),
        |out| out.len() as f64 >= copied,
    )
    .len();
    assert_eq!(found as f64, copied);
    report(&format!(
        "rejected-body flood: {} × 400 of {} KiB in {} ms with the DLQ on and a 1 s broker round trip; {copied} copied to the DLQ, {dropped} not copied (share full); peak RSS {} MiB (baseline {} MiB, budget {} MiB)",
        CLIENTS * TIMES,
        BODY >> 10,
        took.as_millis(),
        peak >> 20,
        baseline >> 20,
        BUDGET >> 20
    ));
}

/// A webhook post with a valid token on a connection of its own from the loopback address
/// `from`, through a proxy when `forwarded_for` is given: `at_once` bytes of `body` at once,
/// then `step` bytes every `interval` (chunked, or with a Content-Length). Returns the status
/// answered, with its body, and when.
#[allow(clippy::too_many_arguments)]
async fn post_from(
    from: &str,
    addr: std::net::SocketAddr,
    forwarded_for: Option<&str>,
    body: Vec<u8>,
    chunked: bool,
    at_once: usize,
    step: usize,
    interval: Duration,
) -> (Option<u16>, String, Duration) {
    let stream = connect_from(from, addr).await;
    let started = Instant::now();
    let framing = match chunked {
        true => "transfer-encoding: chunked".to_owned(),
        false => format!("content-length: {}", body.len()),
    };
    let forwarded = forwarded_for.map_or(String::new(), |a| format!("x-forwarded-for: {a}\r\n"));
    let head = format!(
        "POST /webhooks/comm100?token={TOKEN} HTTP/1.1\r\nhost: x\r\n{forwarded}{framing}\r\n\r\n"
    );
    let frame = |piece: &[u8], last: bool| -> Vec<u8> {
        if !chunked {
            return piece.to_vec();
        }
        let mut out = format!("{:x}\r\n", piece.len()).into_bytes();
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
        if last {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        out
    };
    let (mut read, mut write) = stream.into_split();
    let send = async move {
        let first = at_once.min(body.len());
        let mut out = head.into_bytes();
        out.extend(frame(&body[..first], first == body.len()));
        write.write_all(&out).await?;
        let mut sent = first;
        while sent < body.len() {
            tokio::time::sleep(interval).await;
            let next = (sent + step).min(body.len());
            write
                .write_all(&frame(&body[sent..next], next == body.len()))
                .await?;
            sent = next;
        }
        std::future::pending::<std::io::Result<()>>().await
    };
    let answer = async {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&got);
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|n| n.parse::<usize>().ok());
                if length.is_some_and(|n| rest.len() >= n) {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok());
        (status, text)
    };
    tokio::select! {
        (status, text) = answer => (status, text, started.elapsed()),
        _ = send => (None, "the connection closed while sending".to_owned(), started.elapsed()),
        () = tokio::time::sleep(Duration::from_secs(30)) => (None, "no answer".to_owned(), started.elapsed()),
    }
}

/// A chat-ended event of about `size` bytes: a long transcript.
fn transcript_event(chat: &str, size: usize) -> Vec<u8> {
    json!({
        "event": "chat_ended",
        "visitor": {"chat_id": chat},
        "chat": {"chat_transcript": "x".repeat(size)},
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_with_a_valid_token_cannot_starve_another_addresss_large_events() {
    const SLOW: usize = 90;
    let cluster = cluster();
    // The budget, its shares and the body timeout (10 s) as they are by default.
    let bridge = Bridge::start(config(&cluster.bootstrap_servers())).await;
    // 90 uploads with a valid token from 127.0.0.2, chunked, at 1 KB/s.
    let slow: Vec<_> = (0..SLOW)
        .map(|i| {
            let body = transcript_event(&format!("slow-{i}"), 300_000);
            tokio::spawn(post_from(
                "127.0.0.2",
                bridge.addr,
                None,
                body,
                true,
                1000,
                100,
                Duration::from_millis(100),
            ))
        })
        .collect();
    let metrics = bridge.admin("/metrics");
    eventually(
        Duration::from_secs(10),
        "every slow upload in flight",
        async || {
            let text = get(&metrics).await.text;
            (metric(&text, "comm100_bridge_inflight_requests") >= SLOW as f64).then_some(())
        },
    )
    .await;

    // Meanwhile another address's 300 KB transcripts and chunked posts are served.
    let mut answers = Vec::new();
    for i in 0..3 {
        for chunked in [false, true] {
            let body = transcript_event(&format!("normal-{i}-{chunked}"), 300_000);
            let (status, text, _) = post_from(
                "127.0.0.1",
                bridge.addr,
                None,
                body,
                chunked,
                100_000,
                100_000,
                Duration::from_millis(1),
            )
            .await;
            assert_eq!(status, Some(200), "chunked {chunked}: {text}");
            answers.push(status);
        }
    }
    let text = get(&metrics).await.text;
    assert!(
        metric(&text, "comm100_bridge_inflight_requests") >= SLOW as f64,
        "the slow uploads were cut before the normal posts were done"
    );
    let mut cut = Vec::new();
    for s in slow {
        let (status, text, took) = s.await.unwrap();
        assert_eq!(status, Some(408), "a slow upload after {took:?}: {text}");
        cut.push(took);
    }
    let slowest = cut.iter().max().unwrap();
    report(&format!(
        "slow senders: {SLOW} chunked uploads with a valid token at 1 KB/s from one address held \
         until 408 at {:.1} s (body timeout 10 s); meanwhile another address's {} posts of 300 \
         KB (half chunked) were all answered 200",
        slowest.as_secs_f64(),
        answers.len()
    ));
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_holds_at_most_its_share_of_the_budget() {
    let cluster = cluster();
    let mut c = config(&cluster.bootstrap_servers());
    c.http.body_read_timeout_ms = 3000;
    c.http.max_inflight_requests = 64;
    c.http.max_inflight_requests_per_client = 32;
    c.http.max_inflight_bytes = 24 << 20;
    c.http.max_inflight_bytes_per_client = 12 << 20;
    c.http.max_connections_per_client = 1024;
    c.auth.trusted_proxies = vec!["127.0.0.3/32".parse().unwrap()];
    let bridge = Bridge::start(c).await;
    let proxy = "127.0.0.3";

    // Requests: 64 slow uploads from one client behind the proxy; it gets its 32.
    let slow: Vec<_> = (0..64)
        .map(|i| {
            let body = transcript_event(&format!("slow-{i}"), 10_000);
            tokio::spawn(post_from(
                proxy,
                bridge.addr,
                Some("203.0.113.9"),
                body,
                true,
                100,
                10,
                Duration::from_millis(100),
            ))
        })
        .collect();
    eventually(Duration::from_secs(10), "32 refused", async || {
        (slow.iter().filter(|s| s.is_finished()).count() >= 32).then_some(())
    })
    .await;
    // Another client through the same proxy, and one posting directly, are served.
    for (from, forwarded) in [(proxy, Some("198.51.100.1")), ("127.0.0.1", None)] {
        let body = transcript_event("other", 300_000);
        let (status, text, _) = post_from(
            from,
            bridge.addr,
            forwarded,
            body,
            false,
            300_000,
            1,
            Duration::ZERO,
        )
        .await;
        assert_eq!(status, Some(200), "{from} {forwarded:?}: {text}");
    }
    let mut by_status = std::collections::BTreeMap::new();
    for s in slow {
        let (status, text, _) = s.await.unwrap();
        if status == Some(429) {
            assert!(
                text.contains("http.max_inflight_requests_per_client"),
                "{text}"
            );
        }
        *by_status.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        by_status,
        [(Some(408), 32), (Some(429), 32)].into_iter().collect(),
        "one client's requests"
    );

    // Bytes: bodies sent up to 600 KB of 700 KB and then held, each holding its buffer of
    // 700 KB and its start (749,235 bytes): the client's 12 MiB share takes 16 of them, and
    // leaves the rest of the 24 MiB for others (all 32 would leave 1 MiB; another 700 KB
    // transcript takes 9 MiB while parsed).
    let greedy: Vec<_> = (0..32)
        .map(|i| {
            let body = transcript_event(&format!("big-{i}"), 700_000);
            tokio::spawn(post_from(
                "127.0.0.2",
                bridge.addr,
                None,
                body,
                false,
                600_000,
                10,
                Duration::from_millis(100),
            ))
        })
        .collect();
    eventually(Duration::from_secs(10), "16 refused", async || {
        (greedy.iter().filter(|s| s.is_finished()).count() >= 16).then_some(())
    })
    .await;
    let body = transcript_event("other-big", 700_000);
    let (status, text, _) = post_from(
        "127.0.0.1",
        bridge.addr,
        None,
        body,
        false,
        700_000,
        1,
        Duration::ZERO,
    )
    .await;
    assert_eq!(status, Some(200), "{text}");
    let mut by_status = std::collections::BTreeMap::new();
    for s in greedy {
        let (status, text, _) = s.await.unwrap();
        if status == Some(429) {
            assert!(
                text.contains("http.max_inflight_bytes_per_client"),
                "{text}"
            );
        }
        *by_status.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        by_status,
        [(Some(408), 16), (Some(429), 16)].into_iter().collect(),
        "one client's bytes"
    );
    report(
        "client shares: 64 slow uploads from one client behind a trusted proxy: 32 held, 32 \
         refused 429 naming the share, while another client through the same proxy and one \
         posting directly got 200 for 300 KB; 32 held 700 KB uploads from one address: 16 \
         within its 12 MiB share, 16 refused, another address's 700 KB post 200",
    );
    bridge.stop().await.unwrap();
}
