//! Access control: the client address against `auth.allowed_cidrs` (believing forwarded
//! headers only from `auth.trusted_proxies`), then a token from `?token=`,
//! `Authorization: Bearer`, `X-Bridge-Token` or the HTTP Basic password, compared in
//! constant time against the global tokens and the tokens bound to the request's site.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::request::Parts;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, ConfigError, ForwardedHeader, Secret};
use crate::event::Site;
use crate::watched::{Changing, Watched};

/// Checks that every site of `auth.site_tokens` and `auth.site_tokens_files` is a valid
/// site label.
pub fn check_site_labels(auth: &AuthConfig) -> Result<(), ConfigError> {
    let files = auth
        .site_tokens_files
        .keys()
        .map(|s| ("site_tokens_files", s));
    let tokens = auth.site_tokens.keys().map(|s| ("site_tokens", s));
    for (key, site) in files.chain(tokens) {
        if Site::parse(site).is_none() {
            return Err(crate::config::invalid(
                format!("auth.{key}.{site}"),
                "a site label is 1 to 64 of A-Z a-z 0-9 _ . -",
            ));
        }
    }
    Ok(())
}

/// Why a request was refused. The sender is only told 401 or 403; the reason is the label
/// of `auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token was presented")]
    MissingToken,
    #[error("the token is not valid")]
    InvalidToken,
    #[error("the token belongs to another site")]
    WrongSite,
    #[error("the client address is not allowed")]
    AddressNotAllowed,
}

impl AuthError {
    /// Every failure: the `reason` values of `auth_failures_total`.
    pub const ALL: [Self; 4] = [
        Self::MissingToken,
        Self::InvalidToken,
        Self::WrongSite,
        Self::AddressNotAllowed,
    ];

    /// The `reason` label of `auth_failures_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::WrongSite => "wrong_site",
            Self::AddressNotAllowed => "address_not_allowed",
        }
    }

    /// 403 for an address, 401 for anything about the token.
    pub fn is_forbidden(self) -> bool {
        self == Self::AddressNotAllowed
    }
}

/// The access rules. Tokens are kept as SHA-256 digests so every comparison takes the
/// same time whatever the lengths.
#[derive(Clone, Default)]
pub struct Auth {
    digests: Vec<[u8; 32]>,
    sites: BTreeMap<String, Vec<[u8; 32]>>,
    allowed: Vec<IpNet>,
    proxies: Vec<IpNet>,
    forwarded: ForwardedHeader,
}

fn digests(tokens: &[Secret]) -> Vec<[u8; 32]> {
    tokens
        .iter()
        .map(|t| digest(t.expose().as_bytes()))
        .collect()
}

impl Auth {
    /// Global tokens only, any address.
    pub fn new(tokens: &[Secret]) -> Self {
        Self {
            digests: digests(tokens),
            ..Self::default()
        }
    }

    /// The rules of `config`, with the token files read now.
    pub fn from_config(config: &AuthConfig) -> Result<Self, ConfigError> {
        let files = config.read_token_files()?;
        let mut sites: BTreeMap<String, Vec<[u8; 32]>> = config
            .site_tokens
            .iter()
            .map(|(site, tokens)| (site.clone(), digests(&tokens.0)))
            .collect();
        for (site, tokens) in &files.sites {
            sites
                .entry(site.clone())
                .or_default()
                .extend(digests(tokens));
        }
        let mut global = digests(&config.tokens);
        global.extend(digests(&files.global));
        Ok(Self {
            digests: global,
            sites,
            allowed: config.allowed_cidrs.clone(),
            proxies: config.trusted_proxies.clone(),
            forwarded: config.forwarded_header,
        })
    }

    /// Whether a connection from `peer` may be served at all: an address the allowlist
    /// refuses is closed as soon as it is accepted. A trusted proxy may be forwarding an
    /// allowed client, so it is let through; its requests are checked one by one.
    pub fn connection_allowed(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.allowed.is_empty()
            || self.is_trusted_proxy(peer)
            || self.allowed.iter().any(|net| net.contains(&peer))
    }

    /// Whether `peer` is one of `auth.trusted_proxies`.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.proxies.iter().any(|net| net.contains(&peer))
    }

    /// With no token at all every request is accepted; `serve` allows that only when
    /// `auth.allow_unauthenticated` is set.
    pub fn is_open(&self) -> bool {
        self.digests.is_empty() && self.sites.is_empty()
    }

    /// Checks the client address, then the token for `site`.
    pub fn check(&self, parts: &Parts, peer: IpAddr, site: Option<&Site>) -> Result<(), AuthError> {
        if !self.allowed.is_empty() {
            let allowed = self
                .client_address(parts, peer)
                .is_some_and(|ip| self.allowed.iter().any(|net| net.contains(&ip)));
            if !allowed {
                return Err(AuthError::AddressNotAllowed);
            }
        }
        if self.is_open() {
            return Ok(());
        }
        let no_site = Vec::new();
        let site_digests = site
            .and_then(|s| self.sites.get(s.as_str()))
            .unwrap_or(&no_site);
        let mut presented = false;
        let mut valid = subtle::Choice::from(0);
        let mut other_site = subtle::Choice::from(0);
        for candidate in candidates(parts) {
            presented = true;
            let d = digest(&candidate);
            for accepted in self.digests.iter().chain(site_digests) {
                valid |= d.ct_eq(accepted);
            }
            for (name, tokens) in &self.sites {
                if site.is_some_and(|s| s.as_str() == name) {
                    continue;
                }
                for token in tokens {
                    other_site |= d.ct_eq(token);
                }
            }
        }
        match (presented, bool::from(valid), bool::from(other_site)) {
            (_, true, _) => Ok(()),
            (_, false, true) => Err(AuthError::WrongSite),
            (true, false, false) => Err(AuthError::InvalidToken),
            (false, false, false) => Err(AuthError::MissingToken),
        }
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    /// address in the `auth.forwarded_header` header that is not a trusted proxy. `None`
    /// when a forwarded address cannot be read. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
    /// what a dual-stack listener sees) are their IPv4 address, so IPv4 rules apply to them.
    pub fn client_address(&self, parts: &Parts, peer: IpAddr) -> Option<IpAddr> {
        let peer = peer.to_canonical();
        let trusted = |ip: &IpAddr| self.proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return Some(peer);
        }
        let mut client = peer;
        for hop in forwarded_hops(parts, self.forwarded).iter().rev() {
            client = parse_hop(hop)?.to_canonical();
            if !trusted(&client) {
                return Some(client);
            }
        }
        Some(client)
    }
}

/// Why token files were not reloaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Unreadable(#[from] ConfigError),
    #[error(transparent)]
    Changing(#[from] Changing),
    #[error(
        "the token files now hold no token, which would accept anyone: keeping the tokens in \
         force (set auth.allow_unauthenticated = true to allow that)"
    )]
    NoToken,
}

/// The rules in force: read lock-free by every request, replaced whole when the token
/// files are read again.
pub struct LiveAuth {
    current: ArcSwap<Auth>,
    config: AuthConfig,
    files: Watched,
}

impl LiveAuth {
    pub fn load(config: &AuthConfig) -> Result<Self, ReloadError> {
        let files = Watched::new(
            config
                .tokens_file
                .iter()
                .chain(config.site_tokens_files.values())
                .cloned(),
        );
        let auth = files.read(|| Auth::from_config(config).map_err(ReloadError::from))?;
        Ok(Self {
            current: ArcSwap::from_pointee(auth),
            config: config.clone(),
            files,
        })
    }

    /// The rules now.
    pub fn current(&self) -> arc_swap::Guard<Arc<Auth>> {
        self.current.load()
    }

    /// Whether a token file changed since it was read, and has stayed so for
    /// [`crate::watched::SETTLE`].
    pub fn files_changed(&self) -> bool {
        self.files.settled_change()
    }

    /// Reads the token files again. On an error the rules in force stay.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let auth = self
            .files
            .read(|| Auth::from_config(&self.config).map_err(ReloadError::from))?;
        if auth.is_open() && !self.config.allow_unauthenticated {
            return Err(ReloadError::NoToken);
        }
        self.current.store(Arc::new(auth));
        Ok(())
    }

    /// Whether any token file is configured.
    pub fn has_files(&self) -> bool {
        self.config.tokens_file.is_some() || !self.config.site_tokens_files.is_empty()
    }
}

/// The addresses a request passed through, oldest first, from the one configured header:
/// the entries of `X-Forwarded-For`, or the `for=` values of `Forwarded`. The other header
/// is ignored, so a client cannot choose which one is believed.
fn forwarded_hops(parts: &Parts, header: ForwardedHeader) -> Vec<String> {
    let mut hops = Vec::new();
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    for value in parts.headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            hops.push(String::new());
            continue;
        };
        match header {
            ForwardedHeader::XForwardedFor => {
                hops.extend(value.split(',').map(|h| h.trim().to_owned()))
            }
            ForwardedHeader::Forwarded => {
                for element in value.split(',') {
                    for pair in element.split(';') {
                        if let Some((k, v)) = pair.trim().split_once('=') {
                            if k.trim().eq_ignore_ascii_case("for") {
                                hops.push(v.trim().trim_matches('"').to_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    hops
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The most tokens one request may present, in all places together; more are ignored, so
/// checking a request costs at most this many digests whatever it sends.
pub const MAX_CANDIDATES: usize = 4;

/// The tokens the request presents, in any of the accepted places: at most
/// [`MAX_CANDIDATES`], the query's first, then `X-Bridge-Token`, then `Authorization`.
fn candidates(parts: &Parts) -> Vec<Cow<'_, [u8]>> {
    let mut out = Vec::with_capacity(MAX_CANDIDATES);
    if let Some(query) = parts.uri.query() {
        out.extend(
            form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k == "token")
                .take(MAX_CANDIDATES)
                .map(|(_, v)| match v {
                    Cow::Borrowed(v) => Cow::Borrowed(v.as_bytes()),
                    Cow::Owned(v) => Cow::Owned(v.into_bytes()),
                }),
        );
    }
    for value in parts
        .headers
        .get_all("x-bridge-token")
        .iter()
        .take(MAX_CANDIDATES)
    {
        out.push(Cow::Borrowed(value.as_bytes()));
    }
    for value in parts
        .headers
        .get_all(AUTHORIZATION)
        .iter()
        .take(MAX_CANDIDATES)
    {
        let Ok(value) = value.to_str() else { continue };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            out.push(Cow::Borrowed(rest.trim().as_bytes()));
        } else if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
                continue;
            };
            if let Some(colon) = decoded.iter().position(|&b| b == b':') {
                out.push(Cow::Owned(decoded[colon + 1..].to_vec()));
            }
        }
    }
    out.truncate(MAX_CANDIDATES);
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
            assert_eq!(a.check(&p, PEER, None), Ok(()), "{:?}", p.uri);
        }
    }

    #[test]
    fn missing_and_wrong_tokens() {
        let a = auth();
        assert_eq!(
            a.check(&parts("/webhooks/comm100", &[]), PEER, None),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            a.check(&parts("/?token=old-tokenX", &[]), PEER, None),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            a.check(&parts("/?token=", &[]), PEER, None),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            a.check(
                &parts("/", &[("authorization", "Basic !!!notbase64")]),
                PEER,
                None
            ),
            Err(AuthError::MissingToken)
        );
        let user_only = base64::engine::general_purpose::STANDARD.encode("old-token");
        assert_eq!(
            a.check(
                &parts("/", &[("authorization", &format!("Basic {user_only}"))]),
                PEER,
                None
            ),
            Err(AuthError::MissingToken)
        );
    }

    #[test]
    fn no_tokens_means_open() {
        assert_eq!(Auth::new(&[]).check(&parts("/", &[]), PEER, None), Ok(()));
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

    fn rules(toml: &str) -> Auth {
        let config: AuthConfig = toml::from_str(&format!(
            "tokens = []\nallow_unauthenticated = false\n{toml}"
        ))
        .unwrap();
        Auth::from_config(&config).unwrap()
    }

    #[test]
    fn site_tokens_only_open_their_own_site() {
        let a = rules("allowed_cidrs = []\ntrusted_proxies = []\n[site_tokens]\neu = [\"eu-token\"]\nus = \"us-token\"\n");
        let eu = Site::parse("eu").unwrap();
        let us = Site::parse("us").unwrap();
        let p = parts("/?token=eu-token", &[]);
        assert_eq!(a.check(&p, PEER, Some(&eu)), Ok(()));
        assert_eq!(a.check(&p, PEER, Some(&us)), Err(AuthError::WrongSite));
        assert_eq!(a.check(&p, PEER, None), Err(AuthError::WrongSite));
        assert_eq!(
            a.check(&parts("/?token=us-token", &[]), PEER, Some(&us)),
            Ok(())
        );
        assert_eq!(
            a.check(&parts("/?token=nope", &[]), PEER, Some(&eu)),
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn allowed_cidrs_for_ipv4_and_ipv6() {
        let a = rules(
            "allowed_cidrs = [\"198.51.100.0/24\", \"2001:db8::/32\"]\ntrusted_proxies = []\n",
        );
        let ok = parts("/", &[]);
        assert_eq!(a.check(&ok, PEER, None), Ok(()));
        assert_eq!(a.check(&ok, "2001:db8::5".parse().unwrap(), None), Ok(()));
        assert_eq!(
            a.check(&ok, "203.0.113.9".parse().unwrap(), None),
            Err(AuthError::AddressNotAllowed)
        );
        assert_eq!(
            a.check(&ok, "2001:db9::5".parse().unwrap(), None),
            Err(AuthError::AddressNotAllowed)
        );
        // Forwarded headers from an untrusted peer are ignored.
        let spoofed = parts("/", &[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(
            a.check(&spoofed, "203.0.113.9".parse().unwrap(), None),
            Err(AuthError::AddressNotAllowed)
        );
        // An IPv4-mapped IPv6 peer (a dual-stack listener) is its IPv4 address.
        assert_eq!(
            a.check(&ok, "::ffff:198.51.100.7".parse().unwrap(), None),
            Ok(())
        );
        assert_eq!(
            a.check(&ok, "::ffff:203.0.113.9".parse().unwrap(), None),
            Err(AuthError::AddressNotAllowed)
        );
    }

    #[test]
    fn a_request_presents_at_most_a_few_tokens() {
        let a = auth();
        let many = |valid_at: usize| {
            let query: Vec<String> = (0..1000)
                .map(|i| match i == valid_at {
                    true => "token=old-token".to_owned(),
                    false => format!("token=wrong-{i}"),
                })
                .collect();
            parts(&format!("/?{}", query.join("&")), &[])
        };
        assert_eq!(a.check(&many(0), PEER, None), Ok(()));
        assert_eq!(a.check(&many(MAX_CANDIDATES - 1), PEER, None), Ok(()));
        assert_eq!(
            a.check(&many(MAX_CANDIDATES), PEER, None),
            Err(AuthError::InvalidToken)
        );
        let headers = parts(
            "/?token=a&token=b&token=c&token=d",
            &[("x-bridge-token", "old-token")],
        );
        assert_eq!(a.check(&headers, PEER, None), Err(AuthError::InvalidToken));
        assert_eq!(candidates(&headers).len(), MAX_CANDIDATES);
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies() {
        let a = rules("allowed_cidrs = []\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\"]\n");
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let client =
            |headers: &[(&str, &str)], peer: IpAddr| a.client_address(&parts("/", headers), peer);
        // The client is the nearest untrusted hop, not the leftmost (which anyone can forge).
        assert_eq!(
            client(
                &[("x-forwarded-for", "1.1.1.1, 203.0.113.5, 10.9.9.9")],
                proxy
            ),
            "203.0.113.5".parse().ok()
        );
        // Only the configured header counts: a client's own `Forwarded` is not believed
        // behind a proxy that appends to X-Forwarded-For.
        assert_eq!(
            client(
                &[
                    ("forwarded", "for=198.51.100.1"),
                    ("x-forwarded-for", "203.0.113.5")
                ],
                proxy
            ),
            "203.0.113.5".parse().ok()
        );
        let b = rules("allowed_cidrs = []\ntrusted_proxies = [\"10.0.0.0/8\"]\nforwarded_header = \"forwarded\"\n");
        let client_b =
            |headers: &[(&str, &str)], peer: IpAddr| b.client_address(&parts("/", headers), peer);
        assert_eq!(
            client_b(
                &[(
                    "forwarded",
                    "for=192.0.2.60;proto=https, for=\"[2001:db8::7]:4711\""
                )],
                proxy
            ),
            "2001:db8::7".parse().ok()
        );
        assert_eq!(
            client_b(
                &[
                    ("x-forwarded-for", "198.51.100.1"),
                    ("forwarded", "for=203.0.113.5")
                ],
                proxy
            ),
            "203.0.113.5".parse().ok()
        );
        assert_eq!(
            client_b(&[("x-forwarded-for", "198.51.100.1")], proxy),
            Some(proxy),
            "X-Forwarded-For is ignored when Forwarded is the configured header"
        );
        assert_eq!(
            client(&[("x-forwarded-for", "192.0.2.1:5555")], proxy),
            "192.0.2.1".parse().ok()
        );
        assert_eq!(
            client(&[("x-forwarded-for", "10.0.0.1")], proxy),
            "10.0.0.1".parse().ok()
        );
        assert_eq!(client(&[], proxy), Some(proxy));
        assert_eq!(client(&[("x-forwarded-for", "garbage")], proxy), None);
        assert_eq!(
            client(&[("x-forwarded-for", "192.0.2.1")], PEER),
            Some(PEER)
        );
    }
}
