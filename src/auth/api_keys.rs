//! Static API keys for service clients, stored hashed.
//!
//! The file holds one key per line: the SHA-256 of the key in hex, the
//! identity it stands for, and optional grants:
//!
//! ```text
//! # sha256(key)                                                    name     grants
//! 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ingest   rooms=metrics:*,alerts read=news
//! ```
//!
//! `printf %s "$KEY" | sha256sum` gives the hash. A key without `rooms=` or
//! `read=` may join no room. The key itself is never stored or logged.

use super::grants::{Grants, Patterns};
use crate::rooms::names;
use ring::digest::{SHA256, digest};
use std::collections::HashMap;
use std::fmt;

#[derive(Default)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], (String, Grants)>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys").field("keys", &self.by_hash.len()).finish()
    }
}

impl ApiKeys {
    /// Parses the key file; errors name the line, never a key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
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
                .ok_or_else(|| bad("expected a SHA-256 in hex"))?;
            let name = fields.next().ok_or_else(|| bad("missing the identity name"))?;
            if !names::valid_user(name) {
                return Err(bad("the identity name is not a valid username"));
            }
            let mut grants = Grants::default();
            for field in fields {
                let list = |v: &str| Patterns::new(v.split(',').filter(|p| !p.is_empty()));
                if let Some(v) = field.strip_prefix("rooms=") {
                    grants.rooms = list(v);
                } else if let Some(v) = field.strip_prefix("read=") {
                    grants.read_only = list(v);
                } else {
                    return Err(bad("grants are rooms=PATTERN,... or read=PATTERN,..."));
                }
            }
            if by_hash.insert(hash, (name.to_owned(), grants)).is_some() {
                return Err(bad("duplicate key"));
            }
        }
        Ok(ApiKeys { by_hash })
    }

    /// The identity and grants of `key`, if it is listed.
    pub fn lookup(&self, key: &[u8]) -> Option<&(String, Grants)> {
        // Looking up by hash leaks nothing useful through timing: an
        // attacker controls the key, not which bytes of its hash match.
        let hash: [u8; 32] = digest(&SHA256, key).as_ref().try_into().ok()?;
        self.by_hash.get(&hash)
    }
}

/// A SHA-256 hash written as 64 hex digits (the key files' format).
pub(super) fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256("test") — the example in the module docs.
    const TEST_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn parses_hashes_names_and_grants() {
        let keys = ApiKeys::parse(&format!(
            "# comment\n\n{TEST_HASH} ingest rooms=metrics:*,alerts read=news\n"
        ))
        .unwrap();
        assert_eq!(keys.by_hash.len(), 1);
        let (name, grants) = keys.lookup(b"test").unwrap();
        assert_eq!(name, "ingest");
        assert!(grants.can_publish("metrics:cpu") && grants.can_publish("alerts"));
        assert!(grants.can_join("news") && !grants.can_publish("news"));
        assert!(keys.lookup(b"Test").is_none());
        assert!(
            keys.lookup(TEST_HASH.as_bytes()).is_none(),
            "the hash itself is not a key"
        );
    }

    #[test]
    fn bad_lines_are_named_without_their_contents() {
        for (text, line) in [
            ("zz ingest", 1),
            (&format!("\n{TEST_HASH}")[..], 2),
            (&format!("{TEST_HASH} bad/name"), 1),
            (&format!("{TEST_HASH} a publish=x"), 1),
            (&format!("{TEST_HASH} a\n{TEST_HASH} b"), 2),
        ] {
            let err = ApiKeys::parse(text).unwrap_err();
            assert!(err.starts_with(&format!("API key file line {line}:")), "{err}");
            assert!(!err.contains(TEST_HASH));
        }
    }
}
