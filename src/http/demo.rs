//! The browser half (docs/client.md): the chat page at `/` and the
//! `roomcast.js` client it is built on, embedded in the binary so that
//! `cargo run --release` alone serves a working chat.
//!
//! The files live in `web/` as plain HTML, CSS and ES modules (no build
//! step); `include_bytes!` takes them as they are.

use crate::protocol::handshake::head::Request;
use crate::protocol::handshake::server::http_response;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page may talk only to its own origin (`connect-src 'self'` covers
/// `ws://` and `wss://` to it); nothing is loaded from elsewhere.
const PAGE_POLICY: &str = "Content-Security-Policy: default-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n";

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        path: "/roomcast.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/roomcast.js"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/style.css"),
    },
];

/// The paths this module answers, for docs and tests.
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path)
}

/// The complete HTTP response for a demo path, or `None` for any other
/// request (WebSocket upgrades included, which stay the router's).
pub fn serve(req: &Request) -> Option<Vec<u8>> {
    if req.wants_upgrade() {
        return None;
    }
    let asset = ASSETS.iter().find(|a| a.path == req.path())?;
    if req.method != "GET" && req.method != "HEAD" {
        return Some(http_response(
            405,
            "Allow: GET, HEAD\r\n",
            "text/plain; charset=utf-8",
            b"use GET or HEAD",
        ));
    }
    // `no-cache`: revalidate every time, so a new binary's files are never
    // mixed with an old cached module.
    let policy = if asset.path == "/" { PAGE_POLICY } else { "" };
    let headers = format!(
        "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n{policy}"
    );
    let mut response = http_response(200, &headers, asset.content_type, asset.body);
    if req.method == "HEAD" {
        // The same head (Content-Length included), without the body.
        response.truncate(response.len() - asset.body.len());
    }
    Some(response)
}
