//! JSON over HTTP(S) to the APIs the bridge calls: the schema registry and Comm100's.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("`{0}` is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// An answer: its status, headers and body (JSON, or the text as a JSON string when it is
/// not JSON; `parsed` says which).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub parsed: bool,
}

impl Reply {
    /// [`message`] of the body.
    pub fn message(&self) -> String {
        message(&self.body)
    }
}

/// An answer's `message` (else the whole body), cut to 300 characters, for error messages.
pub fn message(body: &Value) -> String {
    let text = match body.get("message").and_then(Value::as_str) {
        Some(message) => message.to_owned(),
        None => match body {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        },
    };
    text.chars().take(300).collect()
}

/// A client of one API's base URL, with the same `Authorization` on every request.
pub struct JsonClient {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    authorization: Option<HeaderValue>,
    media_type: &'static str,
    timeout: Duration,
}

impl JsonClient {
    /// A client of `base` (its trailing `/` dropped) that trusts the CA certificates of
    /// the PEM file `ca` (else the system's) and sends `media_type` as Accept and
    /// Content-Type; each request may take `timeout`.
    pub fn new(
        base: &str,
        ca: Option<&Path>,
        authorization: Option<HeaderValue>,
        media_type: &'static str,
        timeout: Duration,
    ) -> Result<Self, SetupError> {
        let base = base.trim_end_matches('/').to_owned();
        let http = base.starts_with("http://") || base.starts_with("https://");
        if !http || base.parse::<http::Uri>().is_err() {
            return Err(SetupError::BadUrl(base));
        }
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca)?)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base,
            client: Client::builder(TokioExecutor::new()).build(connector),
            authorization,
            media_type,
            timeout,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method` to the base URL followed by `path` (with its query), with `body` as
    /// JSON. The error is why no answer came: the connection, TLS, or the timeout.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(ACCEPT, self.media_type);
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let request = match body {
            Some(body) => request
                .header(CONTENT_TYPE, self.media_type)
                .body(Full::new(Bytes::from(body.to_string()))),
            None => request.body(Full::default()),
        }
        .map_err(|e| format!("{}{path}: {e}", self.base))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| chain(&e))?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((parts, bytes))
        };
        let (parts, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        let (body, parsed) = match serde_json::from_slice(&bytes) {
            Ok(body) => (body, true),
            Err(_) => (
                Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                false,
            ),
        };
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            parsed,
        })
    }
}

/// `Authorization: Basic` of `user` and `password`, marked sensitive.
pub fn basic(user: &str, password: &str) -> HeaderValue {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    sensitive(format!("Basic {token}"))
}

/// `Authorization: Bearer` of `token`, marked sensitive.
pub fn bearer(token: &str) -> HeaderValue {
    sensitive(format!("Bearer {}", token.trim()))
}

fn sensitive(text: String) -> HeaderValue {
    // Base64 and a trimmed token are visible ASCII, which a header value takes; anything
    // else becomes an empty value the server refuses.
    let mut value = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// An error and its sources, one after another.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// The rustls client configuration: the CA file's certificates, else the system's.
fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, SetupError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let tls = |e: &dyn fmt::Display| SetupError::Tls(e.to_string());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let read = |e: &dyn fmt::Display| tls(&format!("{}: {e}", path.display()));
            for certificate in CertificateDer::pem_file_iter(path).map_err(|e| read(&e))? {
                roots
                    .add(certificate.map_err(|e| read(&e))?)
                    .map_err(|e| read(&e))?;
            }
            if roots.is_empty() {
                return Err(tls(&format!("{} holds no certificate", path.display())));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_that_is_not_an_http_url_is_refused() {
        let new = |base: &str| {
            JsonClient::new(base, None, None, "application/json", Duration::from_secs(1))
        };
        for base in ["registry:8081", "ftp://registry", "http://exa mple"] {
            assert!(matches!(new(base), Err(SetupError::BadUrl(_))), "{base}");
        }
        let client = new("https://api15.comm100.io/v4/").unwrap();
        assert_eq!(client.base(), "https://api15.comm100.io/v4");
    }

    #[test]
    fn authorization_values_are_sensitive() {
        let value = basic("agent@example.com", "key");
        assert!(value.is_sensitive());
        assert_eq!(value, "Basic YWdlbnRAZXhhbXBsZS5jb206a2V5");
        assert_eq!(bearer(" t0ken \n"), "Bearer t0ken");
    }
}
