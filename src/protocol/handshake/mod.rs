//! The opening handshake (RFC 6455 section 4): an HTTP/1.1 upgrade.
//!
//! `head` reads an HTTP head incrementally, `server` validates a request and
//! writes the 101 or the precise rejection, `client` builds a request and
//! validates the server's answer. Nothing here touches a socket.

pub mod client;
pub mod head;
pub mod server;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

/// The GUID that section 1.3 appends to the key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (section 4.2.2, step 5.4).
pub fn accept_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(28);
    push_accept_key(&mut out, key);
    out
}

/// Appends `Sec-WebSocket-Accept`'s value for `key` to `out`.
pub fn push_accept_key(out: &mut String, key: &[u8]) {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    BASE64.encode_string(sha.finalize(), out);
}

/// Whether a comma-separated header value contains `token`, ignoring ASCII
/// case and optional whitespace (RFC 9110 section 5.6.1 list syntax).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_section_1_3_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn token_lists() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b"WebSocket", "websocket"));
        assert!(!has_token(b"websockets", "websocket"));
        assert!(!has_token(b"", "upgrade"));
    }
}
