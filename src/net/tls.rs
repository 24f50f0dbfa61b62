//! TLS for the server (`wss://`): the certificate chain and private key
//! loaded from PEM into a rustls `ServerConfig`, held where a reload can
//! replace it.
//!
//! The event loop reads the current config once per accepted connection,
//! so a reload (SIGHUP) reaches new connections only: open ones keep the
//! config they were accepted with and are never dropped by it. A reload
//! that fails leaves the old config in place.
//!
//! Only the ring crypto provider is compiled in; ALPN offers `http/1.1`
//! (the upgrade request is HTTP/1.1).

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

/// Why a certificate or key could not be loaded. The message names the
/// file, never its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for std::io::Error {
    fn from(e: TlsError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// A server config from PEM bytes: a certificate chain (leaf first) and
/// its private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    build(cert_pem, key_pem, "certificate", "private key")
}

/// A server config from PEM files.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|e| TlsError(format!("cannot read {what} {}: {e}", path.display())))
    };
    let cert_pem = read(cert, "certificate file")?;
    let key_pem = read(key, "key file")?;
    build(
        &cert_pem,
        &key_pem,
        &format!("certificate file {}", cert.display()),
        &format!("key file {}", key.display()),
    )
}

fn build(cert_pem: &[u8], key_pem: &[u8], cert_name: &str, key_name: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{cert_name}: invalid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError(format!("{cert_name}: no CERTIFICATE section found")));
    }
    // The PEM parser's errors can quote the input; for a key, say only what
    // went wrong.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        TlsError(match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                format!("{key_name}: no PRIVATE KEY section (PKCS#8, RSA or EC) found")
            }
            _ => format!("{key_name}: invalid PEM"),
        })
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("{cert_name} and {key_name}: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server's TLS settings: the current `ServerConfig`, replaceable while
/// the server runs, and the files it was loaded from (for `reload`).
/// Clones share the holder.
#[derive(Clone)]
pub struct TlsConfig {
    shared: Arc<Shared>,
}

struct Shared {
    files: Option<(PathBuf, PathBuf)>,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsConfig {
    /// Loads the certificate chain and key from PEM files; `reload` reads
    /// the same files again.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<TlsConfig, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let config = load_server_config(&cert, &key)?;
        Ok(TlsConfig {
            shared: Arc::new(Shared {
                files: Some((cert, key)),
                current: RwLock::new(config),
            }),
        })
    }

    /// Wraps a config built elsewhere; `reload` has no files to read then.
    pub fn new(config: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig {
            shared: Arc::new(Shared {
                files: None,
                current: RwLock::new(config),
            }),
        }
    }

    /// The config new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A panic elsewhere while holding the lock cannot leave a half-written Arc.
        Arc::clone(&self.shared.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the config for connections accepted from now on.
    pub fn set(&self, config: Arc<ServerConfig>) {
        *self.shared.current.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// The certificate and key files, if loaded from files.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        self.shared.files.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))
    }

    /// Reads the files again and swaps the new config in. On any error the
    /// current config stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (cert, key) = self
            .files()
            .ok_or_else(|| TlsError("this TLS config was not loaded from files".into()))?;
        let config = load_server_config(cert, key)?;
        self.set(config);
        Ok(())
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TlsConfig");
        match self.files() {
            Some((cert, key)) => d.field("cert", &cert).field("key", &key),
            None => d.field("files", &"none"),
        }
        .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_refused_without_quoting_the_key() {
        let secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBtYXRlcmlhbA==!!\n-----END PRIVATE KEY-----\n";
        let err = server_config(b"not a certificate", secret).unwrap_err();
        assert!(err.0.contains("no CERTIFICATE"), "{err}");
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = server_config(cert, secret).unwrap_err();
        assert!(!err.0.contains("c2VjcmV0"), "{err}");
        let err = server_config(cert, b"").unwrap_err();
        assert!(err.0.contains("no PRIVATE KEY"), "{err}");
    }

    #[test]
    fn missing_files_are_named() {
        let err = TlsConfig::load("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        assert!(err.0.contains("/nonexistent/cert.pem"), "{err}");
    }
}
