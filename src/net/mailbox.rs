//! A hand-off queue into one event loop, woken through its `mio::Waker`.
//!
//! Senders append whole batches under a mutex (one lock per batch, not per
//! item); the receiving loop swaps the queue out once per turn. The waker is
//! only rung when the receiver is parked in `poll`: a loop that is busy
//! finds the work on its next turn without a system call.

use mio::Waker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Larger empty queues are given back by `shrink_idle`.
pub const IDLE_CAPACITY: usize = 64;

#[derive(Debug)]
pub struct Mailbox<T> {
    queue: Mutex<Vec<T>>,
    /// The receiver is (about to be) blocked in `poll`.
    parked: AtomicBool,
    waker: Arc<Waker>,
}

impl<T> Mailbox<T> {
    pub fn new(waker: Arc<Waker>) -> Self {
        Mailbox {
            queue: Mutex::new(Vec::new()),
            parked: AtomicBool::new(false),
            waker,
        }
    }

    fn queue(&self) -> MutexGuard<'_, Vec<T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves every item of `items` into the mailbox (leaving `items` empty,
    /// its allocation kept when it can be), and wakes the receiver if it is
    /// parked.
    pub fn send_all(&self, items: &mut Vec<T>) {
        if items.is_empty() {
            return;
        }
        {
            let mut queue = self.queue();
            if queue.is_empty() && queue.capacity() <= items.capacity() {
                std::mem::swap(&mut *queue, items);
            } else {
                queue.append(items);
            }
        }
        self.wake_if_parked();
    }

    pub fn send(&self, item: T) {
        self.queue().push(item);
        self.wake_if_parked();
    }

    /// Rings the receiver's waker if it is parked (or about to be).
    pub fn wake_if_parked(&self) {
        if self.parked.swap(false, Ordering::SeqCst) {
            // A failed wake leaves the work for the receiver's next turn.
            let _ = self.waker.wake();
        }
    }

    /// Rings the receiver's waker whatever it is doing.
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Takes everything waiting; `out` should be empty (its allocation is
    /// given to the queue in exchange).
    pub fn take(&self, out: &mut Vec<T>) {
        let mut queue = self.queue();
        if out.is_empty() {
            std::mem::swap(&mut *queue, out);
        } else {
            out.append(&mut queue);
        }
    }

    /// The receiver is about to block: from now on senders wake it. Returns
    /// false (and stays unparked) if work is already waiting.
    pub fn park(&self) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        if self.queue().is_empty() {
            true
        } else {
            self.parked.store(false, Ordering::SeqCst);
            false
        }
    }

    /// Gives back the queue's memory if it is empty and large (after a
    /// burst: the queue keeps the capacity of the largest batch otherwise).
    pub fn shrink_idle(&self) {
        let mut queue = self.queue();
        if queue.is_empty() && queue.capacity() > IDLE_CAPACITY {
            *queue = Vec::new();
        }
    }

    /// The receiver is running again; senders need not wake it.
    pub fn unpark(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    #[test]
    fn a_parked_receiver_is_woken_and_a_busy_one_is_not() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(7)).unwrap());
        let mailbox = Arc::new(Mailbox::new(waker));
        let mut events = Events::with_capacity(4);

        // Busy (not parked): the item waits without a wake.
        mailbox.send(1);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty(), "no wake for a running receiver");
        assert!(!mailbox.park(), "work is waiting: do not block");
        let mut got = Vec::new();
        mailbox.take(&mut got);
        assert_eq!(got, [1]);

        // Parked: a send from another thread wakes the poll.
        assert!(mailbox.park());
        let sender = mailbox.clone();
        let t = std::thread::spawn(move || sender.send_all(&mut vec![2, 3]));
        poll.poll(&mut events, Some(Duration::from_secs(10))).unwrap();
        t.join().unwrap();
        assert_eq!(events.iter().next().map(|e| e.token()), Some(Token(7)));
        mailbox.unpark();
        got.clear();
        mailbox.take(&mut got);
        assert_eq!(got, [2, 3]);
    }
}
