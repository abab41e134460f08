//! Shards: one glommio executor each. Executor 0 is the control shard (metadata); executors
//! 1..=N are data shards that own partitions and client connections.
//!
//! Shards share nothing mutable. They talk over a full mesh of bounded glommio shared
//! channels carrying [`ShardRequest`]s with one-shot replies; a request for partitions owned
//! by several shards is split by owner, one message per shard (see `route`). Each data shard
//! keeps its own copy of the latest [`MetadataImage`], published by the control shard.

pub mod control;
pub mod groups;
pub mod message;
pub mod ops;
pub mod route;
pub mod runtime;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use glommio::channels::shared_channel::ConnectedSender;

use crate::cluster::MetadataImage;
use crate::config::Config;
use crate::partition::Partition;
use crate::types::{ShardId, TopicPartition};
pub use message::ShardRequest;

/// Executor index of the control shard.
pub const CONTROL: usize = 0;

/// Producer ids a data shard reserves at once (one metadata-log write per block).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Executor index of a data shard.
pub fn executor_of(shard: ShardId) -> usize {
    shard.0 + 1
}

/// The state of one shard, shared by the tasks of its executor (`Rc`, never across threads).
pub struct Shard {
    /// Executor index (0 = control).
    pub index: usize,
    pub config: Arc<Config>,
    /// Whether the previous stop was clean (recovery may skip scans).
    pub clean_start: bool,
    /// Senders to every other executor, by executor index (`None` for this one).
    peers: Vec<Option<Rc<ConnectedSender<ShardRequest>>>>,
    image: RefCell<Arc<MetadataImage>>,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    /// Open client connections on all shards (checked against `max.connections`).
    pub connections_total: Arc<AtomicUsize>,
    /// Open client connections on this shard.
    pub connections_here: Cell<usize>,
    /// Long-poll fetches parked by this shard's connections.
    pub fetch_waiters: Cell<usize>,
    /// Set when the shard drains for shutdown: long polls stop waiting.
    stopping: Cell<bool>,
    /// Producer ids reserved for this shard and not yet handed out: `[next, end)`.
    producer_ids: Cell<(i64, i64)>,
    /// The consumer groups this shard coordinates.
    pub groups: groups::GroupCoordinator,
}

impl Shard {
    pub fn new(
        index: usize,
        config: Arc<Config>,
        clean_start: bool,
        peers: Vec<Option<Rc<ConnectedSender<ShardRequest>>>>,
        connections_total: Arc<AtomicUsize>,
    ) -> Self {
        let data_shards = peers.len() - 1;
        Self {
            index,
            config,
            clean_start,
            peers,
            image: RefCell::new(Arc::new(MetadataImage::new(data_shards))),
            partitions: RefCell::new(HashMap::new()),
            connections_total,
            connections_here: Cell::new(0),
            fetch_waiters: Cell::new(0),
            stopping: Cell::new(false),
            producer_ids: Cell::new((0, 0)),
            groups: Default::default(),
        }
    }

    /// This shard's id among data shards (`None` for the control shard).
    pub fn data_id(&self) -> Option<ShardId> {
        self.index.checked_sub(1).map(ShardId)
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    pub fn set_image(&self, image: Arc<MetadataImage>) {
        *self.image.borrow_mut() = image;
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(tp).cloned()
    }

    pub fn partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    pub fn insert_partition(&self, partition: Rc<Partition>) {
        self.partitions.borrow_mut().insert(partition.tp.clone(), partition);
    }

    pub fn remove_partition(&self, tp: &TopicPartition) -> Option<Rc<Partition>> {
        self.partitions.borrow_mut().remove(tp)
    }

    /// Sends `request` to executor `to`. Fails only when that executor has stopped.
    pub async fn send(&self, to: usize, request: ShardRequest) -> Result<(), ShardGone> {
        let sender = self.peers.get(to).and_then(|p| p.clone()).ok_or(ShardGone(to))?;
        sender.send(request).await.map_err(|_| ShardGone(to))
    }

    /// A new producer id: from this shard's block, reserving a new block from the control
    /// shard when it runs out. `None` when the control shard cannot reserve one.
    pub async fn next_producer_id(&self) -> Option<i64> {
        loop {
            let (next, end) = self.producer_ids.get();
            if next < end {
                self.producer_ids.set((next + 1, end));
                return Some(next);
            }
            let (reply, rx) = futures::channel::oneshot::channel();
            self.send(CONTROL, ShardRequest::AllocateProducerIds { count: PRODUCER_ID_BLOCK, reply }).await.ok()?;
            let (start, end) = rx.await.ok()??;
            // Another task may have refilled the block meanwhile; the newer block wins.
            if self.producer_ids.get().1 < end {
                self.producer_ids.set((start, end));
            }
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Starts the drain: parked fetches are woken and new ones no longer wait.
    pub fn begin_stopping(&self) {
        self.stopping.set(true);
        for p in self.partitions() {
            p.notify();
        }
        self.release_group_waiters();
    }

    pub fn executors(&self) -> usize {
        self.peers.len()
    }
}

/// The executor a message was for has stopped (only during shutdown).
#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);
