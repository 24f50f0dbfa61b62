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
/// Worker `w` of `n` hands out `w + 1, w + 1 + n, ...`, so ids are unique
/// across the workers of a process.
#[derive(Debug)]
pub struct Generations {
    last: u32,
    step: u32,
}

impl Default for Generations {
    fn default() -> Self {
        Generations::for_worker(0, 1)
    }
}

impl Generations {
    pub fn for_worker(worker: usize, workers: usize) -> Self {
        let step = workers.clamp(1, u32::MAX as usize) as u32;
        Generations {
            // The first `next_generation` lands on `worker + 1`.
            last: (worker as u32 % step).wrapping_add(1).wrapping_sub(step),
            step,
        }
    }

    pub fn next_generation(&mut self) -> u32 {
        self.last = self.last.wrapping_add(self.step);
        if self.last == 0 {
            // Only after 2^32 / n connections of this worker, when the ids
            // it could now repeat are long closed; 0 stays reserved.
            self.last = self.last.wrapping_add(self.step);
        }
        self.last
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
        let mut g = Generations::default();
        assert_eq!(g.next_generation(), 1);
        assert_eq!(g.next_generation(), 2);
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

    #[test]
    fn workers_hand_out_disjoint_generations() {
        let mut seen = std::collections::HashSet::new();
        for w in 0..3 {
            let mut g = Generations::for_worker(w, 3);
            for _ in 0..100 {
                let n = g.next_generation();
                assert_ne!(n, 0);
                assert_eq!((n - 1) % 3, w as u32);
                assert!(seen.insert(n));
            }
        }
    }
}
