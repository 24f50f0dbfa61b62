//! Incremental, fail-fast UTF-8 validation (RFC 6455 section 8.1).
//!
//! Text payloads arrive in arbitrary pieces. The validator carries at most
//! three bytes of an unfinished code point between pieces and reports an
//! error at the first byte that can never start or continue valid UTF-8, so a
//! connection fails as soon as the bad byte arrives, before the rest of the
//! frame does. `simdutf8`'s `compat` validator gives exactly this, as std's
//! does (`error_len() == None` means "valid so far, but truncated"), several
//! times faster on ASCII and about ten times on other text (benches/utf8.rs).

/// Validates a whole message at once.
pub fn validate(bytes: &[u8]) -> Result<(), InvalidUtf8> {
    // `simdutf8` hands inputs under 64 bytes to std's `from_utf8`, whose
    // setup costs more than the check on a short message; short ASCII (most
    // chat and JSON messages) takes std's word-at-a-time `is_ascii` instead.
    if bytes.len() < 64 && bytes.is_ascii() {
        return Ok(());
    }
    simdutf8::basic::from_utf8(bytes).map(|_| ()).map_err(|_| InvalidUtf8)
}

/// Validation state for one text message.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8Validator {
    /// Bytes of an incomplete code point left over from the previous piece.
    partial: [u8; 4],
    partial_len: u8,
}

/// The payload is not valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the message.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            // Complete the pending code point one byte at a time; a code point
            // is at most 4 bytes, so this loop runs at most 3 times.
            while self.partial_len > 0 {
                let Some((&byte, rest)) = input.split_first() else {
                    return Ok(());
                };
                input = rest;
                self.partial[self.partial_len as usize] = byte;
                self.partial_len += 1;
                let pending = &self.partial[..self.partial_len as usize];
                match std::str::from_utf8(pending) {
                    Ok(_) => self.partial_len = 0,
                    Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                    Err(_) => {}
                }
            }
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &input[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the message: a truncated code point at the end is an error.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.partial_len == 0;
        self.partial_len = 0;
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_in_pieces(bytes: &[u8], piece: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for chunk in bytes.chunks(piece.max(1)) {
            v.feed(chunk)?;
        }
        v.finish()
    }

    #[test]
    fn agrees_with_std_for_every_piece_size() {
        let samples: &[&[u8]] = &[
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "κόσμε".as_bytes(),
            "\u{10FFFF}\u{FFFF}𝄞".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\xe0\x80\xaf",
            b"abc\xf0\x9f\x98",
            b"\xed\xbf\xbf",
            b"\x80",
        ];
        for sample in samples {
            let expected = std::str::from_utf8(sample).is_ok();
            for piece in 1..=sample.len() {
                assert_eq!(valid_in_pieces(sample, piece).is_ok(), expected, "{sample:?} / {piece}");
            }
        }
    }

    #[test]
    fn agrees_with_std_around_vector_boundaries() {
        // Long ASCII runs with one non-ASCII sequence (valid or not) at
        // every position across the validator's 64-byte blocks.
        let inserts: &[&[u8]] = &[
            "é".as_bytes(),
            "𝄞".as_bytes(),
            b"\x80",
            b"\xe2\x82",
            b"\xed\xa0\x80",
            b"\x7f",
        ];
        for insert in inserts {
            for at in 0..=140 {
                let mut bytes = vec![b'a'; 140];
                bytes.splice(at..at, insert.iter().copied());
                let expected = std::str::from_utf8(&bytes).is_ok();
                assert_eq!(validate(&bytes).is_ok(), expected, "{insert:?} at {at}");
                for piece in [1, 7, 63, 64, 65, bytes.len()] {
                    assert_eq!(
                        valid_in_pieces(&bytes, piece).is_ok(),
                        expected,
                        "{insert:?} at {at} / {piece}"
                    );
                }
            }
        }
    }

    #[test]
    fn short_messages_agree_with_std() {
        // Under 64 bytes, ASCII takes a shortcut: anything else must still
        // reach the full check, at every length and position.
        let inserts: &[&[u8]] = &[
            b"",
            "é".as_bytes(),
            "𝄞".as_bytes(),
            b"\x80",
            b"\xc0\xaf",
            b"\xe2\x82",
            b"\xff",
        ];
        for insert in inserts {
            for len in 0..64 {
                for at in 0..=len {
                    let mut bytes = vec![b'{'; len];
                    bytes.splice(at..at, insert.iter().copied());
                    let expected = std::str::from_utf8(&bytes).is_ok();
                    assert_eq!(validate(&bytes).is_ok(), expected, "{insert:?} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn fails_fast_before_the_rest_arrives() {
        // Autobahn 6.4.x: an invalid byte inside a frame whose rest is pending.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        assert_eq!(v.feed(b"\xf4\x90"), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xed"), Ok(()));
        assert_eq!(v.feed(b"\xa0"), Err(InvalidUtf8));
    }

    #[test]
    fn truncated_code_point_at_end_is_invalid() {
        let mut v = Utf8Validator::new();
        v.feed(b"ok\xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }
}
