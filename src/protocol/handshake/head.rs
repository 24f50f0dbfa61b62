//! Incremental reading of an HTTP/1.1 message head with `httparse`.
//!
//! Bytes are accumulated up to a size limit; the parser runs again only when
//! a new line ending arrives, so a head trickling in one byte at a time costs
//! linear, not quadratic, work. Bytes after the head are handed back intact:
//! a client may send its first frame in the same packet as the request.

/// How many header lines a head may have.
const MAX_HEADERS: usize = 64;

/// Header lines with case-insensitive lookup. Names (as sent) and raw
/// values (HTTP allows non-UTF-8) lie end to end in one buffer: a head
/// costs two allocations, not two per line (an opening handshake is in
/// the per-connection cost; docs/benchmarks.md, "One loop, fifth pass").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    bytes: Vec<u8>,
    /// Per line, where its name ends and where its value ends in `bytes`;
    /// each line begins where the one before it ends.
    ends: Vec<(usize, usize)>,
}

impl Headers {
    fn from_parsed(parsed: &[httparse::Header<'_>]) -> Self {
        let len = parsed.iter().map(|h| h.name.len() + h.value.len()).sum();
        let mut headers = Headers {
            bytes: Vec::with_capacity(len),
            ends: Vec::with_capacity(parsed.len()),
        };
        for h in parsed {
            headers.bytes.extend_from_slice(h.name.as_bytes());
            let name_end = headers.bytes.len();
            headers.bytes.extend_from_slice(h.value);
            headers.ends.push((name_end, headers.bytes.len()));
        }
        headers
    }

    /// Every line as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(_, end)| end));
        starts
            .zip(&self.ends)
            .map(|(start, &(name_end, end))| (&self.bytes[start..name_end], &self.bytes[name_end..end]))
    }

    /// All values of the header `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let (_, value) = self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))?;
        Some(value)
    }

    /// The first value of `name` as UTF-8 text, if it is.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and optional query.
    pub target: String,
    /// The minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    pub headers: Headers,
}

impl Request {
    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query string, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Whether the client asks for a protocol switch at all: such a request
    /// gets handshake errors, a plain request gets ordinary HTTP.
    pub fn wants_upgrade(&self) -> bool {
        self.headers.get("upgrade").is_some() || self.headers.get("sec-websocket-key").is_some()
    }
}

/// A parsed response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
}

/// Why a head could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head exceeds the size limit or has too many header lines.
    TooLarge,
    /// Not valid HTTP/1.x syntax.
    Malformed,
}

/// Parses the request head at the start of `buf`: the request and the
/// head's length once it is complete, `None` while it may still be (with
/// the bytes so far within `max_len`). The one parser of request heads:
/// `HeadReader` and `http1::RequestReader` both use it.
pub fn parse_request(buf: &[u8], max_len: usize) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_len => {
            let request = Request {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                version: req.version.unwrap_or(1),
                headers: Headers::from_parsed(req.headers),
            };
            Ok(Some((request, len)))
        }
        Ok(httparse::Status::Complete(_)) => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() > max_len => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Accumulates the bytes of one message head.
#[derive(Debug)]
pub struct HeadReader {
    buf: Vec<u8>,
    max_len: usize,
}

impl HeadReader {
    pub fn new(max_len: usize) -> Self {
        HeadReader {
            buf: Vec::new(),
            max_len,
        }
    }

    /// Bytes buffered so far.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends `data`; returns true when the buffer may now hold a whole head.
    fn push(&mut self, data: &[u8]) -> bool {
        self.buf.extend_from_slice(data);
        // A head ends with an empty line; only a new '\n' can complete one.
        data.contains(&b'\n')
    }

    /// Feeds bytes of a request. On completion returns the request and the
    /// bytes that followed its head.
    pub fn feed_request(&mut self, data: &[u8]) -> Result<Option<(Request, Vec<u8>)>, HeadError> {
        if !self.push(data) {
            return self.check_size().map(|_| None);
        }
        Ok(parse_request(&self.buf, self.max_len)?.map(|(request, len)| (request, self.buf[len..].to_vec())))
    }

    /// Feeds bytes of a response; as `feed_request`.
    pub fn feed_response(&mut self, data: &[u8]) -> Result<Option<(Response, Vec<u8>)>, HeadError> {
        if !self.push(data) {
            return self.check_size().map(|_| None);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) if len <= self.max_len => {
                let response = Response {
                    status: resp.code.unwrap_or(0),
                    headers: Headers::from_parsed(resp.headers),
                };
                Ok(Some((response, self.buf[len..].to_vec())))
            }
            Ok(httparse::Status::Complete(_)) => Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => self.check_size().map(|_| None),
            Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
            Err(_) => Err(HeadError::Malformed),
        }
    }

    fn check_size(&self) -> Result<(), HeadError> {
        if self.buf.len() > self.max_len {
            Err(HeadError::TooLarge)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"GET /chat?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n\x81\x80";

    #[test]
    fn byte_at_a_time_keeps_trailing_bytes() {
        let mut reader = HeadReader::new(8192);
        let mut done = None;
        for (i, b) in REQ.iter().enumerate() {
            if let Some(r) = reader.feed_request(std::slice::from_ref(b)).unwrap() {
                done = Some((i, r));
                break;
            }
        }
        let (i, (req, rest)) = done.unwrap();
        assert_eq!(i, REQ.len() - 3);
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("x=1"));
        assert_eq!(req.headers.get("UPGRADE"), Some(&b"websocket"[..]));
        assert!(rest.is_empty());
        // The frame bytes that came in the same read are preserved.
        let mut reader = HeadReader::new(8192);
        let (_, rest) = reader.feed_request(REQ).unwrap().unwrap();
        assert_eq!(rest, b"\x81\x80");
    }

    #[test]
    fn headers_keep_lines_in_order_with_raw_values() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-List: 1\r\nx-list: 2, 3\r\nEmpty:\r\nRaw: \xff\xfe\r\n\r\n";
        let (req, _) = HeadReader::new(8192).feed_request(head).unwrap().unwrap();
        let lines: Vec<_> = req.headers.iter().collect();
        assert_eq!(
            lines,
            [
                (&b"Host"[..], &b"a"[..]),
                (b"X-List", b"1"),
                (b"x-list", b"2, 3"),
                (b"Empty", b""),
                (b"Raw", b"\xff\xfe"),
            ]
        );
        assert_eq!(req.headers.all("X-LIST").collect::<Vec<_>>(), [&b"1"[..], b"2, 3"]);
        assert_eq!(req.headers.get("empty"), Some(&b""[..]));
        assert_eq!(req.headers.get_str("raw"), None);
        assert_eq!(req.headers.get("missing"), None);
        assert_eq!(Headers::default().iter().count(), 0);
    }

    #[test]
    fn size_limit_and_malformed() {
        let mut reader = HeadReader::new(32);
        assert_eq!(
            reader.feed_request(b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaa"),
            Err(HeadError::TooLarge)
        );
        let mut reader = HeadReader::new(8192);
        assert_eq!(
            reader.feed_request(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        let mut reader = HeadReader::new(8192);
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(reader.feed_request(req.as_bytes()), Err(HeadError::TooLarge));
    }
}
