//! The per-connection output queue.
//!
//! Frames the application sends are written straight into the queue's
//! `tail` buffer, back to back, so the messages of one loop turn leave in
//! one slice of one `writev` and cost no allocation. A connection holds a
//! queue only while it has bytes waiting: the queue (its tail buffer
//! included) comes from the worker's [`BufPool`] with the first byte and
//! goes back when it drains, so an idle connection pays one pointer for
//! it. Room broadcasts are framed once and shared: a small one is copied
//! into the tail (cheaper than a reference count and an iovec of its own)
//! while the queue is short; a large one, or any once the queue has backed
//! up, is queued by reference, so a slow member costs what it always did.
//! Other bytes (handshake and HTTP responses, pongs, close frames) are
//! queued whole as chunks of their own. Writes are vectored over the front
//! of the queue and may be partial. The byte count is what backpressure
//! policies look at.

use crate::protocol::frame::parse_header;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

/// One queued run of bytes, written whole before the next.
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

/// A shared frame up to this size is copied into the tail...
const COPY_SHARED_UP_TO: usize = 1024;
/// ...while fewer bytes than this are queued.
const COPY_WHILE_QUEUED_BELOW: usize = 16 * 1024;

/// Drained queues a worker hands from connection to connection.
#[derive(Debug, Default)]
pub struct BufPool {
    /// Boxed, not inline: a queue moves between the pool and a connection
    /// as one pointer, and a connection's handle to it is one word.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Queue>>,
    /// What `free` costs: the queues, their buffers and their handles.
    bytes: usize,
    /// How many queues at the bottom of `free` no `take` has reached since
    /// the last `trim`: what the worker did not need for a whole period.
    idle: usize,
    /// Where a small reply written at once is framed (`frame`); it never
    /// holds more than one such frame, so it stays a few KiB.
    scratch: Vec<u8>,
}

/// What a pool keeps at most: enough for every member of a large room to
/// get a queue in one loop turn, bounded per worker.
const POOL_BYTES: usize = 16 * 1024 * 1024;
/// A tail buffer larger than this is freed rather than kept (four 16 KiB
/// frames in flight must fit: a tail freed and grown again each turn costs
/// page faults, a quarter of the server in `echo -c 100 -s 16384 -d 4`).
const POOL_MAX_CAPACITY: usize = 256 * 1024;
/// A chunk list longer than this is freed rather than kept.
const POOL_MAX_CHUNKS: usize = 16;

impl BufPool {
    fn take(&mut self) -> Box<Queue> {
        let Some(queue) = self.free.pop() else {
            return Box::default();
        };
        self.bytes -= queue.cost();
        self.idle = self.idle.min(self.free.len());
        queue
    }

    fn put(&mut self, mut queue: Box<Queue>) {
        if queue.chunks.capacity() > POOL_MAX_CHUNKS {
            queue.chunks = VecDeque::new();
        }
        if queue.tail.capacity() <= POOL_MAX_CAPACITY && self.bytes + queue.cost() <= POOL_BYTES {
            queue.clear();
            self.bytes += queue.cost();
            self.free.push(queue);
        }
    }

    /// Frees the queues that sat unused since the last call (the loop's
    /// housekeeping calls it once a second), so memory a burst needed goes
    /// back once the burst is over.
    pub fn trim(&mut self) {
        for queue in self.free.drain(..self.idle) {
            self.bytes -= queue.cost();
        }
        self.free.shrink_to(self.free.len() * 2);
        self.idle = self.free.len();
    }

    /// `header` then `payload`, one after the other, in the pool's scratch
    /// buffer: a frame for one write that takes no queue.
    pub(crate) fn frame(&mut self, header: &[u8], payload: &[u8]) -> &[u8] {
        self.scratch.clear();
        self.scratch.extend_from_slice(header);
        self.scratch.extend_from_slice(payload);
        &self.scratch
    }

    /// Whether any queue is kept.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

/// A connection's output: nothing while idle, a pooled `Queue` while
/// bytes wait.
#[derive(Debug, Default)]
pub struct SendQueue {
    queue: Option<Box<Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Queued before `tail`, front first.
    chunks: VecDeque<Chunk>,
    /// The newest frames, after every chunk; whole WebSocket frames only.
    tail: Vec<u8>,
    /// Bytes of the front (the first chunk, or the tail when there is
    /// none) already written.
    written: usize,
    /// Bytes waiting, across chunks and tail.
    queued: usize,
}

impl SendQueue {
    pub fn len_bytes(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.queued)
    }

    pub fn is_empty(&self) -> bool {
        self.len_bytes() == 0
    }

    fn queue(&mut self, pool: &mut BufPool) -> &mut Queue {
        self.queue.get_or_insert_with(|| pool.take())
    }

    /// Queues bytes as a chunk of their own.
    pub fn push(&mut self, chunk: Chunk, pool: &mut BufPool) {
        if !chunk.bytes().is_empty() {
            self.queue(pool).push(chunk);
        }
    }

    /// Queues a shared frame: copied into the tail when small and the queue
    /// short, by reference otherwise.
    pub fn push_shared(&mut self, frame: &Arc<[u8]>, pool: &mut BufPool) {
        let queue = self.queue(pool);
        if frame.len() <= COPY_SHARED_UP_TO && queue.queued < COPY_WHILE_QUEUED_BELOW {
            queue.append_frame(|tail| tail.extend_from_slice(frame));
        } else {
            queue.push(Chunk::Shared(frame.clone()));
        }
    }

    /// Appends to the tail what `write` writes there: whole frames only
    /// (`drop_unsent` finds their boundaries). Returns the bytes added.
    pub fn append_frame(&mut self, pool: &mut BufPool, write: impl FnOnce(&mut Vec<u8>)) -> usize {
        self.queue(pool).append_frame(write)
    }

    /// Writes as much as the socket takes. Returns the bytes written;
    /// `WouldBlock` stops the loop without error. A drained queue goes back
    /// to `pool`.
    pub fn write_to<W: Write>(&mut self, out: &mut W, pool: &mut BufPool) -> io::Result<usize> {
        let Some(queue) = self.queue.as_mut() else {
            return Ok(0);
        };
        let result = queue.write_to(out);
        if queue.queued == 0
            && let Some(queue) = self.queue.take()
        {
            pool.put(queue);
        }
        result
    }

    /// Drops every frame not yet started (a frame partly written must be
    /// finished: the peer is inside it). Returns the bytes dropped.
    pub fn drop_unsent(&mut self) -> usize {
        self.queue.as_mut().map_or(0, |q| q.drop_unsent())
    }
}

impl Queue {
    /// What a pooled queue holds on the heap, its handle in the pool
    /// included (many small queues must not hide behind their buffers).
    fn cost(&self) -> usize {
        std::mem::size_of::<Queue>()
            + std::mem::size_of::<Box<Queue>>()
            + self.tail.capacity()
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.tail.clear();
        self.written = 0;
        self.queued = 0;
    }

    fn push(&mut self, chunk: Chunk) {
        self.seal_tail();
        self.queued += chunk.bytes().len();
        self.chunks.push_back(chunk);
    }

    fn append_frame(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> usize {
        let before = self.tail.len();
        write(&mut self.tail);
        let added = self.tail.len() - before;
        self.queued += added;
        added
    }

    fn write_to<W: Write>(&mut self, out: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while self.queued > 0 {
            // Frames appended since the last flush are one run, the common
            // case (every reply of a ping-pong echo): a plain write, without
            // filling an iovec array of MAX_IOV slices first.
            let result = if self.chunks.is_empty() {
                out.write(&self.tail[self.written..])
            } else {
                self.write_runs(out)
            };
            match result {
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
        Ok(total)
    }

    /// One `writev` of the chunks and the tail, `MAX_IOV` runs at most.
    fn write_runs<W: Write>(&self, out: &mut W) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        let runs = self.chunks.iter().map(Chunk::bytes).chain(Some(self.tail.as_slice()));
        for bytes in runs.filter(|b| !b.is_empty()).take(MAX_IOV) {
            slices[n] = IoSlice::new(if n == 0 { &bytes[self.written..] } else { bytes });
            n += 1;
        }
        out.write_vectored(&slices[..n])
    }

    fn drop_unsent(&mut self) -> usize {
        let before = self.queued;
        if self.written > 0 && !self.chunks.is_empty() {
            self.chunks.truncate(1);
            self.tail.clear();
        } else {
            let keep = if self.written > 0 {
                self.end_of_frame_at(self.written)
            } else {
                0
            };
            self.chunks.clear();
            self.tail.truncate(keep);
        }
        self.queued = self.chunks.iter().map(|c| c.bytes().len()).sum::<usize>() + self.tail.len() - self.written;
        before - self.queued
    }

    /// Where the tail's frame that holds byte `at` ends.
    fn end_of_frame_at(&self, at: usize) -> usize {
        let mut end = 0;
        while end < at {
            match parse_header(&self.tail[end..]) {
                Ok(Some((header, len))) => end += len + header.payload_len as usize,
                // Only whole frames are appended: unreachable, but keep it all.
                _ => return self.tail.len(),
            }
        }
        end.min(self.tail.len())
    }

    /// The tail, once a chunk must follow it, becomes a chunk itself.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(Chunk::Owned(std::mem::take(&mut self.tail)));
        }
    }

    /// Takes `n` written bytes off the front. A written owned chunk's
    /// buffer becomes the tail's when the tail has none (a sealed tail
    /// comes back that way); other written chunks are dropped.
    fn consume(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let front = match self.chunks.front() {
                Some(chunk) => chunk.bytes().len(),
                None => self.tail.len(),
            };
            let left = front - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            match self.chunks.pop_front() {
                Some(Chunk::Owned(mut buf)) if self.tail.capacity() == 0 && buf.capacity() <= POOL_MAX_CAPACITY => {
                    buf.clear();
                    self.tail = buf;
                }
                Some(_) => {}
                None => self.tail.clear(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{Opcode, encode_server_frame};

    #[test]
    fn the_pool_gives_back_what_a_period_did_not_use() {
        let mut pool = BufPool::default();
        for _ in 0..4 {
            pool.put(Box::new(Queue {
                tail: Vec::with_capacity(100),
                ..Queue::default()
            }));
        }
        pool.trim(); // the first period starts: nothing is known to be idle yet
        assert_eq!(pool.free.len(), 4);
        let used = pool.take();
        pool.put(used);
        pool.trim();
        assert_eq!(pool.free.len(), 1, "only the queue the period used is kept");
        assert_eq!(pool.bytes, pool.free[0].cost());
        pool.trim();
        assert!(pool.is_empty());
        assert_eq!(pool.bytes, 0);
    }

    #[test]
    fn many_small_queues_count_against_the_pool_bound() {
        let mut pool = BufPool::default();
        for _ in 0..POOL_BYTES / 64 {
            pool.put(Box::default());
        }
        assert!(pool.bytes <= POOL_BYTES);
        assert!(pool.free.len() <= POOL_BYTES / std::mem::size_of::<Queue>());
    }

    /// A writer that takes at most `cap` bytes per call, then blocks.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        calls_left: usize,
        vectored: usize,
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
            self.vectored += 1;
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.write(&all)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn trickle(cap: usize, calls_left: usize) -> Trickle {
        Trickle {
            got: Vec::new(),
            cap,
            calls_left,
            vectored: 0,
        }
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        encode_server_frame(Opcode::Text, false, payload)
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut pool = BufPool::default();
        let small: Arc<[u8]> = Arc::from(&b"shared"[..]);
        let large: Arc<[u8]> = Arc::from(vec![b'L'; 2000]);
        let mut q = SendQueue::default();
        q.push(Chunk::Owned(b"hello ".to_vec()), &mut pool);
        q.push_shared(&small, &mut pool);
        q.push(Chunk::Owned(Vec::new()), &mut pool);
        q.append_frame(&mut pool, |t| t.extend_from_slice(b" world"));
        q.push_shared(&large, &mut pool);
        q.append_frame(&mut pool, |t| t.extend_from_slice(b"!"));
        assert_eq!(q.len_bytes(), 2019);
        let mut w = trickle(4, 2);
        assert_eq!(q.write_to(&mut w, &mut pool).unwrap(), 8);
        assert_eq!(q.len_bytes(), 2011);
        w.calls_left = 1000;
        q.write_to(&mut w, &mut pool).unwrap();
        let mut expected = b"hello shared world".to_vec();
        expected.extend(vec![b'L'; 2000]);
        expected.push(b'!');
        assert_eq!(w.got, expected);
        assert!(q.is_empty());
        assert!(q.queue.is_none(), "a drained connection holds no queue");
        assert_eq!(pool.free.len(), 1, "it went back to the pool");
        assert!(pool.free[0].tail.capacity() > 0, "with its tail buffer");
    }

    #[test]
    fn frames_in_the_tail_alone_go_out_as_plain_writes_and_resume_mid_frame() {
        let mut pool = BufPool::default();
        let mut q = SendQueue::default();
        q.append_frame(&mut pool, |t| t.extend_from_slice(&frame(b"ping")));
        q.append_frame(&mut pool, |t| t.extend_from_slice(&frame(b"pong!")));
        let mut w = trickle(5, 1);
        assert_eq!(q.write_to(&mut w, &mut pool).unwrap(), 5);
        assert_eq!(q.len_bytes(), 8);
        w.calls_left = 1000;
        assert_eq!(q.write_to(&mut w, &mut pool).unwrap(), 8);
        assert_eq!(w.got, [frame(b"ping"), frame(b"pong!")].concat());
        assert_eq!(w.vectored, 0, "one run needs no iovec");
        assert!(q.queue.is_none());
    }

    #[test]
    fn small_shared_frames_are_copied_only_while_the_queue_is_short() {
        let mut pool = BufPool::default();
        let small: Arc<[u8]> = Arc::from(frame(b"x").as_slice());
        let mut q = SendQueue::default();
        while q.len_bytes() < COPY_WHILE_QUEUED_BELOW {
            q.push_shared(&small, &mut pool);
        }
        assert!(q.queue.as_ref().unwrap().chunks.is_empty(), "copied into the tail");
        q.push_shared(&small, &mut pool);
        assert_eq!(Arc::strong_count(&small), 2, "a backed-up queue holds references");
    }

    #[test]
    fn dropping_unsent_frames_keeps_the_one_in_progress() {
        let mut pool = BufPool::default();
        // Frames in the tail: the boundaries are found by their headers.
        let mut q = SendQueue::default();
        for part in [&b"first"[..], b"second", b"third"] {
            q.append_frame(&mut pool, |t| t.extend_from_slice(&frame(part)));
        }
        let mut w = trickle(3, 1);
        q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(q.drop_unsent(), 8 + 7, "second and third were not started");
        w.calls_left = 10;
        q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(w.got, frame(b"first"), "the frame in progress is finished");
        assert_eq!(q.drop_unsent(), 0);
        assert!(q.is_empty());

        // Chunks: the front one is kept whole.
        let mut q = SendQueue::default();
        for part in [&b"first "[..], b"second ", b"third"] {
            q.push(Chunk::Owned(part.to_vec()), &mut pool);
        }
        q.append_frame(&mut pool, |t| t.extend_from_slice(&frame(b"tail")));
        let mut w = trickle(3, 1);
        q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(q.drop_unsent(), 12 + 6);
        w.calls_left = 10;
        q.write_to(&mut w, &mut pool).unwrap();
        assert_eq!(w.got, b"first ");

        // Nothing started: everything goes.
        let mut q = SendQueue::default();
        q.append_frame(&mut pool, |t| t.extend_from_slice(&frame(b"a")));
        q.push(Chunk::Owned(b"b".to_vec()), &mut pool);
        assert_eq!(q.drop_unsent(), 4);
        assert!(q.is_empty());
    }
}
