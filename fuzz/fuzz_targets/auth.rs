//! Token checking on any query and any token headers: never panics, gives the same answer
//! twice, and accepts a request exactly when it presents a configured token, as read by an
//! independent decoding of the places a token may be (the `token` query parameter,
//! `X-Bridge-Token`, `Authorization: Bearer` and the HTTP Basic password; the first four
//! presented count). Run with `auth.dict`, which holds the tokens and the schemes.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use comm100_bridge::auth::{Auth, AuthError};
use comm100_bridge::config::Secret;
use libfuzzer_sys::fuzz_target;

const TOKENS: [&str; 2] = ["s3cret", "other"];

static RULES: LazyLock<Auth> =
    LazyLock::new(|| Auth::new(&TOKENS.map(Secret::new)));

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
    let presented = presented(&parts);
    let valid = presented.iter().any(|t| TOKENS.iter().any(|ok| ok.as_bytes() == t));
    match answer {
        Ok(()) => assert!(valid, "accepted without a configured token: {presented:?}"),
        Err(AuthError::InvalidToken | AuthError::MissingToken) => {
            assert!(!valid, "refused a configured token: {presented:?}")
        }
        Err(e) => panic!("{e:?} without site tokens or an allowlist"),
    }
});

/// The tokens a request presents, first four only: query, then `X-Bridge-Token`, then
/// `Authorization`.
fn presented(parts: &http::request::Parts) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for pair in parts.uri.query().unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(key) == b"token" && out.len() < 4 {
            out.push(form_decode(value));
        }
    }
    for value in parts.headers.get_all("x-bridge-token").iter().take(4) {
        out.push(value.as_bytes().to_vec());
    }
    for value in parts.headers.get_all("authorization").iter().take(4) {
        let Ok(text) = value.to_str() else { continue };
        let text = text.trim();
        let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => out.push(rest.trim().as_bytes().to_vec()),
            "basic" => {
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim())
                else {
                    continue;
                };
                if let Some(colon) = decoded.iter().position(|&b| b == b':') {
                    out.push(decoded[colon + 1..].to_vec());
                }
            }
            _ => {}
        }
    }
    out.truncate(4);
    out
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte, anything
/// else itself; then UTF-8, invalid sequences replaced.
fn form_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned().into_bytes()
}
