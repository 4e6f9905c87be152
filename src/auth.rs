//! Token authentication: `?token=`, `Authorization: Bearer`, `X-Bridge-Token` or the HTTP
//! Basic password, compared in constant time.

use base64::Engine;
use http::header::AUTHORIZATION;
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Why a request was refused; the label of `auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token was presented")]
    MissingToken,
    #[error("the token is not valid")]
    InvalidToken,
}

impl AuthError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
        }
    }
}

/// The accepted tokens, kept as SHA-256 digests so every comparison takes the same time
/// whatever the lengths.
#[derive(Clone)]
pub struct Auth {
    digests: Vec<[u8; 32]>,
}

impl Auth {
    /// With no tokens every request is accepted; `serve` allows that only when
    /// `auth.allow_unauthenticated` is set.
    pub fn new(tokens: &[Secret]) -> Self {
        Self {
            digests: tokens
                .iter()
                .map(|t| digest(t.expose().as_bytes()))
                .collect(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.digests.is_empty()
    }

    /// Accepts the request if any presented token matches any configured token.
    pub fn check(&self, parts: &Parts) -> Result<(), AuthError> {
        if self.is_open() {
            return Ok(());
        }
        let mut presented = false;
        let mut matched = subtle::Choice::from(0);
        for candidate in candidates(parts) {
            presented = true;
            let d = digest(&candidate);
            for accepted in &self.digests {
                matched |= d.ct_eq(accepted);
            }
        }
        match (presented, bool::from(matched)) {
            (_, true) => Ok(()),
            (false, false) => Err(AuthError::MissingToken),
            (true, false) => Err(AuthError::InvalidToken),
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Every token the request presents, in any of the accepted places.
fn candidates(parts: &Parts) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(query) = parts.uri.query() {
        out.extend(
            form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned().into_bytes()),
        );
    }
    for value in parts.headers.get_all("x-bridge-token") {
        out.push(value.as_bytes().to_vec());
    }
    for value in parts.headers.get_all(AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            out.push(rest.trim().as_bytes().to_vec());
        } else if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
                continue;
            };
            if let Some(colon) = decoded.iter().position(|&b| b == b':') {
                out.push(decoded[colon + 1..].to_vec());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn auth() -> Auth {
        Auth::new(&[Secret::new("old-token"), Secret::new("new token/+")])
    }

    #[test]
    fn every_place_a_token_can_be() {
        let a = auth();
        let basic = base64::engine::general_purpose::STANDARD.encode("comm100:old-token");
        for p in [
            parts("/webhooks/comm100?token=old-token", &[]),
            parts("/webhooks/comm100?x=1&token=new+token%2F%2B", &[]),
            parts("/", &[("authorization", "Bearer old-token")]),
            parts("/", &[("authorization", "bearer  new token/+")]),
            parts("/", &[("x-bridge-token", "old-token")]),
            parts("/", &[("authorization", &format!("Basic {basic}"))]),
            parts("/?token=wrong", &[("x-bridge-token", "old-token")]),
        ] {
            assert_eq!(a.check(&p), Ok(()), "{:?}", p.uri);
        }
    }

    #[test]
    fn missing_and_wrong_tokens() {
        let a = auth();
        assert_eq!(
            a.check(&parts("/webhooks/comm100", &[])),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            a.check(&parts("/?token=old-tokenX", &[])),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            a.check(&parts("/?token=", &[])),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            a.check(&parts("/", &[("authorization", "Basic !!!notbase64")])),
            Err(AuthError::MissingToken)
        );
        let user_only = base64::engine::general_purpose::STANDARD.encode("old-token");
        assert_eq!(
            a.check(&parts(
                "/",
                &[("authorization", &format!("Basic {user_only}"))]
            )),
            Err(AuthError::MissingToken)
        );
    }

    #[test]
    fn no_tokens_means_open() {
        assert_eq!(Auth::new(&[]).check(&parts("/", &[])), Ok(()));
    }
}
