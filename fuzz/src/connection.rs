//! Driving a `Connection` and checking what it did, for the `connection`
//! and `inflate` targets.

use roomcast::protocol::frame::{MAX_CONTROL_PAYLOAD, parse_header};
use roomcast::protocol::{Connection, Error, Event, Limits, Role, State};

/// Everything observable after feeding a stream.
#[derive(Debug)]
pub struct Run {
    pub role: Role,
    pub events: Vec<Event>,
    pub result: Result<(), Error>,
    pub state: State,
    /// Every byte the connection queued, in order.
    pub output: Vec<u8>,
}

impl Run {
    /// Feeds `pieces` in order until the first error (output is collected
    /// after each piece), checking on the way that a closed connection
    /// ignores everything that follows. `by_event` drives the connection
    /// with `read_event` instead of `receive`.
    pub fn feed(mut conn: Connection, pieces: &[&[u8]], by_event: bool) -> Run {
        let mut events = Vec::new();
        let mut result = Ok(());
        let mut output = conn.take_output();
        for piece in pieces {
            result = if by_event {
                read_events(&mut conn, piece, &mut events)
            } else {
                conn.receive(piece, &mut events)
            };
            output.extend(conn.take_output());
            if result.is_err() {
                assert_eq!(conn.state(), State::Closed, "an error must close the connection");
                break;
            }
        }
        if conn.state() == State::Closed {
            // Whatever arrives later, including the whole stream again.
            for piece in pieces {
                let mut later = Vec::new();
                assert_eq!(conn.receive(piece, &mut later), Ok(()), "receive after Closed");
                assert!(later.is_empty(), "events after Closed: {later:?}");
                assert!(conn.take_output().is_empty(), "output after Closed");
            }
        }
        Run {
            role: conn.role(),
            events,
            result,
            state: conn.state(),
            output,
        }
    }

    /// Invariants of one run on its own.
    pub fn check(&self, limits: Limits) {
        if self.result.is_err() {
            assert_eq!(self.state, State::Closed);
        }
        for (i, event) in self.events.iter().enumerate() {
            match event {
                Event::Text(text) => {
                    assert!(std::str::from_utf8(text).is_ok(), "Text event is not UTF-8: {text:?}");
                    assert!(text.len() <= limits.max_message_size, "Text over the limit");
                }
                Event::Binary(data) => assert!(data.len() <= limits.max_message_size, "Binary over the limit"),
                Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= MAX_CONTROL_PAYLOAD),
                Event::Close(frame) => {
                    assert_eq!(i + 1, self.events.len(), "Close is the last event");
                    assert_eq!(self.state, State::Closed, "Close event leaves the connection Closed");
                    if let Some(frame) = frame {
                        assert!(frame.code.is_sendable());
                    }
                }
            }
        }
        let peer = self.peer_view();
        assert!(
            peer.iter().all(|e| matches!(e, Event::Pong(_) | Event::Close(_))),
            "we only ever answer with pongs and closes: {peer:?}"
        );
    }

    /// The output as the peer sees it: fed to a connection of the other role,
    /// it must be valid (masked by clients only, close codes sendable, ...).
    /// This also compares client output, whose masks are random, by content.
    pub fn peer_view(&self) -> Vec<Event> {
        let role = match self.role {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        };
        let mut peer = Connection::new(role, Limits::default());
        let mut events = Vec::new();
        let result = peer.receive(&self.output, &mut events);
        assert_eq!(result, Ok(()), "our output is invalid for the peer: {:?}", self.output);
        // Nothing may follow the close frame, and no frame may be cut short.
        let mut rest = &self.output[..];
        while let Ok(Some((header, len))) = parse_header(rest) {
            let end = len as u64 + header.payload_len;
            assert!(end <= rest.len() as u64, "truncated frame in output");
            rest = &rest[end as usize..];
        }
        assert!(rest.is_empty(), "trailing bytes in output");
        events
    }
}

/// `receive` written with `read_event`: one event per call, and every call
/// consumes input or completes an event.
fn read_events(conn: &mut Connection, mut input: &[u8], events: &mut Vec<Event>) -> Result<(), Error> {
    while !input.is_empty() {
        let (used, event) = conn.read_event(input)?;
        assert!(used <= input.len(), "read_event used more than it was given");
        assert!(used > 0 || event.is_some(), "read_event made no progress");
        input = &input[used..];
        events.extend(event);
    }
    Ok(())
}

/// Invariants of two runs of the same stream, one in pieces, one whole: each
/// holds on its own, and segmentation changes nothing observable.
pub fn check_run(chunked: &Run, whole: &Run, limits: Limits) {
    chunked.check(limits);
    whole.check(limits);
    assert_eq!(chunked.events, whole.events, "segmentation changed the events");
    assert_eq!(chunked.state, whole.state, "segmentation changed the state");
    assert_eq!(chunked.result, whole.result, "segmentation changed the error");
    match chunked.role {
        // Server frames are unmasked: the bytes themselves must match.
        Role::Server => assert_eq!(chunked.output, whole.output, "segmentation changed the output"),
        Role::Client => assert_eq!(
            chunked.peer_view(),
            whole.peer_view(),
            "segmentation changed the output"
        ),
    }
}
