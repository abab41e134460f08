//! The group coordinator of one data shard: it runs every group whose `__consumer_offsets`
//! partition this shard owns (Kafka's placement: the group id's hash modulo the partition
//! count). Group requests from any shard arrive as [`GroupCall`]s, in the order their
//! connections sent them (routing is the shard's: `shard::route`); the state-machine step
//! runs at once, and only waiting (for a rebalance, for a record to be synced) happens in
//! spawned tasks.
//!
//! A service owned by its shard (`Rc`, this executor only): its groups, its load state per
//! partition, its timers (`tick`, `expire_offsets`, run by the shard's timer tasks) and the
//! replay of `__consumer_offsets` when the shard opens one of its partitions. It reaches
//! storage only through an [`InternalTopicAppender`]: offsets and group metadata are records
//! appended with acks=all semantics (synced before the answer), so they survive `kill -9`.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use crate::cluster::{ImageCell, MetadataImage};
use crate::config::Config;
use crate::group::records::{self, GroupKey, GroupRecord, GroupValue, MemberValue, OffsetValue};
use crate::group::state::{
    Committed, Group, GroupLimits, GroupState, JoinOutcome, JoinRequest, JoinStep, SyncOutcome, SyncRequest, SyncStep,
};
use crate::group::OFFSETS_TOPIC;
use crate::partition::internal_topic::InternalTopicAppender;
use crate::partition::{Partition, PartitionTable};
use crate::protocol::batch::{self, ControlType};
use crate::types::{now_ms, Offset, ShardId, TopicPartition};

/// How often group timers are checked.
pub const GROUP_TICK: Duration = Duration::from_millis(100);
/// How long an offset commit or group write may wait for its record to be synced
/// (Kafka's `offsets.commit.timeout.ms`).
const STORE_TIMEOUT: Duration = Duration::from_millis(5000);

/// A committed offset to write: topic, partition, value.
pub type OffsetToCommit = (String, i32, OffsetValue);
/// Records for `__consumer_offsets`: encoded key and value (`None`: tombstone).
type KeyValue = (Bytes, Option<Bytes>);

/// A committed offset as read: topic, partition, value (`None`: nothing committed).
pub type OffsetFound = (String, i32, Option<OffsetValue>);

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone, Default)]
pub struct GroupSummary {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberValue>,
}

/// An answer with an error per item (member, offset), or one error for the whole request.
pub type PerItem = Result<Vec<Option<ResponseError>>, ResponseError>;

/// Offsets a member (or a consumer outside group management, generation -1) commits.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub offsets: Vec<OffsetToCommit>,
}

/// One group request for the coordinator shard, with its typed reply. A reply dropped
/// unanswered means the coordinator could not take the request (it is stopping).
pub enum GroupCall {
    Join {
        group: String,
        request: JoinRequest,
        reply: oneshot::Sender<JoinOutcome>,
    },
    Sync {
        group: String,
        request: SyncRequest,
        reply: oneshot::Sender<SyncOutcome>,
    },
    Heartbeat {
        group: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
        reply: oneshot::Sender<Option<ResponseError>>,
    },
    /// Members as (member id, instance id); the answer is one error per member, or a group error.
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
        reply: oneshot::Sender<PerItem>,
    },
    /// The answer is one error per offset, or one for all.
    Commit {
        group: String,
        request: CommitRequest,
        reply: oneshot::Sender<PerItem>,
    },
    /// TxnOffsetCommit: offsets committed in the producer's transaction; they count once
    /// its commit marker reaches the group's partition. One error per offset, or one for all.
    TxnCommit {
        group: String,
        producer_id: i64,
        producer_epoch: i16,
        request: CommitRequest,
        reply: oneshot::Sender<PerItem>,
    },
    /// `partitions: None` asks for every committed offset of the group.
    FetchOffsets {
        group: String,
        partitions: Option<Vec<(String, i32)>>,
        reply: oneshot::Sender<Result<Vec<OffsetFound>, ResponseError>>,
    },
    Describe {
        group: String,
        reply: oneshot::Sender<Result<Option<GroupSummary>, ResponseError>>,
    },
    Delete {
        group: String,
        reply: oneshot::Sender<Option<ResponseError>>,
    },
    /// OffsetDelete: the answer is one error per partition, or one for the whole request.
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
        reply: oneshot::Sender<PerItem>,
    },
    /// Every group this shard coordinates (sent to every data shard).
    List {
        reply: oneshot::Sender<Vec<GroupSummary>>,
    },
}

impl GroupCall {
    /// The group the call is for; `None` for a listing.
    pub fn group(&self) -> Option<&str> {
        match self {
            GroupCall::Join { group, .. }
            | GroupCall::Sync { group, .. }
            | GroupCall::Heartbeat { group, .. }
            | GroupCall::Leave { group, .. }
            | GroupCall::Commit { group, .. }
            | GroupCall::TxnCommit { group, .. }
            | GroupCall::FetchOffsets { group, .. }
            | GroupCall::Describe { group, .. }
            | GroupCall::Delete { group, .. }
            | GroupCall::DeleteOffsets { group, .. } => Some(group),
            GroupCall::List { .. } => None,
        }
    }

    /// Answers with a coordinator-level error (not the coordinator, still loading).
    pub fn fail(self, error: ResponseError) {
        match self {
            GroupCall::Join { request, reply, .. } => {
                let _ = reply.send(JoinOutcome::failed(error, &request.member_id));
            }
            GroupCall::Sync { reply, .. } => {
                let _ = reply.send(SyncOutcome::failed(error));
            }
            GroupCall::Heartbeat { reply, .. } | GroupCall::Delete { reply, .. } => {
                let _ = reply.send(Some(error));
            }
            GroupCall::Leave { reply, .. }
            | GroupCall::Commit { reply, .. }
            | GroupCall::TxnCommit { reply, .. }
            | GroupCall::DeleteOffsets { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            GroupCall::FetchOffsets { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            GroupCall::Describe { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            GroupCall::List { reply } => {
                let _ = reply.send(Vec::new());
            }
        }
    }
}

/// Load state of a `__consumer_offsets` partition this shard owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Loading,
    Ready,
}

/// The groups of the `__consumer_offsets` partitions one shard owns.
pub struct GroupCoordinator {
    /// The data shard this coordinator runs on.
    shard: ShardId,
    config: Arc<Config>,
    image: Rc<ImageCell>,
    appender: InternalTopicAppender,
    groups: RefCell<HashMap<String, Group>>,
    /// Load state of each `__consumer_offsets` partition this shard has.
    loads: RefCell<HashMap<i32, Load>>,
    /// Offsets committed in transactions still open, by producer id.
    txn_offsets: RefCell<HashMap<i64, Vec<PendingTxnOffset>>>,
}

/// An offset committed in a transaction, waiting for its marker.
#[derive(Debug, Clone)]
struct PendingTxnOffset {
    group: String,
    topic: String,
    partition: i32,
    committed: Committed,
}

/// The `__consumer_offsets` partition that holds `group`, if the topic exists.
pub fn offsets_partition(image: &MetadataImage, group: &str) -> Option<TopicPartition> {
    let meta = image.topic(OFFSETS_TOPIC)?;
    Some(TopicPartition::new(OFFSETS_TOPIC, records::partition_for(group, meta.partitions)))
}

impl GroupCoordinator {
    pub fn new(shard: ShardId, config: Arc<Config>, image: Rc<ImageCell>, partitions: Rc<PartitionTable>) -> Self {
        Self {
            shard,
            config,
            image,
            appender: InternalTopicAppender::new(partitions, STORE_TIMEOUT),
            groups: RefCell::new(HashMap::new()),
            loads: RefCell::new(HashMap::new()),
            txn_offsets: RefCell::new(HashMap::new()),
        }
    }

    fn group_limits(&self) -> GroupLimits {
        GroupLimits {
            initial_rebalance_delay_ms: self.config.group_initial_rebalance_delay_ms as i64,
            max_size: self.config.group_max_size,
        }
    }

    /// Runs one group call on this (the coordinator) shard.
    pub fn serve(self: &Rc<Self>, call: GroupCall) {
        let now = now_ms();
        if let Some(group) = call.group() {
            match self.coordinator_status(group) {
                Ok(()) => {}
                Err(e) => return call.fail(e),
            }
            // Deadlines are exact, as Kafka's are: a member whose session ran out a moment
            // ago is gone before this call is answered, not at the next tick.
            self.tick_group(group, now);
        }
        match call {
            GroupCall::Join { group, request, reply } => self.join(group, request, reply, now),
            GroupCall::Sync { group, request, reply } => self.sync(group, request, reply, now),
            GroupCall::Heartbeat { group, member_id, instance_id, generation, reply } => {
                let code = match self.groups.borrow_mut().get_mut(&group) {
                    Some(g) => g.heartbeat(&member_id, instance_id.as_deref(), generation, now),
                    None => ResponseError::UnknownMemberId.code(),
                };
                debug!(group = %group, member = %member_id, generation, error = code, "heartbeat answered");
                let _ = reply.send(ResponseError::try_from_code(code));
            }
            GroupCall::Leave { group, members, reply } => {
                let limits = self.group_limits();
                let codes = match self.groups.borrow_mut().get_mut(&group) {
                    Some(g) => members
                        .iter()
                        .map(|(member, instance)| {
                            let code = g.leave(member, instance.as_deref(), now, &limits);
                            if code == 0 {
                                info!(group = %g.id, member = %member, "member left the group");
                            }
                            ResponseError::try_from_code(code)
                        })
                        .collect(),
                    None => vec![Some(ResponseError::UnknownMemberId); members.len()],
                };
                self.store_if_wanted(&group);
                let _ = reply.send(Ok(codes));
            }
            GroupCall::Commit { group, request, reply } => self.commit(group, request, None, reply, now),
            GroupCall::TxnCommit { group, producer_id, producer_epoch, request, reply } => {
                self.commit(group, request, Some((producer_id, producer_epoch)), reply, now)
            }
            GroupCall::FetchOffsets { group, partitions, reply } => {
                let groups = self.groups.borrow();
                let found = match (groups.get(&group), partitions) {
                    (None, None) => Vec::new(),
                    (Some(g), None) => {
                        g.offsets.iter().map(|((t, p), c)| (t.clone(), *p, Some(c.value.clone()))).collect()
                    }
                    (g, Some(wanted)) => wanted
                        .into_iter()
                        .map(|(t, p)| {
                            let v = g.and_then(|g| g.offsets.get(&(t.clone(), p))).map(|c| c.value.clone());
                            (t, p, v)
                        })
                        .collect(),
                };
                let _ = reply.send(Ok(found));
            }
            GroupCall::Describe { group, reply } => {
                let summary = self.groups.borrow().get(&group).map(summarize);
                let _ = reply.send(Ok(summary));
            }
            GroupCall::Delete { group, reply } => self.delete_group(group, reply),
            GroupCall::DeleteOffsets { group, partitions, reply } => self.delete_offsets(group, partitions, reply),
            GroupCall::List { reply } => {
                let ready = self.loads.borrow().clone();
                let image = self.image.get();
                let list = self
                    .groups
                    .borrow()
                    .values()
                    .filter(|g| {
                        offsets_partition(&image, &g.id)
                            .is_some_and(|tp| ready.get(&tp.partition) == Some(&Load::Ready))
                    })
                    .map(summarize)
                    .collect();
                let _ = reply.send(list);
            }
        }
    }

    /// Whether this shard coordinates `group` now.
    fn coordinator_status(&self, group: &str) -> Result<(), ResponseError> {
        let image = self.image.get();
        let Some(tp) = offsets_partition(&image, group) else { return Err(ResponseError::CoordinatorNotAvailable) };
        if image.owner(&tp) != self.shard {
            return Err(ResponseError::NotCoordinator);
        }
        match self.loads.borrow().get(&tp.partition) {
            Some(Load::Ready) => Ok(()),
            Some(Load::Loading) => Err(ResponseError::CoordinatorLoadInProgress),
            None => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    fn join(self: &Rc<Self>, group: String, request: JoinRequest, reply: oneshot::Sender<JoinOutcome>, now: i64) {
        debug!(group = %group, member = %request.member_id, client = %request.client_id, "join received");
        let reply = JoinReply { group: group.clone(), reply };
        let (min, max) = self.config.group_session_timeout_ms;
        if !(min..=max).contains(&request.session_timeout_ms) {
            reply.send(JoinOutcome::failed(ResponseError::InvalidSessionTimeout, &request.member_id));
            return;
        }
        let limits = self.group_limits();
        let step = {
            let mut groups = self.groups.borrow_mut();
            if !request.member_id.is_empty() && !groups.contains_key(&group) {
                drop(groups);
                reply.send(JoinOutcome::failed(ResponseError::UnknownMemberId, &request.member_id));
                return;
            }
            let g = groups.entry(group.clone()).or_insert_with(|| Group::new(group.clone(), now));
            let step = g.join(request, now, &limits);
            // A static rejoin is stored before it is answered (see below).
            let value = matches!(step, JoinStep::StoreThenReply(_)).then(|| g.value());
            (step, value)
        };
        self.store_if_wanted(&group);
        match step {
            (JoinStep::Reply(outcome), _) => {
                reply.send(outcome);
            }
            (JoinStep::Wait(rx), _) => {
                glommio::spawn_local(async move {
                    let outcome =
                        rx.await.unwrap_or_else(|_| JoinOutcome::failed(ResponseError::CoordinatorNotAvailable, ""));
                    reply.send(outcome);
                })
                .detach();
            }
            (JoinStep::StoreThenReply(outcome), value) => {
                let stored = self.store_group(&group, value);
                glommio::spawn_local(async move {
                    let outcome = match stored.await {
                        Ok(_) => outcome,
                        Err(e) => JoinOutcome::failed(e, &outcome.member_id),
                    };
                    reply.send(outcome);
                })
                .detach();
            }
        }
    }

    fn sync(self: &Rc<Self>, group: String, request: SyncRequest, reply: oneshot::Sender<SyncOutcome>, now: i64) {
        let reply = SyncReply { group: group.clone(), member: request.member_id.clone(), reply };
        // The groups are not borrowed while anything is spawned: glommio runs a spawned task
        // at once, and a store that fails at once would find them borrowed.
        let (step, to_store) = match self.groups.borrow_mut().get_mut(&group) {
            None => (SyncStep::Reply(SyncOutcome::failed(ResponseError::UnknownMemberId)), None),
            Some(g) => match g.sync(request, now) {
                SyncStep::StoreThenFinish { generation, assignments, reply: rx } => {
                    let value = g.value_with(&assignments);
                    (SyncStep::Wait(rx), Some((generation, assignments, value)))
                }
                other => (other, None),
            },
        };
        if let Some((generation, assignments, value)) = to_store {
            let coordinator = self.clone();
            let stored = self.store_group(&group, Some(value));
            let group = group.clone();
            glommio::spawn_local(async move {
                let ok = stored.await.is_ok();
                if let Some(g) = coordinator.groups.borrow_mut().get_mut(&group) {
                    g.finish_sync(generation, assignments, ok, now_ms());
                    // A newer rebalance may have begun while the assignment was stored.
                    if g.state == GroupState::Stable && g.generation == generation {
                        info!(group = %group, generation, members = g.members.len(), "group is stable");
                    }
                }
            })
            .detach();
        }
        match step {
            SyncStep::Reply(outcome) => {
                reply.send(outcome);
            }
            SyncStep::Wait(rx) | SyncStep::StoreThenFinish { reply: rx, .. } => {
                glommio::spawn_local(async move {
                    let outcome =
                        rx.await.unwrap_or_else(|_| SyncOutcome::failed(ResponseError::CoordinatorNotAvailable));
                    reply.send(outcome);
                })
                .detach();
            }
        }
    }

    /// OffsetCommit, or with `producer` (id, epoch) TxnOffsetCommit: the offsets are written
    /// in the producer's transaction and wait for its marker (`complete_transaction`).
    fn commit(
        self: &Rc<Self>,
        group: String,
        request: CommitRequest,
        producer: Option<(i64, i16)>,
        reply: oneshot::Sender<PerItem>,
        now: i64,
    ) {
        let CommitRequest { member_id, instance_id, generation, offsets } = request;
        let checked = {
            let mut groups = self.groups.borrow_mut();
            match groups.get_mut(&group) {
                Some(g) => g.check_commit(&member_id, instance_id.as_deref(), generation, producer.is_some(), now),
                // An unknown group takes commits only from consumers outside group management.
                None if generation < 0 => {
                    groups.insert(group.clone(), Group::new(group.clone(), now));
                    Ok(())
                }
                None => Err(ResponseError::IllegalGeneration),
            }
        };
        if let Err(e) = checked {
            let _ = reply.send(Ok(vec![Some(e); offsets.len()]));
            return;
        }
        let image = self.image.get();
        let mut codes: Vec<Option<ResponseError>> = vec![None; offsets.len()];
        let mut to_write = Vec::new();
        let mut written = Vec::new();
        for (i, (topic, partition, value)) in offsets.into_iter().enumerate() {
            if value.metadata.len() > self.config.offset_metadata_max_bytes {
                codes[i] = Some(ResponseError::OffsetMetadataTooLarge);
            } else if !image.topic(&topic).is_some_and(|t| partition >= 0 && partition < t.partitions) {
                codes[i] = Some(ResponseError::UnknownTopicOrPartition);
            } else {
                let key = GroupKey::Offset { group: group.clone(), topic: topic.clone(), partition };
                to_write.push((records::encode_key(&key), Some(records::encode_offset(&value))));
                written.push((i, topic, partition, value));
            }
        }
        if written.is_empty() {
            let _ = reply.send(Ok(codes));
            return;
        }
        if let Some((producer_id, _)) = producer {
            let pending = self.txn_offsets.borrow().get(&producer_id).map_or(0, Vec::len);
            if pending + written.len() > self.config.txn_partitions_max {
                warn!(group = %group, producer_id, max = self.config.txn_partitions_max, "transactional offset commit refused: weir.transaction.partitions.max offsets pending");
                let _ = reply.send(Err(ResponseError::InvalidRequest));
                return;
            }
        }
        let stored = self.append_group_records_as(&group, &to_write, producer);
        let coordinator = self.clone();
        glommio::spawn_local(async move {
            match stored.await {
                Ok(base) => match producer {
                    Some((producer_id, _)) => {
                        let mut pending = coordinator.txn_offsets.borrow_mut();
                        let list = pending.entry(producer_id).or_default();
                        for (n, (_, topic, partition, value)) in written.into_iter().enumerate() {
                            let committed = Committed { value, record_offset: base + n as i64 };
                            list.push(PendingTxnOffset { group: group.clone(), topic, partition, committed });
                        }
                    }
                    None => {
                        if let Some(g) = coordinator.groups.borrow_mut().get_mut(&group) {
                            for (n, (_, topic, partition, value)) in written.into_iter().enumerate() {
                                g.apply_offset(topic, partition, Committed { value, record_offset: base + n as i64 });
                            }
                        }
                    }
                },
                Err(e) => {
                    for (i, ..) in written {
                        codes[i] = Some(e);
                    }
                }
            }
            let _ = reply.send(Ok(codes));
        })
        .detach();
    }

    fn delete_group(self: &Rc<Self>, group: String, reply: oneshot::Sender<Option<ResponseError>>) {
        let tombstones = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(&group) else {
                let _ = reply.send(Some(ResponseError::GroupIdNotFound));
                return;
            };
            if !g.is_empty() || g.state != GroupState::Empty {
                let _ = reply.send(Some(ResponseError::NonEmptyGroup));
                return;
            }
            g.mark_dead();
            let mut keys: Vec<KeyValue> = g
                .offsets
                .keys()
                .map(|(topic, partition)| {
                    let key = GroupKey::Offset { group: group.clone(), topic: topic.clone(), partition: *partition };
                    (records::encode_key(&key), None)
                })
                .collect();
            keys.push((records::encode_key(&GroupKey::Group { group: group.clone() }), None));
            groups.remove(&group);
            keys
        };
        let stored = self.append_group_records(&group, &tombstones);
        glommio::spawn_local(async move {
            let error = stored.await.err();
            if error.is_none() {
                info!(group = %group, "group deleted");
            }
            let _ = reply.send(error);
        })
        .detach();
    }

    /// OffsetDelete: tombstones for the committed offsets the group may lose (see
    /// `Group::offsets_deletable`); they leave the group once stored.
    fn delete_offsets(self: &Rc<Self>, group: String, partitions: Vec<(String, i32)>, reply: oneshot::Sender<PerItem>) {
        let image = self.image.get();
        let (mut codes, tombstones, gone) = {
            let groups = self.groups.borrow();
            let Some(g) = groups.get(&group) else {
                let _ = reply.send(Err(ResponseError::GroupIdNotFound));
                return;
            };
            let mut codes = match g.offsets_deletable(&partitions) {
                Ok(codes) => codes,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            let mut tombstones = Vec::new();
            let mut gone = Vec::new();
            for (i, (topic, partition)) in partitions.iter().enumerate() {
                if codes[i].is_some() {
                    continue;
                }
                if !image.topic(topic).is_some_and(|t| *partition >= 0 && *partition < t.partitions) {
                    codes[i] = Some(ResponseError::UnknownTopicOrPartition);
                } else if g.offsets.contains_key(&(topic.clone(), *partition)) {
                    let key = GroupKey::Offset { group: group.clone(), topic: topic.clone(), partition: *partition };
                    tombstones.push((records::encode_key(&key), None));
                    gone.push((topic.clone(), *partition));
                }
            }
            (codes, tombstones, gone)
        };
        if tombstones.is_empty() {
            let _ = reply.send(Ok(codes));
            return;
        }
        let stored = self.append_group_records(&group, &tombstones);
        let coordinator = self.clone();
        glommio::spawn_local(async move {
            match stored.await {
                Ok(_) => {
                    if let Some(g) = coordinator.groups.borrow_mut().get_mut(&group) {
                        for tp in &gone {
                            g.offsets.remove(tp);
                        }
                    }
                    info!(group = %group, removed = gone.len(), "committed offsets deleted");
                }
                Err(e) => {
                    for (i, (topic, partition)) in partitions.iter().enumerate() {
                        if gone.contains(&(topic.clone(), *partition)) {
                            codes[i] = Some(e);
                        }
                    }
                }
            }
            let _ = reply.send(Ok(codes));
        })
        .detach();
    }

    /// Stores a group that asked to be (it became empty), without waiting.
    fn store_if_wanted(self: &Rc<Self>, group: &str) {
        let value = match self.groups.borrow_mut().get_mut(group) {
            Some(g) => match g.take_store_wanted() {
                true => g.value(),
                false => return,
            },
            None => return,
        };
        let stored = self.store_group(group, Some(value));
        let group = group.to_string();
        glommio::spawn_local(async move {
            if let Err(e) = stored.await {
                warn!(group = %group, error = ?e, "group metadata not stored");
            }
        })
        .detach();
    }

    /// Appends the group's metadata record (or a tombstone for `None`).
    fn store_group(
        self: &Rc<Self>,
        group: &str,
        value: Option<GroupValue>,
    ) -> impl std::future::Future<Output = Result<Offset, ResponseError>> + 'static {
        let key = records::encode_key(&GroupKey::Group { group: group.to_string() });
        self.append_group_records(group, &[(key, value.as_ref().map(records::encode_group))])
    }

    /// Appends records to the group's `__consumer_offsets` partition now (so appends keep
    /// the order of calls); the future resolves with the first record's offset once synced.
    fn append_group_records(
        self: &Rc<Self>,
        group: &str,
        recs: &[KeyValue],
    ) -> impl std::future::Future<Output = Result<Offset, ResponseError>> + 'static {
        self.append_group_records_as(group, recs, None)
    }

    /// Appends records as `append_group_records`, in `producer`'s transaction if given.
    fn append_group_records_as(
        self: &Rc<Self>,
        group: &str,
        recs: &[KeyValue],
        producer: Option<(i64, i16)>,
    ) -> impl std::future::Future<Output = Result<Offset, ResponseError>> + 'static {
        let tp = offsets_partition(&self.image.get(), group);
        let encoded = records::encode_batch_as(recs, now_ms(), producer);
        let appended = match (tp, encoded) {
            (Some(tp), Ok(batch)) => Some(self.appender.append(&tp, batch)),
            (_, Err(e)) => {
                warn!(group = %group, error = %e, "cannot encode group records");
                None
            }
            (None, _) => None,
        };
        async move {
            let Some(appended) = appended else { return Err(ResponseError::CoordinatorNotAvailable) };
            appended.await.map_err(|e| match e {
                // Kafka's mapping for a failed write to the offsets topic.
                ResponseError::RequestTimedOut | ResponseError::UnknownTopicOrPartition => {
                    ResponseError::CoordinatorNotAvailable
                }
                ResponseError::NotLeaderOrFollower => ResponseError::NotCoordinator,
                ResponseError::MessageTooLarge => ResponseError::InvalidCommitOffsetSize,
                _ => ResponseError::UnknownServerError,
            })
        }
    }

    /// Rebuilds the groups of a `__consumer_offsets` partition this shard just opened.
    pub async fn load(self: &Rc<Self>, partition: Rc<Partition>) {
        let p = partition.tp().partition;
        self.loads.borrow_mut().insert(p, Load::Loading);
        let started = std::time::Instant::now();
        let mut latest: HashMap<GroupKey, (Offset, GroupRecord)> = HashMap::new();
        // Offsets committed in transactions whose marker has not come yet, by producer.
        let mut in_txn: HashMap<i64, Vec<(Offset, GroupRecord)>> = HashMap::new();
        let mut skipped = 0usize;
        let replayed = partition
            .replay_stored(|read| {
                for (pos, h) in batch::iter_batches(&read) {
                    let Some(total) = h.total_bytes() else { break };
                    if h.is_control() {
                        // A transaction's outcome: its offsets count (commit) or never do (abort).
                        let done = in_txn.remove(&h.producer_id()).unwrap_or_default();
                        if h.control_type() == Some(ControlType::Commit) {
                            for (at, rec) in done {
                                // A record written after the transaction's but before its
                                // marker stays the latest (as in Kafka).
                                match latest.entry(record_key(&rec)) {
                                    Entry::Occupied(e) if e.get().0 > at => {}
                                    Entry::Occupied(mut e) => {
                                        e.insert((at, rec));
                                    }
                                    Entry::Vacant(e) => {
                                        e.insert((at, rec));
                                    }
                                }
                            }
                        }
                        continue;
                    }
                    match records::decode_batches(read.slice(pos..pos + total)) {
                        Ok(recs) if h.is_transactional() => in_txn.entry(h.producer_id()).or_default().extend(recs),
                        Ok(recs) => {
                            for (at, rec) in recs {
                                latest.insert(record_key(&rec), (at, rec));
                            }
                        }
                        Err(e) => {
                            skipped += 1;
                            debug!(partition = %partition.tp(), offset = h.base_offset(), error = %e, "skipping undecodable group records");
                        }
                    }
                }
            })
            .await;
        if let Err(e) = replayed {
            warn!(partition = %partition.tp(), error = %e, "cannot read while loading groups");
        }
        // Transactions still open in the log: their offsets wait for the marker, as before.
        {
            let mut pending = self.txn_offsets.borrow_mut();
            for (producer_id, recs) in in_txn {
                for (at, rec) in recs {
                    if let GroupRecord::Offset {
                        key: GroupKey::Offset { group, topic, partition },
                        value: Some(value),
                    } = rec
                    {
                        let committed = Committed { value, record_offset: at };
                        pending.entry(producer_id).or_default().push(PendingTxnOffset {
                            group,
                            topic,
                            partition,
                            committed,
                        });
                    }
                }
            }
        }
        let now = now_ms();
        let mut loaded: HashMap<String, Group> = HashMap::new();
        // Group metadata first, then the offsets of each group.
        for (_, rec) in latest.values() {
            if let GroupRecord::Group { key, value: Some(v) } = rec {
                let id = key.group().to_string();
                loaded.insert(id.clone(), Group::from_value(id, v.clone(), now));
            }
        }
        for (at, rec) in latest.into_values() {
            if let GroupRecord::Offset { key: GroupKey::Offset { group, topic, partition }, value: Some(value) } = rec {
                let g = loaded.entry(group.clone()).or_insert_with(|| Group::new(group, now));
                g.apply_offset(topic, partition, Committed { value, record_offset: at });
            }
        }
        let count = loaded.len();
        self.groups.borrow_mut().extend(loaded);
        self.loads.borrow_mut().insert(p, Load::Ready);
        // Offsets of topics deleted while their tombstones were not yet written.
        self.forget_deleted_topics(&self.image.get());
        if skipped > 0 {
            warn!(partition = %partition.tp(), skipped, "some group record batches could not be decoded");
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if count > 0 {
            info!(partition = %partition.tp(), groups = count, elapsed_ms, "groups loaded");
        } else {
            debug!(partition = %partition.tp(), elapsed_ms, "no groups to load");
        }
    }

    /// A transaction marker of `producer_id` is durable in `__consumer_offsets` partition
    /// `partition`: the offsets it committed there count now (commit), or never (abort).
    pub fn complete_transaction(&self, partition: i32, producer_id: i64, commit: bool) {
        let total = self.image.get().topic(OFFSETS_TOPIC).map_or(0, |t| t.partitions);
        let mut pending = self.txn_offsets.borrow_mut();
        let Some(list) = pending.remove(&producer_id) else { return };
        let (here, elsewhere): (Vec<PendingTxnOffset>, Vec<PendingTxnOffset>) =
            list.into_iter().partition(|o| records::partition_for(&o.group, total) == partition);
        if !elsewhere.is_empty() {
            pending.insert(producer_id, elsewhere);
        }
        drop(pending);
        if !commit || here.is_empty() {
            return;
        }
        let mut groups = self.groups.borrow_mut();
        let now = now_ms();
        for o in here {
            let g = groups.entry(o.group.clone()).or_insert_with(|| Group::new(o.group.clone(), now));
            g.apply_offset(o.topic, o.partition, o.committed);
        }
    }

    /// Forgets the groups of a `__consumer_offsets` partition this shard no longer has.
    pub fn unload(&self, partition: i32, partitions_total: i32) {
        self.loads.borrow_mut().remove(&partition);
        for pending in self.txn_offsets.borrow_mut().values_mut() {
            pending.retain(|o| records::partition_for(&o.group, partitions_total) != partition);
        }
        // Members waiting on a group that moves learn it at once, as in Kafka.
        self.groups.borrow_mut().retain(|id, g| {
            let stays = records::partition_for(id, partitions_total) != partition;
            if !stays {
                g.fail_waiters(ResponseError::NotCoordinator);
            }
            stays
        });
    }

    /// Drops committed offsets of topics that no longer exist (Kafka does this when a topic
    /// is deleted), so a topic created again under the same name starts from the reset policy.
    pub fn forget_deleted_topics(self: &Rc<Self>, image: &MetadataImage) {
        let mut writes: Vec<(String, Vec<KeyValue>)> = Vec::new();
        for (id, g) in self.groups.borrow_mut().iter_mut() {
            let gone: Vec<(String, i32)> =
                g.offsets.keys().filter(|(topic, _)| image.topic(topic).is_none()).cloned().collect();
            if gone.is_empty() {
                continue;
            }
            let mut tombstones = Vec::with_capacity(gone.len());
            for (topic, partition) in gone {
                g.offsets.remove(&(topic.clone(), partition));
                tombstones.push((records::encode_key(&GroupKey::Offset { group: id.clone(), topic, partition }), None));
            }
            writes.push((id.clone(), tombstones));
        }
        for (group, tombstones) in writes {
            info!(group = %group, removed = tombstones.len(), "committed offsets of deleted topics removed");
            let stored = self.append_group_records(&group, &tombstones);
            glommio::spawn_local(async move {
                if let Err(e) = stored.await {
                    warn!(group = %group, error = ?e, "removal of deleted topics' offsets not stored");
                }
            })
            .detach();
        }
    }

    /// At shutdown: parked joins and syncs are answered NOT_COORDINATOR at once, so their
    /// connections can drain instead of waiting out a rebalance.
    pub fn release_waiters(&self) {
        for g in self.groups.borrow_mut().values_mut() {
            g.fail_waiters(ResponseError::NotCoordinator);
        }
    }

    /// The group timers: run every [`GROUP_TICK`] on each data shard.
    pub fn tick(self: &Rc<Self>) {
        let now = now_ms();
        let limits = self.group_limits();
        let mut changed = Vec::new();
        for g in self.groups.borrow_mut().values_mut() {
            if tick_one(g, now, &limits) {
                changed.push(g.id.clone());
            }
        }
        for id in changed {
            self.store_if_wanted(&id);
        }
    }

    /// The timers of one group, now (before a call for it is served).
    fn tick_group(self: &Rc<Self>, group: &str, now: i64) {
        let limits = self.group_limits();
        let changed = self.groups.borrow_mut().get_mut(group).is_some_and(|g| tick_one(g, now, &limits));
        if changed {
            self.store_if_wanted(group);
        }
    }

    /// Drops offsets past `offsets.retention.minutes` and empty groups left with none.
    pub fn expire_offsets(self: &Rc<Self>) {
        let now = now_ms();
        let retention = self.config.offsets_retention_ms;
        let mut writes: Vec<(String, Vec<KeyValue>)> = Vec::new();
        self.groups.borrow_mut().retain(|id, g| {
            let expired = g.expired_offsets(now, retention);
            let mut tombstones = Vec::new();
            for (topic, partition) in expired {
                g.offsets.remove(&(topic.clone(), partition));
                let key = GroupKey::Offset { group: id.clone(), topic, partition };
                tombstones.push((records::encode_key(&key), None));
            }
            let dead = g.state == GroupState::Empty && g.is_empty() && g.offsets.is_empty();
            if dead && (g.generation > 0 || !tombstones.is_empty()) {
                tombstones.push((records::encode_key(&GroupKey::Group { group: id.clone() }), None));
            }
            if !tombstones.is_empty() {
                info!(group = %id, removed = tombstones.len(), "expired committed offsets");
                writes.push((id.clone(), tombstones));
            }
            !dead
        });
        for (group, tombstones) in writes {
            let stored = self.append_group_records(&group, &tombstones);
            glommio::spawn_local(async move {
                if let Err(e) = stored.await {
                    warn!(group = %group, error = ?e, "offset expiry not stored");
                }
            })
            .detach();
        }
    }
}

fn record_key(rec: &GroupRecord) -> GroupKey {
    match rec {
        GroupRecord::Offset { key, .. } | GroupRecord::Group { key, .. } => key.clone(),
    }
}

/// Runs one group's deadlines; returns whether its state or generation changed.
fn tick_one(g: &mut Group, now: i64, limits: &GroupLimits) -> bool {
    let before = (g.state, g.generation);
    for member in g.tick(now, limits) {
        info!(group = %g.id, member = %member, "member removed: session or rebalance timeout");
    }
    let changed = (g.state, g.generation) != before;
    if changed {
        debug!(group = %g.id, state = g.state.name(), generation = g.generation, "group changed");
    }
    changed
}

fn summarize(g: &Group) -> GroupSummary {
    GroupSummary {
        group_id: g.id.clone(),
        state: g.state.name(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: if g.state == GroupState::Stable { g.protocol.clone().unwrap_or_default() } else { String::new() },
        members: g.describe_members(),
    }
}

/// Answers a JoinGroup, with a debug line (the join/sync/heartbeat flow of a group can then
/// be followed in the log when a client misbehaves).
struct JoinReply {
    group: String,
    reply: oneshot::Sender<JoinOutcome>,
}

impl JoinReply {
    /// A requester that went away is not an error: the answer is dropped.
    fn send(self, outcome: JoinOutcome) {
        debug!(group = %self.group, member = %outcome.member_id, generation = outcome.generation,
            leader = %outcome.leader, error = outcome.error, "join answered");
        let _ = self.reply.send(outcome);
    }
}

/// Answers a SyncGroup, with a debug line.
struct SyncReply {
    group: String,
    member: String,
    reply: oneshot::Sender<SyncOutcome>,
}

impl SyncReply {
    /// A requester that went away is not an error: the answer is dropped.
    fn send(self, outcome: SyncOutcome) {
        debug!(group = %self.group, member = %self.member, error = outcome.error,
            assignment_bytes = outcome.assignment.len(), "sync answered");
        let _ = self.reply.send(outcome);
    }
}
