//! TLS on the listener (rustls): the certificate and key come from PEM files and are
//! reloaded (by [`crate::reload`]) on SIGHUP or when either file changes. Established connections keep the
//! certificate they were set up with; new handshakes get the new one.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::crypto::ring::{default_provider, sign::any_supported_type};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::sync::UnpoisonedRw;
use crate::watched::{Changing, Watched};

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
    #[error(
        "the key in {key} (http.tls.key) is not the key of the certificate in {cert} \
         (http.tls.cert): write the matching pair"
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error(transparent)]
    Changing(#[from] Changing),
    #[error("TLS setup failed: {0}")]
    Config(#[from] rustls::Error),
}

/// Serves the current certificate to every handshake.
#[derive(Debug)]
pub struct Certificates {
    files: TlsConfig,
    current: RwLock<Arc<CertifiedKey>>,
    watched: Watched,
}

impl Certificates {
    /// Loads the certificate chain and key named in `files`.
    pub fn load(files: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let watched = Watched::new([files.cert.clone(), files.key.clone()]);
        let key = watched.read(|| read_key(files))?;
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(key)),
            watched,
            files: files.clone(),
        }))
    }

    /// Reads the files again; on error (a key that is not the certificate's among them)
    /// keeps serving the previous certificate.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = self.watched.read(|| read_key(&self.files))?;
        *self.current.write_locked() = Arc::new(key);
        Ok(())
    }

    /// Whether either file changed since it was last read, and has stayed so for
    /// [`crate::watched::SETTLE`].
    pub fn changed(&self) -> bool {
        self.watched.settled_change()
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
        Some(self.current.read_locked().clone())
    }
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
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        Err(e) => Err(TlsError::Config(e)),
    }
}
