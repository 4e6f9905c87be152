//! The client address behind a trusted proxy, from any `X-Forwarded-For` and `Forwarded`
//! values, with either header configured: never panics, the answer is the peer, an
//! address written in a header, or none, and the allowlist refuses exactly the requests
//! whose client address is unknown or outside it.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use comm100_bridge::auth::{Auth, AuthError};
use comm100_bridge::config::AuthConfig;
use libfuzzer_sys::fuzz_target;

static RULES: LazyLock<[Auth; 2]> = LazyLock::new(|| {
    ["x-forwarded-for", "forwarded"].map(|header| {
        let config: AuthConfig = serde_json::from_value(serde_json::json!({
            "tokens": ["t"],
            "allow_unauthenticated": false,
            "allowed_cidrs": ["192.0.2.0/24"],
            "trusted_proxies": ["10.0.0.0/8", "fd00::/8"],
            "forwarded_header": header,
        }))
        .expect("a valid auth configuration");
        Auth::from_config(&config).expect("no token files")
    })
});

fuzz_target!(|data: &[u8]| {
    let (xff, forwarded) = data.split_at(data.len() / 2);
    let mut request = http::Request::builder().uri("/webhooks/comm100");
    for (name, value) in [("x-forwarded-for", xff), ("forwarded", forwarded)] {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            request = request.header(name, value);
        }
    }
    let Ok(request) = request.body(()) else { return };
    let (parts, ()) = request.into_parts();
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    for rules in RULES.iter() {
        let client = rules.client_address(&parts, peer);
        if let Some(client) = client {
            assert!(
                client == peer
                    || addresses(xff).contains(&client)
                    || addresses(forwarded).contains(&client),
                "{client} appears in no header"
            );
        }
        // No token is presented: an allowed client is asked for one, any other is refused.
        let expected = match client.is_some_and(in_allowlist) {
            true => AuthError::MissingToken,
            false => AuthError::AddressNotAllowed,
        };
        assert_eq!(rules.check(&parts, peer, None), Err(expected), "client {client:?}");
    }
});

/// Every address written in `data`, as `a.b.c.d`, an IPv6 address, either with a `:port`.
fn addresses(data: &[u8]) -> Vec<IpAddr> {
    let text = String::from_utf8_lossy(data);
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.'))
        .flat_map(|t| [Some(t), t.rsplit_once(':').map(|(a, _)| a)])
        .flatten()
        .filter_map(|t| t.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect()
}


/// Whether `ip` is in the rules' allowlist, 192.0.2.0/24 (without the bridge's CIDR code).
fn in_allowlist(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [192, 0, 2])
}
