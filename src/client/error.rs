//! What can go wrong on the client side. As in rustls, a peer's bad bytes
//! (`Protocol`, `Handshake`) are kept apart from broken sockets (`Io`).

use super::url::UrlError;
use crate::protocol::deflate::NegotiationError;
use crate::protocol::handshake::client::ResponseError;
use crate::protocol::handshake::head::HeadError;
use std::fmt;
use std::io;

/// Why the opening handshake failed (RFC 6455 section 4.1: the client must
/// fail the connection).
#[derive(Debug)]
pub enum HandshakeError {
    /// The server answered with another status than 101. `body` is the
    /// start of the response body, when the server sent one.
    Rejected { status: u16, body: String },
    /// A 101 that does not follow section 4.1 (accept key, headers, an
    /// unrequested subprotocol or extension).
    Invalid(ResponseError),
    /// The permessage-deflate answer does not match our offer (RFC 7692 7.1).
    Extension(NegotiationError),
    /// The response head is not HTTP or is larger than allowed.
    Head(HeadError),
    /// The server closed the connection before its response was complete.
    Eof,
    /// No complete response before the connect timeout.
    Timeout,
    /// An extra header that is not a valid HTTP header, or one that the
    /// handshake sets itself.
    BadHeader(String),
    /// The TLS handshake failed (for `wss://`): most often a certificate
    /// that does not verify against the trusted roots for the URL's host.
    Tls(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Rejected { status, body } if body.is_empty() => {
                write!(f, "server answered HTTP {status}, not 101")
            }
            HandshakeError::Rejected { status, body } => {
                write!(f, "server answered HTTP {status}, not 101: {body}")
            }
            HandshakeError::Invalid(e) => write!(f, "invalid handshake response: {e}"),
            HandshakeError::Extension(e) => write!(f, "permessage-deflate: {e}"),
            HandshakeError::Head(HeadError::TooLarge) => f.write_str("response head too large"),
            HandshakeError::Head(HeadError::Malformed) => f.write_str("response is not valid HTTP/1.1"),
            HandshakeError::Eof => f.write_str("server closed the connection during the handshake"),
            HandshakeError::Timeout => f.write_str("timed out waiting for the handshake response"),
            HandshakeError::BadHeader(h) => write!(f, "cannot send header {h:?}"),
            HandshakeError::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

/// A client error.
#[derive(Debug)]
pub enum ClientError {
    Url(UrlError),
    /// Name resolution or the TCP connection failed.
    Connect(io::Error),
    Handshake(HandshakeError),
    /// The server broke RFC 6455; we sent the close frame with the code the
    /// error names and closed the connection.
    Protocol(crate::protocol::Error),
    /// The connection broke (reset, timeout, write failure).
    Io(io::Error),
    /// The server closed TCP without a close frame (close code 1006).
    ConnectionLost,
    /// The close handshake is over: nothing more can be sent or read.
    Closed,
}

impl ClientError {
    /// The HTTP status of a rejected handshake.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ClientError::Handshake(HandshakeError::Rejected { status, .. }) => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Url(e) => write!(f, "bad URL: {e}"),
            ClientError::Connect(e) => write!(f, "cannot connect: {e}"),
            ClientError::Handshake(e) => write!(f, "handshake failed: {e}"),
            ClientError::Protocol(e) => write!(f, "server broke the protocol: {e}"),
            ClientError::Io(e) => write!(f, "connection error: {e}"),
            ClientError::ConnectionLost => f.write_str("server closed the connection without a close frame"),
            ClientError::Closed => f.write_str("connection already closed"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Url(e) => Some(e),
            ClientError::Connect(e) | ClientError::Io(e) => Some(e),
            ClientError::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

impl From<UrlError> for ClientError {
    fn from(e: UrlError) -> Self {
        ClientError::Url(e)
    }
}

impl From<HandshakeError> for ClientError {
    fn from(e: HandshakeError) -> Self {
        ClientError::Handshake(e)
    }
}
