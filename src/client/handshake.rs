//! Opening a client connection: TCP connect, TLS for `wss://`, the upgrade request, the
//! server's response (RFC 6455 section 4.1), permessage-deflate
//! negotiation (RFC 7692 section 7.1).

use super::ClientConfig;
use super::error::{ClientError, HandshakeError};
use super::stream::{self, Stream};
use super::url::WsUrl;
use crate::protocol::deflate::{Compression, client_accept, client_offer};
use crate::protocol::handshake::client::{ClientRequest, ResponseError, validate};
use crate::protocol::handshake::head::HeadReader;
use crate::protocol::{Connection, Role};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Headers the handshake writes itself; a second copy would break it.
const RESERVED_HEADERS: [&str; 7] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
];

/// How much of a rejection's body goes into the error message.
const MAX_BODY: usize = 512;

/// A completed handshake.
pub(super) struct Opened {
    pub stream: Stream,
    pub conn: Connection,
    /// Bytes that arrived after the response head: the first frames.
    pub rest: Vec<u8>,
    pub protocol: Option<String>,
}

pub(super) fn open(url: &WsUrl, config: &ClientConfig) -> Result<Opened, ClientError> {
    for (name, value) in &config.headers {
        check_header(name, value)?;
    }
    let deadline = Instant::now() + config.connect_timeout;
    let tcp = connect(url, config.connect_timeout)?;
    tcp.set_nodelay(true).map_err(ClientError::Connect)?;
    let mut stream = if url.tls {
        stream::tls(tcp, url, config, deadline)?
    } else {
        Stream::Plain(tcp)
    };

    let offer = config.deflate.enabled.then(|| client_offer(&config.deflate));
    let request = ClientRequest {
        host: url.host_header(),
        target: url.target(),
        protocols: config.protocols.clone(),
        extensions: offer,
        headers: config.headers.clone(),
    };
    let (bytes, key) = request.encode();
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(ClientError::Io)?;
    stream.write_all(&bytes).map_err(ClientError::Io)?;

    let mut reader = HeadReader::new(config.max_head_size);
    let mut buf = vec![0u8; 4096];
    let (response, rest) = loop {
        let n = read_until(&mut stream, &mut buf, deadline)?;
        if n == 0 {
            return Err(HandshakeError::Eof.into());
        }
        if let Some(done) = reader.feed_response(&buf[..n]).map_err(HandshakeError::Head)? {
            break done;
        }
    };
    let accepted = match validate(&response, &key, &request) {
        Ok(accepted) => accepted,
        Err(ResponseError::Status(status)) => {
            let body = read_body(&mut stream, rest, deadline);
            return Err(HandshakeError::Rejected { status, body }.into());
        }
        Err(e) => return Err(HandshakeError::Invalid(e).into()),
    };
    let mut conn = Connection::new(Role::Client, config.limits);
    if let Some(answer) = &accepted.extensions {
        // `validate` refused extensions we did not offer, so we offered.
        let params = client_accept(answer, &config.deflate).map_err(HandshakeError::Extension)?;
        conn = conn.with_compression(Compression::new(&params, Role::Client, &config.deflate));
    }
    Ok(Opened {
        stream,
        conn,
        rest,
        protocol: accepted.protocol,
    })
}

/// Connects to the first address of `url` that answers within `timeout`.
fn connect(url: &WsUrl, timeout: Duration) -> Result<TcpStream, ClientError> {
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(ClientError::Connect)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", url.host));
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(ClientError::Connect(last))
}

/// One read before `deadline`; a timeout is a handshake timeout.
fn read_until(stream: &mut Stream, buf: &mut [u8], deadline: Instant) -> Result<usize, ClientError> {
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(ClientError::Io)?;
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(HandshakeError::Timeout.into());
            }
            Err(e) => return Err(ClientError::Io(e)),
        }
    }
}

fn remaining(deadline: Instant) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(HandshakeError::Timeout.into());
    }
    Ok(left)
}

/// The start of a rejection's body, for the error message: what already
/// arrived plus what comes before the server closes (it sends
/// `Connection: close`) or the deadline.
fn read_body(stream: &mut Stream, mut body: Vec<u8>, deadline: Instant) -> String {
    let mut buf = [0u8; MAX_BODY];
    while body.len() < MAX_BODY {
        match read_until(stream, &mut buf, deadline) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    body.truncate(MAX_BODY);
    let text = String::from_utf8_lossy(&body);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An extra header must be a valid HTTP field (RFC 9110 section 5) that the
/// handshake does not write itself.
pub fn check_header(name: &str, value: &str) -> Result<(), HandshakeError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let valid_name = !name.is_empty() && name.bytes().all(token);
    let valid_value = value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7F));
    if !valid_name || !valid_value || RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(HandshakeError::BadHeader(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_headers_are_checked() {
        assert!(check_header("Authorization", "Bearer abc").is_ok());
        assert!(check_header("X-Token", "").is_ok());
        assert!(check_header("Bad Name", "v").is_err());
        assert!(check_header("", "v").is_err());
        assert!(check_header("X-Evil", "a\r\nHost: b").is_err());
        assert!(check_header("sec-websocket-key", "x").is_err());
        assert!(check_header("Host", "x").is_err());
    }
}
