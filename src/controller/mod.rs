//! The control shard, an actor of its own: it owns the metadata quorum (raft-rs, `quorum`,
//! over `raft_storage`) and the authoritative image. It serves [`ControlRequest`]s from the
//! data shards: validates topic changes with Kafka's rules and error codes, commits them
//! through the quorum, applies them to the image, then publishes the new image to every data
//! shard and waits until each has applied it, so a client that saw CreateTopics succeed can
//! produce to any shard at once. It reserves producer-id blocks durably.
//!
//! Runs on executor 0. A single node is a quorum of one voter; the transport between voters
//! arrives with the cluster. Topic changes are serialised by one permit (`lock`).

mod quorum;
mod raft_storage;
mod slog_bridge;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::sync::Semaphore;
use kafka_protocol::ResponseError;
use tracing::{error, info, warn};

use self::quorum::{Quorum, QuorumError, QuorumTiming};
use self::raft_storage::{RaftStorage, RaftStorageError};

use crate::cluster::metadata_log::MetadataLog;
use crate::cluster::records::{decode_records, encode_records, MetadataRecord};
use crate::cluster::{ImageCell, MetadataImage};
use crate::config::Config;
use crate::shard::message::{answer_later, ControlRequest, DataRequest, NewTopic, TopicOutcome, TopicRef};

/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Topic-level configs accepted by CreateTopics. The first group is applied by this broker;
/// the rest are stored (and reported) for the features that will use them.
pub const TOPIC_CONFIGS_APPLIED: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "index.interval.bytes",
    "message.timestamp.type",
    "max.message.bytes",
    "cleanup.policy",
    "delete.retention.ms",
];
pub const TOPIC_CONFIGS_STORED: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "min.insync.replicas",
    "compression.type",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "min.cleanable.dirty.ratio",
    "flush.messages",
    "flush.ms",
    "unclean.leader.election.enable",
    "message.timestamp.difference.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "file.delete.delay.ms",
    "preallocate",
    "segment.index.bytes",
    "segment.jitter.ms",
];

/// How often the quorum's clock ticks, and its timing in ticks (Kafka's defaults:
/// `controller.quorum.election.timeout.ms` 1000).
const QUORUM_TICK: Duration = Duration::from_millis(100);
const QUORUM_TIMING: QuorumTiming = QuorumTiming { election_ticks: 10, heartbeat_ticks: 2 };

/// The Raft id of node `node_id` (Raft ids start at 1; Kafka's node ids at 0).
fn raft_id(node_id: i32) -> u64 {
    node_id.max(0) as u64 + 1
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    RaftStorage(#[from] RaftStorageError),
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    #[error("metadata snapshot: {0}")]
    Record(#[from] crate::cluster::records::RecordError),
    #[error("{0}")]
    Storage(String),
    #[error("migrating the single-node metadata log: {0}")]
    Legacy(#[from] std::io::Error),
}

/// Answers a proposal once its entry is applied (or lost).
type Applied = oneshot::Sender<Result<(), String>>;

/// The control shard's state.
pub struct Controller {
    config: Arc<Config>,
    image: ImageCell,
    /// Senders to every data shard, by shard id.
    data_shards: Vec<Rc<ConnectedSender<DataRequest>>>,
    quorum: RefCell<Quorum>,
    /// Proposals waiting to be applied: by log index, the term they were proposed in.
    waiting: RefCell<BTreeMap<u64, (u64, Applied)>>,
    /// The quorum's storage failed: it takes no more proposals.
    failed: Cell<bool>,
    lock: Semaphore,
    /// Open client connections by address, across data shards (`max.connections.per.ip`).
    connections_per_ip: RefCell<HashMap<IpAddr, usize>>,
}

pub fn valid_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {TOPIC_NAME_BYTES_MAX} characters, topic name: {name}"
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return Err(format!("Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"));
    }
    Ok(())
}

fn validate_config(key: &str, value: &str) -> Result<(), String> {
    let positive = |v: &str| {
        v.parse::<i64>().ok().filter(|n| *n > 0).map(|_| ()).ok_or(format!("Invalid value {v} for configuration {key}"))
    };
    match key {
        "segment.bytes" => value
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 14 * 1024 && *n <= i32::MAX as u64)
            .map(|_| ())
            .ok_or(format!("Invalid value {value} for configuration {key}: must be between 14336 and 2147483647")),
        "segment.ms" | "index.interval.bytes" | "max.message.bytes" => positive(value),
        "delete.retention.ms" => value
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|_| ())
            .ok_or(format!("Invalid value {value} for configuration {key}")),
        "cleanup.policy" if !value.split(',').all(|p| matches!(p.trim(), "delete" | "compact")) => {
            Err(format!("Invalid value {value} for configuration {key}: String must be one of: compact, delete"))
        }
        "message.timestamp.type" if value != "CreateTime" && value != "LogAppendTime" => Err(format!(
            "Invalid value {value} for configuration {key}: String must be one of: CreateTime, LogAppendTime"
        )),
        _ if TOPIC_CONFIGS_APPLIED.contains(&key) || TOPIC_CONFIGS_STORED.contains(&key) => Ok(()),
        _ => Err(format!("Unknown topic config name: {key}")),
    }
}

impl Controller {
    /// Opens the metadata quorum (a lone voter: this node), rebuilds the image from its
    /// snapshot and committed entries, and removes partition directories of deleted topics.
    pub async fn start(
        config: Arc<Config>,
        data_shards: Vec<Rc<ConnectedSender<DataRequest>>>,
    ) -> Result<Rc<Controller>, StartError> {
        let raft_id = raft_id(config.node_id);
        let mut storage = RaftStorage::open(&RaftStorage::dir_in(&config.data_dir), &[raft_id])?;
        migrate_legacy_log(&config.data_dir, &mut storage)?;
        let mut image = MetadataImage::new(data_shards.len());
        for r in decode_records(storage.snapshot_data())? {
            image.apply(&r);
        }
        let quorum = Quorum::new(raft_id, storage, QUORUM_TIMING)?;
        let controller = Rc::new(Controller {
            config,
            image: ImageCell::new(image),
            data_shards,
            quorum: RefCell::new(quorum),
            waiting: RefCell::new(BTreeMap::new()),
            failed: Cell::new(false),
            lock: Semaphore::new(1),
            connections_per_ip: RefCell::new(HashMap::new()),
        });
        // Committed entries after the snapshot come back from the first ready.
        controller.drive();
        controller.quorum.borrow_mut().campaign()?;
        controller.drive();
        if controller.failed.get() {
            return Err(StartError::Storage("the metadata log could not be written".into()));
        }
        let image = controller.image.get();
        remove_deleted_partition_dirs(&controller.config.data_dir, &image.removed);
        let (term, leader) = {
            let q = controller.quorum.borrow();
            (q.term(), q.leader())
        };
        info!(
            topics = image.topics.len(),
            partitions = image.partition_count(),
            term,
            leader = ?leader,
            "metadata loaded; metadata quorum ready"
        );
        let ticking = controller.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(QUORUM_TICK).await;
                let ticked = ticking.quorum.borrow_mut().tick();
                if ticked {
                    ticking.drive();
                }
            }
        })
        .detach();
        Ok(controller)
    }

    /// Runs the quorum's ready cycles until it has nothing ready: what it persisted is
    /// durable, committed entries are applied to the image in order, and waiting proposals
    /// learn their fate. A storage failure stops the quorum for good: a node that lost its
    /// disk mid-write must not go on voting on state it no longer has.
    fn drive(&self) {
        while !self.failed.get() && self.quorum.borrow().has_ready() {
            let progress = match self.quorum.borrow_mut().process_ready() {
                Ok(p) => p,
                Err(e) => {
                    error!(error = %e, "metadata quorum stopped: its storage failed");
                    self.failed.set(true);
                    for (_, (_, waiter)) in std::mem::take(&mut *self.waiting.borrow_mut()) {
                        let _ = waiter.send(Err(format!("metadata log write failed: {e}")));
                    }
                    return;
                }
            };
            if !progress.messages.is_empty() {
                // A lone voter has no peers; the quorum transport arrives with the cluster.
                warn!(count = progress.messages.len(), "raft messages for peers dropped: no transport");
            }
            if let Some(snapshot) = progress.snapshot {
                self.install_snapshot(&snapshot.data);
            }
            if let Some(last) = progress.committed.last().map(|e| e.index) {
                self.apply(&progress.committed);
                self.snapshot_if_due(last);
            }
        }
    }

    fn install_snapshot(&self, data: &[u8]) {
        let mut image = MetadataImage::new(self.data_shards.len());
        match decode_records(data) {
            Ok(records) => records.iter().for_each(|r| image.apply(r)),
            Err(e) => error!(error = %e, "undecodable metadata snapshot ignored"),
        }
        image.epoch = self.image.get().epoch + 1;
        self.image.set(Arc::new(image));
    }

    /// Applies committed entries to one new image (a replay of many entries copies the image
    /// once, not once per entry), installs it, then answers the proposals waiting for them.
    fn apply(&self, entries: &[raft::eraftpb::Entry]) {
        let mut image = (*self.image.get()).clone();
        let outcomes: Vec<Result<(), String>> = entries
            .iter()
            .map(|entry| match decode_records(&entry.data) {
                Ok(records) => {
                    records.iter().for_each(|r| image.apply(r));
                    Ok(())
                }
                Err(e) => {
                    error!(index = entry.index, error = %e, "undecodable metadata entry skipped");
                    Err(format!("undecodable metadata entry: {e}"))
                }
            })
            .collect();
        self.image.set(Arc::new(image));
        for (entry, outcome) in entries.iter().zip(outcomes) {
            if let Some((term, waiter)) = self.waiting.borrow_mut().remove(&entry.index) {
                // Another leader's entry at the proposal's index means the proposal was lost.
                let outcome = if term == entry.term { outcome } else { Err("leadership changed".into()) };
                let _ = waiter.send(outcome);
            }
        }
    }

    /// Snapshots the image once the log holds `metadata.log.max.record.bytes.between.snapshots`.
    fn snapshot_if_due(&self, applied: u64) {
        let mut quorum = self.quorum.borrow_mut();
        if quorum.storage().bytes_since_snapshot() < self.config.metadata_snapshot_bytes {
            return;
        }
        let data = encode_records(&self.image.get().to_records());
        match quorum.snapshot(applied, data) {
            Ok(()) => info!(index = applied, "metadata snapshot taken; log compacted"),
            Err(e) => warn!(error = %e, "metadata snapshot failed; the log keeps growing"),
        }
    }

    /// Commits records through the quorum; resolves once they are applied to the image.
    async fn commit_local(&self, records: Vec<MetadataRecord>) -> Result<(), String> {
        if self.failed.get() {
            return Err("the metadata quorum stopped after a storage failure".into());
        }
        let (tx, rx) = oneshot::channel();
        let proposed = self.quorum.borrow_mut().propose(encode_records(&records));
        match proposed {
            Ok(p) => {
                self.waiting.borrow_mut().insert(p.index, (p.term, tx));
            }
            Err(e) => return Err(e.to_string()),
        }
        self.drive();
        rx.await.unwrap_or_else(|_| Err("the metadata quorum stopped".into()))
    }

    /// Serves the requests of one data shard until it hangs up. Each runs as its own task;
    /// topic changes are serialised by the controller's permit.
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
                ControlRequest::CreateTopics { topics, validate_only, reply } => {
                    answer_later(reply, async move { c.create_topics(topics, validate_only).await })
                }
                ControlRequest::DeleteTopics { topics, reply } => {
                    answer_later(reply, async move { c.delete_topics(topics).await })
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

    /// Sends the current image to every data shard and waits until all have applied it.
    pub async fn publish(&self) {
        let image = self.image.get();
        let mut acks = Vec::new();
        for shard in &self.data_shards {
            let (reply, rx) = oneshot::channel();
            if shard.send(DataRequest::Publish { image: image.clone(), reply }).await.is_ok() {
                acks.push(rx);
            }
        }
        for rx in acks {
            let _ = rx.await;
        }
    }

    /// Reserves `count` producer ids: durable before any is handed out, so ids never
    /// repeat across restarts.
    pub async fn allocate_producer_ids(&self, count: i64) -> Option<(i64, i64)> {
        let _permit = self.lock.acquire_permit(1).await.ok()?;
        let start = self.image.get().next_producer_id;
        let end = start.checked_add(count)?;
        match self.commit_local(vec![MetadataRecord::ProducerIds { next_producer_id: end }]).await {
            Ok(()) => Some((start, end)),
            Err(e) => {
                warn!(error = %e, "cannot reserve producer ids");
                None
            }
        }
    }

    /// Commits records, applies them and publishes the new image to every data shard.
    async fn commit(&self, records: Vec<MetadataRecord>) -> Result<(), String> {
        self.commit_local(records).await?;
        self.publish().await;
        Ok(())
    }

    pub async fn create_topics(&self, topics: Vec<NewTopic>, validate_only: bool) -> Vec<TopicOutcome> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else { return Vec::new() };
        let image = self.image.get();
        let mut partitions_total = image.partition_count();
        let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut records = Vec::new();
        let mut seen = HashSet::new();
        for topic in &topics {
            let mut outcome = TopicOutcome {
                name: topic.name.clone(),
                num_partitions: -1,
                replication_factor: -1,
                ..Default::default()
            };
            let duplicate = names.iter().filter(|n| **n == topic.name).count() > 1;
            let checked = if duplicate {
                Err((
                    ResponseError::InvalidRequest,
                    format!("Create topics request from client contains duplicate topic {}", topic.name),
                ))
            } else {
                self.check_new_topic(&image, topic, partitions_total)
            };
            match checked {
                Ok((partitions, configs)) if seen.insert(topic.name.clone()) => {
                    partitions_total += partitions as usize;
                    outcome.topic_id = uuid::Uuid::new_v4();
                    outcome.num_partitions = partitions;
                    outcome.replication_factor = 1;
                    outcome.configs = configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    if !validate_only {
                        records.push(MetadataRecord::Topic {
                            name: topic.name.clone(),
                            id: outcome.topic_id,
                            partitions,
                            configs,
                        });
                    }
                }
                Ok(_) => {}
                Err((error, message)) => {
                    outcome.error = Some(error);
                    outcome.error_message = Some(message);
                }
            }
            outcomes.push(outcome);
        }
        if !records.is_empty() {
            if let Err(e) = self.commit(records).await {
                warn!(error = %e, "metadata log append failed");
                for o in outcomes.iter_mut().filter(|o| o.error.is_none()) {
                    o.error = Some(ResponseError::UnknownServerError);
                    o.error_message = Some(format!("metadata log write failed: {e}"));
                }
            } else {
                for o in outcomes.iter().filter(|o| o.error.is_none()) {
                    info!(topic = %o.name, partitions = o.num_partitions, "topic created");
                }
            }
        }
        outcomes
    }

    fn check_new_topic(
        &self,
        image: &MetadataImage,
        topic: &NewTopic,
        partitions_total: usize,
    ) -> Result<(i32, BTreeMap<String, String>), (ResponseError, String)> {
        let config = &self.config;
        valid_topic_name(&topic.name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
        if image.topic(&topic.name).is_some() {
            return Err((ResponseError::TopicAlreadyExists, format!("Topic '{}' already exists.", topic.name)));
        }
        let partitions = if topic.assignments.is_empty() {
            match topic.num_partitions {
                -1 => config.num_partitions,
                n if n >= 1 => n,
                n => {
                    return Err((
                        ResponseError::InvalidPartitions,
                        format!("Number of partitions was set to an invalid non-positive value: {n}"),
                    ))
                }
            }
        } else {
            if topic.num_partitions != -1 || topic.replication_factor != -1 {
                return Err((ResponseError::InvalidRequest, "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into()));
            }
            let mut ids: Vec<i32> = topic.assignments.iter().map(|(p, _)| *p).collect();
            ids.sort_unstable();
            if ids.iter().enumerate().any(|(i, p)| *p != i as i32) {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    "Partitions should be a consecutive 0-based integer sequence".into(),
                ));
            }
            if let Some((p, _)) = topic.assignments.iter().find(|(_, replicas)| replicas.as_slice() != [config.node_id])
            {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "Replica assignment for partition {p} names brokers other than the only broker, {}",
                        config.node_id
                    ),
                ));
            }
            ids.len() as i32
        };
        let replication = match topic.replication_factor {
            -1 => config.default_replication_factor,
            r if r < 1 => {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    "Replication factor must be larger than 0, or -1 to use the default value.".to_string(),
                ))
            }
            r => r,
        };
        if replication > 1 {
            return Err((ResponseError::InvalidReplicationFactor, format!("Unable to replicate the partition {replication} time(s): The target replication factor of {replication} cannot be reached because only 1 broker(s) are registered.")));
        }
        if partitions_total + partitions as usize > config.partitions_max {
            return Err((
                ResponseError::PolicyViolation,
                format!("Creating {partitions} partitions would exceed max.partitions ({})", config.partitions_max),
            ));
        }
        let mut configs = BTreeMap::new();
        for (key, value) in &topic.configs {
            let Some(value) = value else { continue };
            validate_config(key, value).map_err(|m| (ResponseError::InvalidConfig, m))?;
            configs.insert(key.clone(), value.clone());
        }
        Ok((partitions, configs))
    }

    pub async fn delete_topics(&self, topics: Vec<TopicRef>) -> Vec<TopicOutcome> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else { return Vec::new() };
        let image = self.image.get();
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut records = Vec::new();
        for t in topics {
            let found = match &t {
                TopicRef::Name(n) => image.topic(n).cloned(),
                TopicRef::Id(id) => image.ids.get(id).and_then(|n| image.topic(n)).cloned(),
            };
            let mut outcome = TopicOutcome::default();
            match (found, t) {
                (Some(meta), _) => {
                    outcome.name = meta.name.clone();
                    outcome.topic_id = meta.id;
                    if !records.contains(&MetadataRecord::RemoveTopic { id: meta.id }) {
                        records.push(MetadataRecord::RemoveTopic { id: meta.id });
                    }
                }
                (None, TopicRef::Name(n)) => {
                    outcome.name = n;
                    outcome.error = Some(ResponseError::UnknownTopicOrPartition);
                    outcome.error_message = Some("This server does not host this topic-partition.".into());
                }
                (None, TopicRef::Id(id)) => {
                    outcome.topic_id = id;
                    outcome.error = Some(ResponseError::UnknownTopicId);
                    outcome.error_message = Some("This server does not host this topic ID.".into());
                }
            }
            outcomes.push(outcome);
        }
        if !records.is_empty() {
            if let Err(e) = self.commit(records).await {
                for o in outcomes.iter_mut().filter(|o| o.error.is_none()) {
                    o.error = Some(ResponseError::UnknownServerError);
                    o.error_message = Some(format!("metadata log write failed: {e}"));
                }
            } else {
                for o in outcomes.iter().filter(|o| o.error.is_none()) {
                    info!(topic = %o.name, "topic deleted");
                }
            }
        }
        outcomes
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
