//! One consumer group under Kafka's classic protocol: members, generations, the rebalance
//! state machine and committed offsets. Sans-IO: callers pass the time in, and answers to
//! parked JoinGroup/SyncGroup requests leave through one-shot senders. Persisting is the
//! caller's job (`shard::groups`): it stores [`Group::value`] when `take_store_wanted` says
//! so, and before completing a leader's SyncGroup or a static member's rejoin.
//!
//! ```text
//!  Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!    ▲                 ▲        │                                   │ leader's SyncGroup stored
//!    └──last leaves────┤        └──no members left──▶ Empty          ▼
//!                      └───── join / leave / expiry / new leader ── Stable
//! ```

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;

use super::records::{GroupValue, MemberValue, OffsetValue};

/// The protocol type of consumer groups (KIP-848's classic consumers).
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The broker settings a group's rules depend on.
#[derive(Debug, Clone)]
pub struct GroupLimits {
    pub initial_rebalance_delay_ms: i64,
    pub max_size: usize,
}

/// How long a member that joined but never completed a join may stay (Kafka's
/// `NewMemberJoinTimeoutMs`).
const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub version: i16,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

impl JoinOutcome {
    pub fn failed(error: ResponseError, member_id: &str) -> Self {
        Self { error: error.code(), generation: -1, member_id: member_id.to_string(), ..Default::default() }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub fn failed(error: ResponseError) -> Self {
        Self { error: error.code(), ..Default::default() }
    }
}

pub enum JoinStep {
    Reply(JoinOutcome),
    /// Parked until the rebalance completes.
    Wait(oneshot::Receiver<JoinOutcome>),
    /// A static member took its place back in a stable group: store the group, then reply.
    StoreThenReply(JoinOutcome),
}

pub enum SyncStep {
    Reply(SyncOutcome),
    Wait(oneshot::Receiver<SyncOutcome>),
    /// The leader's assignment: store the group with it, then call [`Group::finish_sync`].
    StoreThenFinish {
        generation: i32,
        assignments: HashMap<String, Bytes>,
        reply: oneshot::Receiver<SyncOutcome>,
    },
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
    heartbeat_deadline: i64,
    joined_at: i64,
    is_new: bool,
}

impl Member {
    fn new(id: String, req: &JoinRequest, now: i64) -> Self {
        Member {
            id,
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocol_type: req.protocol_type.clone(),
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            join_waiter: None,
            sync_waiter: None,
            heartbeat_deadline: now + i64::from(req.session_timeout_ms),
            joined_at: now,
            is_new: true,
        }
    }

    fn update(&mut self, req: &JoinRequest) {
        self.client_id = req.client_id.clone();
        self.client_host = req.client_host.clone();
        self.rebalance_timeout_ms = req.rebalance_timeout_ms;
        self.session_timeout_ms = req.session_timeout_ms;
        self.protocols = req.protocols.clone();
    }

    fn metadata(&self, protocol: Option<&str>) -> Bytes {
        self.protocols.iter().find(|(n, _)| Some(n.as_str()) == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    /// Whether the member is alive at `now`: waiting members are kept by the rebalance's
    /// own deadline, the others by their heartbeats.
    fn alive(&self, now: i64) -> bool {
        if self.join_waiter.is_some() {
            !self.is_new || now < self.joined_at + NEW_MEMBER_JOIN_TIMEOUT_MS
        } else if self.sync_waiter.is_some() {
            true
        } else {
            now < self.heartbeat_deadline
        }
    }

    fn answer_join(&mut self, outcome: JoinOutcome) {
        if let Some(w) = self.join_waiter.take() {
            let _ = w.send(outcome);
        }
    }

    fn answer_sync(&mut self, outcome: SyncOutcome) {
        if let Some(w) = self.sync_waiter.take() {
            let _ = w.send(outcome);
        }
    }
}

/// A committed offset and where its record sits in `__consumer_offsets` (a newer record
/// always wins, whatever order appends complete in).
#[derive(Debug, Clone)]
pub struct Committed {
    pub value: OffsetValue,
    pub record_offset: i64,
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// In join order (the first to join leads when a new leader is needed).
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they lapse.
    pending: HashMap<String, i64>,
    pub offsets: BTreeMap<(String, i32), Committed>,
    pub state_timestamp: i64,
    rebalance_deadline: i64,
    initial_delay_until: Option<i64>,
    sync_deadline: i64,
    store_wanted: bool,
}

impl Group {
    pub fn new(id: String, now: i64) -> Self {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: HashMap::new(),
            offsets: BTreeMap::new(),
            state_timestamp: now,
            rebalance_deadline: 0,
            initial_delay_until: None,
            sync_deadline: 0,
            store_wanted: false,
        }
    }

    /// A group as stored: Stable with its members (who must heartbeat within their session
    /// timeout from `now`), or Empty.
    pub fn from_value(id: String, v: GroupValue, now: i64) -> Self {
        let mut g = Group::new(id, now);
        g.generation = v.generation;
        g.protocol_type = Some(v.protocol_type.clone()).filter(|t| !t.is_empty());
        g.protocol = v.protocol.clone();
        g.leader = v.leader.clone();
        g.state_timestamp = v.state_timestamp;
        for m in v.members {
            let protocols = v.protocol.iter().map(|p| (p.clone(), m.subscription.clone())).collect();
            g.members.push(Member {
                id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocol_type: v.protocol_type.clone(),
                protocols,
                assignment: m.assignment,
                join_waiter: None,
                sync_waiter: None,
                heartbeat_deadline: now + i64::from(m.session_timeout_ms),
                joined_at: now,
                is_new: false,
            });
        }
        g.state = if g.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
        g
    }

    /// The group as it is stored (members with their current assignments).
    pub fn value(&self) -> GroupValue {
        self.value_with(&HashMap::new())
    }

    /// The group as stored with `assignments` in place of the members' current ones.
    pub fn value_with(&self, assignments: &HashMap<String, Bytes>) -> GroupValue {
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self
                .members
                .iter()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(self.protocol.as_deref()),
                    assignment: assignments.get(&m.id).cloned().unwrap_or_else(|| m.assignment.clone()),
                })
                .collect(),
        }
    }

    /// Whether the group changed in a way that must be stored (it became empty).
    pub fn take_store_wanted(&mut self) -> bool {
        std::mem::take(&mut self.store_wanted)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// OffsetDelete (Kafka's rules): which of `partitions` may lose their committed offsets,
    /// each with its error. A consumer group keeps the offsets of topics its members
    /// subscribe to (GROUP_SUBSCRIBED_TO_TOPIC; every topic, when a member's subscription
    /// cannot be read); another kind of group must be empty (NON_EMPTY_GROUP, for the whole
    /// request); a dead group is not found.
    pub fn offsets_deletable(&self, partitions: &[(String, i32)]) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::GroupIdNotFound);
        }
        let subscribed: Option<Vec<String>> = if self.is_empty() {
            Some(Vec::new())
        } else if self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) {
            self.subscribed_topics()
        } else {
            return Err(ResponseError::NonEmptyGroup);
        };
        let is_subscribed = |topic: &String| subscribed.as_ref().is_none_or(|s| s.contains(topic));
        Ok(partitions
            .iter()
            .map(|(topic, _)| is_subscribed(topic).then_some(ResponseError::GroupSubscribedToTopic))
            .collect())
    }

    /// The topics the members subscribe to, from their metadata for the group's protocol
    /// (ConsumerProtocolSubscription); `None` when a member's cannot be read.
    fn subscribed_topics(&self) -> Option<Vec<String>> {
        let mut topics = Vec::new();
        for m in &self.members {
            let meta = match &self.protocol {
                Some(p) => m.protocols.iter().find(|(name, _)| name == p),
                None => m.protocols.first(),
            }?;
            let mut bytes = meta.1.clone();
            if bytes.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([bytes[0], bytes[1]]);
            let _ = bytes.split_to(2);
            let sub = ConsumerProtocolSubscription::decode(&mut bytes, version.clamp(0, 3)).ok()?;
            topics.extend(sub.topics.iter().map(|t| t.to_string()));
        }
        topics.sort_unstable();
        topics.dedup();
        Some(topics)
    }

    fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn static_member(&self, instance: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// A request naming a static instance that now belongs to another member id.
    fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id.and_then(|i| self.static_member(i)).is_some_and(|m| m.id != member_id)
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| self.members.iter().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| self.members.iter().all(|m| m.protocols.iter().any(|(p, _)| p == n)))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for m in &self.members {
            if let Some(i) = m.protocols.iter().find_map(|(n, _)| candidates.iter().position(|c| c == n)) {
                votes[i] += 1;
            }
        }
        let best = (0..candidates.len()).max_by_key(|&i| (votes[i], std::cmp::Reverse(i)))?;
        Some(candidates[best].to_string())
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members.iter().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0)
    }

    fn current_join(&self, member_id: &str, version: i16) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        let is_leader = leader == member_id;
        JoinOutcome {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            member_id: member_id.to_string(),
            members: if is_leader { self.member_list() } else { Vec::new() },
            skip_assignment: false,
            leader,
        }
        .with_skip(is_leader && version >= 9 && self.state == GroupState::Stable)
    }

    fn member_list(&self) -> Vec<(String, Option<String>, Bytes)> {
        self.members
            .iter()
            .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(self.protocol.as_deref())))
            .collect()
    }

    pub fn join(&mut self, req: JoinRequest, now: i64, limits: &GroupLimits) -> JoinStep {
        use ResponseError as E;
        let fail = |e: E| JoinStep::Reply(JoinOutcome::failed(e, &req.member_id));
        if self.state == GroupState::Dead {
            return fail(E::CoordinatorNotAvailable);
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return fail(E::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            let client = if req.client_id.is_empty() { "member" } else { req.client_id.as_str() };
            let new_id = format!("{client}-{}", uuid::Uuid::new_v4());
            if let Some(old) = req.instance_id.as_deref().and_then(|i| self.static_member(i)).map(|m| m.id.clone()) {
                return self.rejoin_static(old, new_id, req, now, limits);
            }
            if self.members.len() + self.pending.len() >= limits.max_size {
                return fail(E::GroupMaxSizeReached);
            }
            if req.instance_id.is_none() && req.version >= 4 {
                // KIP-394: the member must come back with this id before it counts.
                self.pending.insert(new_id.clone(), now + i64::from(req.session_timeout_ms));
                return JoinStep::Reply(JoinOutcome::failed(E::MemberIdRequired, &new_id));
            }
            return self.add_member(new_id, req, now, limits);
        }
        if self.is_fenced(&req.member_id, req.instance_id.as_deref()) {
            return fail(E::FencedInstanceId);
        }
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member(id, req, now, limits);
        }
        let Some(member) = self.member(&req.member_id) else { return fail(E::UnknownMemberId) };
        let unchanged = member.protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::Empty | GroupState::Dead => fail(E::UnknownMemberId),
            GroupState::CompletingRebalance if unchanged => {
                JoinStep::Reply(self.current_join(&req.member_id, req.version))
            }
            GroupState::Stable if unchanged && !is_leader => {
                JoinStep::Reply(self.current_join(&req.member_id, req.version))
            }
            _ => {
                let rx = self.park_join(&req, now);
                if self.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(now, limits);
                }
                self.maybe_complete_join(now);
                JoinStep::Wait(rx)
            }
        }
    }

    /// Updates a known member from its join and parks the join until the rebalance ends.
    fn park_join(&mut self, req: &JoinRequest, now: i64) -> oneshot::Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.member_mut(&req.member_id) {
            m.update(req);
            if let Some(old) = m.join_waiter.replace(tx) {
                let _ = old.send(JoinOutcome::failed(ResponseError::RebalanceInProgress, &req.member_id));
            }
            m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
        }
        rx
    }

    fn add_member(&mut self, id: String, req: JoinRequest, now: i64, limits: &GroupLimits) -> JoinStep {
        let (tx, rx) = oneshot::channel();
        let mut member = Member::new(id.clone(), &req, now);
        member.join_waiter = Some(tx);
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        self.members.push(member);
        match self.state {
            GroupState::PreparingRebalance => {
                // A new member during the initial delay waits for more (Kafka's InitialDelayedJoin).
                if let Some(until) = self.initial_delay_until {
                    let delay = limits.initial_rebalance_delay_ms;
                    self.initial_delay_until = Some(until.max(now + delay).min(self.rebalance_deadline));
                }
            }
            _ => self.prepare_rebalance(now, limits),
        }
        self.maybe_complete_join(now);
        JoinStep::Wait(rx)
    }

    /// A static member came back with a new member id: the old id is fenced. In a stable
    /// group whose protocol stays the same it gets its place back without a rebalance.
    fn rejoin_static(
        &mut self,
        old_id: String,
        new_id: String,
        req: JoinRequest,
        now: i64,
        limits: &GroupLimits,
    ) -> JoinStep {
        let Some(m) = self.member_mut(&old_id) else {
            return JoinStep::Reply(JoinOutcome::failed(ResponseError::UnknownMemberId, &old_id));
        };
        m.answer_join(JoinOutcome::failed(ResponseError::FencedInstanceId, &old_id));
        m.answer_sync(SyncOutcome::failed(ResponseError::FencedInstanceId));
        m.id = new_id.clone();
        m.update(&req);
        m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        if self.state == GroupState::Stable && self.select_protocol() == self.protocol {
            return JoinStep::StoreThenReply(self.current_join(&new_id, req.version));
        }
        let mut req = req;
        req.member_id = new_id;
        let rx = self.park_join(&req, now);
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, limits);
        }
        self.maybe_complete_join(now);
        JoinStep::Wait(rx)
    }

    fn prepare_rebalance(&mut self, now: i64, limits: &GroupLimits) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_assignments(ResponseError::RebalanceInProgress);
        }
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        self.state_timestamp = now;
        self.rebalance_deadline = now + self.max_rebalance_timeout();
        self.initial_delay_until = (was_empty && limits.initial_rebalance_delay_ms > 0)
            .then(|| (now + limits.initial_rebalance_delay_ms).min(self.rebalance_deadline));
    }

    /// Drops every member's assignment and answers parked syncs with `error`.
    fn reset_assignments(&mut self, error: ResponseError) {
        for m in &mut self.members {
            m.assignment = Bytes::new();
            m.answer_sync(SyncOutcome::failed(error));
        }
    }

    /// Completes the join phase when every member has rejoined, or at the deadline.
    fn maybe_complete_join(&mut self, now: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(until) = self.initial_delay_until {
            if now < until {
                return;
            }
            self.initial_delay_until = None;
            self.complete_join(now);
            return;
        }
        let all_joined = self.pending.is_empty() && self.members.iter().all(|m| m.join_waiter.is_some());
        if all_joined || now >= self.rebalance_deadline {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: i64) {
        // Dynamic members that did not rejoin in time are out; static ones keep their place.
        self.members.retain(|m| m.join_waiter.is_some() || m.instance_id.is_some());
        if self.members.is_empty() {
            // The protocol type stays, as Kafka keeps it: admin clients tell an emptied
            // consumer group from a "simple" one (offsets only) by it.
            self.generation += 1;
            self.protocol = None;
            self.leader = None;
            self.state = GroupState::Empty;
            self.state_timestamp = now;
            self.store_wanted = true;
            return;
        }
        let leader_joined =
            self.leader.as_deref().and_then(|l| self.member(l)).is_some_and(|m| m.join_waiter.is_some());
        if !leader_joined {
            match self.members.iter().find(|m| m.join_waiter.is_some()) {
                Some(m) => self.leader = Some(m.id.clone()),
                None => {
                    // Only absent static members: wait for them (or their session to end).
                    self.rebalance_deadline = now + self.max_rebalance_timeout();
                    return;
                }
            }
        }
        self.generation += 1;
        self.protocol = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        self.state_timestamp = now;
        self.sync_deadline = now + self.max_rebalance_timeout();
        let leader = self.leader.clone().unwrap_or_default();
        let all = self.member_list();
        for m in &mut self.members {
            let outcome = JoinOutcome {
                error: 0,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol: self.protocol.clone(),
                leader: leader.clone(),
                member_id: m.id.clone(),
                members: if m.id == leader { all.clone() } else { Vec::new() },
                skip_assignment: false,
            };
            m.answer_join(outcome);
            m.is_new = false;
            m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
        }
    }

    pub fn sync(&mut self, req: SyncRequest, now: i64) -> SyncStep {
        use ResponseError as E;
        let fail = |e: E| SyncStep::Reply(SyncOutcome::failed(e));
        if self.state == GroupState::Dead {
            return fail(E::CoordinatorNotAvailable);
        }
        if self.is_fenced(&req.member_id, req.instance_id.as_deref()) {
            return fail(E::FencedInstanceId);
        }
        if self.member(&req.member_id).is_none() {
            return fail(E::UnknownMemberId);
        }
        if req.generation != self.generation {
            return fail(E::IllegalGeneration);
        }
        let mismatch = |given: &Option<String>, ours: &Option<String>| given.is_some() && given != ours;
        if mismatch(&req.protocol_type, &self.protocol_type) || mismatch(&req.protocol, &self.protocol) {
            return fail(E::InconsistentGroupProtocol);
        }
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        let (protocol_type, protocol) = (self.protocol_type.clone(), self.protocol.clone());
        let state = self.state;
        let generation = self.generation;
        let Some(member) = self.member_mut(&req.member_id) else { return fail(E::UnknownMemberId) };
        member.heartbeat_deadline = now + i64::from(member.session_timeout_ms);
        match state {
            GroupState::Empty | GroupState::Dead => fail(E::UnknownMemberId),
            GroupState::PreparingRebalance => fail(E::RebalanceInProgress),
            GroupState::Stable => SyncStep::Reply(SyncOutcome {
                error: 0,
                protocol_type,
                protocol,
                assignment: member.assignment.clone(),
            }),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(old) = member.sync_waiter.replace(tx) {
                    let _ = old.send(SyncOutcome::failed(E::RebalanceInProgress));
                }
                if !is_leader {
                    return SyncStep::Wait(rx);
                }
                let assignments = req.assignments.into_iter().collect();
                SyncStep::StoreThenFinish { generation, assignments, reply: rx }
            }
        }
    }

    /// After the leader's assignment was stored (`stored`) or failed to be: hands every
    /// member its assignment and makes the group Stable, if the generation still stands.
    pub fn finish_sync(&mut self, generation: i32, assignments: HashMap<String, Bytes>, stored: bool, now: i64) {
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return;
        }
        if !stored {
            self.reset_assignments(ResponseError::CoordinatorNotAvailable);
            return;
        }
        for m in &mut self.members {
            m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
        }
        self.state = GroupState::Stable;
        self.state_timestamp = now;
        let (protocol_type, protocol) = (self.protocol_type.clone(), self.protocol.clone());
        for m in &mut self.members {
            let outcome = SyncOutcome {
                error: 0,
                protocol_type: protocol_type.clone(),
                protocol: protocol.clone(),
                assignment: m.assignment.clone(),
            };
            m.answer_sync(outcome);
        }
    }

    pub fn heartbeat(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now: i64) -> i16 {
        use ResponseError as E;
        if self.state == GroupState::Dead {
            return E::CoordinatorNotAvailable.code();
        }
        if self.is_fenced(member_id, instance_id) {
            return E::FencedInstanceId.code();
        }
        let state = self.state;
        let current = self.generation;
        let Some(member) = self.member_mut(member_id) else { return E::UnknownMemberId.code() };
        if state == GroupState::Empty {
            return E::UnknownMemberId.code();
        }
        if generation != current {
            return E::IllegalGeneration.code();
        }
        member.heartbeat_deadline = now + i64::from(member.session_timeout_ms);
        match state {
            GroupState::PreparingRebalance => E::RebalanceInProgress.code(),
            _ => 0,
        }
    }

    /// One member leaves (LeaveGroup): by member id, or by instance id alone.
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: i64, limits: &GroupLimits) -> i16 {
        use ResponseError as E;
        if self.state == GroupState::Dead {
            return E::CoordinatorNotAvailable.code();
        }
        let id = if member_id.is_empty() {
            match instance_id.and_then(|i| self.static_member(i)) {
                Some(m) => m.id.clone(),
                None => return E::UnknownMemberId.code(),
            }
        } else {
            if self.is_fenced(member_id, instance_id) {
                return E::FencedInstanceId.code();
            }
            member_id.to_string()
        };
        if self.pending.remove(&id).is_some() {
            self.maybe_complete_join(now);
            return 0;
        }
        if self.member(&id).is_none() {
            return E::UnknownMemberId.code();
        }
        self.remove_member(&id, now, limits);
        0
    }

    fn remove_member(&mut self, id: &str, now: i64, limits: &GroupLimits) {
        let Some(pos) = self.members.iter().position(|m| m.id == id) else { return };
        let mut m = self.members.remove(pos);
        m.answer_join(JoinOutcome::failed(ResponseError::UnknownMemberId, id));
        m.answer_sync(SyncOutcome::failed(ResponseError::UnknownMemberId));
        if self.leader.as_deref() == Some(id) {
            self.leader =
                self.members.iter().find(|m| m.join_waiter.is_some()).or(self.members.first()).map(|m| m.id.clone());
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, limits);
                self.maybe_complete_join(now);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Timers: members whose session lapsed are removed, pending member ids lapse, a
    /// rebalance completes at its deadline, members that never synced are removed.
    /// Returns the ids of members removed.
    pub fn tick(&mut self, now: i64, limits: &GroupLimits) -> Vec<String> {
        self.pending.retain(|_, deadline| now < *deadline);
        let mut removed: Vec<String> = self.members.iter().filter(|m| !m.alive(now)).map(|m| m.id.clone()).collect();
        if self.state == GroupState::CompletingRebalance && now >= self.sync_deadline {
            // Members that never sent SyncGroup within the rebalance timeout are out (Kafka 3.2+).
            removed.extend(self.members.iter().filter(|m| m.sync_waiter.is_none()).map(|m| m.id.clone()));
        }
        removed.sort();
        removed.dedup();
        for id in &removed {
            self.remove_member(id, now, limits);
        }
        self.maybe_complete_join(now);
        removed
    }

    /// Checks an OffsetCommit against the group's membership (Kafka's rules); `Ok` means
    /// the offsets may be written.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        transactional: bool,
        now: i64,
    ) -> Result<(), ResponseError> {
        use ResponseError as E;
        if self.state == GroupState::Dead {
            return Err(E::CoordinatorNotAvailable);
        }
        if self.is_fenced(member_id, instance_id) {
            return Err(E::FencedInstanceId);
        }
        if generation < 0 && self.state == GroupState::Empty {
            // A consumer that assigns its own partitions and commits through the group.
            return Ok(());
        }
        if transactional && generation < 0 && member_id.is_empty() && instance_id.is_none() {
            // A producer that does not name the consumer (TxnOffsetCommit v0-2, and clients
            // that send none): Kafka takes its offsets whatever the group's state.
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(E::RebalanceInProgress);
        }
        let current = self.generation;
        let Some(member) = self.member_mut(member_id) else { return Err(E::UnknownMemberId) };
        if generation != current {
            return Err(E::IllegalGeneration);
        }
        member.heartbeat_deadline = now + i64::from(member.session_timeout_ms);
        Ok(())
    }

    /// Records a stored commit unless a newer record for the partition is already applied.
    pub fn apply_offset(&mut self, topic: String, partition: i32, committed: Committed) {
        let key = (topic, partition);
        if self.offsets.get(&key).is_none_or(|c| c.record_offset <= committed.record_offset) {
            self.offsets.insert(key, committed);
        }
    }

    /// Offsets that have outlived `retention_ms`: all of an empty group's once it has been
    /// empty that long, or, for a group that never used group management, each by its
    /// commit time. Groups with members keep theirs.
    pub fn expired_offsets(&self, now: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty {
            return Vec::new();
        }
        let whole_group = self.protocol_type.is_some() || self.generation > 0;
        self.offsets
            .iter()
            .filter(|(_, c)| {
                let since = if whole_group { self.state_timestamp } else { c.value.commit_timestamp };
                now.saturating_sub(since) >= retention_ms
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Answers every parked JoinGroup and SyncGroup with `error` (the coordinator is
    /// going away); members find the coordinator again and rejoin.
    pub fn fail_waiters(&mut self, error: ResponseError) {
        for m in &mut self.members {
            m.answer_join(JoinOutcome::failed(error, &m.id.clone()));
            m.answer_sync(SyncOutcome::failed(error));
        }
    }

    pub fn mark_dead(&mut self) {
        self.state = GroupState::Dead;
    }

    /// Members as DescribeGroups shows them: metadata and assignment only when Stable.
    pub fn describe_members(&self) -> Vec<MemberValue> {
        let stable = self.state == GroupState::Stable;
        self.members
            .iter()
            .map(|m| MemberValue {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: if stable { m.metadata(self.protocol.as_deref()) } else { Bytes::new() },
                assignment: if stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect()
    }
}

impl JoinOutcome {
    fn with_skip(mut self, skip: bool) -> Self {
        self.skip_assignment = skip;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GroupLimits = GroupLimits { initial_rebalance_delay_ms: 0, max_size: 10 };

    fn req(member_id: &str, version: i16) -> JoinRequest {
        JoinRequest {
            version,
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        }
    }

    fn joined(step: JoinStep) -> JoinOutcome {
        match step {
            JoinStep::Reply(o) | JoinStep::StoreThenReply(o) => o,
            JoinStep::Wait(mut rx) => rx.try_recv().ok().flatten().expect("join completed"),
        }
    }

    fn sync(g: &mut Group, member: &str, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncOutcome {
        let step = g.sync(
            SyncRequest {
                member_id: member.into(),
                instance_id: None,
                generation,
                protocol_type: None,
                protocol: None,
                assignments,
            },
            0,
        );
        match step {
            SyncStep::Reply(o) => o,
            SyncStep::Wait(mut rx) => rx.try_recv().ok().flatten().unwrap_or_default(),
            SyncStep::StoreThenFinish { generation, assignments, mut reply } => {
                g.finish_sync(generation, assignments, true, 0);
                reply.try_recv().ok().flatten().expect("synced")
            }
        }
    }

    #[test]
    fn member_id_required_then_single_member_becomes_stable() {
        let mut g = Group::new("g".into(), 0);
        let first = joined(g.join(req("", 5), 0, &LIMITS));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        let id = first.member_id;
        let out = joined(g.join(req(&id, 5), 0, &LIMITS));
        assert_eq!((out.error, out.generation, out.leader.as_str()), (0, 1, id.as_str()));
        assert_eq!(out.members.len(), 1);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        let s = sync(&mut g, &id, 1, vec![(id.clone(), Bytes::from_static(b"a"))]);
        assert_eq!((s.error, &s.assignment[..]), (0, &b"a"[..]));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&id, None, 1, 0), 0);
        assert_eq!(g.heartbeat(&id, None, 0, 0), ResponseError::IllegalGeneration.code());
        assert_eq!(g.heartbeat("nobody", None, 1, 0), ResponseError::UnknownMemberId.code());
    }

    #[test]
    fn offsets_of_topics_nobody_subscribes_to_may_be_deleted() {
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let mut sub = ConsumerProtocolSubscription::default();
        sub.topics = vec![StrBytes::from_static_str("orders")];
        let mut meta = bytes::BytesMut::new();
        meta.extend_from_slice(&1i16.to_be_bytes());
        sub.encode(&mut meta, 1).expect("encode");
        let mut r = req("", 5);
        r.protocols = vec![("range".into(), meta.freeze())];
        let mut g = Group::new("g".into(), 0);
        let id = joined(g.join(r.clone(), 0, &LIMITS)).member_id;
        r.member_id = id.clone();
        joined(g.join(r, 0, &LIMITS));
        sync(&mut g, &id, 1, vec![]);
        let asked = [("orders".to_string(), 0), ("old".to_string(), 3)];
        assert_eq!(g.offsets_deletable(&asked), Ok(vec![Some(ResponseError::GroupSubscribedToTopic), None]));
        assert_eq!(g.leave(&id, None, 1, &LIMITS), 0);
        assert_eq!(g.offsets_deletable(&asked), Ok(vec![None, None]), "an empty group keeps nothing");
        // A group of another kind with members: NON_EMPTY_GROUP for the whole request.
        let mut other = Group::new("o".into(), 0);
        let mut r = req("", 5);
        r.protocol_type = "connect".into();
        let id = joined(other.join(r.clone(), 0, &LIMITS)).member_id;
        r.member_id = id;
        joined(other.join(r, 0, &LIMITS));
        assert_eq!(other.offsets_deletable(&asked), Err(ResponseError::NonEmptyGroup));
        other.mark_dead();
        assert_eq!(other.offsets_deletable(&asked), Err(ResponseError::GroupIdNotFound));
    }

    #[test]
    fn an_emptied_group_keeps_its_protocol_type() {
        let mut g = Group::new("g".into(), 0);
        let id = joined(g.join(req("", 5), 0, &LIMITS)).member_id;
        joined(g.join(req(&id, 5), 0, &LIMITS));
        sync(&mut g, &id, 1, vec![(id.clone(), Bytes::from_static(b"a"))]);
        assert_eq!(g.leave(&id, None, 1, &LIMITS), 0);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.protocol_type.as_deref(), Some("consumer"), "admin clients tell consumer groups by it");
        assert_eq!(g.value().protocol_type, "consumer", "and it is stored");
    }

    #[test]
    fn second_member_triggers_rebalance_and_leave_triggers_another() {
        let mut g = Group::new("g".into(), 0);
        let a = joined(g.join(req("", 3), 0, &LIMITS)).member_id;
        sync(&mut g, &a, 1, vec![]);
        // B joins: A's heartbeat says rebalance, A rejoins, both get generation 2.
        let JoinStep::Wait(mut b_rx) = g.join(req("", 3), 1, &LIMITS) else { panic!("b parks") };
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.heartbeat(&a, None, 1, 1), ResponseError::RebalanceInProgress.code());
        let a2 = joined(g.join(req(&a, 3), 2, &LIMITS));
        let b2 = b_rx.try_recv().ok().flatten().expect("b joined");
        assert_eq!((a2.generation, b2.generation), (2, 2));
        assert_eq!(a2.members.len(), 2, "leader sees both");
        assert!(b2.members.is_empty());
        // Follower's sync waits for the leader's.
        let JoinStep::Reply(_) = g.join(req(&b2.member_id, 3), 2, &LIMITS) else { panic!("unchanged rejoin answers") };
        let leader_sync = sync(
            &mut g,
            &a,
            2,
            vec![(a.clone(), Bytes::from_static(b"pa")), (b2.member_id.clone(), Bytes::from_static(b"pb"))],
        );
        assert_eq!(&leader_sync.assignment[..], b"pa");
        assert_eq!(&sync(&mut g, &b2.member_id, 2, vec![]).assignment[..], b"pb");
        // A leaves: B must rejoin.
        assert_eq!(g.leave(&a, None, 3, &LIMITS), 0);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let b3 = joined(g.join(req(&b2.member_id, 3), 3, &LIMITS));
        assert_eq!((b3.generation, b3.leader.as_str()), (3, b2.member_id.as_str()));
    }

    #[test]
    fn expired_member_is_removed_and_group_empties() {
        let mut g = Group::new("g".into(), 0);
        let a = joined(g.join(req("", 3), 0, &LIMITS)).member_id;
        sync(&mut g, &a, 1, vec![]);
        assert!(g.tick(9_999, &LIMITS).is_empty());
        assert_eq!(g.tick(10_000, &LIMITS), vec![a.clone()]);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.generation, 2);
        assert!(g.take_store_wanted());
        assert_eq!(g.heartbeat(&a, None, 2, 10_001), ResponseError::UnknownMemberId.code());
    }

    #[test]
    fn static_member_rejoins_without_rebalance_and_fences_old_id() {
        let mut g = Group::new("g".into(), 0);
        let mut r = req("", 5);
        r.instance_id = Some("i1".into());
        let a = joined(g.join(r.clone(), 0, &LIMITS)).member_id;
        sync(&mut g, &a, 1, vec![(a.clone(), Bytes::from_static(b"pa"))]);
        let step = g.join(r, 5, &LIMITS);
        let JoinStep::StoreThenReply(out) = step else { panic!("no rebalance expected") };
        assert_eq!(out.generation, 1);
        assert_ne!(out.member_id, a);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(&sync(&mut g, &out.member_id, 1, vec![]).assignment[..], b"pa");
        assert_eq!(g.heartbeat(&a, Some("i1"), 1, 6), ResponseError::FencedInstanceId.code());
    }

    #[test]
    fn commits_follow_membership_rules() {
        let mut g = Group::new("g".into(), 0);
        assert!(g.check_commit("", None, -1, false, 0).is_ok(), "simple commit to an empty group");
        assert_eq!(g.check_commit("x", None, 1, false, 0), Err(ResponseError::UnknownMemberId));
        let a = joined(g.join(req("", 3), 0, &LIMITS)).member_id;
        assert_eq!(g.check_commit(&a, None, 1, false, 0), Err(ResponseError::RebalanceInProgress));
        sync(&mut g, &a, 1, vec![]);
        assert!(g.check_commit(&a, None, 1, false, 0).is_ok());
        assert_eq!(g.check_commit(&a, None, 0, false, 0), Err(ResponseError::IllegalGeneration));
        assert_eq!(g.check_commit("", None, -1, false, 0), Err(ResponseError::UnknownMemberId));
        assert!(
            g.check_commit("", None, -1, true, 0).is_ok(),
            "a transactional commit that names no member is taken (TxnOffsetCommit v0-2)"
        );
        assert_eq!(g.check_commit("x", None, 1, true, 0), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn inconsistent_protocols_and_size_limit() {
        let mut g = Group::new("g".into(), 0);
        let a = joined(g.join(req("", 3), 0, &LIMITS)).member_id;
        sync(&mut g, &a, 1, vec![]);
        let mut other = req("", 3);
        other.protocols = vec![("roundrobin".into(), Bytes::new())];
        assert_eq!(joined(g.join(other, 1, &LIMITS)).error, ResponseError::InconsistentGroupProtocol.code());
        let small = GroupLimits { initial_rebalance_delay_ms: 0, max_size: 1 };
        assert_eq!(joined(g.join(req("", 3), 1, &small)).error, ResponseError::GroupMaxSizeReached.code());
    }
}
