//! Appending records to an internal topic (`__consumer_offsets`, `__transaction_state`) on
//! the shard that owns the partition, and waiting until they are durable: the
//! storage service of the coordinators that live beside their partitions.
//!
//! The append happens when `append` is called, so records keep the order of the calls; the
//! returned future resolves once they are synced (acks=all semantics), bounded by the
//! appender's timeout (Kafka's `offsets.commit.timeout.ms`).

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::PartitionTable;
use crate::types::{Acks, Offset, TopicPartition};

pub struct InternalTopicAppender {
    partitions: Rc<PartitionTable>,
    timeout: Duration,
}

impl InternalTopicAppender {
    pub fn new(partitions: Rc<PartitionTable>, timeout: Duration) -> Self {
        Self { partitions, timeout }
    }

    /// Appends `batch` to `tp` (a partition of this shard) now; resolves with the batch's
    /// base offset once durable, or the partition's error (UNKNOWN_TOPIC_OR_PARTITION when
    /// this shard does not have it, REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR, ...).
    pub fn append(&self, tp: &TopicPartition, batch: Bytes) -> impl Future<Output = Result<Offset, ResponseError>> {
        let produced = match self.partitions.get(tp) {
            Some(p) => p.produce(&batch, Acks::All, self.timeout),
            None => Err(ResponseError::UnknownTopicOrPartition),
        };
        async move { Ok(produced?.await?.base_offset) }
    }
}
