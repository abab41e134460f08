//! Data shards: one glommio executor each, owning a set of partitions and the client
//! connections the kernel hands it. (The control shard is its own actor: `controller`.)
//!
//! Shards share nothing mutable. They talk over bounded glommio shared channels carrying
//! typed requests with one-shot replies (`message`): [`DataRequest`]s between data shards
//! and from the control shard, [`ControlRequest`]s to the control shard. A request for
//! partitions owned by several shards is split by owner, one message per shard (`route`).
//! Each data shard keeps the latest [`MetadataImage`] the control shard published.
//!
//! What a shard keeps is routing and per-shard bookkeeping: its partition table, image,
//! connection and long-poll counts, producer-id block. The partitions' own work is
//! `partition::Partition`'s; the consumer groups are the [`GroupCoordinator`]'s, the
//! transactions the [`TxnCoordinator`]'s.
//!
//! Modules: `message` (the requests), `route` (split by owner, send, merge), `serve` (the
//! owner's side of each request), `housekeeping` (applying images, periodic syncs, expiry,
//! compaction, close).

pub mod brokers;
pub mod housekeeping;
pub mod message;
pub mod route;
pub mod serve;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use glommio::channels::shared_channel::ConnectedSender;

use crate::cluster::{ImageCell, MetadataImage};
use crate::config::Config;
use crate::group::coordinator::GroupCoordinator;
use crate::partition::{Partition, PartitionTable};
use crate::txn::coordinator::TxnCoordinator;
use crate::types::{ShardId, TopicPartition};
use kafka_protocol::ResponseError;
pub use message::{ControlRequest, DataRequest};

/// Executor index of the control shard.
pub const CONTROL: usize = 0;

/// Producer ids a data shard reserves at once (one metadata-log write per block).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Executor index of a data shard.
pub fn executor_of(shard: ShardId) -> usize {
    shard.0 + 1
}

/// Where a data shard's messages go: the other data shards (by shard id; `None` for itself)
/// and the control shard.
pub struct Peers {
    pub data: Vec<Option<Rc<ConnectedSender<DataRequest>>>>,
    pub control: Rc<ConnectedSender<ControlRequest>>,
}

/// A broker's dynamic configs as last taken from the image, and the config they make.
/// The config is this shard's own (`Rc`): read per request, its count must not bounce
/// between cores as a shared `Arc`'s would.
type EffectiveConfig = (Vec<(String, String)>, Rc<Config>);

/// The state of one data shard, shared by the tasks of its executor (`Rc`, never across threads).
pub struct Shard {
    pub id: ShardId,
    pub config: Arc<Config>,
    /// Whether the previous stop was clean (recovery may skip scans).
    pub clean_start: bool,
    peers: Peers,
    image: Rc<ImageCell>,
    partitions: Rc<PartitionTable>,
    /// The consumer groups this shard coordinates.
    pub groups: Rc<GroupCoordinator>,
    /// The transactional ids this shard coordinates.
    pub txns: Rc<TxnCoordinator>,
    /// Connections to the other brokers (markers, transaction verification).
    pub brokers: brokers::BrokerClients,
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
    /// When this node's broker last heard from the active controller (a heartbeat it
    /// answered, timed from its sending); `None` before the first.
    controller_contact: Cell<Option<std::time::Instant>>,
    /// Whether this shard's leaders last saw the controller as lost (for the log line).
    controller_lost: Cell<bool>,
    /// `__consumer_offsets` and `__transaction_state` partitions whose groups and
    /// transactions load once the prepared image is shown.
    coordinators_to_load: std::cell::RefCell<Vec<Rc<Partition>>>,
    /// `config` with this broker's dynamic configs from the image over it, and those
    /// dynamic configs (to notice when they change).
    effective: std::cell::RefCell<EffectiveConfig>,
    /// Partitions this shard should hold but could not open (the error, for the log):
    /// clients get KAFKA_STORAGE_ERROR for them; every new image tries again.
    offline: std::cell::RefCell<HashMap<TopicPartition, String>>,
}

impl Shard {
    pub fn new(
        id: ShardId,
        config: Arc<Config>,
        clean_start: bool,
        peers: Peers,
        connections_total: Arc<AtomicUsize>,
    ) -> Self {
        let image = Rc::new(ImageCell::new(MetadataImage::new(peers.data.len())));
        let partitions = Rc::new(PartitionTable::default());
        let groups = Rc::new(GroupCoordinator::new(id, config.clone(), image.clone(), partitions.clone()));
        let txns = Rc::new(TxnCoordinator::new(id, config.clone(), image.clone(), partitions.clone()));
        let brokers = brokers::BrokerClients::new(&config);
        Self {
            id,
            effective: std::cell::RefCell::new((Vec::new(), Rc::new((*config).clone()))),
            config,
            clean_start,
            peers,
            image,
            partitions,
            groups,
            txns,
            brokers,
            connections_total,
            connections_here: Cell::new(0),
            fetch_waiters: Cell::new(0),
            stopping: Cell::new(false),
            producer_ids: Cell::new((0, 0)),
            controller_contact: Cell::new(None),
            controller_lost: Cell::new(false),
            coordinators_to_load: std::cell::RefCell::new(Vec::new()),
            offline: std::cell::RefCell::new(HashMap::new()),
        }
    }

    /// Whether this node's broker has not heard from the active controller for longer than
    /// its lease (as of the last `check_isr`).
    pub fn controller_lost(&self) -> bool {
        self.controller_lost.get()
    }

    /// Executor index of this shard (for logs and events).
    pub fn executor(&self) -> usize {
        executor_of(self.id)
    }

    /// The broker settings in force: the static ones with the dynamic broker configs
    /// (cluster-wide, then this broker's) over them.
    pub fn effective_config(&self) -> Rc<Config> {
        self.effective.borrow().1.clone()
    }

    /// Takes the dynamic broker configs of `image`; whether they changed.
    fn refresh_effective_config(&self, image: &MetadataImage) -> bool {
        let dynamic: Vec<(String, String)> = image
            .dynamic_broker_configs(self.config.node_id)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if self.effective.borrow().0 == dynamic {
            return false;
        }
        match self.config.with_dynamic(dynamic.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(config) => {
                if self.id.0 == 0 {
                    tracing::info!(configs = ?dynamic, "dynamic broker configs applied");
                }
                *self.effective.borrow_mut() = (dynamic, Rc::new(config));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "dynamic broker configs refused; the previous ones stay in force");
                self.effective.borrow_mut().0 = dynamic;
                false
            }
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.get()
    }

    pub fn data_shards(&self) -> usize {
        self.peers.data.len()
    }

    /// The partition if this shard has it. A partition another shard owns is a routing bug:
    /// it is refused (as if absent) with an error logged.
    /// What a client asking for `tp`, which this shard does not hold open, is told: the
    /// partition is here but its log could not be opened, or it is not here at all.
    pub fn missing_partition_error(&self, tp: &TopicPartition) -> ResponseError {
        if self.offline.borrow().contains_key(tp) {
            ResponseError::KafkaStorageError
        } else {
            ResponseError::UnknownTopicOrPartition
        }
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<Rc<Partition>> {
        // From the name alone: cloning the image's `Arc` here, per partition, would bounce
        // its reference count between cores.
        let owner = crate::cluster::image::owner_of(tp, self.data_shards());
        if !crate::invariant!(owner == self.id, "shard {} asked for {tp}, which shard {} owns", self.id.0, owner.0) {
            return None;
        }
        self.partitions.get(tp)
    }

    pub fn partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.all()
    }

    /// Sends `request` to data shard `to`. Fails only when that shard has stopped.
    pub async fn send(&self, to: ShardId, request: DataRequest) -> Result<(), ShardGone> {
        let sender = self.peers.data.get(to.0).and_then(|p| p.clone()).ok_or(ShardGone(executor_of(to)))?;
        sender.send(request).await.map_err(|_| ShardGone(executor_of(to)))
    }

    /// Sends `request` to the control shard. Fails only when it has stopped.
    pub async fn send_control(&self, request: ControlRequest) -> Result<(), ShardGone> {
        self.peers.control.send(request).await.map_err(|_| ShardGone(CONTROL))
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
            self.send_control(ControlRequest::AllocateProducerIds { count: PRODUCER_ID_BLOCK, reply }).await.ok()?;
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
        self.groups.release_waiters();
    }
}

/// The executor a message was for has stopped (only during shutdown).
#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);
