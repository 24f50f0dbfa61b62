//! What a connection's bytes travel over: a plain TCP socket, or TLS over
//! one (rustls driven by the event loop).
//!
//! The loop sees the same operations either way: read plaintext until
//! `WouldBlock`, write the send queue, ask whether output is still pending,
//! shut down. The plain case is a direct socket read and `send`/`sendmsg`
//! ([`Sender`]); the TLS state is boxed so that a plain connection does not
//! pay for its size.
//!
//! TLS reads: the records the socket has are fed to rustls and decrypted;
//! plaintext rustls already holds is handed out before the socket is read
//! again, so edge-triggered readiness never strands bytes inside rustls.
//! TLS writes: plaintext moves from the send queue into rustls only while
//! its buffer of unsent records is below [`TLS_BUFFER`], and the records go
//! to the socket until it blocks, so a slow reader still backs up the send
//! queue (and the loop's backpressure sees it).

use super::send_queue::{BufPool, SendQueue};
use super::tls::TlsConfig;
use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ServerConnection;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

/// Most encrypted bytes rustls holds for one connection before the send
/// queue stops moving plaintext into it.
pub const TLS_BUFFER: usize = 64 * 1024;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

pub struct TlsStream {
    socket: TcpStream,
    tls: ServerConnection,
    /// The socket reported end of file.
    eof: bool,
    /// Our close_notify is queued.
    closing: bool,
}

/// A TLS failure on read (bad record, failed handshake), carried inside
/// the `io::Error` so the loop can count it apart from socket errors.
#[derive(Debug)]
pub struct TlsFailure {
    /// Whether the TLS handshake was still running.
    pub handshaking: bool,
    pub error: rustls::Error,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = if self.handshaking { "TLS handshake" } else { "TLS" };
        write!(f, "{stage}: {}", self.error)
    }
}

impl std::error::Error for TlsFailure {}

/// The TLS failure behind a read error, if it was one.
pub fn tls_failure(e: &io::Error) -> Option<&TlsFailure> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<TlsFailure>())
}

impl Transport {
    /// Wraps an accepted socket: plain, or the server side of TLS with the
    /// config current at accept time.
    pub fn accept(socket: TcpStream, tls: Option<&TlsConfig>) -> io::Result<Transport> {
        let Some(tls) = tls else {
            return Ok(Transport::Plain(socket));
        };
        let mut conn = ServerConnection::new(tls.current()).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(TLS_BUFFER));
        Ok(Transport::Tls(Box::new(TlsStream {
            socket,
            tls: conn,
            eof: false,
            closing: false,
        })))
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.socket,
        }
    }

    fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.socket,
        }
    }

    /// Writes as much of `out` as the socket takes; returns the bytes taken
    /// from the queue. With `close`, once the queue is empty a TLS
    /// connection also queues its close_notify (once) and sends it.
    pub fn write_queue(&mut self, out: &mut SendQueue, close: bool, pool: &mut BufPool) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => out.write_to(&mut Sender(s), pool),
            Transport::Tls(t) => t.write_queue(out, close, pool),
        }
    }

    /// Encrypted bytes not yet on the socket (always false for plain).
    /// Plain TCP: a read shorter than the buffer drained the socket (TLS
    /// may hold decrypted bytes back, so it is read until `WouldBlock`).
    pub fn is_plain(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    pub fn tls_pending(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.tls.wants_write(),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket().shutdown(how)
    }
}

/// Writes to a TCP socket with `send`/`sendmsg` rather than `write`/`writev`.
/// Both reach the same `sock_sendmsg`, but `writev` first goes through the
/// file layer (`vfs_writev`, the file position lock), a few percent of the
/// server on small echoes (docs/benchmarks.md); and `MSG_NOSIGNAL` turns a
/// write to a reset connection into `EPIPE` even in a host program that
/// has not ignored `SIGPIPE` (roomcast as a library).
pub struct Sender<'a>(pub &'a TcpStream);

impl Write for Sender<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(self.0).send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match bufs {
            [one] => self.write(one),
            _ => socket2::SockRef::from(self.0).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsStream {
    /// Sends buffered records until none is left or the socket blocks.
    fn flush_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut Sender(&self.socket)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_queue(&mut self, out: &mut SendQueue, close: bool, pool: &mut BufPool) -> io::Result<usize> {
        let mut total = 0;
        loop {
            self.flush_records()?;
            if self.tls.wants_write() {
                // The socket is full: the rest waits in the send queue.
                return Ok(total);
            }
            if out.is_empty() {
                if close && !self.closing {
                    self.closing = true;
                    self.tls.send_close_notify();
                    continue;
                }
                return Ok(total);
            }
            let moved = out.write_to(&mut Plaintext(&mut self.tls), pool)?;
            if moved == 0 {
                return Ok(total);
            }
            total += moved;
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Plaintext rustls already holds comes first.
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n), // 0: the peer's close_notify
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify: an end all the same
                // (WebSocket framing shows whether a message was cut).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            match self.tls.read_tls(&mut self.socket) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(error) = self.tls.process_new_packets() {
                let handshaking = self.tls.is_handshaking();
                // rustls has queued an alert for most errors; best effort.
                let _ = self.flush_records();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    TlsFailure { handshaking, error },
                ));
            }
        }
    }
}

/// The send queue's writer for TLS: moves plaintext into rustls, which
/// encrypts it into records. Full (the record buffer at its limit) reads
/// as `WouldBlock`, as a full socket does.
struct Plaintext<'a>(&'a mut ServerConnection);

impl Write for Plaintext<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.writer().write(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.0.writer().write_vectored(bufs)? {
            0 if bufs.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads plaintext: from the socket directly, or decrypted. `Ok(0)` is the
/// end of the stream, `WouldBlock` means nothing more for now.
impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Source for Transport {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.socket_mut().register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.socket_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket_mut().deregister(registry)
    }
}
