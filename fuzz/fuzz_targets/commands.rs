//! The `/ws` room protocol's command parser (`rooms::wire::parse`) on
//! arbitrary text frames.
//!
//! Input: the frame's bytes (no control prefix).
//!
//! Invariants, judged against an independent reading of the same bytes as
//! a `serde_json::Value`:
//! - `parse` never panics, and accepts only a JSON object whose `type` is a
//!   known command; every field of the command is the object's field of
//!   that name (an `epoch` cut to 64 characters, a missing or null count
//!   `None`), and the `id` is the object's when it is a string or number;
//! - a refusal of valid JSON carries the request's `id` (when it had a
//!   valid one) so the client can match it, and is never `bad_json` for a
//!   well-formed command; bytes that are not JSON are always `bad_json`
//!   without an `id`;
//! - the error event sent for any refusal is JSON that reads back with the
//!   same code, id and message; messages are bounded, whatever the input's
//!   size (an unknown `type` is quoted cut to 64 characters).

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::rooms::wire::{Command, ErrorCode, Event, parse};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let reading: Option<Value> = serde_json::from_slice(data).ok();
    match parse(data) {
        Ok(request) => {
            let Some(Value::Object(obj)) = &reading else {
                panic!("accepted what is not a JSON object");
            };
            let id = obj.get("id").filter(|v| v.is_string() || v.is_number());
            assert_eq!(request.id.as_ref(), id, "the id is the request's");
            check_fields(&request.command, obj);
        }
        Err(error) => {
            match &reading {
                None => {
                    assert_eq!(error.code, ErrorCode::BadJson, "not JSON");
                    assert_eq!(error.id, None);
                }
                Some(Value::Object(obj)) => {
                    if let Some(id) = obj.get("id").filter(|v| v.is_string() || v.is_number()) {
                        assert_eq!(error.id.as_ref(), Some(id), "a refusal carries the id");
                    } else {
                        assert_eq!(error.id, None);
                    }
                }
                Some(_) => assert_eq!(error.code, ErrorCode::BadJson, "not an object"),
            }
            // Only the input's `type` (cut to 64 characters) and serde's
            // own error text (which quotes no input) make it into a message.
            assert!(
                error.message.chars().count() <= 300,
                "{} characters",
                error.message.len()
            );
            let event = Event::Error {
                id: error.id.as_ref(),
                code: error.code.as_str(),
                message: &error.message,
            }
            .to_bytes();
            let back: Value = serde_json::from_slice(&event).expect("the error event is JSON");
            assert_eq!(back["type"], "error");
            assert_eq!(back["code"], error.code.as_str());
            assert_eq!(back["message"], error.message.as_str());
            assert_eq!(back.get("id"), error.id.as_ref());
        }
    }
});

/// The command says what the object says.
fn check_fields(command: &Command, obj: &serde_json::Map<String, Value>) {
    let text = |field: &str| obj.get(field).and_then(Value::as_str).expect("a string field");
    let count = |field: &str| obj.get(field).and_then(Value::as_u64);
    let kind = obj.get("type").and_then(Value::as_str).expect("a string type");
    match command {
        Command::Join { room, since, epoch } => {
            assert_eq!(kind, "join");
            assert_eq!(room, text("room"));
            assert_eq!(*since, count("since"));
            let expected = obj
                .get("epoch")
                .and_then(Value::as_str)
                .map(|e| e.chars().take(64).collect::<String>());
            assert_eq!(*epoch, expected);
        }
        Command::Leave { room } => {
            assert_eq!(kind, "leave");
            assert_eq!(room, text("room"));
        }
        Command::Broadcast { room, content } => {
            assert_eq!(kind, "broadcast");
            assert_eq!(room, text("room"));
            assert_eq!(Some(content), obj.get("content"));
        }
        Command::Direct { to, content } => {
            assert_eq!(kind, "direct");
            assert_eq!(to, text("to"));
            assert_eq!(Some(content), obj.get("content"));
        }
        Command::Typing { room, typing } => {
            assert_eq!(kind, "typing");
            assert_eq!(room, text("room"));
            assert_eq!(Some(*typing), obj.get("typing").and_then(Value::as_bool));
        }
        Command::Presence { room } => {
            assert_eq!(kind, "presence");
            assert_eq!(room, text("room"));
        }
        Command::History { room, since, limit } => {
            assert_eq!(kind, "history");
            assert_eq!(room, text("room"));
            assert_eq!(*since, count("since"));
            assert_eq!(limit.map(|l| l as u64), count("limit"));
        }
        Command::Refresh { token } => {
            assert_eq!(kind, "refresh");
            assert_eq!(token, text("token"));
        }
    }
}
