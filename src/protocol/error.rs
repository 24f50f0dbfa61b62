//! Protocol errors. Each one names the close code the endpoint must send
//! when it fails the connection (RFC 6455 section 7.1.7).

use super::close::CloseCode;
use std::fmt;

/// A violation of RFC 6455 / RFC 7692 by the peer, or a local limit hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// RSV2 or RSV3 set, or RSV1 without a negotiated extension (5.2).
    ReservedBits,
    /// Opcodes 3-7 and 0xB-0xF are reserved (5.2).
    ReservedOpcode(u8),
    /// Control frames must not be fragmented (5.5).
    FragmentedControlFrame,
    /// Control frames carry at most 125 bytes (5.5).
    ControlFrameTooLong,
    /// A 64-bit length with the most significant bit set (5.2).
    LengthOverflow,
    /// A client frame without a mask, or a server frame with one (5.1).
    BadMasking,
    /// A continuation frame with no message in progress (5.4).
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is in progress (5.4).
    ExpectedContinuation,
    /// RSV1 on a continuation or control frame (RFC 7692 section 6).
    CompressedContinuation,
    /// A close payload of exactly one byte (5.5.1).
    InvalidClosePayload,
    /// A close code the peer must not send (7.4).
    InvalidCloseCode(u16),
    /// Text or close reason that is not UTF-8 (8.1).
    InvalidUtf8,
    /// The compressed data could not be inflated (RFC 7692 section 6.2).
    BadCompressedData,
    /// A frame longer than the configured limit.
    FrameTooLarge,
    /// A message (after inflation) longer than the configured limit.
    MessageTooLarge,
}

impl Error {
    /// The status code to send in the close frame that fails the connection.
    pub fn close_code(self) -> CloseCode {
        match self {
            Error::InvalidUtf8 | Error::BadCompressedData => CloseCode::INVALID_PAYLOAD,
            Error::FrameTooLarge | Error::MessageTooLarge => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Error::ReservedBits => "reserved bits set",
            Error::ReservedOpcode(_) => "reserved opcode",
            Error::FragmentedControlFrame => "fragmented control frame",
            Error::ControlFrameTooLong => "control frame too long",
            Error::LengthOverflow => "invalid payload length",
            Error::BadMasking => "bad masking",
            Error::UnexpectedContinuation => "continuation without a message",
            Error::ExpectedContinuation => "expected continuation frame",
            Error::CompressedContinuation => "RSV1 on continuation or control frame",
            Error::InvalidClosePayload => "invalid close payload",
            Error::InvalidCloseCode(_) => "invalid close code",
            Error::InvalidUtf8 => "invalid UTF-8",
            Error::BadCompressedData => "invalid compressed data",
            Error::FrameTooLarge => "frame too large",
            Error::MessageTooLarge => "message too large",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close {})", self.reason(), self.close_code().0)
    }
}

impl std::error::Error for Error {}
