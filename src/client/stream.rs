//! The client's byte stream: a std `TcpStream` for `ws://`, rustls over one
//! for `wss://`.
//!
//! The server certificate is verified against the system's trust store
//! (read once per process) plus the CA certificates in
//! [`ClientConfig::ca_certs`] (`roomcast client --ca FILE`), for the URL's
//! host as server name (SNI is sent for names, not for IP literals). There
//! is no way to turn verification off.

use super::ClientConfig;
use super::error::{ClientError, HandshakeError};
use super::url::{UrlError, WsUrl};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, RootCertStore, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Stream::Tls(s) => f.debug_tuple("Tls").field(&s.sock).finish(),
        }
    }
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(timeout)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Ends the connection with a TCP reset (no close frame, no FIN):
    /// `SO_LINGER` 0, then the caller drops the socket.
    pub fn reset(&self) -> io::Result<()> {
        socket2::SockRef::from(self.tcp()).set_linger(Some(Duration::ZERO))
    }

    /// Shuts the socket down; over TLS, after sending close_notify (best
    /// effort: the write timeout bounds it).
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            while s.conn.wants_write() {
                if s.conn.write_tls(&mut s.sock).is_err() {
                    break;
                }
            }
        }
        self.tcp().shutdown(how)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            // A server that closes TCP without close_notify has still
            // closed: WebSocket framing tells whether a message was cut.
            Stream::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf),
            Stream::Tls(s) => {
                s.write_all(buf)?;
                // StreamOwned sends as it takes; this pushes out any rest.
                s.flush()
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The system's trust anchors, read once.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            log::debug!("system trust store: {e}");
        }
        let mut roots = RootCertStore::empty();
        let (_, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            log::debug!("system trust store: {ignored} certificates could not be used");
        }
        roots
    })
}

/// Reads CA certificates (PEM, one or more) to trust besides the system's.
pub fn load_ca_file(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no CERTIFICATE section found",
        ));
    }
    Ok(certs)
}

fn tls_config(config: &ClientConfig) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = system_roots().clone();
    for cert in &config.ca_certs {
        roots
            .add(cert.clone())
            .map_err(|e| HandshakeError::Tls(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(
            HandshakeError::Tls("no trusted certificates: the system has none; pass a CA (--ca)".into()).into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| HandshakeError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Runs the TLS handshake over `tcp` before `deadline`.
pub(super) fn tls(
    mut tcp: TcpStream,
    url: &WsUrl,
    config: &ClientConfig,
    deadline: Instant,
) -> Result<Stream, ClientError> {
    let name = ServerName::try_from(url.host.clone()).map_err(|_| UrlError::InvalidHost(url.host.clone()))?;
    let mut conn = ClientConnection::new(tls_config(config)?, name).map_err(|e| HandshakeError::Tls(e.to_string()))?;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HandshakeError::Timeout.into());
        }
        tcp.set_read_timeout(Some(left)).map_err(ClientError::Io)?;
        tcp.set_write_timeout(Some(left)).map_err(ClientError::Io)?;
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(handshake_error(e)),
        }
    }
    Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
}

fn handshake_error(e: io::Error) -> ClientError {
    if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        return HandshakeError::Tls(tls.to_string()).into();
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HandshakeError::Timeout.into(),
        io::ErrorKind::UnexpectedEof => HandshakeError::Eof.into(),
        _ => ClientError::Io(e),
    }
}
