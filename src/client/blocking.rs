//! A blocking WebSocket client: one std `TcpStream` (or TLS over one) driven through the
//! sans-IO [`Connection`] in the client role.
//!
//! Reading feeds the core one event at a time and writes whatever it queued
//! (pongs, the close reply, the close that fails a connection) before the
//! event is handed out, so pings are answered without the caller's help.
//! Masking with a fresh key per frame is done by the core (section 5.3).
//! After the close handshake the client waits for the server to close TCP
//! first (section 7.1.1), then closes its side.

use super::error::ClientError;
use super::handshake;
use super::stream::Stream;
use super::url::WsUrl;
use super::{ClientConfig, Message};
use crate::protocol::{CloseCode, CloseFrame, Connection, Event, MessageKind, State};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

/// Read buffer size: large reads keep big messages cheap.
const READ_BUF: usize = 64 * 1024;

/// An open client connection.
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    conn: Connection,
    /// Bytes read from the socket; `buf[start..end]` is not fed to the core yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    protocol: Option<String>,
    read_timeout: Option<Duration>,
    close_timeout: Duration,
    /// The read timeout the socket has now, to skip redundant system calls.
    socket_timeout: Option<Duration>,
}

impl Client {
    /// Parses `url`, connects and completes the opening handshake.
    pub fn connect(url: &str, config: &ClientConfig) -> Result<Client, ClientError> {
        Client::connect_to(&WsUrl::parse(url)?, config)
    }

    pub fn connect_to(url: &WsUrl, config: &ClientConfig) -> Result<Client, ClientError> {
        let opened = handshake::open(url, config)?;
        opened
            .stream
            .set_write_timeout(config.write_timeout)
            .map_err(ClientError::Io)?;
        let mut buf = opened.rest;
        let end = buf.len();
        buf.resize(end.max(READ_BUF), 0);
        Ok(Client {
            stream: opened.stream,
            conn: opened.conn,
            buf,
            start: 0,
            end,
            protocol: opened.protocol,
            read_timeout: config.read_timeout,
            close_timeout: config.close_timeout,
            // The handshake left a timeout on the socket: set it on first read.
            socket_timeout: Some(Duration::ZERO),
        })
    }

    /// The subprotocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Whether permessage-deflate was negotiated.
    pub fn is_compressed(&self) -> bool {
        self.conn.is_compressed()
    }

    pub fn state(&self) -> State {
        self.conn.state()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send(MessageKind::Text, text.as_bytes())
    }

    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send(MessageKind::Binary, data)
    }

    /// Sends one unfragmented message (compressed when negotiated).
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) -> Result<(), ClientError> {
        if !self.conn.can_send() {
            return Err(ClientError::Closed);
        }
        self.conn.send(kind, payload);
        self.flush()
    }

    /// Sends a ping (payload cut to 125 bytes); its pong is skipped by `read_message`.
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        if !self.conn.can_send() {
            return Err(ClientError::Closed);
        }
        self.conn.send_ping(payload);
        self.flush()
    }

    /// The next text, binary or close message, waiting as long as the
    /// configured read timeout allows. Pings are answered on the way.
    ///
    /// On `Close` the reply has been sent and the server has closed TCP
    /// (or the close timeout passed). On a protocol error the close frame
    /// with the error's code has been sent and the connection is closed.
    pub fn read_message(&mut self) -> Result<Message, ClientError> {
        loop {
            match self.next_event(None)? {
                Some(event) => {
                    if let Some(message) = self.on_event(event) {
                        return Ok(message);
                    }
                }
                None => return Err(ClientError::Io(io::ErrorKind::TimedOut.into())),
            }
        }
    }

    /// As `read_message`, but gives up after `timeout` with `Ok(None)`.
    /// A message cut by the timeout is kept: the next call continues it.
    pub fn read_message_timeout(&mut self, timeout: Duration) -> Result<Option<Message>, ClientError> {
        let deadline = Instant::now() + timeout;
        while let Some(event) = self.next_event(Some(deadline))? {
            if let Some(message) = self.on_event(event) {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    /// Ends the connection without the close handshake, as a client that
    /// crashes or loses its network does: with `reset`, a TCP RST; without,
    /// a bare FIN (no close frame). The client is consumed.
    pub fn abort(self, reset: bool) -> io::Result<()> {
        let mut stream = self.stream;
        if reset {
            stream.reset()
        } else {
            stream.shutdown(Shutdown::Both)
        }
    }

    /// Runs the close handshake (section 7.1.2): sends our close frame,
    /// skips messages still in flight, waits for the server's close frame
    /// and for the server to close TCP, all within the close timeout.
    /// Returns the server's close frame (`None`: it had no status code).
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<Option<CloseFrame>, ClientError> {
        if self.conn.state() == State::Closed {
            return Err(ClientError::Closed);
        }
        let deadline = Instant::now() + self.close_timeout;
        self.conn.close(code, reason);
        self.flush()?;
        loop {
            match self.next_event(Some(deadline))? {
                Some(Event::Close(frame)) => {
                    self.await_eof(deadline);
                    return Ok(frame);
                }
                Some(_) => {}
                None => {
                    let _ = self.stream.shutdown(Shutdown::Both);
                    return Err(ClientError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no close frame from the server within the close timeout",
                    )));
                }
            }
        }
    }

    /// Maps an event to what `read_message` returns; pings and pongs are
    /// handled here.
    fn on_event(&mut self, event: Event) -> Option<Message> {
        match event {
            // The core has validated the UTF-8 (section 8.1): the lossy
            // fallback never runs, it only spares us an `unsafe` or a panic.
            Event::Text(bytes) => Some(Message::Text(
                String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            )),
            Event::Binary(data) => Some(Message::Binary(data)),
            Event::Ping(_) | Event::Pong(_) => None,
            Event::Close(frame) => {
                self.await_eof(Instant::now() + self.close_timeout);
                Some(Message::Close(frame))
            }
        }
    }

    /// The next event from the core, reading the socket when it needs
    /// bytes; `Ok(None)` when `deadline` passes first.
    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Option<Event>, ClientError> {
        loop {
            if self.start < self.end {
                let result = self.conn.read_event(&self.buf[self.start..self.end]);
                match result {
                    Ok((used, event)) => {
                        self.start += used;
                        // Pongs and the close reply go out before the event is
                        // handed on; once closed, the server may already be gone.
                        if let Err(e) = self.flush()
                            && self.conn.state() != State::Closed
                        {
                            return Err(e);
                        }
                        if event.is_some() {
                            return Ok(event);
                        }
                    }
                    Err(e) => {
                        // The core queued the close frame with e's code.
                        let _ = self.flush();
                        self.await_eof(Instant::now() + self.close_timeout);
                        return Err(ClientError::Protocol(e));
                    }
                }
                continue;
            }
            if self.conn.state() == State::Closed {
                return Err(ClientError::Closed);
            }
            match self.fill(deadline)? {
                None => return Ok(None),
                Some(0) => {
                    let _ = self.stream.shutdown(Shutdown::Both);
                    return Err(ClientError::ConnectionLost);
                }
                Some(_) => {}
            }
        }
    }

    /// Reads into the (empty) buffer. `Ok(None)`: `deadline` passed.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<Option<usize>, ClientError> {
        self.start = 0;
        self.end = 0;
        loop {
            let timeout = match deadline {
                None => self.read_timeout,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    Some(left)
                }
            };
            if self.socket_timeout != timeout {
                self.stream.set_read_timeout(timeout).map_err(ClientError::Io)?;
                self.socket_timeout = timeout;
            }
            match self.stream.read(&mut self.buf) {
                Ok(n) => {
                    self.end = n;
                    return Ok(Some(n));
                }
                // A signal (SO_RCVTIMEO reads are not restarted): try again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if deadline.is_some()
                        && matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
    }

    /// Writes what the core has queued.
    fn flush(&mut self) -> Result<(), ClientError> {
        if self.conn.has_output() {
            let out = self.conn.take_output();
            self.stream.write_all(&out).map_err(ClientError::Io)?;
        }
        Ok(())
    }

    /// After the close handshake: let the server close TCP first (section
    /// 7.1.1), discarding anything it still sends, then close our side.
    fn await_eof(&mut self, deadline: Instant) {
        while let Ok(Some(n)) = self.fill(Some(deadline))
            && n > 0
        {}
        self.start = 0;
        self.end = 0;
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
