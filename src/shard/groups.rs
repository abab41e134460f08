//! The group coordinator of one data shard: it runs every group whose `__consumer_offsets`
//! partition this shard owns (Kafka's placement: the group id's hash modulo the partition
//! count). Group requests from any shard arrive here as [`GroupCall`]s, in the order their
//! connections sent them; the state-machine step runs at once, and only waiting (for a
//! rebalance, for a record to be synced) happens in spawned tasks.
//!
//! Durability: offsets and group metadata are records appended to the group's partition
//! with acks=all semantics (synced before the answer), so they survive `kill -9`; the
//! partition is replayed into memory when the shard opens it. Timers (sessions, rebalance
//! and sync deadlines, offset retention) are one periodic tick on this shard.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use super::message::ProduceItem;
use super::{executor_of, Shard, ShardRequest};
use crate::cluster::MetadataImage;
use crate::group::records::{self, GroupKey, GroupRecord, GroupValue, MemberValue, OffsetValue};
use crate::group::state::{
    Committed, Group, GroupLimits, GroupState, JoinOutcome, JoinRequest, JoinStep, SyncOutcome, SyncRequest, SyncStep,
};
use crate::group::OFFSETS_TOPIC;
use crate::partition::Partition;
use crate::protocol::batch;
use crate::types::{now_ms, Offset, TopicPartition};

/// How often group timers are checked.
pub const GROUP_TICK: Duration = Duration::from_millis(100);
/// How long an offset commit or group write may wait for its record to be synced
/// (Kafka's `offsets.commit.timeout.ms`).
const STORE_TIMEOUT_MS: i32 = 5000;
/// Bytes read at once while loading a `__consumer_offsets` partition.
const LOAD_READ_BYTES: usize = 1 << 20;

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
        reply: oneshot::Sender<i16>,
    },
    /// Members as (member id, instance id); the answer is one code per member, or a group error.
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
        reply: oneshot::Sender<Result<Vec<i16>, i16>>,
    },
    /// The answer is one code per offset, or one code for all.
    Commit {
        group: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
        offsets: Vec<OffsetToCommit>,
        reply: oneshot::Sender<Result<Vec<i16>, i16>>,
    },
    /// `partitions: None` asks for every committed offset of the group.
    FetchOffsets {
        group: String,
        partitions: Option<Vec<(String, i32)>>,
        reply: oneshot::Sender<Result<Vec<OffsetFound>, i16>>,
    },
    Describe {
        group: String,
        reply: oneshot::Sender<Result<Option<GroupSummary>, i16>>,
    },
    Delete {
        group: String,
        reply: oneshot::Sender<i16>,
    },
    /// Every group this shard coordinates (sent to every data shard).
    List {
        reply: oneshot::Sender<Vec<GroupSummary>>,
    },
}

impl GroupCall {
    fn group(&self) -> Option<&str> {
        match self {
            GroupCall::Join { group, .. }
            | GroupCall::Sync { group, .. }
            | GroupCall::Heartbeat { group, .. }
            | GroupCall::Leave { group, .. }
            | GroupCall::Commit { group, .. }
            | GroupCall::FetchOffsets { group, .. }
            | GroupCall::Describe { group, .. }
            | GroupCall::Delete { group, .. } => Some(group),
            GroupCall::List { .. } => None,
        }
    }

    /// Answers with a coordinator-level error (not the coordinator, still loading).
    fn fail(self, error: ResponseError) {
        let code = error.code();
        match self {
            GroupCall::Join { request, reply, .. } => {
                let _ = reply.send(JoinOutcome::failed(error, &request.member_id));
            }
            GroupCall::Sync { reply, .. } => {
                let _ = reply.send(SyncOutcome::failed(error));
            }
            GroupCall::Heartbeat { reply, .. } | GroupCall::Delete { reply, .. } => {
                let _ = reply.send(code);
            }
            GroupCall::Leave { reply, .. } | GroupCall::Commit { reply, .. } => {
                let _ = reply.send(Err(code));
            }
            GroupCall::FetchOffsets { reply, .. } => {
                let _ = reply.send(Err(code));
            }
            GroupCall::Describe { reply, .. } => {
                let _ = reply.send(Err(code));
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
#[derive(Default)]
pub struct GroupCoordinator {
    groups: RefCell<HashMap<String, Group>>,
    partitions: RefCell<HashMap<i32, Load>>,
}

/// The `__consumer_offsets` partition that holds `group`, if the topic exists.
pub fn offsets_partition(image: &MetadataImage, group: &str) -> Option<TopicPartition> {
    let meta = image.topic(OFFSETS_TOPIC)?;
    Some(TopicPartition::new(OFFSETS_TOPIC, records::partition_for(group, meta.partitions)))
}

impl Shard {
    fn group_limits(&self) -> GroupLimits {
        GroupLimits {
            initial_rebalance_delay_ms: self.config.group_initial_rebalance_delay_ms as i64,
            max_size: self.config.group_max_size,
        }
    }

    /// Sends a group call to its coordinator shard (this one or another), in order. A
    /// `List` goes to this shard only; callers send one to each data shard.
    pub async fn route_group(self: &Rc<Self>, call: GroupCall) {
        let Some(group) = call.group() else {
            self.serve_group(call);
            return;
        };
        let image = self.image();
        let Some(tp) = offsets_partition(&image, group) else {
            call.fail(ResponseError::CoordinatorNotAvailable);
            return;
        };
        let owner = image.owner(&tp);
        if Some(owner) == self.data_id() {
            self.serve_group(call);
        } else {
            // If the owner has stopped, the call is dropped and its caller sees no answer.
            let _ = self.send(executor_of(owner), ShardRequest::Group(call)).await;
        }
    }

    /// Sends `List` to every data shard and merges the answers.
    pub async fn list_all_groups(self: &Rc<Self>) -> Vec<GroupSummary> {
        let mut answers = Vec::new();
        for executor in 1..self.executors() {
            let (reply, rx) = oneshot::channel();
            let call = GroupCall::List { reply };
            if executor == self.index {
                self.serve_group(call);
            } else if self.send(executor, ShardRequest::Group(call)).await.is_err() {
                continue;
            }
            answers.push(rx);
        }
        let mut all = Vec::new();
        for rx in answers {
            all.extend(rx.await.unwrap_or_default());
        }
        all.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        all
    }

    /// Runs one group call on this (the coordinator) shard.
    pub fn serve_group(self: &Rc<Self>, call: GroupCall) {
        if let Some(group) = call.group() {
            match self.coordinator_status(group) {
                Ok(()) => {}
                Err(e) => return call.fail(e),
            }
        }
        let now = now_ms();
        match call {
            GroupCall::Join { group, request, reply } => self.join(group, request, reply, now),
            GroupCall::Sync { group, request, reply } => self.sync(group, request, reply, now),
            GroupCall::Heartbeat { group, member_id, instance_id, generation, reply } => {
                let code = match self.groups.groups.borrow_mut().get_mut(&group) {
                    Some(g) => g.heartbeat(&member_id, instance_id.as_deref(), generation, now),
                    None => ResponseError::UnknownMemberId.code(),
                };
                debug!(group = %group, member = %member_id, generation, error = code, "heartbeat answered");
                let _ = reply.send(code);
            }
            GroupCall::Leave { group, members, reply } => {
                let limits = self.group_limits();
                let codes = match self.groups.groups.borrow_mut().get_mut(&group) {
                    Some(g) => members
                        .iter()
                        .map(|(member, instance)| {
                            let code = g.leave(member, instance.as_deref(), now, &limits);
                            if code == 0 {
                                info!(group = %g.id, member = %member, "member left the group");
                            }
                            code
                        })
                        .collect(),
                    None => vec![ResponseError::UnknownMemberId.code(); members.len()],
                };
                self.store_if_wanted(&group);
                let _ = reply.send(Ok(codes));
            }
            GroupCall::Commit { group, member_id, instance_id, generation, offsets, reply } => {
                self.commit(group, member_id, instance_id, generation, offsets, reply, now)
            }
            GroupCall::FetchOffsets { group, partitions, reply } => {
                let groups = self.groups.groups.borrow();
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
                let summary = self.groups.groups.borrow().get(&group).map(summarize);
                let _ = reply.send(Ok(summary));
            }
            GroupCall::Delete { group, reply } => self.delete_group(group, reply),
            GroupCall::List { reply } => {
                let ready = self.groups.partitions.borrow().clone();
                let image = self.image();
                let list = self
                    .groups
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
        let image = self.image();
        let Some(tp) = offsets_partition(&image, group) else { return Err(ResponseError::CoordinatorNotAvailable) };
        if !self.owner_is_local(&tp) {
            return Err(ResponseError::NotCoordinator);
        }
        match self.groups.partitions.borrow().get(&tp.partition) {
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
            let mut groups = self.groups.groups.borrow_mut();
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
        let step = match self.groups.groups.borrow_mut().get_mut(&group) {
            None => SyncStep::Reply(SyncOutcome::failed(ResponseError::UnknownMemberId)),
            Some(g) => match g.sync(request, now) {
                SyncStep::StoreThenFinish { generation, assignments, reply: rx } => {
                    let value = g.value_with(&assignments);
                    let shard = self.clone();
                    let stored = self.store_group(&group, Some(value));
                    glommio::spawn_local(async move {
                        let ok = stored.await.is_ok();
                        if let Some(g) = shard.groups.groups.borrow_mut().get_mut(&group) {
                            g.finish_sync(generation, assignments, ok, now_ms());
                            // A newer rebalance may have begun while the assignment was stored.
                            if g.state == GroupState::Stable && g.generation == generation {
                                info!(group = %group, generation, members = g.members.len(), "group is stable");
                            }
                        }
                    })
                    .detach();
                    SyncStep::Wait(rx)
                }
                other => other,
            },
        };
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

    #[allow(clippy::too_many_arguments)]
    fn commit(
        self: &Rc<Self>,
        group: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
        offsets: Vec<OffsetToCommit>,
        reply: oneshot::Sender<Result<Vec<i16>, i16>>,
        now: i64,
    ) {
        let checked = {
            let mut groups = self.groups.groups.borrow_mut();
            match groups.get_mut(&group) {
                Some(g) => g.check_commit(&member_id, instance_id.as_deref(), generation, now),
                // An unknown group takes commits only from consumers outside group management.
                None if generation < 0 => {
                    groups.insert(group.clone(), Group::new(group.clone(), now));
                    Ok(())
                }
                None => Err(ResponseError::IllegalGeneration),
            }
        };
        if let Err(e) = checked {
            let _ = reply.send(Ok(vec![e.code(); offsets.len()]));
            return;
        }
        let image = self.image();
        let mut codes = vec![0i16; offsets.len()];
        let mut to_write = Vec::new();
        let mut written = Vec::new();
        for (i, (topic, partition, value)) in offsets.into_iter().enumerate() {
            if value.metadata.len() > self.config.offset_metadata_max_bytes {
                codes[i] = ResponseError::OffsetMetadataTooLarge.code();
            } else if !image.topic(&topic).is_some_and(|t| partition >= 0 && partition < t.partitions) {
                codes[i] = ResponseError::UnknownTopicOrPartition.code();
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
        let stored = self.append_group_records(&group, &to_write);
        let shard = self.clone();
        glommio::spawn_local(async move {
            match stored.await {
                Ok(base) => {
                    if let Some(g) = shard.groups.groups.borrow_mut().get_mut(&group) {
                        for (n, (_, topic, partition, value)) in written.into_iter().enumerate() {
                            g.apply_offset(topic, partition, Committed { value, record_offset: base + n as i64 });
                        }
                    }
                }
                Err(e) => {
                    for (i, ..) in written {
                        codes[i] = e.code();
                    }
                }
            }
            let _ = reply.send(Ok(codes));
        })
        .detach();
    }

    fn delete_group(self: &Rc<Self>, group: String, reply: oneshot::Sender<i16>) {
        let tombstones = {
            let mut groups = self.groups.groups.borrow_mut();
            let Some(g) = groups.get_mut(&group) else {
                let _ = reply.send(ResponseError::GroupIdNotFound.code());
                return;
            };
            if !g.is_empty() || g.state != GroupState::Empty {
                let _ = reply.send(ResponseError::NonEmptyGroup.code());
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
            let code = match stored.await {
                Ok(_) => 0,
                Err(e) => e.code(),
            };
            if code == 0 {
                info!(group = %group, "group deleted");
            }
            let _ = reply.send(code);
        })
        .detach();
    }

    /// Stores a group that asked to be (it became empty), without waiting.
    fn store_if_wanted(self: &Rc<Self>, group: &str) {
        let value = match self.groups.groups.borrow_mut().get_mut(group) {
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
        let tp = offsets_partition(&self.image(), group);
        let encoded = records::encode_batch(recs, now_ms());
        let appended = match (tp, encoded) {
            (Some(tp), Ok(batch)) => {
                Some(self.produce_local(-1, STORE_TIMEOUT_MS, vec![ProduceItem { idx: 0, tp, batch }]))
            }
            (_, Err(e)) => {
                warn!(group = %group, error = %e, "cannot encode group records");
                None
            }
            (None, _) => None,
        };
        async move {
            let Some(appended) = appended else { return Err(ResponseError::CoordinatorNotAvailable) };
            let outcome = appended.await.into_iter().next().ok_or(ResponseError::CoordinatorNotAvailable)?;
            match ResponseError::try_from_code(outcome.error_code) {
                None => Ok(outcome.base_offset),
                // Kafka's mapping for a failed write to the offsets topic.
                Some(ResponseError::RequestTimedOut | ResponseError::UnknownTopicOrPartition) => {
                    Err(ResponseError::CoordinatorNotAvailable)
                }
                Some(ResponseError::NotLeaderOrFollower) => Err(ResponseError::NotCoordinator),
                Some(ResponseError::MessageTooLarge) => Err(ResponseError::InvalidCommitOffsetSize),
                Some(_) => Err(ResponseError::UnknownServerError),
            }
        }
    }

    /// Rebuilds the groups of a `__consumer_offsets` partition this shard just opened.
    pub async fn load_groups(self: &Rc<Self>, partition: Rc<Partition>) {
        let p = partition.tp.partition;
        self.groups.partitions.borrow_mut().insert(p, Load::Loading);
        let started = std::time::Instant::now();
        let mut latest: HashMap<GroupKey, (Offset, GroupRecord)> = HashMap::new();
        let mut offset = partition.log.log_start_offset();
        let end = partition.log.next_offset();
        let mut skipped = 0usize;
        while offset < end {
            let read = match partition.log.read(offset, LOAD_READ_BYTES).await {
                Ok(r) => r.records,
                Err(e) => {
                    warn!(partition = %partition.tp, offset, error = %e, "cannot read while loading groups");
                    break;
                }
            };
            let Some(next) = batch::iter_batches(&read).map(|(_, h)| h.last_offset() + 1).last() else { break };
            match records::decode_batches(read) {
                Ok(recs) => {
                    for (at, rec) in recs {
                        let key = match &rec {
                            GroupRecord::Offset { key, .. } | GroupRecord::Group { key, .. } => key.clone(),
                        };
                        latest.insert(key, (at, rec));
                    }
                }
                Err(e) => {
                    skipped += 1;
                    debug!(partition = %partition.tp, offset, error = %e, "skipping undecodable group records");
                }
            }
            offset = next;
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
        self.groups.groups.borrow_mut().extend(loaded);
        self.groups.partitions.borrow_mut().insert(p, Load::Ready);
        // Offsets of topics deleted while their tombstones were not yet written.
        self.forget_deleted_topics(&self.image());
        if skipped > 0 {
            warn!(partition = %partition.tp, skipped, "some group record batches could not be decoded");
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if count > 0 {
            info!(partition = %partition.tp, groups = count, elapsed_ms, "groups loaded");
        } else {
            debug!(partition = %partition.tp, elapsed_ms, "no groups to load");
        }
    }

    /// Forgets the groups of a `__consumer_offsets` partition this shard no longer has.
    pub fn unload_groups(&self, partition: i32, partitions_total: i32) {
        self.groups.partitions.borrow_mut().remove(&partition);
        self.groups.groups.borrow_mut().retain(|id, _| records::partition_for(id, partitions_total) != partition);
    }

    /// Drops committed offsets of topics that no longer exist (Kafka does this when a topic
    /// is deleted), so a topic created again under the same name starts from the reset policy.
    pub fn forget_deleted_topics(self: &Rc<Self>, image: &MetadataImage) {
        let mut writes: Vec<(String, Vec<KeyValue>)> = Vec::new();
        for (id, g) in self.groups.groups.borrow_mut().iter_mut() {
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
    pub fn release_group_waiters(&self) {
        for g in self.groups.groups.borrow_mut().values_mut() {
            g.fail_waiters(ResponseError::NotCoordinator);
        }
    }

    /// The group timers: run every [`GROUP_TICK`] on each data shard.
    pub fn tick_groups(self: &Rc<Self>) {
        let now = now_ms();
        let limits = self.group_limits();
        let mut changed = Vec::new();
        for g in self.groups.groups.borrow_mut().values_mut() {
            let before = (g.state, g.generation);
            for member in g.tick(now, &limits) {
                info!(group = %g.id, member = %member, "member removed: session or rebalance timeout");
            }
            if (g.state, g.generation) != before {
                debug!(group = %g.id, state = g.state.name(), generation = g.generation, "group changed");
                changed.push(g.id.clone());
            }
        }
        for id in changed {
            self.store_if_wanted(&id);
        }
    }

    /// Drops offsets past `offsets.retention.minutes` and empty groups left with none.
    pub fn expire_group_offsets(self: &Rc<Self>) {
        let now = now_ms();
        let retention = self.config.offsets_retention_ms;
        let mut writes: Vec<(String, Vec<KeyValue>)> = Vec::new();
        self.groups.groups.borrow_mut().retain(|id, g| {
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
