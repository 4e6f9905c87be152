//! TLS on the listener (rustls): the certificate and key come from PEM files and are
//! reloaded (by [`crate::reload`]) on SIGHUP or when either file changes. Established connections keep the
//! certificate they were set up with; new handshakes get the new one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::ring::{default_provider, sign::any_supported_type};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path} ({key}): {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} (http.tls.cert) holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the key in {path} (http.tls.key) cannot sign: {source}")]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS setup failed: {0}")]
    Config(#[from] rustls::Error),
}

/// Serves the current certificate to every handshake.
#[derive(Debug)]
pub struct Certificates {
    files: TlsConfig,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl Certificates {
    /// Loads the certificate chain and key named in `files`.
    pub fn load(files: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let key = read_key(files)?;
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(key)),
            stamps: RwLock::new(stamps(files)),
            files: files.clone(),
        }))
    }

    /// Reads the files again; on error keeps serving the previous certificate.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps_now = stamps(&self.files);
        let key = read_key(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        *self.stamps.write().unwrap_or_else(|e| e.into_inner()) = stamps_now;
        Ok(())
    }

    /// Whether either file changed (modification time) since it was last read.
    pub fn changed(&self) -> bool {
        *self.stamps.read().unwrap_or_else(|e| e.into_inner()) != stamps(&self.files)
    }

    /// The acceptor for the listener, offering HTTP/1.1 by ALPN, and HTTP/2 first with
    /// `http2`.
    pub fn acceptor(self: &Arc<Self>, http2: bool) -> Result<TlsAcceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = match http2 {
            true => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            false => vec![b"http/1.1".to_vec()],
        };
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn stamps(files: &TlsConfig) -> (Option<SystemTime>, Option<SystemTime>) {
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (stamp(&files.cert), stamp(&files.key))
}

fn read_key(files: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect())
        .map_err(|source| TlsError::Read {
            key: "http.tls.cert",
            path: files.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Read {
        key: "http.tls.key",
        path: files.key.clone(),
        source,
    })?;
    let signer = any_supported_type(&key).map_err(|source| TlsError::Key {
        path: files.key.clone(),
        source,
    })?;
    Ok(CertifiedKey::new(chain, signer))
}
