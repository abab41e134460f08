//! Typed messages between shards. Payloads are owned (`Bytes`, ids) so they can cross cores;
//! every request carries a one-shot reply. One message per owning shard per client request.

use std::sync::Arc;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::cluster::MetadataImage;
use crate::types::{Offset, TopicPartition};

/// One partition's batch in a produce request (already validated by the receiving shard).
pub struct ProduceItem {
    pub idx: usize,
    pub tp: TopicPartition,
    pub batch: Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct ProduceOutcome {
    pub idx: usize,
    pub error_code: i16,
    pub base_offset: Offset,
    pub log_append_time_ms: i64,
    pub log_start_offset: Offset,
}

impl ProduceOutcome {
    /// A partition that was not appended to.
    pub fn failed(idx: usize, error_code: i16) -> Self {
        Self { idx, error_code, base_offset: -1, log_append_time_ms: -1, log_start_offset: -1 }
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
}

#[derive(Debug, Clone, Default)]
pub struct FetchOutcome {
    pub idx: usize,
    pub error_code: i16,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub records: Bytes,
}

#[derive(Debug, Clone)]
pub struct ListOffsetsItem {
    pub idx: usize,
    pub tp: TopicPartition,
    /// -1 latest, -2 earliest, -3 largest timestamp, else a timestamp in ms.
    pub timestamp: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ListOffsetsOutcome {
    pub idx: usize,
    pub error_code: i16,
    pub offset: Offset,
    pub timestamp: i64,
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
    pub error_code: i16,
    pub error_message: Option<String>,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
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
    pub error_code: i16,
    /// (producer id, epoch, last sequence, last timestamp)
    pub producers: Vec<(i64, i16, i32, i64)>,
}

pub enum ShardRequest {
    /// Append batches on the owner; the reply comes once `acks` is satisfied.
    Produce {
        acks: i16,
        timeout_ms: i32,
        items: Vec<ProduceItem>,
        reply: oneshot::Sender<Vec<ProduceOutcome>>,
    },
    Fetch {
        items: Vec<FetchItem>,
        reply: oneshot::Sender<Vec<FetchOutcome>>,
    },
    /// Fire `reply` when any partition's high watermark moves past the given one.
    Watch {
        items: Vec<(TopicPartition, Offset)>,
        reply: oneshot::Sender<()>,
    },
    ListOffsets {
        items: Vec<ListOffsetsItem>,
        reply: oneshot::Sender<Vec<ListOffsetsOutcome>>,
    },
    DescribeProducers {
        items: Vec<(usize, TopicPartition)>,
        reply: oneshot::Sender<Vec<ProducersOutcome>>,
    },
    /// Data -> control: a block of `count` producer ids, `[start, end)`, durably reserved.
    AllocateProducerIds {
        count: i64,
        reply: oneshot::Sender<Option<(i64, i64)>>,
    },
    /// Control -> data: a new metadata image; reply once local partitions match it.
    Publish {
        image: Arc<MetadataImage>,
        reply: oneshot::Sender<()>,
    },
    /// Data -> control.
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
        reply: oneshot::Sender<Vec<TopicOutcome>>,
    },
    DeleteTopics {
        topics: Vec<TopicRef>,
        reply: oneshot::Sender<Vec<TopicOutcome>>,
    },
    /// Any shard -> the group's coordinator shard (or every data shard, for a listing).
    Group(super::groups::GroupCall),
}
