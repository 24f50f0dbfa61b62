//! Plain HTTP on the WebSocket port: a stream of pipelined requests read by
//! `http1::RequestReader` exactly as the event loop drives it (a head; then,
//! for the publish API, the body by `body_length`, else the answer's
//! `after_response`: the next head, a skipped body or the end; an upgrade
//! hands the rest over), and every API body through `http::api::parse`.
//!
//! Input: see `roomcast_fuzz::Input`. Config byte: bits 0-5 the head size
//! limit (0 = 8192, otherwise 16 * value), bits 6-7 the body limit (0, 16,
//! 256 or 65536 bytes).
//!
//! Invariants:
//! - no panic on any bytes;
//! - segmentation changes nothing: the same heads, bodies, answers and
//!   bytes handed to an upgrade, in pieces as in one piece, up to the
//!   reader's documented laziness (bad bytes after the last line ending are
//!   found at the next one; the `handshake` target has the same rule);
//! - bodies are exactly as long as announced and within the limit; nothing
//!   is read after the connection's end;
//! - every answer is a well-formed HTTP/1.1 response: its status and
//!   Content-Length parse back, errors are `{"error":{"code","message"}}`,
//!   API answers keep the connection open, and `with_close` marks any
//!   response as closing, once.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::http::api::{self, ApiError, Endpoint};
use roomcast::protocol::handshake::head::{HeadError, HeadReader, Request};
use roomcast::protocol::http1::{self, Item, Next, RequestReader};
use roomcast_fuzz::{Input, split};

/// What the loop would do, step by step.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Head(String, String, u8),
    /// An API call's body and the status of its answer.
    Api(Vec<u8>, u16),
    /// A body skipped after an answer given from the head.
    Skipped(usize),
    /// A deferred request whose framing is refused (the connection ends).
    Refused(u16),
    /// The bytes after an upgrade head (the connection leaves HTTP).
    Upgrade(Vec<u8>),
    /// The answer closes the connection.
    Closed,
    Error(HeadError),
    /// Out of bytes, this many buffered.
    Incomplete(usize),
}

/// A keep-alive answer an application might give from the head alone.
fn plain_answer(req: &Request) -> Vec<u8> {
    api::json_response(200, "", format!("{{\"path\":{:?}}}", req.path().len()).as_bytes())
}

/// Checks a complete response and returns its status.
fn check_response(response: &[u8], keep_alive: bool) -> u16 {
    let (head, body) = HeadReader::new(1 << 20)
        .feed_response(response)
        .expect("our response parses")
        .expect("our response is complete");
    let length: usize = head
        .headers
        .get_str("content-length")
        .expect("a Content-Length")
        .parse()
        .expect("a number");
    assert_eq!(length, body.len(), "Content-Length matches the body");
    assert_eq!(http1::closes(response), !keep_alive);
    let closing = http1::with_close(response.to_vec());
    assert!(http1::closes(&closing));
    assert_eq!(http1::with_close(closing.clone()), closing, "marked once");
    if head.status >= 400 {
        let text = std::str::from_utf8(&body).expect("UTF-8 JSON");
        assert!(
            text.starts_with("{\"error\":{\"code\":\"") && text.contains("\",\"message\":\"") && text.ends_with("\"}}"),
            "{text}"
        );
    }
    head.status
}

/// Drives a reader through `pieces` as the loop would; returns the steps
/// and the reader (to feed it more, for the laziness rule).
fn run(pieces: &[&[u8]], max_head: usize, max_body: usize) -> (Vec<Step>, RequestReader) {
    let mut reader = RequestReader::new(max_head);
    let mut steps = Vec::new();
    // The API request whose body is awaited; `None` while skipping.
    let mut awaiting: Option<Option<(Endpoint, Request)>> = None;
    for (i, piece) in pieces.iter().enumerate() {
        reader.push(piece);
        loop {
            let item = match reader.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    steps.push(Step::Error(e));
                    return (steps, reader);
                }
            };
            match item {
                Item::Head(req) => {
                    assert!(awaiting.is_none(), "a head while a body was due");
                    steps.push(Step::Head(req.method.clone(), req.target.clone(), req.version));
                    if req.wants_upgrade() {
                        let mut rest = reader.take_rest();
                        assert_eq!(reader.buffered(), 0);
                        for later in &pieces[i + 1..] {
                            rest.extend_from_slice(later);
                        }
                        steps.push(Step::Upgrade(rest));
                        return (steps, reader);
                    }
                    if let Some(endpoint) = Endpoint::from_path(req.path()) {
                        match http1::body_length(&req, max_body) {
                            Ok(len) => {
                                assert!(len <= max_body);
                                reader.expect_body(len);
                                awaiting = Some(Some((endpoint, req)));
                            }
                            Err(e) => {
                                let response = ApiError::framing(e.status(), e.reason()).response();
                                assert_eq!(check_response(&response, true), e.status());
                                steps.push(Step::Refused(e.status()));
                                return (steps, reader);
                            }
                        }
                        continue;
                    }
                    let response = plain_answer(&req);
                    check_response(&response, true);
                    match http1::after_response(&req, &response, max_body) {
                        Next::Head => {}
                        Next::Skip(len) => {
                            assert!(len > 0 && len <= max_body);
                            reader.expect_body(len);
                            awaiting = Some(None);
                        }
                        Next::Close => {
                            steps.push(Step::Closed);
                            return (steps, reader);
                        }
                    }
                }
                Item::Body(body) => match awaiting.take().expect("a body only when announced") {
                    Some((endpoint, req)) => {
                        let response = match api::parse(endpoint, req.query(), &body) {
                            Ok(_) => api::json_response(200, "", b"{\"ok\":true}"),
                            Err(err) => {
                                assert!((400..500).contains(&err.status), "{err:?}");
                                err.response()
                            }
                        };
                        let status = check_response(&response, true);
                        steps.push(Step::Api(body, status));
                        if http1::wants_close(&req) {
                            steps.push(Step::Closed);
                            return (steps, reader);
                        }
                    }
                    None => steps.push(Step::Skipped(body.len())),
                },
            }
        }
    }
    steps.push(Step::Incomplete(reader.buffered()));
    (steps, reader)
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let max_head = match input.config & 0x3F {
        0 => 8192,
        n => usize::from(n) * 16,
    };
    let max_body = [0, 16, 256, 65536][usize::from(input.config >> 6)];
    let pieces = split(input.plan, input.stream);
    let (in_pieces, mut reader) = run(&pieces, max_head, max_body);
    let (whole, _) = run(&[input.stream], max_head, max_body);
    let consumed: usize = whole
        .iter()
        .map(|s| match s {
            Step::Api(body, _) => body.len(),
            Step::Skipped(n) => *n,
            Step::Upgrade(rest) => rest.len(),
            _ => 0,
        })
        .sum();
    assert!(consumed <= input.stream.len());
    if in_pieces == whole {
        return;
    }
    // The one allowed difference: the last step. Both may fail (a piece
    // without a line ending is only size-checked), or the pieces may wait
    // for the line ending that shows the error the whole stream showed.
    let n = whole.len() - 1;
    assert_eq!(in_pieces.len(), whole.len(), "{in_pieces:?}\n{whole:?}");
    assert_eq!(in_pieces[..n], whole[..n], "segmentation changed the steps");
    match (&in_pieces[n], &whole[n]) {
        (Step::Error(_), Step::Error(_)) => {}
        (Step::Incomplete(_), Step::Error(_)) => {
            let last = pieces.last().copied().unwrap_or_default();
            assert!(!last.contains(&b'\n'), "the error was missed: {in_pieces:?}\n{whole:?}");
            reader.push(b"\r\n");
            assert!(
                reader.next_item().is_err(),
                "the next line ending must reveal the error"
            );
        }
        (a, b) => panic!("segmentation changed the outcome: {a:?} vs {b:?}"),
    }
});
