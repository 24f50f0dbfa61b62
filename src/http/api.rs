//! The server-side publish API under `/api/` (README "Publish API",
//! docs/protocol.md): which endpoint a request names, its body and query
//! parsed into a [`Call`], and the JSON answers, errors included
//! (`{"error":{"code":"...","message":"..."}}`). Nothing here touches room
//! state: the room server (`rooms::api`) carries the calls out.

use crate::auth::server_keys::Op;
use crate::protocol::handshake::server::status_text;
use crate::rooms::names;
use serde_json::{Map, Value};

/// The path prefix of every endpoint.
pub const PREFIX: &str = "/api/";

/// The close code `disconnect` uses unless the request gives one.
pub const DISCONNECT_CODE: u16 = 4000;
/// The close reason every `disconnect` sends.
pub const DISCONNECT_REASON: &str = "disconnected by the server";

/// The name messages are published under unless the request gives one.
pub const DEFAULT_USER: &str = "server";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Publish,
    Broadcast,
    Direct,
    Disconnect,
    Rooms,
    /// `/api/rooms/{room}/presence`; the name percent-decoded, not yet checked.
    Presence(String),
    History(String),
}

impl Endpoint {
    /// The endpoint `path` names, if any.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let rest = path.strip_prefix(PREFIX)?;
        Some(match rest {
            "publish" => Endpoint::Publish,
            "broadcast" => Endpoint::Broadcast,
            "direct" => Endpoint::Direct,
            "disconnect" => Endpoint::Disconnect,
            "rooms" => Endpoint::Rooms,
            _ => {
                let room = rest.strip_prefix("rooms/")?;
                let (room, what) = room.split_once('/')?;
                if room.is_empty() {
                    return None;
                }
                let room = names::percent_decode(room, false);
                match what {
                    "presence" => Endpoint::Presence(room),
                    "history" => Endpoint::History(room),
                    _ => return None,
                }
            }
        })
    }

    /// The one method it takes.
    pub fn method(&self) -> &'static str {
        match self {
            Endpoint::Publish | Endpoint::Broadcast | Endpoint::Direct | Endpoint::Disconnect => "POST",
            Endpoint::Rooms | Endpoint::Presence(_) | Endpoint::History(_) => "GET",
        }
    }

    /// What a key needs to be allowed to call it.
    pub fn op(&self) -> Op {
        match self {
            Endpoint::Publish | Endpoint::Broadcast => Op::Publish,
            Endpoint::Direct => Op::Direct,
            Endpoint::Disconnect => Op::Disconnect,
            Endpoint::Rooms | Endpoint::Presence(_) | Endpoint::History(_) => Op::Read,
        }
    }
}

/// A refused API request: its status, a stable code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(400, code, message)
    }

    /// The error for a status the event loop decided (framing: 400, 411, 413, 501).
    pub fn framing(status: u16, reason: &str) -> Self {
        let code = match status {
            411 => "length_required",
            413 => "body_too_large",
            501 => "not_implemented",
            _ => "bad_request",
        };
        ApiError::new(status, code, reason)
    }

    pub fn unauthorized(message: &str) -> Self {
        ApiError::new(401, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "forbidden", message)
    }

    pub fn not_found() -> Self {
        ApiError::new(404, "not_found", "no such API endpoint")
    }

    pub fn unavailable() -> Self {
        ApiError::new(503, "unavailable", "room state is unavailable right now; try again")
    }

    /// The complete response.
    pub fn response(&self) -> Vec<u8> {
        let mut error = Map::new();
        error.insert("code".into(), Value::from(self.code));
        error.insert("message".into(), Value::from(self.message.as_str()));
        let body = Value::Object(Map::from_iter([("error".to_owned(), Value::Object(error))]));
        let extra = match self.status {
            401 => "WWW-Authenticate: Bearer realm=\"roomcast\"\r\n",
            503 => "Retry-After: 1\r\n",
            _ => "",
        };
        json_response(self.status, extra, body.to_string().as_bytes())
    }

    /// 405 for an endpoint that takes `allow`.
    pub fn method_not_allowed(allow: &'static str) -> Vec<u8> {
        let err = ApiError::new(405, "method_not_allowed", format!("use {allow}"));
        let mut response = err.response();
        let at = response.windows(2).position(|w| w == b"\r\n").map_or(0, |i| i + 2);
        let header = format!("Allow: {allow}\r\n");
        response.splice(at..at, header.bytes());
        response
    }
}

/// A JSON response that leaves the connection open (keep-alive).
pub fn json_response(status: u16, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        status_text(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A 200 with `body`.
pub fn ok(body: &Value) -> Vec<u8> {
    json_response(200, "", body.to_string().as_bytes())
}

/// What a request asks for, checked for shape (names, types, ranges);
/// permissions and sizes are the room server's to check.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Publish {
        room: String,
        user: String,
        content: Value,
    },
    Broadcast {
        rooms: Vec<String>,
        user: String,
        content: Value,
    },
    Direct {
        to: String,
        from: String,
        content: Value,
    },
    Disconnect {
        user: String,
        code: u16,
    },
    Rooms,
    Presence {
        room: String,
    },
    History {
        room: String,
        since: Option<u64>,
        limit: Option<usize>,
    },
}

impl Call {
    /// The rooms it touches (for a key's `rooms=`).
    pub fn rooms(&self) -> &[String] {
        match self {
            Call::Publish { room, .. } | Call::Presence { room } | Call::History { room, .. } => {
                std::slice::from_ref(room)
            }
            Call::Broadcast { rooms, .. } => rooms,
            Call::Direct { .. } | Call::Disconnect { .. } | Call::Rooms => &[],
        }
    }
}

/// Parses the call `endpoint` makes with this query and body.
pub fn parse(endpoint: Endpoint, query: Option<&str>, body: &[u8]) -> Result<Call, ApiError> {
    match endpoint {
        Endpoint::Rooms => return Ok(Call::Rooms),
        Endpoint::Presence(room) => {
            return Ok(Call::Presence {
                room: checked_room(room)?,
            });
        }
        Endpoint::History(room) => {
            let number = |name: &str| -> Result<Option<u64>, ApiError> {
                match names::query_param(query, name).filter(|v| !v.is_empty()) {
                    None => Ok(None),
                    Some(v) => v.parse().map(Some).map_err(|_| {
                        ApiError::bad("invalid_query", format!("`{name}` must be a non-negative integer"))
                    }),
                }
            };
            return Ok(Call::History {
                room: checked_room(room)?,
                since: number("since")?,
                limit: number("limit")?.map(|l| l.min(usize::MAX as u64) as usize),
            });
        }
        _ => {}
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad("bad_json", format!("not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::bad("bad_json", "the body must be a JSON object"));
    };
    let content = |obj: &mut Map<String, Value>| {
        obj.remove("content")
            .ok_or_else(|| ApiError::bad("missing_field", "missing field `content`"))
    };
    Ok(match endpoint {
        Endpoint::Publish => Call::Publish {
            room: checked_room(string(&obj, "room")?)?,
            user: optional_user(&obj, "user")?,
            content: content(&mut obj)?,
        },
        Endpoint::Broadcast => {
            let rooms = match obj.get("rooms") {
                None => return Err(ApiError::bad("missing_field", "missing field `rooms`")),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|r| match r {
                        Value::String(s) => checked_room(s.clone()),
                        _ => Err(ApiError::bad("bad_json", "`rooms` must be an array of strings")),
                    })
                    .collect::<Result<Vec<String>, ApiError>>()?,
                Some(_) => return Err(ApiError::bad("bad_json", "`rooms` must be an array of strings")),
            };
            if rooms.is_empty() {
                return Err(ApiError::bad("invalid_field", "`rooms` is empty"));
            }
            let mut sorted: Vec<&String> = rooms.iter().collect();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return Err(ApiError::bad("invalid_field", "`rooms` names a room twice"));
            }
            Call::Broadcast {
                user: optional_user(&obj, "user")?,
                content: content(&mut obj)?,
                rooms,
            }
        }
        Endpoint::Direct => Call::Direct {
            to: checked_user(string(&obj, "user")?)?,
            from: optional_user(&obj, "from")?,
            content: content(&mut obj)?,
        },
        Endpoint::Disconnect => Call::Disconnect {
            user: checked_user(string(&obj, "user")?)?,
            code: match obj.get("code") {
                None | Some(Value::Null) => DISCONNECT_CODE,
                Some(v) => v
                    .as_u64()
                    .filter(|c| (4000..=4999).contains(c))
                    .map(|c| c as u16)
                    .ok_or_else(|| ApiError::bad("invalid_field", "`code` must be an integer from 4000 to 4999"))?,
            },
        },
        Endpoint::Rooms | Endpoint::Presence(_) | Endpoint::History(_) => unreachable!("answered above"),
    })
}

fn string(obj: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match obj.get(field) {
        None => Err(ApiError::bad("missing_field", format!("missing field `{field}`"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad("bad_json", format!("`{field}` must be a string"))),
    }
}

fn optional_user(obj: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(DEFAULT_USER.to_owned()),
        Some(_) => checked_user(string(obj, field)?),
    }
}

fn checked_room(room: String) -> Result<String, ApiError> {
    if names::valid_room(&room) {
        Ok(room)
    } else {
        Err(ApiError::bad(
            "invalid_room",
            "room names are 1-128 bytes of A-Z a-z 0-9 . _ : -",
        ))
    }
}

fn checked_user(user: String) -> Result<String, ApiError> {
    if names::valid_user(&user) {
        Ok(user)
    } else {
        Err(ApiError::bad(
            "invalid_user",
            "usernames are 1-64 bytes of A-Z a-z 0-9 . _ : -",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_name_endpoints() {
        assert_eq!(Endpoint::from_path("/api/publish"), Some(Endpoint::Publish));
        assert_eq!(
            Endpoint::from_path("/api/rooms/a%3Ab/history"),
            Some(Endpoint::History("a:b".into()))
        );
        assert_eq!(Endpoint::from_path("/api/rooms"), Some(Endpoint::Rooms));
        for none in [
            "/api/",
            "/api/rooms/",
            "/api/rooms//presence",
            "/api/rooms/a/b/presence",
            "/api/x",
            "/apix",
        ] {
            assert_eq!(Endpoint::from_path(none), None, "{none}");
        }
    }

    #[test]
    fn bodies_parse_into_calls_with_precise_errors() {
        let call = |e: Endpoint, body: &str| parse(e, None, body.as_bytes());
        assert_eq!(
            call(Endpoint::Publish, r#"{"room":"r","content":{"a":1}}"#),
            Ok(Call::Publish {
                room: "r".into(),
                user: "server".into(),
                content: json!({"a": 1})
            })
        );
        let code = |r: Result<Call, ApiError>| r.map_err(|e| (e.status, e.code));
        assert_eq!(code(call(Endpoint::Publish, "{")), Err((400, "bad_json")));
        assert_eq!(code(call(Endpoint::Publish, "[1]")), Err((400, "bad_json")));
        assert_eq!(
            code(call(Endpoint::Publish, r#"{"room":"r"}"#)),
            Err((400, "missing_field"))
        );
        assert_eq!(
            code(call(Endpoint::Publish, r#"{"room":"a b","content":1}"#)),
            Err((400, "invalid_room"))
        );
        assert_eq!(
            code(call(Endpoint::Publish, r#"{"room":"r","user":"x/y","content":1}"#)),
            Err((400, "invalid_user"))
        );
        assert_eq!(
            code(call(Endpoint::Broadcast, r#"{"rooms":["a","a"],"content":1}"#)),
            Err((400, "invalid_field"))
        );
        assert_eq!(
            code(call(Endpoint::Broadcast, r#"{"rooms":"a","content":1}"#)),
            Err((400, "bad_json"))
        );
        assert_eq!(
            code(call(Endpoint::Disconnect, r#"{"user":"bob","code":1000}"#)),
            Err((400, "invalid_field"))
        );
        assert_eq!(
            call(Endpoint::Disconnect, r#"{"user":"bob"}"#),
            Ok(Call::Disconnect {
                user: "bob".into(),
                code: DISCONNECT_CODE
            })
        );
        assert_eq!(
            parse(Endpoint::History("r".into()), Some("since=&limit=5"), b""),
            Ok(Call::History {
                room: "r".into(),
                since: None,
                limit: Some(5)
            })
        );
        assert_eq!(
            code(parse(Endpoint::History("r".into()), Some("since=-1"), b"")),
            Err((400, "invalid_query"))
        );
    }

    #[test]
    fn errors_are_json_with_their_headers() {
        let response = String::from_utf8(ApiError::unauthorized("missing API key").response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{response}");
        assert!(response.contains("WWW-Authenticate: Bearer"));
        assert!(!response.contains("Connection: close"));
        assert!(response.ends_with(r#"{"error":{"code":"unauthorized","message":"missing API key"}}"#));
        let response = String::from_utf8(ApiError::method_not_allowed("POST")).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: POST\r\n"),
            "{response}"
        );
    }
}
