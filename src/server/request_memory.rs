//! `queued.max.request.bytes`: the memory the requests in flight on a shard may hold,
//! Kafka's back-pressure on reading. A connection reserves a request's size as soon as its
//! size prefix arrives, before the buffer for it is allocated; when the shard's share is
//! taken it stops reading (the client's socket fills and its sends wait) until requests
//! in flight are answered. The reservation is held until the response is written.
//!
//! The broker's budget is split evenly among its data shards (each reserves only its own
//! share: no cross-shard accounting on the request path). A request larger than the whole
//! share reserves the whole share, so it waits for the others but never forever.
//!
//! Every release wakes every waiter, and each checks again: a waiter that gives up (its
//! connection closed) can never leave the others asleep with memory free. (glommio's
//! semaphore hands a release to the first waiters it fits and wakes only them; one of
//! those cancelled before it ran would strand the rest.)

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::channel::oneshot;

pub struct RequestMemory {
    capacity: u64,
    available: Cell<u64>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

/// Memory reserved for one request; given back when dropped.
pub type Reservation = Option<Held>;

/// Bytes taken from a shard's budget until dropped.
#[derive(Debug)]
pub struct Held {
    memory: Rc<RequestMemory>,
    units: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.memory.release(self.units);
    }
}

impl std::fmt::Debug for RequestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMemory").field("capacity", &self.capacity).field("available", &self.available()).finish()
    }
}

impl RequestMemory {
    /// `capacity` bytes for this shard; `None` when the budget is unbounded (-1).
    pub fn new(capacity: Option<u64>) -> Option<Rc<RequestMemory>> {
        let capacity = capacity?.max(1);
        Some(Rc::new(RequestMemory { capacity, available: Cell::new(capacity), waiters: RefCell::new(Vec::new()) }))
    }

    /// Waits until `len` bytes (at most the whole share) are free and reserves them.
    pub async fn reserve(self: &Rc<Self>, len: usize) -> Reservation {
        let units = (len as u64).clamp(1, self.capacity);
        loop {
            let available = self.available.get();
            if available >= units {
                self.available.set(available - units);
                return Some(Held { memory: self.clone(), units });
            }
            let (tx, rx) = oneshot::channel();
            self.waiters.borrow_mut().push(tx);
            // Woken by any release (or never, if this future is dropped first: nothing lost).
            let _ = rx.await;
        }
    }

    fn release(&self, units: u64) {
        let available = self.available.get() + units;
        crate::invariant!(available <= self.capacity, "request memory released past its capacity");
        self.available.set(available.min(self.capacity));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }

    /// Bytes not reserved now (for tests and logs).
    pub fn available(&self) -> u64 {
        self.available.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn a_waiter_that_gives_up_leaves_no_one_asleep() {
        crate::test_support::run_on_executor(|| async {
            let memory = RequestMemory::new(Some(100)).expect("bounded");
            let held = memory.reserve(80).await;
            // Two wait; the first gives up before memory returns.
            let mut first = Box::pin(memory.reserve(50));
            let mut second = Box::pin(memory.reserve(30));
            assert!((&mut first).now_or_never().is_none());
            assert!((&mut second).now_or_never().is_none());
            drop(first);
            drop(held);
            let got = second.await;
            assert!(got.is_some());
            assert_eq!(memory.available(), 70);
            // Larger than the whole share: takes the share.
            drop(got);
            let all = memory.reserve(1_000).await;
            assert_eq!(memory.available(), 0);
            drop(all);
            assert_eq!(memory.available(), 100);
        });
    }
}
