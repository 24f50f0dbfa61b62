//! Payload masking (RFC 6455 section 5.3).
//!
//! XOR with a 4-byte key, word at a time: the key is widened to a `u64`
//! (rotated to the caller's offset) and the bulk of the buffer is processed in
//! 8-byte chunks, which the compiler auto-vectorises. No `unsafe` needed.

/// Masks or unmasks `buf` in place. `offset` is the position of `buf[0]`
/// within the frame payload, so a payload can be processed in pieces.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotated as an integer: a slice rotation costs more than masking 16 bytes.
    let key = u32::from_le_bytes(key)
        .rotate_right(8 * (offset % 4) as u32)
        .to_le_bytes();
    // 32 bytes at a time as a plain array loop, which the compiler turns
    // into vector XORs; the key repeats every 4 bytes, so the pattern lines
    // up with every chunk.
    let mut wide = [0u8; 32];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = key[i % 4];
    }
    let mut chunks = buf.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for (b, k) in chunk.iter_mut().zip(wide) {
            *b ^= k;
        }
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// The byte-at-a-time definition from section 5.3, kept as the reference
/// for tests and the benchmark's baseline.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}

/// A fresh, unpredictable masking key for a client frame (section 5.3
/// requires keys an intermediary cannot predict). Keys come from the OS
/// generator, fetched in batches so a frame does not cost a system call.
pub fn random_key() -> [u8; 4] {
    let mut key = [0u8; 4];
    super::random::fill(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_bytewise_reference_at_every_offset_and_length() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        for len in [0, 1, 3, 7, 8, 9, 15, 16, 17, 64, 299] {
            for offset in 0..8 {
                let mut fast = data[..len].to_vec();
                let mut slow = data[..len].to_vec();
                apply_mask(&mut fast, key, offset);
                apply_mask_bytewise(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn split_masking_equals_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for split in 0..data.len() {
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(parts, whole);
        }
    }

    #[test]
    fn random_keys_differ() {
        let keys: Vec<[u8; 4]> = (0..64).map(|_| random_key()).collect();
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert!(distinct.len() > 60);
    }
}
