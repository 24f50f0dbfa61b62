//! permessage-deflate (RFC 7692). TEMPORARY interface shell, being replaced.

use super::error::Error;

/// Negotiated per-connection compression state.
#[derive(Debug)]
pub struct Compression {}

impl Compression {
    pub fn inflate(&mut self, _input: &[u8], _out: &mut Vec<u8>, _limit: usize) -> Result<(), Error> {
        Err(Error::BadCompressedData)
    }
    pub fn finish_message(&mut self, _out: &mut Vec<u8>, _limit: usize) -> Result<(), Error> {
        Err(Error::BadCompressedData)
    }
    pub fn compress(&mut self, _payload: &[u8]) -> Option<Vec<u8>> {
        None
    }
}
