//! Keys of the server-side HTTP API (`--api-key-file`, README "Publish
//! API"), stored hashed.
//!
//! The file holds one key per line: the SHA-256 of the key in hex, a name
//! for the logs, and optionally what the key may do:
//!
//! ```text
//! # sha256(key)                                                    name     [allow=OPS] [rooms=PATTERNS]
//! 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 backend
//! a6235752ef51e86cdf1d56634948c32f75fe6a492e212797315ea43f5ecfa66e scores   allow=publish,read rooms=scores:*
//! ```
//!
//! `OPS` are `publish` (publish, broadcast), `direct`, `disconnect` and
//! `read` (presence, history, the room list); without `allow=` a key may do
//! all four. `rooms=` limits the rooms it may publish to and read (patterns
//! as in grants: `name`, `prefix*`, `*`); without it, every room.
//! `printf %s "$KEY" | sha256sum` gives the hash. Keys are sent as
//! `Authorization: Bearer KEY`; the key itself is never stored or logged,
//! and every listed hash is compared, in constant time, whatever matches.

use super::api_keys::parse_hex;
use super::grants::Patterns;
use ring::digest::{SHA256, digest};
use std::fmt;

/// What an API request does, for `allow=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Publish,
    Direct,
    Disconnect,
    Read,
}

impl Op {
    const ALL: [Op; 4] = [Op::Publish, Op::Direct, Op::Disconnect, Op::Read];

    pub fn name(self) -> &'static str {
        match self {
            Op::Publish => "publish",
            Op::Direct => "direct",
            Op::Disconnect => "disconnect",
            Op::Read => "read",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One listed key.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey {
    hash: [u8; 32],
    pub name: String,
    allowed: u8,
    /// `None`: every room.
    rooms: Option<Patterns>,
}

impl ServerKey {
    pub fn may(&self, op: Op) -> bool {
        self.allowed & op.bit() != 0
    }

    pub fn may_use_room(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|p| p.matches(room))
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every key of the file.
#[derive(Clone, Debug, Default)]
pub struct ServerKeys {
    keys: Vec<ServerKey>,
}

impl ServerKeys {
    /// Parses the key file; errors name the line, never a key or hash.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<ServerKey> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |what: &str| format!("API key file line {}: {what}", n + 1);
            let mut fields = line.split_whitespace();
            let hash = fields
                .next()
                .and_then(parse_hex)
                .ok_or_else(|| bad("expected the key's SHA-256 in hex (64 digits)"))?;
            let name = fields.next().ok_or_else(|| bad("missing the key's name"))?;
            if !crate::rooms::names::valid_user(name) {
                return Err(bad("the name is 1-64 bytes of A-Z a-z 0-9 . _ : -"));
            }
            let mut key = ServerKey {
                hash,
                name: name.to_owned(),
                allowed: Op::ALL.iter().fold(0, |bits, op| bits | op.bit()),
                rooms: None,
            };
            for field in fields {
                if let Some(ops) = field.strip_prefix("allow=") {
                    key.allowed = 0;
                    for op in ops.split(',').filter(|o| !o.is_empty()) {
                        let op = Op::ALL
                            .into_iter()
                            .find(|known| known.name() == op)
                            .ok_or_else(|| bad("allow= takes publish, direct, disconnect, read"))?;
                        key.allowed |= op.bit();
                    }
                } else if let Some(rooms) = field.strip_prefix("rooms=") {
                    key.rooms = Some(Patterns::new(rooms.split(',').filter(|p| !p.is_empty())));
                } else {
                    return Err(bad("expected allow=OPS or rooms=PATTERNS after the name"));
                }
            }
            if keys.iter().any(|k| k.hash == key.hash) {
                return Err(bad("duplicate key"));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("API key file: no key in it".into());
        }
        Ok(ServerKeys { keys })
    }

    /// The listed key `key` is, if any. Every hash is compared, each in
    /// constant time, so the time taken says nothing about which matched.
    pub fn check(&self, key: &[u8]) -> Option<&ServerKey> {
        let hash = digest(&SHA256, key);
        let mut found = None;
        for candidate in &self.keys {
            if same(&candidate.hash, hash.as_ref()) {
                found = Some(candidate);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Equality of two hashes without an early exit.
fn same(a: &[u8; 32], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0 && b.len() == 32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256("test") and sha256("scores").
    const TEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const SCORES: &str = "a6235752ef51e86cdf1d56634948c32f75fe6a492e212797315ea43f5ecfa66e";

    #[test]
    fn keys_ops_and_rooms() {
        let keys = ServerKeys::parse(&format!(
            "# comment\n{TEST} backend\n\n{SCORES} scores allow=publish,read rooms=scores:*,live\n"
        ))
        .unwrap();
        assert_eq!(keys.len(), 2);
        let backend = keys.check(b"test").unwrap();
        assert_eq!(backend.name, "backend");
        assert!(Op::ALL.iter().all(|op| backend.may(*op)));
        assert!(backend.may_use_room("anything"));
        let scores = keys.check(b"scores").unwrap();
        assert!(scores.may(Op::Publish) && scores.may(Op::Read));
        assert!(!scores.may(Op::Direct) && !scores.may(Op::Disconnect));
        assert!(scores.may_use_room("scores:nba") && scores.may_use_room("live") && !scores.may_use_room("chat"));
        assert!(keys.check(b"Test").is_none());
        assert!(keys.check(TEST.as_bytes()).is_none(), "the hash is not the key");
        assert!(keys.check(b"").is_none());
    }

    #[test]
    fn bad_files_are_named_by_line_without_their_contents() {
        for (text, line) in [
            ("zz backend".to_owned(), 1),
            (format!("\n{TEST}"), 2),
            (format!("{TEST} bad/name"), 1),
            (format!("{TEST} a allow=publish,admin"), 1),
            (format!("{TEST} a rights=x"), 1),
            (format!("{TEST} a\n{TEST} b"), 2),
        ] {
            let err = ServerKeys::parse(&text).unwrap_err();
            assert!(err.starts_with(&format!("API key file line {line}:")), "{err}");
            assert!(!err.contains(TEST));
        }
        assert!(
            ServerKeys::parse("# nothing\n").is_err(),
            "an empty file turns nothing on"
        );
    }
}
