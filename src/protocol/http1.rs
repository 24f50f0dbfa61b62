//! HTTP/1.1 message framing for the plain requests served on the WebSocket
//! port (RFC 9112): requests one after another on one connection
//! (keep-alive, pipelining), `Content-Length` bodies, and the few facts
//! about a response the server needs to decide whether the connection
//! stays open. Sans-IO: bytes in, requests out; no socket, no clock.
//!
//! Bodies must have a `Content-Length`: a chunked body is refused with
//! 411 (send a length), another transfer coding with 501 (RFC 9112
//! section 6.1), and after either the connection closes, since the end of
//! that body cannot be found.

use super::handshake::has_token;
use super::handshake::head::{HeadError, Request, parse_request};

/// Reads requests from a connection's byte stream, in order.
///
/// Heads are parsed only when a new line ending has arrived since the last
/// try (as `HeadReader` does), so a head trickling in byte by byte costs
/// linear work. After a head, the caller says whether a body follows
/// (`expect_body`) or the rest is another protocol (`take_rest`, for an
/// upgrade). Memory: the bytes of the current head or body (bounded by the
/// caller's limits) plus what one read brought beyond it.
#[derive(Debug)]
pub struct RequestReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    start: usize,
    max_head: usize,
    /// Some(length) while a body is being read.
    body: Option<usize>,
    /// A line ending arrived since the last parse that found no head.
    parse: bool,
}

/// What the buffered bytes completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    Head(Request),
    /// The body announced after the previous head.
    Body(Vec<u8>),
}

impl RequestReader {
    pub fn new(max_head: usize) -> Self {
        RequestReader {
            buf: Vec::new(),
            start: 0,
            max_head,
            body: None,
            parse: false,
        }
    }

    /// Bytes received and not handed out yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        // A head ends with an empty line; only a new '\n' can complete one.
        self.parse |= data.contains(&b'\n');
    }

    /// The next complete head or body, if the buffered bytes hold one.
    pub fn next_item(&mut self) -> Result<Option<Item>, HeadError> {
        if let Some(len) = self.body {
            if self.buffered() < len {
                return Ok(None);
            }
            let body = self.buf[self.start..self.start + len].to_vec();
            self.body = None;
            self.consume(len);
            return Ok(Some(Item::Body(body)));
        }
        if !self.parse {
            return if self.buffered() > self.max_head {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        match parse_request(&self.buf[self.start..], self.max_head)? {
            Some((request, len)) => {
                self.consume(len);
                Ok(Some(Item::Head(request)))
            }
            None => {
                self.parse = false;
                Ok(None)
            }
        }
    }

    /// The head just returned announced a body of `len` bytes: the next
    /// item is that body.
    pub fn expect_body(&mut self, len: usize) {
        self.body = Some(len);
    }

    /// Everything buffered after the last head (an upgraded connection's
    /// first bytes of the new protocol).
    pub fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        *self = RequestReader::new(self.max_head);
        rest
    }

    /// Gives the buffer's memory back if nothing is buffered (a keep-alive
    /// connection between requests costs no buffer).
    pub fn release(&mut self) {
        if self.buffered() == 0 {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    fn consume(&mut self, len: usize) {
        self.start += len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.parse = self.buf[self.start..].contains(&b'\n');
    }
}

/// Why a request's body cannot be read; the connection closes after the
/// answer, since where the next request starts is unknown (or, for
/// `TooLarge`, not worth reading up to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// No `Content-Length` on a POST, PUT or PATCH, or a chunked body.
    LengthRequired,
    /// A transfer coding other than chunked.
    NotImplemented,
    /// A `Content-Length` over the limit.
    TooLarge,
    /// A `Content-Length` that is not a number, or several that differ, or
    /// one together with `Transfer-Encoding` (RFC 9112 section 6.3).
    BadLength,
}

impl FramingError {
    pub fn status(self) -> u16 {
        match self {
            FramingError::LengthRequired => 411,
            FramingError::NotImplemented => 501,
            FramingError::TooLarge => 413,
            FramingError::BadLength => 400,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            FramingError::LengthRequired => "a request body needs a Content-Length (chunked bodies are not accepted)",
            FramingError::NotImplemented => "transfer codings are not implemented; send a Content-Length",
            FramingError::TooLarge => "the request body is over the size limit",
            FramingError::BadLength => "invalid Content-Length",
        }
    }
}

/// The length of the body that follows `req`'s head, at most `max`.
pub fn body_length(req: &Request, max: usize) -> Result<usize, FramingError> {
    let chunked_only = |v: &[u8]| v.trim_ascii().eq_ignore_ascii_case(b"chunked");
    let mut codings = req.headers.all("transfer-encoding").peekable();
    if codings.peek().is_some() {
        if req.headers.get("content-length").is_some() {
            return Err(FramingError::BadLength);
        }
        return if codings.all(chunked_only) {
            Err(FramingError::LengthRequired)
        } else {
            Err(FramingError::NotImplemented)
        };
    }
    let mut length = None;
    for value in req.headers.all("content-length") {
        // Several values (or a list in one) are allowed only if all agree.
        for item in value.split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::BadLength);
            }
            let n: u64 = std::str::from_utf8(item)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(FramingError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(FramingError::BadLength);
            }
            length = Some(n);
        }
    }
    match length {
        None if matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") => Err(FramingError::LengthRequired),
        None => Ok(0),
        Some(n) if n > max as u64 => Err(FramingError::TooLarge),
        Some(n) => Ok(n as usize),
    }
}

/// What follows a plain request once its answer is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The next request's head.
    Head,
    /// The request's body (`len` bytes, within the limit), to be skipped:
    /// the answer did not need it.
    Skip(usize),
    /// Nothing: the connection closes after the answer.
    Close,
}

/// After an answer given from the head alone (`response`): keep-alive
/// unless either side closes, or the request's body is one that would not
/// be read (then where the next request starts is unknown).
pub fn after_response(req: &Request, response: &[u8], max_body: usize) -> Next {
    if wants_close(req) || closes(response) {
        return Next::Close;
    }
    match body_length(req, max_body) {
        Err(_) => Next::Close,
        Ok(0) => Next::Head,
        Ok(len) => Next::Skip(len),
    }
}

/// Whether the client asked for the connection to end after this
/// request: `Connection: close`, or HTTP/1.0 (whose keep-alive this
/// server does not speak).
pub fn wants_close(req: &Request) -> bool {
    req.version == 0 || req.headers.all("connection").any(|v| has_token(v, "close"))
}

/// Whether the client sent `Expect: 100-continue` (curl does for bodies
/// over 1 KiB, and waits a second for the `100` before sending them).
pub fn expects_continue(req: &Request) -> bool {
    req.headers
        .get("expect")
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The head of a response: everything before the empty line (or all of
/// it, if it has none).
fn response_head(response: &[u8]) -> &[u8] {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    &response[..end]
}

/// Whether a response says the connection closes after it.
pub fn closes(response: &[u8]) -> bool {
    response_head(response).split(|&b| b == b'\n').skip(1).any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                line[..colon].trim_ascii().eq_ignore_ascii_case(b"connection") && has_token(&line[colon + 1..], "close")
            }
            None => false,
        }
    })
}

/// `response` saying `Connection: close` (RFC 9112 section 9.6: a server
/// that closes after a response should say so in it).
pub fn with_close(response: Vec<u8>) -> Vec<u8> {
    if closes(&response) {
        return response;
    }
    let Some(line_end) = response.windows(2).position(|w| w == b"\r\n") else {
        return response;
    };
    let mut out = Vec::with_capacity(response.len() + 19);
    out.extend_from_slice(&response[..line_end + 2]);
    out.extend_from_slice(b"Connection: close\r\n");
    out.extend_from_slice(&response[line_end + 2..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::head::HeadReader;

    fn head(text: &str) -> Request {
        HeadReader::new(8192).feed_request(text.as_bytes()).unwrap().unwrap().0
    }

    fn items(reader: &mut RequestReader) -> Vec<Item> {
        let mut out = Vec::new();
        while let Some(item) = reader.next_item().unwrap() {
            if let Item::Head(req) = &item
                && let Ok(len) = body_length(req, 1 << 20)
                && len > 0
            {
                reader.expect_body(len);
            }
            out.push(item);
        }
        out
    }

    #[test]
    fn pipelined_requests_with_bodies_come_out_in_order_in_any_pieces() {
        let stream = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
        for size in [1, 2, 7, stream.len()] {
            let mut reader = RequestReader::new(8192);
            let mut got = Vec::new();
            for piece in stream.chunks(size) {
                reader.push(piece);
                got.extend(items(&mut reader));
            }
            let summary: Vec<String> = got
                .iter()
                .map(|i| match i {
                    Item::Head(r) => format!("{} {}", r.method, r.target),
                    Item::Body(b) => String::from_utf8_lossy(b).into_owned(),
                })
                .collect();
            assert_eq!(summary, ["POST /a", "abc", "GET /b", "POST /c"], "pieces of {size}");
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn head_limits_and_errors() {
        let mut reader = RequestReader::new(32);
        reader.push(b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(reader.next_item(), Err(HeadError::TooLarge));
        let mut reader = RequestReader::new(8192);
        reader.push(b"GET / HTTP/1.1\r\nbad header\r\n\r\n");
        assert_eq!(reader.next_item(), Err(HeadError::Malformed));
        // A second head is bounded by the limit too, not the first one's.
        let mut reader = RequestReader::new(40);
        reader.push(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nX: 01234567890123456789012345");
        assert!(matches!(reader.next_item(), Ok(Some(Item::Head(_)))));
        assert_eq!(reader.next_item(), Err(HeadError::TooLarge));
    }

    #[test]
    fn the_rest_after_an_upgrade_head_is_handed_back() {
        let mut reader = RequestReader::new(8192);
        reader.push(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x80");
        assert!(matches!(reader.next_item(), Ok(Some(Item::Head(_)))));
        assert_eq!(reader.take_rest(), b"\x81\x80");
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn body_lengths() {
        let len = |text: &str| body_length(&head(text), 100);
        assert_eq!(len("GET / HTTP/1.1\r\n\r\n"), Ok(0));
        assert_eq!(len("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"), Ok(12));
        assert_eq!(len("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"), Ok(5));
        assert_eq!(len("POST / HTTP/1.1\r\n\r\n"), Err(FramingError::LengthRequired));
        assert_eq!(
            len("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(FramingError::LengthRequired)
        );
        assert_eq!(
            len("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(FramingError::NotImplemented)
        );
        assert_eq!(
            len("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Err(FramingError::BadLength)
        );
        assert_eq!(
            len("POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n"),
            Err(FramingError::TooLarge)
        );
        assert_eq!(
            len("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Err(FramingError::BadLength)
        );
        for bad in ["-1", "+1", "1 2", "0x10", "", "5, 6"] {
            let text = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(len(&text), Err(FramingError::BadLength), "{bad:?}");
        }
        assert_eq!(
            len("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(FramingError::BadLength)
        );
    }

    #[test]
    fn connection_close_both_ways() {
        assert!(wants_close(&head(
            "GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"
        )));
        assert!(wants_close(&head("GET / HTTP/1.0\r\n\r\n")));
        assert!(!wants_close(&head("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")));
        let open = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nConnection: close".to_vec();
        assert!(!closes(&open), "a body is not a header");
        let closed = with_close(open);
        assert_eq!(
            closed,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nConnection: close"
        );
        assert!(closes(&closed));
        assert_eq!(with_close(closed.clone()), closed);
    }
}
