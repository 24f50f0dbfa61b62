//! Generational connection ids.
//!
//! A slab reuses slots, so an event or a message addressed to a connection
//! that has closed could reach the next occupant of its slot. Each id pairs
//! the slot index with a generation drawn from a counter, and is checked
//! against the slot's current occupant on every use.

use mio::Token;

/// The listener's token; connection tokens never take this value because
/// generation 0 is never handed out.
pub const LISTENER: Token = Token(0);
/// The token of the shutdown-signal pipe.
pub const SIGNAL: Token = Token(1);

/// Identifies one connection for its whole life, never reused in practice
/// (2^32 generations per process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub index: u32,
    pub generation: u32,
}

impl ConnId {
    pub fn token(self) -> Token {
        Token(((self.generation as usize) << 32) | self.index as usize)
    }

    pub fn from_token(token: Token) -> ConnId {
        ConnId {
            index: token.0 as u32,
            generation: (token.0 >> 32) as u32,
        }
    }
}

/// Hands out generations, skipping 0 (reserved for the fixed tokens above).
#[derive(Debug, Default)]
pub struct Generations(u32);

impl Generations {
    pub fn next_generation(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(1).max(1);
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_reserved_tokens() {
        let id = ConnId {
            index: 7,
            generation: 3,
        };
        assert_eq!(ConnId::from_token(id.token()), id);
        let mut g = Generations(u32::MAX);
        assert_eq!(g.next_generation(), 1);
        assert_ne!(
            ConnId {
                index: 0,
                generation: 1
            }
            .token(),
            LISTENER
        );
        assert_ne!(
            ConnId {
                index: 1,
                generation: 1
            }
            .token(),
            SIGNAL
        );
    }
}
