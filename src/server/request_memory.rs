//! `queued.max.request.bytes`: the memory the requests in flight on a shard may hold,
//! Kafka's back-pressure on reading. A connection reserves a request's size as soon as its
//! size prefix arrives, before the buffer for it is allocated; when the shard's share is
//! taken it stops reading (the client's socket fills and its sends wait) until requests
//! in flight are answered. The reservation is held until the response is written.
//!
//! The broker's budget is split evenly among its data shards (each reserves only its own
//! share: no cross-shard accounting on the request path). A request larger than the whole
//! share reserves the whole share, so it waits for the others but never forever.

use std::rc::Rc;

use glommio::sync::{Semaphore, StaticPermit};

pub struct RequestMemory {
    bytes: Rc<Semaphore>,
    capacity: u64,
}

/// Memory reserved for one request; given back when dropped.
pub type Reservation = Option<StaticPermit>;

impl std::fmt::Debug for RequestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMemory").field("capacity", &self.capacity).field("available", &self.available()).finish()
    }
}

impl RequestMemory {
    /// `capacity` bytes for this shard; `None` when the budget is unbounded (-1).
    pub fn new(capacity: Option<u64>) -> Option<Rc<RequestMemory>> {
        let capacity = capacity?.max(1);
        Some(Rc::new(RequestMemory { bytes: Rc::new(Semaphore::new(capacity)), capacity }))
    }

    /// Waits until `len` bytes (at most the whole share) are free and reserves them.
    /// `None` only when the semaphore is closed, which this module never does.
    pub async fn reserve(&self, len: usize) -> Reservation {
        let units = (len as u64).clamp(1, self.capacity);
        self.bytes.acquire_static_permit(units).await.ok()
    }

    /// Bytes not reserved now (for tests and logs).
    pub fn available(&self) -> u64 {
        self.bytes.available()
    }
}
