//! Which rooms an identity may join and publish to.
//!
//! A pattern is an exact room name, `prefix*` (every room whose name starts
//! with `prefix`, e.g. `team:*`), or `*` (every room).

use serde::Deserialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Patterns(Vec<String>);

impl Patterns {
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Self {
        Patterns(patterns.into_iter().map(Into::into).collect())
    }

    pub fn matches(&self, room: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => p == room,
        })
    }
}

/// What an authenticated identity may do with rooms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Rooms it may join and publish to (messages and typing).
    pub rooms: Patterns,
    /// Rooms it may join and read, but not publish to.
    pub read_only: Patterns,
}

impl Grants {
    pub fn can_join(&self, room: &str) -> bool {
        self.rooms.matches(room) || self.read_only.matches(room)
    }

    pub fn can_publish(&self, room: &str) -> bool {
        self.rooms.matches(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_wildcard_patterns() {
        let grants = Grants {
            rooms: Patterns::new(["lobby", "team:*"]),
            read_only: Patterns::new(["news"]),
        };
        assert!(grants.can_join("lobby") && grants.can_publish("lobby"));
        assert!(grants.can_join("team:eng") && grants.can_publish("team:"));
        assert!(!grants.can_join("lobby2") && !grants.can_join("team") && !grants.can_join("xteam:a"));
        assert!(grants.can_join("news") && !grants.can_publish("news"));
        let all = Grants {
            rooms: Patterns::new(["*"]),
            read_only: Patterns::default(),
        };
        assert!(all.can_publish("anything"));
        assert!(!Grants::default().can_join("lobby"));
    }
}
