//! Server side of the opening handshake (RFC 6455 section 4.2).

use super::head::Request;
use super::{has_token, push_accept_key};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// A handshake rejected with an HTTP status. `reason` is a short, fixed
/// text: it goes into the response body, logs and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
}

impl Rejection {
    pub const fn new(status: u16, reason: &'static str) -> Self {
        Rejection { status, reason }
    }

    /// The complete HTTP response. 426 names the version we speak (section
    /// 4.2.2); 405 names the allowed method. The connection closes after it.
    pub fn response(&self) -> Vec<u8> {
        let extra = match self.status {
            426 => "Sec-WebSocket-Version: 13\r\n",
            405 => "Allow: GET\r\n",
            401 => "WWW-Authenticate: Bearer realm=\"roomcast\"\r\n",
            429 => "Retry-After: 1\r\n",
            _ => "",
        };
        http_response(self.status, extra, "text/plain; charset=utf-8", self.reason.as_bytes())
    }
}

/// The standard reason phrase for the statuses this server sends.
pub fn status_text(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete `Connection: close` HTTP/1.1 response with a body.
pub fn http_response(status: u16, extra_headers: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        status_text(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A request that passed validation: what the application needs to decide
/// whether and how to accept it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Key`, as sent.
    pub key: String,
    /// Offered subprotocols, in the client's order of preference.
    pub protocols: Vec<String>,
    /// Raw `Sec-WebSocket-Extensions` values, in order.
    pub extensions: Vec<String>,
}

/// Validates an upgrade request (section 4.2.1).
pub fn validate(req: &Request) -> Result<Upgrade, Rejection> {
    if req.method != "GET" {
        return Err(Rejection::new(405, "WebSocket upgrade requires GET"));
    }
    if req.version != 1 {
        return Err(Rejection::new(400, "WebSocket upgrade requires HTTP/1.1"));
    }
    let headers = &req.headers;
    if headers.get("host").is_none() {
        return Err(Rejection::new(400, "missing Host header"));
    }
    if !headers.all("upgrade").any(|v| has_token(v, "websocket")) {
        return Err(Rejection::new(400, "Upgrade header must contain websocket"));
    }
    if !headers.all("connection").any(|v| has_token(v, "upgrade")) {
        return Err(Rejection::new(400, "Connection header must contain upgrade"));
    }
    match headers.get("sec-websocket-version") {
        None => return Err(Rejection::new(426, "missing Sec-WebSocket-Version")),
        Some(v) if v.trim_ascii() != b"13" => {
            return Err(Rejection::new(426, "unsupported Sec-WebSocket-Version"));
        }
        Some(_) => {}
    }
    let mut keys = headers.all("sec-websocket-key");
    let key = keys.next().map(<[u8]>::trim_ascii);
    let key = match (key, keys.next()) {
        (Some(key), None) if is_valid_key(key) => key,
        (Some(_), Some(_)) => return Err(Rejection::new(400, "duplicate Sec-WebSocket-Key")),
        (None, _) => return Err(Rejection::new(400, "missing Sec-WebSocket-Key")),
        _ => return Err(Rejection::new(400, "Sec-WebSocket-Key must be 16 bytes in base64")),
    };
    let list = |name| -> Vec<String> {
        headers
            .all(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(Upgrade {
        // Valid base64 (checked above), so ASCII.
        key: std::str::from_utf8(key).map(str::to_owned).unwrap_or_default(),
        protocols: list("sec-websocket-protocol"),
        extensions: headers
            .all("sec-websocket-extensions")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
            .collect(),
    })
}

fn is_valid_key(key: &[u8]) -> bool {
    // 24 characters decode to at most 18 bytes: no allocation.
    let mut decoded = [0u8; 18];
    key.len() == 24 && BASE64.decode_slice(key, &mut decoded).is_ok_and(|n| n == 16)
}

/// Checks `Origin` against an allowlist (section 10.2). An empty allowlist
/// admits every origin; requests without `Origin` come from non-browser
/// clients, which can set any header anyway, so they pass.
pub fn check_origin(req: &Request, allowed: &[String]) -> Result<(), Rejection> {
    match req.headers.get_str("origin") {
        Some(origin) if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) => {
            Err(Rejection::new(403, "origin not allowed"))
        }
        _ => Ok(()),
    }
}

/// Picks the first offered subprotocol that the server supports.
pub fn select_protocol<'a>(offered: &'a [String], supported: &[String]) -> Option<&'a str> {
    offered
        .iter()
        .find(|p| supported.iter().any(|s| s == *p))
        .map(String::as_str)
}

/// The `101 Switching Protocols` response (section 4.2.2).
pub fn accept_response(key: &str, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
    let mut out = String::with_capacity(160);
    out.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    push_accept_key(&mut out, key.as_bytes());
    out.push_str("\r\n");
    if let Some(p) = protocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(p);
        out.push_str("\r\n");
    }
    if let Some(e) = extensions {
        out.push_str("Sec-WebSocket-Extensions: ");
        out.push_str(e);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::head::HeadReader;
    use super::*;

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn request(text: &str) -> Request {
        HeadReader::new(8192).feed_request(text.as_bytes()).unwrap().unwrap().0
    }

    fn rejection(text: &str) -> Rejection {
        validate(&request(text)).unwrap_err()
    }

    #[test]
    fn rfc_example_request_is_accepted() {
        let up = validate(&request(GOOD)).unwrap();
        assert_eq!(up.protocols, ["chat", "superchat"]);
        let resp = String::from_utf8(accept_response(&up.key, Some("chat"), None)).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: chat\r\n"));
    }

    #[test]
    fn header_tokens_are_case_insensitive_lists() {
        let text = GOOD
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "connection: keep-alive, UPGRADE");
        assert!(validate(&request(&text)).is_ok());
    }

    #[test]
    fn each_rejection_is_precise() {
        assert_eq!(rejection(&GOOD.replace("GET", "POST")).status, 405);
        assert_eq!(rejection(&GOOD.replace("HTTP/1.1", "HTTP/1.0")).status, 400);
        assert_eq!(
            rejection(&GOOD.replace("Host: server.example.com\r\n", "")).reason,
            "missing Host header"
        );
        assert_eq!(
            rejection(&GOOD.replace("Upgrade: websocket", "Upgrade: h2c")).status,
            400
        );
        assert_eq!(
            rejection(&GOOD.replace("Connection: Upgrade", "Connection: close")).status,
            400
        );
        let wrong = rejection(&GOOD.replace("Version: 13", "Version: 8"));
        assert_eq!(wrong.status, 426);
        assert!(
            String::from_utf8(wrong.response())
                .unwrap()
                .contains("Sec-WebSocket-Version: 13\r\n")
        );
        assert_eq!(
            rejection(&GOOD.replace("Sec-WebSocket-Version: 13\r\n", "")).status,
            426
        );
        assert_eq!(
            rejection(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")).reason,
            "Sec-WebSocket-Key must be 16 bytes in base64"
        );
        assert_eq!(
            rejection(&GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")).reason,
            "missing Sec-WebSocket-Key"
        );
        let dup = GOOD.replace("Origin", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin");
        assert_eq!(rejection(&dup).reason, "duplicate Sec-WebSocket-Key");
    }

    #[test]
    fn origin_allowlist() {
        let req = request(GOOD);
        assert!(check_origin(&req, &[]).is_ok());
        assert!(check_origin(&req, &["http://example.com".into()]).is_ok());
        assert_eq!(check_origin(&req, &["https://other".into()]).unwrap_err().status, 403);
    }
}
