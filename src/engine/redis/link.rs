//! One connection to a Redis server, plain TCP or TLS (`rediss://`),
//! non-blocking under the Redis thread's `mio::Poll`: the thread writes
//! whatever is queued until the socket blocks and reads until it blocks,
//! both for plain TCP and through rustls (`read_tls` → `process_new_packets`
//! → plaintext; plaintext → `write_tls`).

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

pub struct Link {
    socket: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// The non-blocking connect has completed.
    connected: bool,
}

impl Link {
    /// Starts connecting to `host:port` (the name is resolved here, which
    /// may block briefly); TLS when `tls` is given, verified for `host`.
    pub fn connect(host: &str, port: u16, tls: Option<&Arc<rustls::ClientConfig>>) -> io::Result<Link> {
        let addr: SocketAddr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))?;
        let socket = TcpStream::connect(addr)?;
        socket.set_nodelay(true)?;
        let tls = match tls {
            None => None,
            Some(config) => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: not a TLS name")))?;
                let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
                Some(Box::new(conn))
            }
        };
        Ok(Link {
            socket,
            tls,
            connected: false,
        })
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.socket, token, Interest::READABLE | Interest::WRITABLE)
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }

    /// After a writable event: whether the connect went through (an error
    /// if it failed).
    fn check_connected(&mut self) -> io::Result<bool> {
        if self.connected {
            return Ok(true);
        }
        if let Some(e) = self.socket.take_error()? {
            return Err(e);
        }
        match self.socket.peer_addr() {
            Ok(_) => {
                self.connected = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes from the front of `out` until it is empty or the socket
    /// blocks; what was written leaves `out`.
    pub fn write(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if !self.check_connected()? {
            return Ok(());
        }
        match &mut self.tls {
            None => {
                let mut done = 0;
                while done < out.len() {
                    match self.socket.write(&out[done..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            out.drain(..done);
                            return Err(e);
                        }
                    }
                }
                out.drain(..done);
            }
            Some(tls) => loop {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.socket) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if out.is_empty() {
                    return Ok(());
                }
                // rustls takes plaintext up to its buffer limit (64 KiB).
                let n = tls.writer().write(out)?;
                if n == 0 {
                    return Ok(());
                }
                out.drain(..n);
            },
        }
        Ok(())
    }

    /// Reads what is there into `into`; true once the server has closed.
    pub fn read(&mut self, into: &mut Vec<u8>) -> io::Result<bool> {
        if !self.check_connected()? {
            return Ok(false);
        }
        let mut chunk = [0u8; 16 * 1024];
        match &mut self.tls {
            None => loop {
                match self.socket.read(&mut chunk) {
                    Ok(0) => return Ok(true),
                    Ok(n) => into.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
            Some(tls) => loop {
                let eof = match tls.read_tls(&mut self.socket) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Nothing more on the socket; plaintext may be waiting.
                        drain_plaintext(tls, into, &mut chunk)?;
                        // The handshake may want to answer.
                        return Ok(false);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                tls.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
                if drain_plaintext(tls, into, &mut chunk)? || eof {
                    return Ok(true);
                }
            },
        }
    }

    /// Whether bytes wait to be written (queued by us, or TLS records).
    pub fn wants_write(&self, queued: &[u8]) -> bool {
        !self.connected || !queued.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}

/// Moves decrypted bytes into `into`; true on the server's close_notify.
fn drain_plaintext(tls: &mut ClientConnection, into: &mut Vec<u8>, chunk: &mut [u8]) -> io::Result<bool> {
    loop {
        match tls.reader().read(chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}
