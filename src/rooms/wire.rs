//! The room protocol on the wire (docs/protocol.md): commands parsed from
//! JSON with precise error codes, events encoded as compact JSON.

use serde::Serialize;
use serde_json::Value;

/// Error codes of `error` events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    MissingField,
    InvalidRoom,
    NotMember,
    NotAuthorized,
    RateLimited,
    TooManyRooms,
    UserOffline,
    MessageTooLarge,
    /// Shared room state (the store, Redis) cannot be reached right now.
    Unavailable,
    /// Refused by the embedding program (`Hooks::on_publish`).
    Rejected,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::NotMember => "not_member",
            ErrorCode::NotAuthorized => "not_authorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::UserOffline => "user_offline",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Rejected => "rejected",
        }
    }
}

/// A command that could not be carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandError {
    pub id: Option<Value>,
    pub code: ErrorCode,
    pub message: String,
}

impl CommandError {
    pub fn new(id: Option<Value>, code: ErrorCode, message: impl Into<String>) -> Self {
        CommandError {
            id,
            code,
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Join {
        room: String,
        since: Option<u64>,
        /// The epoch `since` counts in (from an earlier `joined`).
        epoch: Option<String>,
    },
    Leave {
        room: String,
    },
    Broadcast {
        room: String,
        content: Value,
    },
    Direct {
        to: String,
        content: Value,
    },
    Typing {
        room: String,
        typing: bool,
    },
    Presence {
        room: String,
    },
    History {
        room: String,
        since: Option<u64>,
        limit: Option<usize>,
    },
    /// A fresh token for this connection (same `sub`) before the old one expires.
    Refresh {
        token: String,
    },
}

/// A command with the `id` its reply must carry.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub id: Option<Value>,
    pub command: Command,
}

/// Parses one text frame of the `/ws` protocol.
pub fn parse(bytes: &[u8]) -> Result<Request, CommandError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| CommandError::new(None, ErrorCode::BadJson, format!("not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(CommandError::new(
            None,
            ErrorCode::BadJson,
            "a command must be a JSON object",
        ));
    };
    let id = match obj.remove("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
        Some(_) => {
            return Err(CommandError::new(
                None,
                ErrorCode::BadJson,
                "`id` must be a string or a number",
            ));
        }
    };
    let fail = |code, message: String| CommandError::new(id.clone(), code, message);
    let kind = match obj.get("type") {
        None => return Err(fail(ErrorCode::MissingField, "missing field `type`".into())),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(fail(ErrorCode::BadJson, "`type` must be a string".into())),
    };
    let string = |obj: &serde_json::Map<String, Value>, field: &str| -> Result<String, CommandError> {
        match obj.get(field) {
            None => Err(fail(ErrorCode::MissingField, format!("missing field `{field}`"))),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(fail(ErrorCode::BadJson, format!("`{field}` must be a string"))),
        }
    };
    let count = |obj: &serde_json::Map<String, Value>, field: &str| -> Result<Option<u64>, CommandError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| fail(ErrorCode::BadJson, format!("`{field}` must be a non-negative integer"))),
        }
    };
    let content = |obj: &mut serde_json::Map<String, Value>| {
        obj.remove("content")
            .ok_or_else(|| fail(ErrorCode::MissingField, "missing field `content`".into()))
    };
    let command = match kind.as_str() {
        "join" => Command::Join {
            room: string(&obj, "room")?,
            since: count(&obj, "since")?,
            epoch: match obj.get("epoch") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.chars().take(64).collect()),
                Some(_) => return Err(fail(ErrorCode::BadJson, "`epoch` must be a string".into())),
            },
        },
        "leave" => Command::Leave {
            room: string(&obj, "room")?,
        },
        "broadcast" => Command::Broadcast {
            room: string(&obj, "room")?,
            content: content(&mut obj)?,
        },
        "direct" => Command::Direct {
            to: string(&obj, "to")?,
            content: content(&mut obj)?,
        },
        "typing" => Command::Typing {
            room: string(&obj, "room")?,
            typing: match obj.get("typing") {
                None => return Err(fail(ErrorCode::MissingField, "missing field `typing`".into())),
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(fail(ErrorCode::BadJson, "`typing` must be true or false".into())),
            },
        },
        "presence" => Command::Presence {
            room: string(&obj, "room")?,
        },
        "history" => Command::History {
            room: string(&obj, "room")?,
            since: count(&obj, "since")?,
            limit: count(&obj, "limit")?.map(|l| l.min(usize::MAX as u64) as usize),
        },
        "refresh" => Command::Refresh {
            token: string(&obj, "token")?,
        },
        other => {
            return Err(fail(
                ErrorCode::UnknownType,
                format!("unknown command type `{}`", other.chars().take(64).collect::<String>()),
            ));
        }
    };
    Ok(Request { id, command })
}

pub use crate::engine::StoredMessage;

/// Server-to-client events of the `/ws` protocol. `id` is present only on
/// replies to a command that carried one.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<'a> {
    Welcome {
        conn: u64,
        user: &'a str,
    },
    Joined {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        room: &'a str,
        users: Vec<&'a str>,
        seq: u64,
        epoch: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    Left {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        room: &'a str,
    },
    UserJoined {
        room: &'a str,
        user: &'a str,
    },
    UserLeft {
        room: &'a str,
        user: &'a str,
    },
    Message(&'a StoredMessage),
    Direct {
        from: &'a str,
        content: &'a Value,
        ts: u64,
    },
    Typing {
        room: &'a str,
        user: &'a str,
        typing: bool,
    },
    Presence {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        room: &'a str,
        users: Vec<&'a str>,
    },
    History {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        room: &'a str,
        messages: Vec<&'a StoredMessage>,
    },
    Ack {
        id: &'a Value,
    },
    /// The reply to `refresh`: the new expiry, Unix seconds.
    Refreshed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        exp: u64,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        code: &'static str,
        message: &'a str,
    },
    /// Sent when a client whose messages were dropped (overflow policy
    /// `drop`) has caught up: how many it missed.
    Dropped {
        count: u64,
    },
}

impl Event<'_> {
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these types cannot fail: no maps with non-string keys.
        serde_json::to_vec(self).expect("events serialize")
    }
}

/// The chat-tutorial envelope: exactly these fields, in this order, as Go's
/// `json.Marshal` writes its struct.
#[derive(Debug, Serialize)]
pub struct ChatEnvelope<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub content: &'a str,
    pub room: &'a str,
    pub username: &'a str,
}

impl ChatEnvelope<'_> {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelopes serialize")
    }
}

/// Message content as plain text, for dialects without JSON values: strings
/// as they are, anything else as its compact JSON.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(bytes: &str) -> ErrorCode {
        parse(bytes.as_bytes()).unwrap_err().code
    }

    #[test]
    fn parses_every_command() {
        let r = parse(br#"{"type":"join","room":"a","since":5,"id":7}"#).unwrap();
        assert_eq!(r.id, Some(json!(7)));
        assert_eq!(
            r.command,
            Command::Join {
                room: "a".into(),
                since: Some(5),
                epoch: None
            }
        );
        let r = parse(br#"{"type":"broadcast","room":"a","content":{"x":[1]}}"#).unwrap();
        assert_eq!(
            r.command,
            Command::Broadcast {
                room: "a".into(),
                content: json!({"x":[1]})
            }
        );
        assert!(parse(br#"{"type":"typing","room":"a","typing":false}"#).is_ok());
        assert!(parse(br#"{"type":"history","room":"a","limit":2}"#).is_ok());
        assert!(parse(br#"{"type":"direct","to":"bob","content":null}"#).is_ok());
        assert!(parse(br#"{"type":"refresh","token":"a.b.c"}"#).is_ok());
    }

    #[test]
    fn each_error_code() {
        assert_eq!(code("not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"room":"a"}"#), ErrorCode::MissingField);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::MissingField);
        assert_eq!(code(r#"{"type":"broadcast","room":"a"}"#), ErrorCode::MissingField);
        assert_eq!(code(r#"{"type":"join","room":5}"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"join","room":"a","since":-1}"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"join","room":"a","id":[1]}"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"join","room":"a","epoch":7}"#), ErrorCode::BadJson);
        let err = parse(br#"{"type":"leave","id":"x"}"#).unwrap_err();
        assert_eq!(err.id, Some(json!("x")));
    }

    #[test]
    fn events_are_compact_with_type_first() {
        let msg = StoredMessage {
            room: "r".into(),
            user: "u".into(),
            content: json!("hi"),
            seq: 1,
            ts: 2,
        };
        assert_eq!(
            String::from_utf8(Event::Message(&msg).to_bytes()).unwrap(),
            r#"{"type":"message","room":"r","user":"u","content":"hi","seq":1,"ts":2}"#
        );
        let env = ChatEnvelope {
            kind: "chat",
            content: "hi",
            room: "r",
            username: "u",
        };
        assert_eq!(
            String::from_utf8(env.to_bytes()).unwrap(),
            r#"{"type":"chat","content":"hi","room":"r","username":"u"}"#
        );
    }

    #[test]
    fn a_numeric_id_reads_back_as_the_client_sent_it() {
        // Found by fuzz/fuzz_targets/commands.rs: without serde_json's
        // correctly rounded float parsing, a long numeric id came back one
        // unit in the last place away from the one parsed.
        let bytes = br#"{"type":"leave","id":9666660000000001000000000000000000052430}"#;
        let error = parse(bytes).unwrap_err();
        let event = Event::Error {
            id: error.id.as_ref(),
            code: error.code.as_str(),
            message: &error.message,
        }
        .to_bytes();
        let back: Value = serde_json::from_slice(&event).unwrap();
        let sent: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(back["id"], sent["id"]);
    }
}
