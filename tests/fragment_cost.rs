//! A message made of thousands of 1-byte fragments costs what its size
//! justifies: the protocol core makes no allocation per fragment, so a
//! fragment flood is bounded by the message size limit like any message.
//! Allocations are counted by a global allocator, on this thread only.

use roomcast::protocol::{Connection, Event, Limits, Role};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts calls on threads that asked.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Masked client frames: `n` one-byte fragments of a text message.
fn fragments(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 7);
    for i in 0..n {
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        let fin = if i + 1 == n { 0x80 } else { 0 };
        out.extend_from_slice(&[fin | opcode, 0x80 | 1, 1, 2, 3, 4, b'a' ^ 1]);
    }
    out
}

/// Feeds `wire` in 64 KiB reads (as the event loop does) and returns the
/// message and the allocations made while doing so.
fn receive(wire: &[u8]) -> (Vec<u8>, u64) {
    let mut ws = Connection::new(Role::Server, Limits::default());
    let mut message = None;
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    for mut chunk in wire.chunks(64 * 1024) {
        while !chunk.is_empty() {
            let (used, event) = ws.read_event(chunk).unwrap();
            chunk = &chunk[used..];
            if let Some(Event::Text(data)) = event {
                message = Some(data);
            }
        }
    }
    COUNTING.with(|c| c.set(false));
    (message.expect("the message arrives"), ALLOCATIONS.with(Cell::get))
}

#[test]
fn one_byte_fragments_cost_no_allocation_each() {
    let (small, small_allocs) = receive(&fragments(1_000));
    let (large, large_allocs) = receive(&fragments(50_000));
    eprintln!("allocations: {small_allocs} for 1,000 fragments, {large_allocs} for 50,000");
    assert_eq!(small, vec![b'a'; 1_000]);
    assert_eq!(large, vec![b'a'; 50_000]);
    // Growing the message buffer by doubling: a few dozen allocations for
    // 50,000 fragments, not one per fragment.
    assert!(large_allocs <= 40, "{large_allocs} allocations for 50,000 fragments");
    assert!(
        large_allocs <= small_allocs + 12,
        "{small_allocs} → {large_allocs}: grows with the fragment count"
    );
}
