//! Helpers shared by the fuzz targets.
//!
//! Every target that reads a stream takes the same input layout, so one seed
//! format serves all of them:
//!
//! ```text
//! byte 0..2  chunk plan (u16, little endian): how the stream is split
//! byte 2     target-specific configuration (limits, role options, ...)
//! byte 3..   the stream itself
//! ```
//!
//! A plan of 0 feeds the stream in one piece; any other plan derives piece
//! lengths from a small PRNG, so libFuzzer explores segmentations by mutating
//! two bytes while the stream bytes stay meaningful.

pub mod connection;

/// An input split into its three parts.
pub struct Input<'a> {
    pub plan: u16,
    pub config: u8,
    pub stream: &'a [u8],
}

impl<'a> Input<'a> {
    /// `None` for inputs too short to carry the three control bytes.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let [p0, p1, config, stream @ ..] = data else {
            return None;
        };
        Some(Input {
            plan: u16::from_le_bytes([*p0, *p1]),
            config: *config,
            stream,
        })
    }
}

/// The largest piece for each value of the plan's low three bits: single
/// bytes, sizes around a frame header, and larger reads.
const MAX_PIECE: [usize; 8] = [1, 2, 3, 5, 8, 16, 64, 1024];

/// Splits `stream` into pieces as `plan` says. Concatenated, the pieces are
/// always `stream`. Bit 3 of the plan adds empty pieces between pieces, which
/// a receiver must accept as no-ops.
pub fn split(plan: u16, stream: &[u8]) -> Vec<&[u8]> {
    if plan == 0 {
        return vec![stream];
    }
    let max = MAX_PIECE[usize::from(plan & 7)];
    let with_empty = plan & 8 != 0;
    // xorshift32, seeded from the plan; never zero.
    let mut state = u32::from(plan).wrapping_mul(0x9E37_79B9) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut pieces = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let r = next();
        if with_empty && r & 0x100 != 0 {
            pieces.push(&rest[..0]);
        }
        let len = (1 + r as usize % max).min(rest.len());
        let (piece, tail) = rest.split_at(len);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_to_the_stream() {
        let stream: Vec<u8> = (0..=255).collect();
        for plan in 0..=u16::MAX {
            let pieces = split(plan, &stream);
            assert_eq!(pieces.concat(), stream, "plan {plan}");
        }
    }
}
