//! The per-connection output queue.
//!
//! Frames are queued whole, either owned or shared: a room broadcast is
//! framed once and the same reference-counted bytes sit in every member's
//! queue. Writes are vectored over the front of the queue and may be
//! partial. The byte count is what backpressure policies look at.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

/// One queued frame (or several frames written back to back).
#[derive(Clone, Debug)]
pub enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

/// How many slices one `writev` call takes at most.
const MAX_IOV: usize = 64;

#[derive(Debug, Default)]
pub struct SendQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    written: usize,
    /// Bytes waiting, across all chunks.
    queued: usize,
}

impl SendQueue {
    pub fn len_bytes(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    pub fn push(&mut self, chunk: Chunk) {
        let len = chunk.bytes().len();
        if len > 0 {
            self.queued += len;
            self.chunks.push_back(chunk);
        }
    }

    /// Writes as much as the socket takes. Returns the bytes written;
    /// `WouldBlock` stops the loop without error.
    pub fn write_to<W: Write>(&mut self, out: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOV).enumerate() {
                let bytes = chunk.bytes();
                slices[n] = IoSlice::new(if i == 0 { &bytes[self.written..] } else { bytes });
                n += 1;
            }
            match out.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    total += written;
                    self.consume(written);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.chunks.is_empty() {
            // Release the ring's memory once idle: most connections are idle.
            self.chunks = VecDeque::new();
        }
        Ok(total)
    }

    /// Drops every frame not yet started (a frame partly written must be
    /// finished: the peer is inside it). Returns the bytes dropped.
    pub fn drop_unsent(&mut self) -> usize {
        let keep = usize::from(self.written > 0).min(self.chunks.len());
        let dropped: usize = self.chunks.drain(keep..).map(|c| c.bytes().len()).sum();
        self.queued -= dropped;
        dropped
    }

    fn consume(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let front = self.chunks.front().expect("written bytes were queued").bytes().len();
            let left = front - self.written;
            if n >= left {
                n -= left;
                self.written = 0;
                self.chunks.pop_front();
            } else {
                self.written += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call, then blocks.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let n = buf.len().min(self.cap);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        /// Gathers across slices, like `writev` on a socket.
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.write(&all)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let shared: Arc<[u8]> = Arc::from(&b"shared"[..]);
        let mut q = SendQueue::default();
        q.push(Chunk::Owned(b"hello ".to_vec()));
        q.push(Chunk::Shared(shared.clone()));
        q.push(Chunk::Owned(Vec::new()));
        q.push(Chunk::Owned(b" world".to_vec()));
        assert_eq!(q.len_bytes(), 18);
        let mut w = Trickle {
            got: Vec::new(),
            cap: 4,
            calls_left: 2,
        };
        assert_eq!(q.write_to(&mut w).unwrap(), 8);
        assert_eq!(q.len_bytes(), 10);
        w.calls_left = 100;
        q.write_to(&mut w).unwrap();
        assert_eq!(w.got, b"hello shared world");
        assert!(q.is_empty());
    }

    #[test]
    fn dropping_unsent_frames_keeps_the_one_in_progress() {
        let mut q = SendQueue::default();
        for part in [&b"first "[..], b"second ", b"third"] {
            q.push(Chunk::Owned(part.to_vec()));
        }
        let mut w = Trickle {
            got: Vec::new(),
            cap: 3,
            calls_left: 1,
        };
        q.write_to(&mut w).unwrap();
        assert_eq!(q.drop_unsent(), 12, "second and third were not started");
        w.calls_left = 10;
        q.write_to(&mut w).unwrap();
        assert_eq!(w.got, b"first ", "the frame in progress is finished");
        assert_eq!(q.drop_unsent(), 0);
        assert!(q.is_empty());
    }
}
