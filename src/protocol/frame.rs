//! Frame header coding (RFC 6455 section 5.2).
//!
//! Pure encode/decode of the base framing protocol. Payloads are not touched
//! here: the connection streams them through unmasking and validation.

use super::error::Error;

/// The opcode of a frame (RFC 6455 section 5.2, section 11.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    /// Decodes the 4-bit opcode; reserved values (3-7, 0xB-0xF) are `None`.
    pub fn from_u8(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Control frames have the high bit of the opcode set (section 5.5).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1: "per-message compressed" when permessage-deflate is negotiated.
    pub rsv1: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// The largest header: 2 fixed bytes, 8 bytes of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// The longest payload a control frame may carry (section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Parses a frame header from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the header and its length
/// in bytes. Rules that do not depend on the connection's state are enforced
/// here: reserved opcodes, RSV2/RSV3 (no extension we support defines them),
/// control frames that are fragmented or longer than 125 bytes, and 64-bit
/// lengths with the most significant bit set.
#[inline]
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, Error> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 {
        return Err(Error::ReservedBits);
    }
    let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(Error::ReservedOpcode(b0 & 0x0F))?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        // Section 5.5: control frames are never fragmented and carry <= 125 bytes.
        if !fin {
            return Err(Error::FragmentedControlFrame);
        }
        if len7 > 125 {
            return Err(Error::ControlFrameTooLong);
        }
    }
    let ext_len = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext_len + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(None);
    }
    let payload_len = match len7 {
        126 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        127 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(bytes);
            // Section 5.2: "the most significant bit MUST be 0".
            if len >> 63 != 0 {
                return Err(Error::LengthOverflow);
            }
            len
        }
        n => u64::from(n),
    };
    // The key's four bytes as one load: `buf` holds `header_len` bytes.
    let mask = if masked {
        let at = 2 + ext_len;
        let key: [u8; 4] = buf[at..at + 4].try_into().expect("the header is whole");
        Some(key)
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin,
            rsv1,
            opcode,
            mask,
            payload_len,
        },
        header_len,
    )))
}

/// Appends an encoded frame header to `out`, using the minimal length encoding.
#[inline]
pub fn write_header(out: &mut Vec<u8>, header: &FrameHeader) {
    // Built on the stack and appended once: one capacity check, not four.
    // All of the array, then cut to length: a copy of a constant size is
    // two stores, one of `n` bytes a call to memcpy.
    let (bytes, n) = encode_header(header);
    let at = out.len();
    out.extend_from_slice(&bytes);
    out.truncate(at + n);
}

/// Encodes a frame header on the stack: the bytes, and how many are used.
#[inline]
pub fn encode_header(header: &FrameHeader) -> ([u8; MAX_HEADER_LEN], usize) {
    let mut bytes = [0u8; MAX_HEADER_LEN];
    let mut b0 = header.opcode.as_u8();
    if header.fin {
        b0 |= 0x80;
    }
    if header.rsv1 {
        b0 |= 0x40;
    }
    let mask_bit = if header.mask.is_some() { 0x80 } else { 0 };
    let len = header.payload_len;
    bytes[0] = b0;
    let mut n = 2;
    if len <= 125 {
        bytes[1] = mask_bit | len as u8;
    } else if len <= u64::from(u16::MAX) {
        bytes[1] = mask_bit | 126;
        bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        n = 4;
    } else {
        bytes[1] = mask_bit | 127;
        bytes[2..10].copy_from_slice(&len.to_be_bytes());
        n = 10;
    }
    if let Some(key) = header.mask {
        bytes[n..n + 4].copy_from_slice(&key);
        n += 4;
    }
    (bytes, n)
}

/// Appends a whole frame: header, then `payload` masked with `mask` if given.
#[inline]
pub fn write_frame(out: &mut Vec<u8>, opcode: Opcode, fin: bool, rsv1: bool, mask: Option<[u8; 4]>, payload: &[u8]) {
    // A server's short frame, the commonest reply: two header bytes, no
    // length extension, no key, so none of encode_header's cases.
    if mask.is_none() && payload.len() <= 125 {
        let b0 = opcode.as_u8() | u8::from(fin) << 7 | u8::from(rsv1) << 6;
        out.reserve(2 + payload.len());
        out.extend_from_slice(&[b0, payload.len() as u8]);
        out.extend_from_slice(payload);
        return;
    }
    let header = FrameHeader {
        fin,
        rsv1,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    out.reserve(MAX_HEADER_LEN + payload.len());
    write_header(out, &header);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        super::mask::apply_mask(&mut out[start..], key, 0);
    }
}

/// Encodes one unmasked, unfragmented server frame into a fresh buffer. This
/// is what a room broadcast builds once and shares among all recipients.
pub fn encode_server_frame(opcode: Opcode, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, opcode, true, rsv1, None, payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> (FrameHeader, usize) {
        parse_header(buf).unwrap().unwrap()
    }

    #[test]
    fn the_short_frame_path_writes_what_the_general_encoder_writes() {
        use Opcode::*;
        let payload: Vec<u8> = (0..=130u8).collect();
        for opcode in [Continuation, Text, Binary, Close, Ping, Pong] {
            for (fin, rsv1) in [(true, false), (false, false), (true, true), (false, true)] {
                for len in 0..=130 {
                    let header = FrameHeader {
                        fin,
                        rsv1,
                        opcode,
                        mask: None,
                        payload_len: len as u64,
                    };
                    let mut general = b"before".to_vec();
                    write_header(&mut general, &header);
                    general.extend_from_slice(&payload[..len]);
                    let mut written = b"before".to_vec();
                    write_frame(&mut written, opcode, fin, rsv1, None, &payload[..len]);
                    assert_eq!(written, general, "{opcode:?} fin {fin} rsv1 {rsv1} len {len}");
                }
            }
        }
    }

    // RFC 6455 section 5.7 examples.
    #[test]
    fn rfc_single_frame_unmasked_text() {
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, n) = parse(&bytes);
        assert_eq!(n, 2);
        assert!(h.fin);
        assert_eq!(h.opcode, Opcode::Text);
        assert_eq!(h.payload_len, 5);
        assert_eq!(&bytes[n..], b"Hello");
        let mut out = Vec::new();
        write_frame(&mut out, Opcode::Text, true, false, None, b"Hello");
        assert_eq!(out, bytes);
    }

    #[test]
    fn rfc_single_frame_masked_text() {
        let bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (h, n) = parse(&bytes);
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        let mut payload = bytes[n..].to_vec();
        crate::protocol::mask::apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
        let mut out = Vec::new();
        write_frame(&mut out, Opcode::Text, true, false, h.mask, b"Hello");
        assert_eq!(out, bytes);
    }

    #[test]
    fn rfc_fragmented_unmasked_text() {
        let (h, _) = parse(&[0x01, 0x03, 0x48, 0x65, 0x6c]);
        assert!(!h.fin);
        assert_eq!(h.opcode, Opcode::Text);
        let (h, _) = parse(&[0x80, 0x02, 0x6c, 0x6f]);
        assert!(h.fin);
        assert_eq!(h.opcode, Opcode::Continuation);
    }

    #[test]
    fn rfc_ping_and_pong() {
        let (h, _) = parse(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(h.opcode, Opcode::Ping);
        let (h, _) = parse(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        assert_eq!(h.opcode, Opcode::Pong);
    }

    #[test]
    fn rfc_extended_lengths() {
        let (h, n) = parse(&[0x82, 0x7E, 0x01, 0x00]);
        assert_eq!((h.payload_len, n), (256, 4));
        let (h, n) = parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!((h.payload_len, n), (65536, 10));
        let mut out = Vec::new();
        write_header(&mut out, &h);
        assert_eq!(out, [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn incomplete_headers_need_more() {
        assert_eq!(parse_header(&[]).unwrap(), None);
        assert_eq!(parse_header(&[0x82]).unwrap(), None);
        assert_eq!(parse_header(&[0x82, 0x7E, 0x01]).unwrap(), None);
        assert_eq!(parse_header(&[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2]).unwrap(), None);
    }

    #[test]
    fn rejects_rule_breaking_headers() {
        assert_eq!(parse_header(&[0xA1, 0]), Err(Error::ReservedBits));
        assert_eq!(parse_header(&[0x91, 0]), Err(Error::ReservedBits));
        assert_eq!(parse_header(&[0x83, 0]), Err(Error::ReservedOpcode(3)));
        assert_eq!(parse_header(&[0x8B, 0]), Err(Error::ReservedOpcode(0xB)));
        assert_eq!(parse_header(&[0x09, 0]), Err(Error::FragmentedControlFrame));
        assert_eq!(parse_header(&[0x89, 126]), Err(Error::ControlFrameTooLong));
        assert_eq!(
            parse_header(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::LengthOverflow)
        );
    }

    #[test]
    fn header_round_trip_all_length_forms() {
        for len in [0u64, 1, 125, 126, 65535, 65536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let h = FrameHeader {
                    fin: len % 2 == 0,
                    rsv1: true,
                    opcode: Opcode::Binary,
                    mask,
                    payload_len: len,
                };
                let mut out = Vec::new();
                write_header(&mut out, &h);
                assert_eq!(parse(&out), (h, out.len()));
            }
        }
    }
}
