//! What the controller answers over the controller listener: topic changes and
//! producer-id blocks forwarded by brokers, broker registrations and heartbeats (and the
//! fencing of brokers whose session ran out), DescribeQuorum, and the committed log and
//! snapshots that broker-only nodes (observers) fetch.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::brokers::Registered;
use super::remote::Route;
use super::{node_id, topic_failed, Beat, CommitError, Controller, Heartbeat};
use crate::cluster::records::{BrokerRegistration, MetadataRecord};
use crate::shard::message::{NewPartitions, NewTopic, TopicOutcome, TopicRef};
use crate::shard::PRODUCER_ID_BLOCK;

impl Controller {
    /// A forwarded CreateTopics, on the active controller.
    pub async fn create_topics_forwarded(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
        timeout: Duration,
    ) -> Vec<TopicOutcome> {
        if !self.is_active() {
            return topics.iter().map(|t| topic_failed(&t.name, &CommitError::NotController)).collect();
        }
        self.create_topics_here(topics, validate_only, timeout).await
    }

    /// A forwarded CreatePartitions, on the active controller.
    pub async fn create_partitions_forwarded(
        &self,
        topics: Vec<NewPartitions>,
        validate_only: bool,
        timeout: Duration,
    ) -> Vec<TopicOutcome> {
        if !self.is_active() {
            return topics.iter().map(|t| topic_failed(&t.name, &CommitError::NotController)).collect();
        }
        self.create_partitions_here(topics, validate_only, timeout).await
    }

    /// A forwarded DeleteTopics, on the active controller.
    pub async fn delete_topics_forwarded(&self, topics: Vec<TopicRef>, timeout: Duration) -> Vec<TopicOutcome> {
        if !self.is_active() {
            return topics
                .iter()
                .map(|t| match t {
                    TopicRef::Name(n) => topic_failed(n, &CommitError::NotController),
                    TopicRef::Id(id) => TopicOutcome { topic_id: *id, ..topic_failed("", &CommitError::NotController) },
                })
                .collect();
        }
        self.delete_topics_here(topics, timeout).await
    }

    /// A forwarded AllocateProducerIds from broker `broker` in `epoch`.
    pub async fn allocate_producer_ids_forwarded(&self, broker: i32, epoch: i64) -> Result<(i64, i64), ResponseError> {
        if !self.is_active() {
            return Err(ResponseError::NotController);
        }
        let registered = self.image.get().brokers.get(&broker).map(|b| b.registration.epoch);
        if registered != Some(epoch) {
            return Err(ResponseError::StaleBrokerEpoch);
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.quorum_request_timeout_ms);
        self.allocate_producer_ids_here(PRODUCER_ID_BLOCK, deadline).await.map_err(|e| e.code())
    }

    /// A broker registers with the active controller; answers its epoch once committed.
    /// `same_process`: the registration is this node's own broker's, made in place.
    pub async fn register_broker(
        &self,
        cluster_id: &str,
        registration: BrokerRegistration,
        same_process: bool,
    ) -> Result<i64, (ResponseError, String)> {
        if !self.is_active() {
            return Err((ResponseError::NotController, "this node is not the active controller".into()));
        }
        if cluster_id != self.identity.cluster_id {
            return Err((
                ResponseError::InconsistentClusterId,
                format!(
                    "broker {} is of cluster {cluster_id}, this quorum of cluster {}",
                    registration.id, self.identity.cluster_id
                ),
            ));
        }
        let timeout = Duration::from_millis(self.config.quorum_request_timeout_ms);
        let _permit =
            self.lock.acquire_permit(1).await.map_err(|_| (ResponseError::NotController, "stopping".to_string()))?;
        let decided =
            self.sessions.borrow_mut().register(&self.image.get(), registration, same_process, Instant::now())?;
        match decided {
            Registered::Again(epoch) => Ok(epoch),
            Registered::New(record) => {
                let MetadataRecord::Broker(b) = &record else { unreachable!("a registration is a broker record") };
                let (id, epoch, host, port) = (b.id, b.epoch, b.host.clone(), b.port);
                self.commit(vec![record], timeout).await.map_err(|e| (e.code(), e.to_string()))?;
                info!(broker = id, epoch, %host, port, "broker registered (fenced until caught up)");
                Ok(epoch)
            }
        }
    }

    /// A broker's heartbeat on the active controller; answered once any fence change it
    /// caused is committed.
    pub async fn broker_heartbeat(&self, heartbeat: Heartbeat) -> Result<Beat, ResponseError> {
        let Heartbeat { broker, epoch, want_shut_down, .. } = heartbeat;
        if !self.is_active() {
            return Err(ResponseError::NotController);
        }
        let timeout = Duration::from_millis(self.config.quorum_request_timeout_ms);
        let _permit = self.lock.acquire_permit(1).await.map_err(|_| ResponseError::NotController)?;
        let beat = self.sessions.borrow_mut().heartbeat(&self.image.get(), heartbeat, Instant::now())?;
        if let Some(record) = beat.record.clone() {
            let fenced = matches!(record, MetadataRecord::BrokerFence { fenced: true, .. });
            self.commit(vec![record], timeout).await.map_err(|e| e.code())?;
            match (fenced, want_shut_down) {
                (true, true) => info!(broker, "broker fenced for a controlled shutdown"),
                (true, false) => info!(broker, "broker fenced at its request"),
                (false, _) => info!(broker, epoch, "broker unfenced: caught up and heartbeating"),
            }
        }
        Ok(beat)
    }

    /// Fences live brokers whose session ran out (active controller, every tick).
    pub(super) fn fence_expired_brokers(&self) {
        if self.fencing.get() {
            return;
        }
        let expired = self.sessions.borrow().expired(&self.image.get(), Instant::now());
        if expired.is_empty() {
            return;
        }
        self.fencing.set(true);
        let c = self.rc();
        glommio::spawn_local(async move {
            let timeout = Duration::from_millis(c.config.quorum_request_timeout_ms);
            if let Ok(_permit) = c.lock.acquire_permit(1).await {
                // Decided again under the permit: a heartbeat may have come in meanwhile.
                let expired = c.sessions.borrow().expired(&c.image.get(), Instant::now());
                for (record, silent) in &expired {
                    if let MetadataRecord::BrokerFence { id, .. } = record {
                        warn!(
                            broker = id,
                            silent_ms = silent.as_millis() as u64,
                            "fencing broker: no heartbeat within broker.session.timeout.ms"
                        );
                    }
                }
                let records = expired.into_iter().map(|(r, _)| r).collect::<Vec<_>>();
                if !records.is_empty() {
                    if let Err(e) = c.commit(records, timeout).await {
                        warn!(error = %e, "fencing not committed");
                    }
                }
            }
            c.fencing.set(false);
        })
        .detach();
    }
}

impl Controller {
    /// Commits the leadership changes the image needs, if any (active controller, every
    /// tick): partitions left unsettled by an earlier image, or by a change that lost a race.
    pub(super) fn settle_partitions(&self) {
        if self.settling.get() || self.lock.available() == 0 {
            return;
        }
        if crate::cluster::election::reconcile(&self.image.get(), self.unclean_default(&self.image.get())).is_empty() {
            return;
        }
        self.settling.set(true);
        let c = self.rc();
        glommio::spawn_local(async move {
            let timeout = Duration::from_millis(c.config.quorum_request_timeout_ms);
            if let Ok(_permit) = c.lock.acquire_permit(1).await {
                // `commit` adds what the image needs.
                if let Err(e) = c.commit(Vec::new(), timeout).await {
                    warn!(error = %e, "partition leadership changes not committed");
                }
            }
            c.settling.set(false);
        })
        .detach();
    }
}

/// The metadata log's name in DescribeQuorum (Kafka's).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

impl Controller {
    /// DescribeQuorum for a client: answered by the active controller, here or there.
    pub async fn describe_quorum_anywhere(
        &self,
        request: kafka_protocol::messages::DescribeQuorumRequest,
        version: i16,
    ) -> kafka_protocol::messages::DescribeQuorumResponse {
        let deadline = Instant::now() + Duration::from_millis(self.config.quorum_request_timeout_ms);
        let not_leader = |r: &kafka_protocol::messages::DescribeQuorumResponse| {
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.error_code == ResponseError::NotLeaderOrFollower.code())
        };
        match self.remote.call(|| self.call_target(), &request, None, deadline, not_leader).await {
            Ok(Route::Here) => self.describe_quorum(version),
            Ok(Route::There(response)) => response,
            Err(e) => {
                let mut response = kafka_protocol::messages::DescribeQuorumResponse::default();
                response.error_code = e.code().code();
                response.error_message = Some(kafka_protocol::protocol::StrBytes::from_string(e.to_string()));
                response
            }
        }
    }

    /// DescribeQuorum's answer from this voter: the quorum's state if it leads, else
    /// NOT_LEADER_OR_FOLLOWER naming the leader it knows.
    pub fn describe_quorum(&self, version: i16) -> kafka_protocol::messages::DescribeQuorumResponse {
        use kafka_protocol::messages::describe_quorum_response::{
            Listener, Node, PartitionData, ReplicaState, TopicData,
        };
        use kafka_protocol::messages::{BrokerId, DescribeQuorumResponse, TopicName};
        use kafka_protocol::protocol::StrBytes;
        let status = self.quorum_status();
        let mut partition = PartitionData::default();
        partition.leader_id = BrokerId(status.leader.map_or(-1, node_id));
        partition.leader_epoch = status.term.min(i32::MAX as u64) as i32;
        partition.high_watermark = status.commit as i64;
        if self.voting.as_ref().is_none_or(|v| status.leader != Some(v.quorum.borrow().id())) {
            partition.error_code = ResponseError::NotLeaderOrFollower.code();
        }
        partition.current_voters = status
            .voters
            .iter()
            .map(|(id, end)| {
                let mut r = ReplicaState::default();
                r.replica_id = BrokerId(node_id(*id));
                r.log_end_offset = end.map_or(-1, |e| e as i64);
                r.last_fetch_timestamp = -1;
                r.last_caught_up_timestamp = -1;
                r
            })
            .collect();
        let mut topic = TopicData::default();
        topic.topic_name = TopicName(StrBytes::from_static_str(METADATA_TOPIC));
        topic.partitions = vec![partition];
        let mut response = DescribeQuorumResponse::default();
        response.topics = vec![topic];
        if version >= 2 {
            let name = self.config.controller_listener_names.first().cloned().unwrap_or_else(|| "CONTROLLER".into());
            response.nodes = self
                .config
                .voters
                .iter()
                .map(|v| {
                    let mut l = Listener::default();
                    l.name = StrBytes::from_string(name.clone());
                    l.host = StrBytes::from_string(v.host.clone());
                    l.port = v.port;
                    let mut n = Node::default();
                    n.node_id = BrokerId(v.node_id);
                    n.listeners = vec![l];
                    n
                })
                .collect();
        }
        response
    }
}

/// What a voter can give an observer that has applied the log up to some offset.
#[derive(Debug)]
pub enum MetadataFetch {
    /// Committed entries after the offset, in order (entries without metadata included:
    /// they advance the offset), and the commit index.
    Entries { entries: Vec<(u64, Bytes)>, commit: u64 },
    /// The entries after the offset were compacted: fetch the snapshot at `index` first.
    Snapshot { index: u64, term: u64 },
}

impl Controller {
    /// Committed metadata entries after `offset`, at most about `max_bytes` of them (at
    /// least one), for an observer (a broker-only node). Any voter serves them.
    pub fn committed_after(&self, offset: u64, max_bytes: usize) -> MetadataFetch {
        let Some(voting) = &self.voting else { return MetadataFetch::Entries { entries: Vec::new(), commit: 0 } };
        let quorum = voting.quorum.borrow();
        let storage = quorum.storage();
        let commit = quorum.status().commit;
        if offset < storage.snapshot_index() {
            return MetadataFetch::Snapshot { index: storage.snapshot_index(), term: storage.snapshot_term() };
        }
        if offset >= commit {
            return MetadataFetch::Entries { entries: Vec::new(), commit };
        }
        let context = raft::GetEntriesContext::empty(false);
        let read = raft::Storage::entries(storage, offset + 1, commit + 1, Some(max_bytes as u64), context);
        match read {
            Ok(entries) => {
                MetadataFetch::Entries { entries: entries.into_iter().map(|e| (e.index, e.data)).collect(), commit }
            }
            Err(_) => MetadataFetch::Snapshot { index: storage.snapshot_index(), term: storage.snapshot_term() },
        }
    }

    /// The latest metadata snapshot: its index, term and bytes.
    pub fn metadata_snapshot(&self) -> Option<(u64, u64, Bytes)> {
        let voting = self.voting.as_ref()?;
        let quorum = voting.quorum.borrow();
        let storage = quorum.storage();
        Some((storage.snapshot_index(), storage.snapshot_term(), Bytes::copy_from_slice(storage.snapshot_data())))
    }

    /// Waits until this node has applied past `offset`, or `deadline` (a long poll).
    pub async fn applied_past(&self, offset: u64, deadline: Instant) -> bool {
        self.image_where(|image| image.offset > offset, deadline).await
    }

    /// The quorum's leader and term, as this voter knows them.
    pub fn leader_and_term(&self) -> (Option<i32>, u64) {
        let status = self.quorum_status();
        (status.leader.map(node_id), status.term)
    }
}
