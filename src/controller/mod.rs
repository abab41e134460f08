//! The control shard, an actor of its own. On a node with the controller role it is a voter
//! of the metadata quorum (raft-rs, `quorum`, over `raft_storage`, talking to the other
//! voters through `transport`); every voter applies the committed metadata records to its
//! image and publishes it to its data shards. A broker-only node follows the committed log
//! as an observer instead (`observer`). So every node holds the same image at the same
//! offset. The voter that leads the quorum is the active controller: it alone decides
//! changes (`topics`: topics and placement; `brokers`: registrations and fencing;
//! producer-id blocks), validated with Kafka's rules and error codes and committed through
//! the quorum. `rpc` is what it answers over the controller listener.
//!
//! On a node with the broker role it is also the broker's link to the active controller
//! (`lifecycle`: registration, heartbeats, controlled shutdown; `remote`: topic changes and
//! producer ids forwarded from the data shards). When the active controller is this node,
//! those calls are made in place; otherwise they go to it over the controller listener.
//!
//! Runs on executor 0; state is borrowed in short synchronous sections, never across an
//! `.await`. Changes the active controller decides are serialised by one permit (`lock`).

mod brokers;
mod checkpoint;
mod configs;
mod lifecycle;
mod observer;
pub mod partitions;
mod quorum;
mod raft_storage;
mod remote;
mod rpc;
mod slog_bridge;
mod topics;
pub mod transport;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::sync::Semaphore;
use kafka_protocol::ResponseError;
use tracing::{debug, error, info, warn};

use self::brokers::BrokerSessions;
use self::quorum::{Quorum, QuorumError, QuorumTiming};
use self::raft_storage::{RaftStorage, RaftStorageError};
use self::remote::{RemoteController, Route};
use self::transport::{Identity, PeerLinks, TransportError};
pub use brokers::{Beat, Heartbeat};
pub use configs::ConfigOutcome;
pub use lifecycle::BrokerLifecycle;
pub use quorum::QuorumStatus;
pub use rpc::{MetadataFetch, METADATA_TOPIC};
pub use topics::{valid_topic_name, TOPIC_NAME_BYTES_MAX};

use crate::client::with_timeout;
use crate::cluster::metadata_log::MetadataLog;
use crate::cluster::records::{decode_records, encode_records, MetadataRecord};
use crate::cluster::{ImageCell, MetadataImage};
use crate::config::{Config, Voter};
use crate::protocol::envelope::ClientOrigin;
use crate::replication::ReplicaFetchers;
use crate::shard::message::{
    answer_later, ControlRequest, DataRequest, NewPartitions, NewTopic, TopicOutcome, TopicRef,
};

/// The exit status of a node whose metadata quorum could not write its log.
pub const METADATA_STORAGE_FAILED_EXIT: i32 = 75;

/// How often a lone voter whose metadata storage failed tries to reopen its quorum.
const QUORUM_REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// The Raft id of node `node_id` (Raft ids start at 1; Kafka's node ids at 0).
fn raft_id(node_id: i32) -> u64 {
    node_id.max(0) as u64 + 1
}

fn node_id(raft_id: u64) -> i32 {
    raft_id.saturating_sub(1) as i32
}

/// The quorum's clock and its timing in ticks, from the Kafka-named settings.
/// The Raft ids of the voters (`controller.quorum.voters`, or this node alone).
fn raft_ids(config: &Config) -> Vec<u64> {
    if config.voters.is_empty() {
        vec![raft_id(config.node_id)]
    } else {
        config.voters.iter().map(|v| raft_id(v.node_id)).collect()
    }
}

fn quorum_timing(config: &Config) -> (Duration, QuorumTiming) {
    let tick_ms = (config.quorum_election_timeout_ms / 10).clamp(5, 100);
    let ticks = |ms: u64| ((ms / tick_ms).max(2)) as usize;
    let election_ticks = ticks(config.quorum_election_timeout_ms);
    let min_election_ticks = ticks(config.quorum_fetch_timeout_ms).max(election_ticks);
    let timing = QuorumTiming {
        election_ticks,
        min_election_ticks,
        max_election_ticks: min_election_ticks + election_ticks,
        heartbeat_ticks: (election_ticks / 5).max(1),
    };
    (Duration::from_millis(tick_ms), timing)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    RaftStorage(#[from] RaftStorageError),
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    #[error("metadata snapshot: {0}")]
    Record(#[from] crate::cluster::records::RecordError),
    #[error("the metadata log could not be written")]
    MetadataLogWrite,
    #[error("migrating the single-node metadata log: {0}")]
    Legacy(#[from] std::io::Error),
}

/// Why a metadata change did not take effect.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CommitError {
    #[error("this node is not the active controller")]
    NotController,
    #[error(
        "the metadata change was not committed within {} ms: the controller quorum has no leader or has lost its majority",
        .0.as_millis().div_ceil(10) * 10
    )]
    Timeout(Duration),
    #[error(
        "the active controller did not answer within {} ms: none is known, or it cannot be reached",
        .0.as_millis().div_ceil(10) * 10
    )]
    Unanswered(Duration),
    #[error("the metadata quorum stopped after a storage failure")]
    Stopped,
    #[error("{0}")]
    Failed(String),
}

impl CommitError {
    pub fn code(&self) -> ResponseError {
        match self {
            CommitError::NotController => ResponseError::NotController,
            CommitError::Timeout(_) | CommitError::Unanswered(_) => ResponseError::RequestTimedOut,
            CommitError::Stopped | CommitError::Failed(_) => ResponseError::UnknownServerError,
        }
    }
}

/// Answers a proposal once its entry is applied (or lost).
type Applied = oneshot::Sender<Result<(), CommitError>>;

/// A voter's quorum node and its links to the other voters.
struct Voting {
    quorum: RefCell<Quorum>,
    links: PeerLinks,
}

/// The control shard's state.
pub struct Controller {
    config: Arc<Config>,
    me: Weak<Controller>,
    identity: Identity,
    image: ImageCell,
    /// Senders to every data shard, by shard id.
    data_shards: Vec<Rc<ConnectedSender<DataRequest>>>,
    /// This node's part in the quorum when it votes (`None`: a broker-only node, which
    /// follows the committed log as an observer, `observer.rs`).
    voting: Option<Voting>,
    /// The leader an observer last heard of.
    observed_leader: Cell<Option<i32>>,
    /// Proposals waiting to be applied: by log index, the term they were proposed in.
    waiting: RefCell<BTreeMap<u64, (u64, Applied)>>,
    /// A lone voter's storage failed: it takes no more proposals (see `drive`).
    failed: Cell<bool>,
    /// A lone voter's quorum is being reopened after a storage failure.
    reopening: Cell<bool>,
    lock: Semaphore,
    /// Whether this node is the active controller (as of the last ready cycle).
    active: Cell<bool>,
    /// The quorum leader last seen, for the log.
    last_leader: Cell<Option<i32>>,
    /// Broker sessions, kept while this node is the active controller.
    sessions: RefCell<BrokerSessions>,
    /// A fence of expired brokers is being committed.
    fencing: Cell<bool>,
    /// Leadership changes found on a tick are being committed.
    settling: Cell<bool>,
    /// This broker's registration epoch (0 until registered), for RPCs that carry it.
    broker_epoch: Cell<i64>,
    remote: RemoteController,
    /// Publishing to the data shards: one publisher at a time, images in epoch order.
    publishing: Cell<bool>,
    /// The epoch of the last image every data shard applied (`None` before the first).
    published: Cell<Option<u64>>,
    publish_waiters: RefCell<Vec<(u64, oneshot::Sender<()>)>>,
    /// Woken at every new image.
    image_watchers: RefCell<Vec<oneshot::Sender<()>>>,
    /// Open client connections by address, across data shards (`max.connections.per.ip`).
    connections_per_ip: RefCell<HashMap<IpAddr, usize>>,
    /// This broker's follower replicas' fetchers (a broker only).
    followers: Option<ReplicaFetchers>,
}

impl Controller {
    /// Opens the metadata quorum, rebuilds the image from its snapshot and committed
    /// entries, removes partition directories of deleted topics and starts the quorum's
    /// clock and links. A lone voter elects itself at once.
    pub async fn start(
        config: Arc<Config>,
        data_shards: Vec<Rc<ConnectedSender<DataRequest>>>,
    ) -> Result<Rc<Controller>, StartError> {
        if !config.roles.controller {
            return Ok(Controller::start_observer(config, data_shards));
        }
        let voters: Vec<Voter> = if config.voters.is_empty() {
            vec![Voter { node_id: config.node_id, host: String::new(), port: 0 }]
        } else {
            config.voters.clone()
        };
        let raft_ids = raft_ids(&config);
        let mut storage = RaftStorage::open(&RaftStorage::dir_in(&config.data_dir), &raft_ids)?;
        migrate_legacy_log(&config.data_dir, &mut storage)?;
        let mut image = MetadataImage::new(data_shards.len());
        for r in decode_records(storage.snapshot_data())? {
            image.apply(&r);
        }
        image.offset = storage.snapshot_index();
        let (tick, timing) = quorum_timing(&config);
        let quorum = Quorum::new(raft_id(config.node_id), storage, timing)?;
        let identity = Identity::new(config.cluster_id.as_deref().unwrap_or_default(), &voters);
        let request_timeout = Duration::from_millis(config.quorum_request_timeout_ms);
        let links = PeerLinks::start(&config.voters, config.node_id, identity.clone(), request_timeout);
        let voting = Some(Voting { quorum: RefCell::new(quorum), links });
        let controller = Controller::new(config, identity, image, data_shards, voting);
        // Committed entries after the snapshot come back from the first ready.
        controller.drive();
        if raft_ids.len() == 1 {
            controller.quorum().borrow_mut().campaign()?;
            controller.drive();
        }
        if controller.failed.get() {
            return Err(StartError::MetadataLogWrite);
        }
        let image = controller.image.get();
        remove_deleted_partition_dirs(&controller.config.data_dir, &image.removed);
        info!(
            topics = image.topics.len(),
            partitions = image.partition_count(),
            offset = image.offset,
            voters = %controller.identity.voters,
            "metadata loaded; metadata quorum started"
        );
        if controller.config.auto_leader_rebalance {
            let checking = controller.clone();
            let every = Duration::from_secs(controller.config.leader_imbalance_check_interval_secs);
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(every).await;
                    if checking.active.get() {
                        checking.rebalance_leaders().await;
                    }
                }
            })
            .detach();
        }
        let ticking = controller.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(tick).await;
                if ticking.quorum().borrow_mut().tick() {
                    ticking.drive();
                }
                if ticking.active.get() {
                    ticking.fence_expired_brokers();
                    ticking.settle_partitions();
                }
            }
        })
        .detach();
        Ok(controller)
    }

    fn new(
        config: Arc<Config>,
        identity: Identity,
        image: MetadataImage,
        data_shards: Vec<Rc<ConnectedSender<DataRequest>>>,
        voting: Option<Voting>,
    ) -> Rc<Controller> {
        let followers = config.roles.broker.then(|| ReplicaFetchers::new(config.clone(), data_shards.clone()));
        Rc::new_cyclic(|me| Controller {
            sessions: RefCell::new(BrokerSessions::new(Duration::from_millis(config.broker_session_timeout_ms))),
            remote: RemoteController::new(config.clone()),
            config,
            me: me.clone(),
            identity,
            image: ImageCell::new(image),
            data_shards,
            voting,
            observed_leader: Cell::new(None),
            waiting: RefCell::new(BTreeMap::new()),
            failed: Cell::new(false),
            reopening: Cell::new(false),
            lock: Semaphore::new(1),
            active: Cell::new(false),
            last_leader: Cell::new(None),
            fencing: Cell::new(false),
            settling: Cell::new(false),
            broker_epoch: Cell::new(0),
            publishing: Cell::new(false),
            published: Cell::new(None),
            publish_waiters: RefCell::new(Vec::new()),
            image_watchers: RefCell::new(Vec::new()),
            connections_per_ip: RefCell::new(HashMap::new()),
            followers,
        })
    }

    /// A broker-only node: no vote, an image fetched from the quorum (`observer.rs`),
    /// starting from the one it kept on disk (`checkpoint.rs`).
    fn start_observer(config: Arc<Config>, data_shards: Vec<Rc<ConnectedSender<DataRequest>>>) -> Rc<Controller> {
        let identity = Identity::new(config.cluster_id.as_deref().unwrap_or_default(), &config.voters);
        let image = MetadataImage::new(data_shards.len());
        let kept = match checkpoint::load(&config.data_dir) {
            Ok(kept) => kept,
            Err(e) => {
                warn!(error = %e, "this node's metadata checkpoint is unusable; fetching the metadata from the start");
                None
            }
        };
        let controller = Controller::new(config, identity, image, data_shards, None);
        if let Some((offset, records)) = kept {
            controller.install_snapshot(&records, offset);
            let image = controller.image();
            info!(offset, topics = image.topics.len(), "metadata loaded from this node's checkpoint");
            controller.image_changed();
        }
        info!(voters = %controller.identity.voters, "broker-only node: following the metadata quorum as an observer");
        let observing = controller.clone();
        glommio::spawn_local(async move { observer::run(observing).await }).detach();
        controller
    }

    /// The quorum node of a voter. Only voters reach the callers of this.
    fn quorum(&self) -> &RefCell<Quorum> {
        match &self.voting {
            Some(v) => &v.quorum,
            None => unreachable!("only a voter has a quorum node"),
        }
    }

    fn rc(&self) -> Rc<Controller> {
        self.me.upgrade().unwrap_or_else(|| unreachable!("the controller lives as long as its executor"))
    }

    pub fn cluster_id(&self) -> &str {
        &self.identity.cluster_id
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.get()
    }

    /// The active controller's node id, as this node knows it.
    pub fn leader(&self) -> Option<i32> {
        match &self.voting {
            Some(v) => v.quorum.borrow().leader().map(node_id),
            None => self.observed_leader.get(),
        }
    }

    /// Where calls for the active controller go: its node id, or `None` while it is unknown
    /// or this node leads but has not yet taken over (callers wait a moment rather than be
    /// refused with NOT_CONTROLLER).
    fn call_target(&self) -> Option<i32> {
        self.leader().filter(|l| *l != self.config.node_id || self.active.get())
    }

    pub fn is_active(&self) -> bool {
        self.active.get()
    }

    pub fn quorum_status(&self) -> QuorumStatus {
        self.voting.as_ref().map(|v| v.quorum.borrow().status()).unwrap_or_default()
    }

    /// Runs the quorum's ready cycles until it has nothing ready: what it persisted is
    /// durable, its messages are handed to the links, committed entries are applied to the
    /// image in order, and waiting proposals learn their fate. A storage failure stops the
    /// node: one that lost its disk mid-write must not go on voting on state it no longer has.
    fn drive(&self) {
        let Some(voting) = &self.voting else { return };
        if self.failed.get() {
            return;
        }
        let mut changed = false;
        while voting.quorum.borrow().has_ready() {
            let progress = match voting.quorum.borrow_mut().process_ready() {
                Ok(p) => p,
                Err(e) if self.config.voters.len() <= 1 => {
                    // A lone voter misleads no other voter, and stopping would take down the
                    // only broker, whose partitions still work (a full disk that frees up,
                    // docs/STORAGE.md): its quorum stops, and reopens from its disk once the
                    // disk takes writes again.
                    if self.reopening.get() {
                        debug!(error = %e, "metadata quorum storage still failing");
                    } else {
                        error!(
                            error = %e,
                            "metadata quorum stopped: its storage failed; it reopens from its disk once writes succeed again"
                        );
                    }
                    self.failed.set(true);
                    for (_, (_, waiter)) in std::mem::take(&mut *self.waiting.borrow_mut()) {
                        let _ = waiter.send(Err(CommitError::Stopped));
                    }
                    self.reopen_when_storage_works();
                    return;
                }
                Err(e) => {
                    // As Kafka's controllers halt on a metadata log fault: what Raft holds in
                    // memory is now ahead of the disk, and a node serving partitions from an
                    // image that can no longer move would answer for leaderships it lost.
                    // Stopping here is a crash: every partition recovers as after kill -9.
                    error!(
                        error = %e,
                        "metadata quorum stopped: its storage failed; this node stops now so that \
                         it never votes on state it could not write (restart it once its disk is sound)"
                    );
                    std::process::exit(METADATA_STORAGE_FAILED_EXIT);
                }
            };
            voting.links.send(progress.messages);
            if let Some(snapshot) = progress.snapshot {
                self.install_snapshot(&snapshot.data, snapshot.get_metadata().index);
                changed = true;
            }
            if let Some(last) = progress.committed.last().map(|e| e.index) {
                self.apply(&progress.committed);
                self.snapshot_if_due(last);
                voting.quorum.borrow_mut().broadcast_commit();
                changed = true;
            }
        }
        self.observe_leadership();
        if changed {
            self.image_changed();
        }
    }

    /// A lone voter whose storage failed: every `QUORUM_REOPEN_INTERVAL` the quorum node is
    /// rebuilt from what its disk holds (as a restart would, without replaying what the image
    /// already has) and elects itself again, until a ready cycle persists once more. Raft's
    /// memory may be ahead of the disk after the failure; the rebuilt node's is not.
    fn reopen_when_storage_works(&self) {
        if self.reopening.replace(true) {
            return;
        }
        let c = self.rc();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(QUORUM_REOPEN_INTERVAL).await;
                if let Err(e) = c.reopen_quorum() {
                    debug!(error = %e, "metadata quorum cannot reopen yet");
                    continue;
                }
                c.failed.set(false);
                // Campaign before the first ready cycle, so that an attempt that fails again
                // never shows a leaderless quorum (callers would wait for a leader rather than
                // be refused at once).
                if let Err(e) = c.quorum().borrow_mut().campaign() {
                    debug!(error = %e, "metadata quorum cannot campaign yet");
                }
                c.drive();
                if !c.failed.get() {
                    info!(term = c.quorum().borrow().term(), "metadata quorum resumed: its storage takes writes again");
                    break;
                }
            }
            c.reopening.set(false);
        })
        .detach();
    }

    fn reopen_quorum(&self) -> Result<(), StartError> {
        let storage = RaftStorage::open(&RaftStorage::dir_in(&self.config.data_dir), &raft_ids(&self.config))?;
        let (_, timing) = quorum_timing(&self.config);
        let resumed = Quorum::resume(raft_id(self.config.node_id), storage, timing, self.image.get().offset)?;
        *self.quorum().borrow_mut() = resumed;
        Ok(())
    }

    /// Logs a new quorum leader, and takes over (or gives up) the active controller's duties.
    fn observe_leadership(&self) {
        let (leader, active, term) = {
            let q = self.quorum().borrow();
            (q.leader().map(node_id), q.is_active_leader(), q.term())
        };
        if self.last_leader.replace(leader) != leader {
            match leader {
                Some(l) => info!(leader = l, term, "metadata quorum leader"),
                None => warn!(term, "metadata quorum has no leader"),
            }
        }
        if active != self.active.get() {
            self.active.set(active);
            if active {
                info!(term, "this node is the active controller");
                self.sessions.borrow_mut().take_over(&self.image.get(), Instant::now());
                let c = self.rc();
                glommio::spawn_local(async move { c.place_unplaced_topics().await }).detach();
            } else {
                info!(term, "this node is no longer the active controller");
            }
        }
    }

    fn install_snapshot(&self, data: &[u8], index: u64) {
        let mut image = MetadataImage::new(self.data_shards.len());
        match decode_records(data) {
            Ok(records) => records.iter().for_each(|r| image.apply(r)),
            Err(e) => error!(error = %e, "undecodable metadata snapshot ignored"),
        }
        let current = self.image.get();
        image.epoch = current.epoch + 1;
        image.offset = index;
        self.image.set(Arc::new(image));
    }

    /// Applies committed entries to one new image (a replay of many entries copies the image
    /// once, not once per entry), installs it, then answers the proposals waiting for them.
    fn apply(&self, entries: &[raft::eraftpb::Entry]) {
        let mut image = (*self.image.get()).clone();
        let outcomes: Vec<Result<(), CommitError>> = entries
            .iter()
            .map(|entry| {
                image.offset = entry.index;
                match decode_records(&entry.data) {
                    Ok(records) => {
                        for r in &records {
                            image.apply(r);
                            if let MetadataRecord::Broker(b) = r {
                                self.sessions.borrow_mut().registered(b.id, entry.index);
                            }
                        }
                        Ok(())
                    }
                    Err(e) => {
                        error!(index = entry.index, error = %e, "undecodable metadata entry skipped");
                        Err(CommitError::Failed(format!("undecodable metadata entry: {e}")))
                    }
                }
            })
            .collect();
        self.image.set(Arc::new(image));
        for (entry, outcome) in entries.iter().zip(outcomes) {
            if let Some((term, waiter)) = self.waiting.borrow_mut().remove(&entry.index) {
                // Another leader's entry at the proposal's index means the proposal was lost.
                let outcome = if term == entry.term { outcome } else { Err(CommitError::NotController) };
                let _ = waiter.send(outcome);
            }
        }
    }

    /// Snapshots the image once the log holds `metadata.log.max.record.bytes.between.snapshots`.
    fn snapshot_if_due(&self, applied: u64) {
        let mut quorum = self.quorum().borrow_mut();
        if quorum.storage().bytes_since_snapshot() < self.config.metadata_snapshot_bytes {
            return;
        }
        let data = encode_records(&self.image.get().to_records());
        match quorum.snapshot(applied, data) {
            Ok(()) => info!(index = applied, "metadata snapshot taken; log compacted"),
            Err(e) => warn!(error = %e, "metadata snapshot failed; the log keeps growing"),
        }
    }

    /// A frame of Raft messages from another voter (the controller listener's).
    pub fn receive_raft(&self, body: Bytes) -> Result<(), TransportError> {
        let messages = transport::decode_body(body, &self.identity)?;
        let Some(voting) = &self.voting else { return Ok(()) };
        let me = voting.quorum.borrow().id();
        for m in messages {
            if m.to != me {
                continue;
            }
            if let Err(e) = voting.quorum.borrow_mut().step(m) {
                warn!(error = %e, "raft message refused");
            }
        }
        self.drive();
        Ok(())
    }

    /// Commits records through the quorum, then waits until every data shard has the image
    /// with them. Only the active controller commits. The leadership changes the records make
    /// necessary (a fenced broker's partitions, a new topic's leaders) go in the same entry,
    /// so no image ever has a partition led by a fenced broker.
    async fn commit(&self, mut records: Vec<MetadataRecord>, timeout: Duration) -> Result<(), CommitError> {
        let mut after = (*self.image.get()).clone();
        records.iter().for_each(|r| after.apply(r));
        records.extend(crate::cluster::election::reconcile(&after, self.unclean_default(&after)));
        self.commit_local(records, timeout).await?;
        self.published(self.image.get().epoch).await;
        Ok(())
    }

    /// `unclean.leader.election.enable` of topics that do not set it: the cluster-wide
    /// dynamic config, else this controller's own setting.
    fn unclean_default(&self, image: &MetadataImage) -> bool {
        image
            .dynamic_broker_config(self.config.node_id, "unclean.leader.election.enable")
            .map_or(self.config.unclean_leader_election, |v| v.eq_ignore_ascii_case("true"))
    }

    /// Commits records through the quorum; resolves once they are applied to the image.
    async fn commit_local(&self, records: Vec<MetadataRecord>, timeout: Duration) -> Result<(), CommitError> {
        if self.failed.get() {
            return Err(CommitError::Stopped);
        }
        let Some(voting) = self.voting.as_ref().filter(|v| v.quorum.borrow().is_active_leader()) else {
            return Err(CommitError::NotController);
        };
        let (tx, rx) = oneshot::channel();
        let proposed = voting.quorum.borrow_mut().propose(encode_records(&records));
        match proposed {
            Ok(p) => {
                self.waiting.borrow_mut().insert(p.index, (p.term, tx));
            }
            Err(QuorumError::NotLeader { .. }) => return Err(CommitError::NotController),
            Err(e) => return Err(CommitError::Failed(e.to_string())),
        }
        self.drive();
        match with_timeout(timeout, rx).await {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => Err(CommitError::Stopped),
            None => Err(CommitError::Timeout(timeout)),
        }
    }

    /// A new image is in place: publish it and wake whoever waits on the image.
    fn image_changed(&self) {
        for w in std::mem::take(&mut *self.image_watchers.borrow_mut()) {
            let _ = w.send(());
        }
        if self.publishing.replace(true) {
            return;
        }
        let c = self.rc();
        glommio::spawn_local(async move {
            loop {
                let image = c.image.get();
                if c.published.get().is_some_and(|p| image.epoch <= p) {
                    break;
                }
                c.publish_image(image.clone()).await;
                c.published.set(Some(image.epoch));
                if let Some(followers) = &c.followers {
                    followers.apply(&image);
                }
                let done: Vec<oneshot::Sender<()>> = {
                    let mut waiters = c.publish_waiters.borrow_mut();
                    let (done, left) = waiters.drain(..).partition(|(e, _)| *e <= image.epoch);
                    *waiters = left;
                    done.into_iter().map(|(_, w)| w).collect()
                };
                done.into_iter().for_each(|w| {
                    let _ = w.send(());
                });
            }
            c.publishing.set(false);
        })
        .detach();
    }

    /// Waits until every data shard has applied an image of at least `epoch`.
    pub async fn published(&self, epoch: u64) {
        if self.published.get().is_some_and(|p| p >= epoch) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.publish_waiters.borrow_mut().push((epoch, tx));
        self.image_changed();
        let _ = rx.await;
    }

    /// Waits (until `deadline`) for an image that satisfies `ready`.
    /// [`Controller::image_where`], then until this node's data shards have that image too:
    /// what a forwarded change waits for before its answer, so the client can use it at
    /// once through the node it asked.
    async fn published_where(&self, ready: impl Fn(&MetadataImage) -> bool, deadline: Instant) -> bool {
        if !self.image_where(ready, deadline).await {
            return false;
        }
        let epoch = self.image.get().epoch;
        with_timeout(deadline.saturating_duration_since(Instant::now()), self.published(epoch)).await.is_some()
    }

    async fn image_where(&self, ready: impl Fn(&MetadataImage) -> bool, deadline: Instant) -> bool {
        loop {
            if ready(&self.image.get()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let (tx, rx) = oneshot::channel();
            self.image_watchers.borrow_mut().push(tx);
            let _ = with_timeout(left, rx).await;
        }
    }

    /// Tells every data shard it may serve clients (after the image it needs is published).
    pub async fn start_serving(&self) {
        for shard in &self.data_shards {
            let _ = shard.send(DataRequest::Listen).await;
        }
    }

    /// Tells every data shard the active controller answered a heartbeat sent at `at` (the
    /// leaders' lease: `Shard::check_deposed`).
    pub async fn controller_contact(&self, at: Instant) {
        for shard in &self.data_shards {
            let _ = shard.send(DataRequest::ControllerContact { at }).await;
        }
    }

    /// Sends an image to every data shard and waits until all have applied it: first each
    /// makes its partitions match it, then, once all have, each answers from it.
    async fn publish_image(&self, image: Arc<MetadataImage>) {
        for show in [false, true] {
            let mut acks = Vec::new();
            for shard in &self.data_shards {
                let (reply, rx) = oneshot::channel();
                let image = image.clone();
                let request =
                    if show { DataRequest::Show { image, reply } } else { DataRequest::Publish { image, reply } };
                if shard.send(request).await.is_ok() {
                    acks.push(rx);
                }
            }
            for rx in acks {
                let _ = rx.await;
            }
        }
    }

    /// Serves the requests of one data shard until it hangs up. Each runs as its own task.
    pub async fn serve(self: Rc<Self>, rx: ConnectedReceiver<ControlRequest>) {
        while let Some(request) = rx.recv().await {
            let c = self.clone();
            match request {
                ControlRequest::OpenConnection { ip, limit, reply } => {
                    let _ = reply.send(self.open_connection(ip, limit));
                }
                ControlRequest::CloseConnection { ip } => self.close_connection(ip),
                ControlRequest::AllocateProducerIds { count, reply } => {
                    answer_later(reply, async move { c.allocate_producer_ids(count).await })
                }
                ControlRequest::CreateTopics { topics, origin, validate_only, timeout, reply } => {
                    answer_later(reply, async move { c.create_topics(topics, origin, validate_only, timeout).await })
                }
                ControlRequest::CreatePartitions { topics, origin, validate_only, timeout, reply } => answer_later(
                    reply,
                    async move { c.create_partitions(topics, origin, validate_only, timeout).await },
                ),
                ControlRequest::DescribeQuorum { request, version, reply } => {
                    answer_later(reply, async move { c.describe_quorum_anywhere(request, version).await })
                }
                ControlRequest::DeleteTopics { topics, origin, timeout, reply } => {
                    answer_later(reply, async move { c.delete_topics(topics, origin, timeout).await })
                }
                ControlRequest::ElectLeaders { kind, partitions, timeout, reply } => {
                    answer_later(reply, async move { c.elect_leaders(kind, partitions, timeout).await })
                }
                ControlRequest::AlterConfigs { changes, origin, validate_only, timeout, reply } => {
                    answer_later(reply, async move { c.alter_configs(changes, origin, validate_only, timeout).await })
                }
                ControlRequest::AlterPartition { change, reply } => {
                    answer_later(reply, async move { c.alter_partition(change).await })
                }
            }
        }
    }

    /// Counts a connection from `ip` if fewer than `limit` are open from there.
    fn open_connection(&self, ip: IpAddr, limit: usize) -> bool {
        let mut open = self.connections_per_ip.borrow_mut();
        let count = open.entry(ip).or_insert(0);
        let admitted = *count < limit;
        *count += usize::from(admitted);
        admitted
    }

    fn close_connection(&self, ip: IpAddr) {
        let mut open = self.connections_per_ip.borrow_mut();
        if let Some(count) = open.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }

    /// Creates topics: here when this node is the active controller, else forwarded to it
    /// (in an envelope from `origin`, the client that asked, if any); answered once this
    /// node's image has them (or the time is up).
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        origin: Option<ClientOrigin>,
        validate_only: bool,
        timeout: Duration,
    ) -> Vec<TopicOutcome> {
        let deadline = Instant::now() + timeout;
        let leader = || self.call_target();
        match self.remote.create_topics(leader, &topics, validate_only, deadline, origin.as_ref()).await {
            Ok(Route::Here) => self.create_topics_here(topics, validate_only, timeout).await,
            Ok(Route::There(outcomes)) => {
                let created: Vec<uuid::Uuid> =
                    outcomes.iter().filter(|o| o.error.is_none() && !validate_only).map(|o| o.topic_id).collect();
                self.published_where(|image| created.iter().all(|id| image.ids.contains_key(id)), deadline).await;
                outcomes
            }
            Err(e) => topics.iter().map(|t| topic_failed(&t.name, &e)).collect(),
        }
    }

    /// Deletes topics, here or at the active controller (see [`Controller::create_topics`]).
    /// Forwarded by name: ids are resolved with this node's image first.
    pub async fn delete_topics(
        &self,
        topics: Vec<TopicRef>,
        origin: Option<ClientOrigin>,
        timeout: Duration,
    ) -> Vec<TopicOutcome> {
        let deadline = Instant::now() + timeout;
        let image = self.image.get();
        let resolved: Vec<Option<(String, uuid::Uuid)>> = topics
            .iter()
            .map(|t| match t {
                TopicRef::Name(n) => Some((n.clone(), image.topic(n).map(|m| m.id).unwrap_or_default())),
                TopicRef::Id(id) => image.ids.get(id).map(|n| (n.clone(), *id)),
            })
            .collect();
        let names: Vec<String> = resolved.iter().flatten().map(|(n, _)| n.clone()).collect();
        let leader = || self.call_target();
        let routed = if names.is_empty() {
            Ok(Route::Here)
        } else {
            self.remote.delete_topics(leader, &names, deadline, origin.as_ref()).await
        };
        match routed {
            Ok(Route::Here) => self.delete_topics_here(topics, timeout).await,
            Ok(Route::There(outcomes)) => {
                let mut answers = outcomes.into_iter();
                let outcomes: Vec<TopicOutcome> = topics
                    .iter()
                    .zip(resolved)
                    .map(|(t, r)| match (t, r) {
                        (_, Some((_, id))) => {
                            let mut o = answers.next().unwrap_or_default();
                            o.topic_id = id;
                            o
                        }
                        (TopicRef::Id(id), None) => TopicOutcome {
                            topic_id: *id,
                            error: Some(ResponseError::UnknownTopicId),
                            error_message: Some("This server does not host this topic ID.".into()),
                            ..Default::default()
                        },
                        (TopicRef::Name(_), None) => unreachable!("names always resolve"),
                    })
                    .collect();
                let deleted: Vec<uuid::Uuid> =
                    outcomes.iter().filter(|o| o.error.is_none()).map(|o| o.topic_id).collect();
                self.published_where(|image| deleted.iter().all(|id| !image.ids.contains_key(id)), deadline).await;
                outcomes
            }
            Err(e) => topics
                .iter()
                .map(|t| match t {
                    TopicRef::Name(n) => topic_failed(n, &e),
                    TopicRef::Id(id) => TopicOutcome { topic_id: *id, ..topic_failed("", &e) },
                })
                .collect(),
        }
    }

    /// Adds partitions to topics, here or at the active controller (see
    /// [`Controller::create_topics`]); answered once this node's image has them.
    pub async fn create_partitions(
        &self,
        topics: Vec<NewPartitions>,
        origin: Option<ClientOrigin>,
        validate_only: bool,
        timeout: Duration,
    ) -> Vec<TopicOutcome> {
        let deadline = Instant::now() + timeout;
        let leader = || self.call_target();
        match self.remote.create_partitions(leader, &topics, validate_only, deadline, origin.as_ref()).await {
            Ok(Route::Here) => self.create_partitions_here(topics, validate_only, timeout).await,
            Ok(Route::There(outcomes)) => {
                let grown: Vec<(String, i32)> = topics
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, o)| o.error.is_none() && !validate_only)
                    .map(|(t, _)| (t.name.clone(), t.count))
                    .collect();
                let ready = |image: &MetadataImage| {
                    grown.iter().all(|(name, count)| image.topic(name).is_some_and(|t| t.partitions >= *count))
                };
                self.published_where(ready, deadline).await;
                outcomes
            }
            Err(e) => topics.iter().map(|t| topic_failed(&t.name, &e)).collect(),
        }
    }

    /// Reserves `count` producer ids, here or at the active controller: durable before any
    /// is handed out, so ids never repeat across restarts.
    pub async fn allocate_producer_ids(&self, count: i64) -> Option<(i64, i64)> {
        let deadline = Instant::now() + Duration::from_millis(self.config.quorum_request_timeout_ms);
        let leader = || self.call_target();
        let routed = self.remote.allocate_producer_ids(leader, self.broker_epoch.get(), deadline).await;
        let result = match routed {
            Ok(Route::Here) => self.allocate_producer_ids_here(count, deadline).await,
            Ok(Route::There(block)) => block,
            Err(e) => Err(e),
        };
        result.map_err(|e| warn!(error = %e, "cannot reserve producer ids")).ok()
    }

    /// Reserves producer ids on the active controller.
    pub async fn allocate_producer_ids_here(&self, count: i64, deadline: Instant) -> Result<(i64, i64), CommitError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let _permit = self.lock.acquire_permit(1).await.map_err(|_| CommitError::Stopped)?;
        let start = self.image.get().next_producer_id;
        let end = start.checked_add(count).ok_or_else(|| CommitError::Failed("producer ids exhausted".into()))?;
        self.commit_local(vec![MetadataRecord::ProducerIds { next_producer_id: end }], timeout).await?;
        Ok((start, end))
    }
}

/// Removes partition directories of deleted topics (a delete that crashed before the data
/// shards removed them): only those whose `partition.metadata` names a topic id that a
/// RemoveTopic record deleted. Anything else unknown is left alone, with a warning.
fn remove_deleted_partition_dirs(data_dir: &Path, removed: &BTreeSet<uuid::Uuid>) {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    for entry in entries.flatten() {
        let Ok(meta) = std::fs::read_to_string(entry.path().join("partition.metadata")) else { continue };
        let id = meta
            .lines()
            .find_map(|l| l.strip_prefix("topic_id: "))
            .and_then(|id| uuid::Uuid::parse_str(id.trim()).ok());
        match id {
            Some(id) if removed.contains(&id) => {
                warn!(dir = %entry.path().display(), "removing directory of a deleted topic");
                let _ = std::fs::remove_dir_all(entry.path());
            }
            _ => {}
        }
    }
}

/// A data directory from before the quorum kept its metadata in `metadata.log`: its records
/// become the quorum's first snapshot, then the old file goes.
fn migrate_legacy_log(data_dir: &Path, storage: &mut RaftStorage) -> Result<(), StartError> {
    let legacy = MetadataLog::path_in(data_dir);
    if !legacy.exists() {
        return Ok(());
    }
    let fresh = storage.snapshot_index() == 0 && raft::Storage::last_index(storage).unwrap_or(0) == 0;
    if fresh {
        let records = MetadataLog::read(data_dir)?;
        let mut image = MetadataImage::new(1);
        for r in &records {
            image.apply(r);
        }
        storage.adopt_as_snapshot(encode_records(&image.to_records()))?;
        info!(records = records.len(), "single-node metadata log migrated into the metadata quorum's snapshot");
    }
    std::fs::remove_file(&legacy)?;
    Ok(())
}

/// A topic change that did not happen, for `e`.
fn topic_failed(name: &str, e: &CommitError) -> TopicOutcome {
    TopicOutcome {
        name: name.to_string(),
        error: Some(e.code()),
        error_message: Some(e.to_string()),
        num_partitions: -1,
        replication_factor: -1,
        ..Default::default()
    }
}
