//! Client side of the opening handshake (RFC 6455 section 4.1).

use super::head::Response;
use super::{accept_key, has_token};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::fmt;

/// What the client asks for.
#[derive(Clone, Debug, Default)]
pub struct ClientRequest {
    /// `host` or `host:port` for the Host header.
    pub host: String,
    /// Path and query, starting with `/`.
    pub target: String,
    pub protocols: Vec<String>,
    /// The `Sec-WebSocket-Extensions` offer, if any.
    pub extensions: Option<String>,
    /// Extra headers, such as `Authorization`.
    pub headers: Vec<(String, String)>,
}

impl ClientRequest {
    /// Encodes the request with a fresh random key; returns the bytes and
    /// the key the response must answer.
    pub fn encode(&self) -> (Vec<u8>, String) {
        let mut nonce = [0u8; 16];
        crate::protocol::random::fill(&mut nonce);
        let key = BASE64.encode(nonce);
        let mut out = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            self.target, self.host
        );
        if !self.protocols.is_empty() {
            out.push_str(&format!("Sec-WebSocket-Protocol: {}\r\n", self.protocols.join(", ")));
        }
        if let Some(ext) = &self.extensions {
            out.push_str(&format!("Sec-WebSocket-Extensions: {ext}\r\n"));
        }
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        (out.into_bytes(), key)
    }
}

/// Why a server's handshake response was refused (section 4.1, "the client
/// MUST _Fail the WebSocket Connection_").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseError {
    Status(u16),
    MissingUpgrade,
    MissingConnection,
    BadAccept,
    UnrequestedProtocol(String),
    UnrequestedExtension(String),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Status(s) => write!(f, "server answered HTTP {s}, not 101"),
            ResponseError::MissingUpgrade => f.write_str("response lacks Upgrade: websocket"),
            ResponseError::MissingConnection => f.write_str("response lacks Connection: Upgrade"),
            ResponseError::BadAccept => f.write_str("Sec-WebSocket-Accept does not match the key"),
            ResponseError::UnrequestedProtocol(p) => write!(f, "server chose unrequested subprotocol {p:?}"),
            ResponseError::UnrequestedExtension(e) => write!(f, "server chose unrequested extension {e:?}"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// What the server agreed to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    pub protocol: Option<String>,
    /// The raw `Sec-WebSocket-Extensions` answer; the extension module
    /// checks it against the offer.
    pub extensions: Option<String>,
}

/// Validates a response against the request that was sent.
pub fn validate(resp: &Response, key: &str, request: &ClientRequest) -> Result<Accepted, ResponseError> {
    if resp.status != 101 {
        return Err(ResponseError::Status(resp.status));
    }
    let h = &resp.headers;
    if !h.all("upgrade").any(|v| has_token(v, "websocket")) {
        return Err(ResponseError::MissingUpgrade);
    }
    if !h.all("connection").any(|v| has_token(v, "upgrade")) {
        return Err(ResponseError::MissingConnection);
    }
    if h.get("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(accept_key(key.as_bytes()).as_bytes()) {
        return Err(ResponseError::BadAccept);
    }
    let protocol = h.get_str("sec-websocket-protocol").map(|p| p.trim().to_owned());
    if let Some(p) = &protocol
        && !request.protocols.contains(p)
    {
        return Err(ResponseError::UnrequestedProtocol(p.clone()));
    }
    let extensions = h.get_str("sec-websocket-extensions").map(|e| e.trim().to_owned());
    if let Some(e) = &extensions
        && request.extensions.is_none()
    {
        return Err(ResponseError::UnrequestedExtension(e.clone()));
    }
    Ok(Accepted { protocol, extensions })
}

#[cfg(test)]
mod tests {
    use super::super::head::HeadReader;
    use super::*;

    fn response(text: &str) -> Response {
        HeadReader::new(8192).feed_response(text.as_bytes()).unwrap().unwrap().0
    }

    fn ok_response(key: &str, extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
            accept_key(key.as_bytes())
        )
    }

    #[test]
    fn request_has_fresh_key_and_validates_its_answer() {
        let req = ClientRequest {
            host: "localhost:9001".into(),
            target: "/ws?a=b".into(),
            protocols: vec!["chat".into()],
            ..Default::default()
        };
        let (bytes, key) = req.encode();
        let (_, key2) = req.encode();
        assert_ne!(key, key2);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("GET /ws?a=b HTTP/1.1\r\nHost: localhost:9001\r\n"));
        let accepted = validate(
            &response(&ok_response(&key, "Sec-WebSocket-Protocol: chat\r\n")),
            &key,
            &req,
        )
        .unwrap();
        assert_eq!(accepted.protocol.as_deref(), Some("chat"));
    }

    #[test]
    fn rejects_bad_answers() {
        let req = ClientRequest::default();
        let (_, key) = req.encode();
        let check = |text: &str| validate(&response(text), &key, &req);
        assert_eq!(check("HTTP/1.1 403 Forbidden\r\n\r\n"), Err(ResponseError::Status(403)));
        assert_eq!(check(&ok_response("wrong", "")), Err(ResponseError::BadAccept));
        assert_eq!(
            check(&ok_response(&key, "").replace("Upgrade: websocket\r\n", "")),
            Err(ResponseError::MissingUpgrade)
        );
        assert_eq!(
            check(&ok_response(&key, "").replace("Connection: Upgrade\r\n", "")),
            Err(ResponseError::MissingConnection)
        );
        assert!(matches!(
            check(&ok_response(&key, "Sec-WebSocket-Protocol: x\r\n")),
            Err(ResponseError::UnrequestedProtocol(_))
        ));
        assert!(matches!(
            check(&ok_response(&key, "Sec-WebSocket-Extensions: permessage-deflate\r\n")),
            Err(ResponseError::UnrequestedExtension(_))
        ));
    }
}
