//! Typed messages between shards. Payloads are owned (`Bytes`, ids) so they can cross cores;
//! every request carries a one-shot reply. One message per owning shard per client request.
//!
//! Two request types, one per kind of executor: a [`DataRequest`] goes to a data shard (from
//! another data shard, or from the control shard), a [`ControlRequest`] to the control shard.
//! The mesh's channels are typed by their receiver, so a request cannot reach an executor
//! that does not serve it; every match on either is exhaustive.

use std::sync::Arc;

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;

use crate::cluster::MetadataImage;
use crate::group::coordinator::GroupCall;
use crate::partition::transactions::AbortedTxn;
use crate::partition::{Isolation, ProducerSummary};
use crate::protocol::envelope::ClientOrigin;
use crate::txn::coordinator::{MarkerRequest, MarkerResults, TxnCall};
use crate::types::{Acks, Offset, OffsetSpec, TopicPartition};

/// Answers `reply` with what `answer` resolves to, from a task of its own (the caller goes
/// on serving the next request).
pub fn answer_later<T: 'static>(reply: oneshot::Sender<T>, answer: impl std::future::Future<Output = T> + 'static) {
    glommio::spawn_local(async move {
        let _ = reply.send(answer.await);
    })
    .detach();
}

/// One partition's batch in a produce request (already validated by the receiving shard).
pub struct ProduceItem {
    pub idx: usize,
    pub tp: TopicPartition,
    pub batch: Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct ProduceOutcome {
    pub idx: usize,
    pub error: Option<ResponseError>,
    pub base_offset: Offset,
    pub log_append_time_ms: i64,
    pub log_start_offset: Offset,
    /// INVALID_RECORD: the records refused (their index in the batch) and why (KIP-467).
    pub record_errors: Vec<i32>,
    pub error_message: Option<&'static str>,
}

impl ProduceOutcome {
    /// A partition that was not appended to.
    pub fn failed(idx: usize, error: ResponseError) -> Self {
        Self {
            idx,
            error: Some(error),
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
            error_message: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FetchItem {
    pub idx: usize,
    pub tp: TopicPartition,
    pub offset: Offset,
    /// This partition's limit (`partition_max_bytes`).
    pub max_bytes: usize,
    /// The whole response's limit (`max_bytes`), shared by the request's partitions.
    pub budget: usize,
    /// A follower's fetch: read up to the log end and record its progress.
    pub replica: Option<ReplicaFetch>,
    pub isolation: Isolation,
}

/// Who fetches as a follower, and the epoch of the last batch it holds.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaFetch {
    pub replica_id: i32,
    pub last_fetched_epoch: i32,
    /// The follower's log start offset (for the leader's low watermark: DeleteRecords).
    pub log_start_offset: Offset,
}

#[derive(Debug, Clone, Default)]
pub struct FetchOutcome {
    pub idx: usize,
    pub error: Option<ResponseError>,
    pub high_watermark: Offset,
    pub last_stable_offset: Offset,
    pub log_start_offset: Offset,
    pub records: Bytes,
    /// read_committed: the aborted transactions among `records`.
    pub aborted: Vec<AbortedTxn>,
    /// To a follower whose log diverged: the epoch and end offset to truncate to.
    pub diverging: Option<(i32, Offset)>,
}

impl FetchOutcome {
    /// A partition that was not read.
    pub fn failed(idx: usize, error: ResponseError) -> Self {
        Self {
            idx,
            error: Some(error),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            records: Bytes::new(),
            aborted: Vec::new(),
            diverging: None,
        }
    }
}

/// A follower's step on the shard that owns its replica (sent by the replica fetcher).
#[derive(Debug)]
pub enum FollowStep {
    /// Where the log stands.
    Position,
    /// Append what the leader sent in `leader_epoch` (possibly nothing) and take its high
    /// watermark.
    Append { leader_epoch: i32, records: Bytes, leader_high_watermark: Offset, leader_log_start: Offset },
    /// The leader (in `leader_epoch`) says the log diverged at `epoch`, which it ends at
    /// `end_offset`.
    Truncate { leader_epoch: i32, epoch: i32, end_offset: Offset },
    /// The leader's log starts at `log_start`, past this replica's fetch offset.
    StartAt { leader_epoch: i32, log_start: Offset },
}

#[derive(Debug, Clone)]
pub struct ListOffsetsItem {
    pub idx: usize,
    pub tp: TopicPartition,
    pub spec: OffsetSpec,
    pub isolation: Isolation,
}

#[derive(Debug, Clone, Default)]
pub struct ListOffsetsOutcome {
    pub idx: usize,
    pub error: Option<ResponseError>,
    pub offset: Offset,
    pub timestamp: i64,
}

impl ListOffsetsOutcome {
    pub fn failed(idx: usize, error: ResponseError) -> Self {
        Self { idx, error: Some(error), offset: -1, timestamp: -1 }
    }
}

/// One partition's replica in the data directory (DescribeLogDirs).
#[derive(Debug, Clone)]
pub struct LogDirEntry {
    pub tp: TopicPartition,
    pub size: u64,
    /// How far the log end is behind the high watermark (Kafka's offset lag; 0 when caught up).
    pub offset_lag: Offset,
}

/// DeleteRecords: move a partition's log start to `offset` (-1: its high watermark).
#[derive(Debug, Clone)]
pub struct DeleteRecordsItem {
    pub idx: usize,
    pub tp: TopicPartition,
    pub offset: Offset,
    /// How long to wait for the in-sync followers' log starts to follow.
    pub timeout_ms: i32,
}

#[derive(Debug, Clone)]
pub struct DeleteRecordsOutcome {
    pub idx: usize,
    pub error: Option<ResponseError>,
    pub low_watermark: Offset,
}

impl DeleteRecordsOutcome {
    pub fn failed(idx: usize, error: ResponseError) -> Self {
        Self { idx, error: Some(error), low_watermark: -1 }
    }
}

/// OffsetForLeaderEpoch: where the partition's `leader_epoch` ended.
#[derive(Debug, Clone)]
pub struct EpochEndItem {
    pub idx: usize,
    pub tp: TopicPartition,
    pub leader_epoch: i32,
}

#[derive(Debug, Clone, Default)]
pub struct EpochEndOutcome {
    pub idx: usize,
    pub error: Option<ResponseError>,
    /// The largest epoch at or below the one asked, and its end offset; (-1, -1) if none.
    pub leader_epoch: i32,
    pub end_offset: Offset,
}

impl EpochEndOutcome {
    pub fn failed(idx: usize, error: ResponseError) -> Self {
        Self { idx, error: Some(error), leader_epoch: -1, end_offset: -1 }
    }
}

/// A topic to create, as the control shard validates it.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// Explicit assignment: partition id -> broker ids.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, Default)]
pub struct TopicOutcome {
    pub name: String,
    pub topic_id: uuid::Uuid,
    pub error: Option<ResponseError>,
    pub error_message: Option<String>,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

/// Partitions to add to a topic (CreatePartitions): its new total, and optionally the
/// brokers of each new partition.
#[derive(Debug, Clone)]
pub struct NewPartitions {
    pub name: String,
    pub count: i32,
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// A topic to delete, by name or by id (DeleteTopics v6).
#[derive(Debug, Clone)]
pub enum TopicRef {
    Name(String),
    Id(uuid::Uuid),
}

/// One partition's active producers (DescribeProducers).
#[derive(Debug, Clone, Default)]
pub struct ProducersOutcome {
    pub idx: usize,
    pub error: Option<ResponseError>,
    pub producers: Vec<ProducerSummary>,
}

/// A request for a data shard.
pub enum DataRequest {
    /// Append batches on the owner; the reply comes once `acks` is satisfied.
    Produce {
        acks: Acks,
        timeout_ms: i32,
        items: Vec<ProduceItem>,
        reply: oneshot::Sender<Vec<ProduceOutcome>>,
    },
    Fetch {
        items: Vec<FetchItem>,
        reply: oneshot::Sender<Vec<FetchOutcome>>,
    },
    /// Fire `reply` when any partition's high watermark (or, for a follower's fetch,
    /// `log_end`, its log end) moves past the given one.
    Watch {
        items: Vec<(TopicPartition, Offset)>,
        log_end: bool,
        reply: oneshot::Sender<()>,
    },
    /// Control -> data: a step of a follower replica.
    Follow {
        tp: TopicPartition,
        step: FollowStep,
        reply: oneshot::Sender<Result<crate::partition::FollowerPosition, ResponseError>>,
    },
    ListOffsets {
        items: Vec<ListOffsetsItem>,
        reply: oneshot::Sender<Vec<ListOffsetsOutcome>>,
    },
    DeleteRecords {
        items: Vec<DeleteRecordsItem>,
        reply: oneshot::Sender<Vec<DeleteRecordsOutcome>>,
    },
    DescribeProducers {
        items: Vec<(usize, TopicPartition)>,
        reply: oneshot::Sender<Vec<ProducersOutcome>>,
    },
    EpochEnds {
        items: Vec<EpochEndItem>,
        reply: oneshot::Sender<Vec<EpochEndOutcome>>,
    },
    /// Every partition this shard holds, with its size (DescribeLogDirs).
    LogDirs {
        reply: oneshot::Sender<Vec<LogDirEntry>>,
    },
    /// Control -> data: a new metadata image; reply once local partitions match it (the
    /// shard does not answer from it until `Show`).
    Publish {
        image: Arc<MetadataImage>,
        reply: oneshot::Sender<()>,
    },
    /// Control -> data, once every data shard has the image's partitions: answer from it.
    Show {
        image: Arc<MetadataImage>,
        reply: oneshot::Sender<()>,
    },
    /// Any shard -> the group's coordinator shard (or every data shard, for a listing).
    Group(GroupCall),
    /// Any shard -> the transactional id's coordinator shard (or every data shard, for a listing).
    Txn(TxnCall),
    /// A transaction coordinator -> the shard owning the partitions: write these markers.
    WriteMarkers {
        request: MarkerRequest,
        reply: oneshot::Sender<MarkerResults>,
    },
    /// Control -> data: the active controller answered this node's broker heartbeat sent
    /// at `at` (leaders stop taking writes when this gets too old: `check_isr`).
    ControllerContact {
        at: std::time::Instant,
    },
    /// Control -> data: this node may serve clients now (its broker is registered and
    /// unfenced, and the shard has the image that says so): bind the client listener.
    Listen,
}

/// One partition's outcome of an ElectLeaders call.
#[derive(Debug, Clone)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    pub error: Option<ResponseError>,
    pub message: Option<String>,
}

/// The ISR a partition's leader asks for, in the leadership it holds.
#[derive(Debug, Clone)]
pub struct IsrChange {
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// A request for the control shard (from a data shard).
pub enum ControlRequest {
    /// A block of `count` producer ids, `[start, end)`, durably reserved.
    AllocateProducerIds { count: i64, reply: oneshot::Sender<Option<(i64, i64)>> },
    /// Answered once committed and in this node's image, or when `timeout` runs out.
    CreateTopics {
        topics: Vec<NewTopic>,
        /// The client that asked (forwarded in an envelope with its identity); `None` for
        /// the broker's own creation.
        origin: Option<ClientOrigin>,
        validate_only: bool,
        timeout: std::time::Duration,
        reply: oneshot::Sender<Vec<TopicOutcome>>,
    },
    DeleteTopics {
        topics: Vec<TopicRef>,
        origin: Option<ClientOrigin>,
        timeout: std::time::Duration,
        reply: oneshot::Sender<Vec<TopicOutcome>>,
    },
    /// Answered once committed and in this node's image, or when `timeout` runs out.
    CreatePartitions {
        topics: Vec<NewPartitions>,
        origin: Option<ClientOrigin>,
        validate_only: bool,
        timeout: std::time::Duration,
        reply: oneshot::Sender<Vec<TopicOutcome>>,
    },
    /// IncrementalAlterConfigs or AlterConfigs (`replace`); answered once committed and in
    /// this node's image, or when `timeout` runs out.
    AlterConfigs {
        changes: Vec<crate::cluster::configs::ConfigChange>,
        origin: Option<ClientOrigin>,
        validate_only: bool,
        timeout: std::time::Duration,
        reply: oneshot::Sender<Vec<Result<(), (ResponseError, String)>>>,
    },
    /// A client from `ip` connected: whether it may stay (fewer than `limit` open from
    /// there). Counted across every data shard, so sent only when a per-address limit is set.
    OpenConnection { ip: std::net::IpAddr, limit: usize, reply: oneshot::Sender<bool> },
    /// DescribeQuorum, answered by the active controller (here or forwarded there).
    DescribeQuorum {
        request: kafka_protocol::messages::DescribeQuorumRequest,
        version: i16,
        reply: oneshot::Sender<kafka_protocol::messages::DescribeQuorumResponse>,
    },
    /// ElectLeaders, run by the active controller (here or forwarded there).
    ElectLeaders {
        kind: crate::cluster::election::ElectionType,
        /// `None`: every partition.
        partitions: Option<Vec<(String, i32)>>,
        timeout: std::time::Duration,
        reply: oneshot::Sender<Result<Vec<ElectionResult>, ResponseError>>,
    },
    /// A leader asks the controller to change a partition's ISR (AlterPartition).
    AlterPartition { change: IsrChange, reply: oneshot::Sender<Result<(), ResponseError>> },
    /// A connection `OpenConnection` let in has closed.
    CloseConnection { ip: std::net::IpAddr },
}
