//! The opening handshake: `HeadReader` under arbitrary segmentation, then
//! the server's request validation and the client's response validation.
//!
//! Input: see `roomcast_fuzz::Input`. Config byte: the head size limit
//! (0 = 8192, otherwise 8 * value) and, in bit 0, whether the client offered
//! permessage-deflate.
//!
//! Invariants:
//! - no panic on any bytes;
//! - the result does not depend on segmentation: a head that completes in
//!   pieces is the same head, with the same trailing bytes, as in one piece;
//!   incomplete stays incomplete; an error in pieces is an error in one piece;
//! - a request the server accepts, answered with our own 101 response, is
//!   accepted by our own client.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::handshake::client::{self, ClientRequest};
use roomcast::protocol::handshake::head::{HeadError, HeadReader};
use roomcast::protocol::handshake::{accept_key, server};
use roomcast_fuzz::{Input, split};

/// The key of RFC 6455 section 1.3, which the response seeds answer.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// What feeding a stream gave: the head, the bytes after it, or an error.
type Outcome<T> = Result<Option<(T, Vec<u8>)>, HeadError>;

/// Feeds `pieces` until the head completes or fails. On completion the
/// returned trailing bytes include the pieces that were not fed.
fn feed<T>(pieces: &[&[u8]], mut step: impl FnMut(&[u8]) -> Outcome<T>) -> Outcome<T> {
    for (i, piece) in pieces.iter().enumerate() {
        match step(piece)? {
            None => {}
            Some((head, mut rest)) => {
                for later in &pieces[i + 1..] {
                    rest.extend_from_slice(later);
                }
                return Ok(Some((head, rest)));
            }
        }
    }
    Ok(None)
}

/// Results in pieces and in one piece must agree, up to one documented
/// laziness: the reader parses only when a piece brings a line ending, so
/// bad bytes after the last line ending are found when the next one comes
/// (in one piece they are found at once), and a piece without a line ending
/// is only size-checked (`TooLarge` in pieces, `Malformed` in one piece).
/// `finish` feeds that next line ending to the reader that read the pieces.
fn check_same<T: PartialEq + std::fmt::Debug>(
    pieces: &Outcome<T>,
    whole: &Outcome<T>,
    last_piece: &[u8],
    finish: impl FnOnce() -> Outcome<T>,
) {
    match (pieces, whole) {
        (Err(_), Err(_)) => {}
        (Ok(None), Err(_)) if !last_piece.contains(&b'\n') => {
            assert!(finish().is_err(), "the next line ending must reveal the error");
        }
        _ => assert_eq!(pieces, whole, "segmentation changed the result"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let max_len = match input.config {
        0 => 8192,
        n => usize::from(n) * 8,
    };
    let pieces = split(input.plan, input.stream);

    // Server side: a request.
    let mut reader = HeadReader::new(max_len);
    let chunked = feed(&pieces, |p| reader.feed_request(p));
    let whole = HeadReader::new(max_len).feed_request(input.stream);
    let last = pieces.last().copied().unwrap_or_default();
    check_same(&chunked, &whole, last, || reader.feed_request(b"\r\n"));
    if let Ok(Some((request, _rest))) = &chunked {
        let _ = request.path();
        let _ = request.query();
        let _ = request.wants_upgrade();
        let _ = server::check_origin(request, &["http://example.com".to_owned()]);
        match server::validate(request) {
            Ok(upgrade) => answer_is_accepted(&upgrade),
            Err(rejection) => {
                assert!((400..600).contains(&rejection.status));
                let response = rejection.response();
                let parsed = HeadReader::new(8192).feed_response(&response);
                let (resp, body) = parsed.unwrap().expect("rejection is a complete response");
                assert_eq!(resp.status, rejection.status);
                assert_eq!(body, rejection.reason.as_bytes());
            }
        }
    }

    // Client side: a response to a request carrying `KEY`.
    let request = ClientRequest {
        host: "server.example.com".into(),
        target: "/chat".into(),
        protocols: vec!["chat".into(), "superchat".into()],
        extensions: (input.config & 1 != 0).then(|| "permessage-deflate".into()),
        headers: Vec::new(),
    };
    let mut reader = HeadReader::new(max_len);
    let chunked = feed(&pieces, |p| reader.feed_response(p));
    let whole = HeadReader::new(max_len).feed_response(input.stream);
    check_same(&chunked, &whole, last, || reader.feed_response(b"\r\n"));
    if let Ok(Some((response, _rest))) = &chunked
        && let Ok(accepted) = client::validate(response, KEY, &request)
    {
        if let Some(p) = &accepted.protocol {
            assert!(request.protocols.contains(p));
        }
        assert!(accepted.extensions.is_none() || request.extensions.is_some());
    }
});

/// Our 101 for an accepted request must satisfy our own client.
fn answer_is_accepted(upgrade: &server::Upgrade) {
    let protocol = server::select_protocol(&upgrade.protocols, &upgrade.protocols);
    let bytes = server::accept_response(&upgrade.key, protocol, None);
    let (response, rest) = HeadReader::new(8192)
        .feed_response(&bytes)
        .expect("our 101 parses")
        .expect("our 101 is complete");
    assert!(rest.is_empty());
    let request = ClientRequest {
        protocols: upgrade.protocols.clone(),
        ..Default::default()
    };
    let accepted = client::validate(&response, &upgrade.key, &request).expect("our client accepts our 101");
    assert_eq!(accepted.protocol.as_deref(), protocol);
    assert_eq!(
        response.headers.get("sec-websocket-accept"),
        Some(accept_key(upgrade.key.as_bytes()).as_bytes())
    );
}
