//! Token checking on any query and any token headers: never panics, gives the same answer
//! twice, and accepts a request only if it presents a configured token: literally, or
//! through URL decoding (`%`, `+`) or HTTP Basic.
#![no_main]

use std::sync::LazyLock;

use comm100_bridge::auth::{Auth, AuthError};
use comm100_bridge::config::Secret;
use libfuzzer_sys::fuzz_target;

static RULES: LazyLock<Auth> =
    LazyLock::new(|| Auth::new(&[Secret::new("s3cret"), Secret::new("other")]));

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == 0);
    let query = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let uri = format!("/webhooks/comm100?{}", query.replace(['#', ' '], ""));
    let mut request = http::Request::builder().uri(uri.as_str());
    for (name, value) in ["authorization", "x-bridge-token", "authorization"]
        .iter()
        .zip(fields)
    {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            request = request.header(*name, value);
        }
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let peer = "192.0.2.1".parse().unwrap();
    let answer = RULES.check(&parts, peer, None);
    assert_eq!(answer, RULES.check(&parts, peer, None));
    match answer {
        Ok(()) => {
            let text = String::from_utf8_lossy(data).to_ascii_lowercase();
            assert!(
                ["s3cret", "other", "%", "+", "basic"]
                    .iter()
                    .any(|s| text.contains(s)),
                "accepted without presenting a token"
            );
        }
        Err(AuthError::MissingToken | AuthError::InvalidToken) => {}
        Err(e) => panic!("{e:?} without site tokens or an allowlist"),
    }
});
