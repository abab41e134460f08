//! DeleteRecords (key 21), v0-2: moves partitions' log start offsets up (records below are
//! gone for consumers; whole segments below are removed). The offset -1 means the high
//! watermark; past it is OFFSET_OUT_OF_RANGE; a `compact`-only topic refuses with
//! POLICY_VIOLATION. The answer, per partition, is the low watermark: the smallest log
//! start among the in-sync replicas, once it reaches the offset (REQUEST_TIMED_OUT if the
//! followers do not follow within `timeout_ms`).

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::shard::message::{DeleteRecordsItem, DeleteRecordsOutcome};
use crate::shard::Shard;
use crate::types::{wire_code, TopicPartition};

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: DeleteRecordsRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let image = shard.image();
    let mut slots = Vec::new();
    let mut items = Vec::new();
    let mut outcomes = Vec::new();
    let mut seen = HashSet::new();
    for (t, topic) in request.topics.iter().enumerate() {
        let name = topic.name.0.as_str();
        let meta = image.topic(name);
        for part in &topic.partitions {
            let idx = slots.len();
            slots.push((t, part.partition_index));
            let error = match meta {
                _ if !seen.insert((name, part.partition_index)) => Some(ResponseError::InvalidRequest),
                Some(m) if part.partition_index >= 0 && part.partition_index < m.partitions => None,
                _ => Some(ResponseError::UnknownTopicOrPartition),
            };
            let error = error.or((part.offset < -1).then_some(ResponseError::OffsetOutOfRange));
            match error {
                Some(e) => outcomes.push(DeleteRecordsOutcome::failed(idx, e)),
                None => items.push(DeleteRecordsItem {
                    idx,
                    tp: TopicPartition::new(name, part.partition_index),
                    offset: part.offset,
                    timeout_ms: request.timeout_ms,
                }),
            }
        }
    }
    if !items.is_empty() {
        outcomes.extend(shard.route_delete_records(items).await);
    }
    outcomes.sort_by_key(|o| o.idx);
    let mut response = DeleteRecordsResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|t| {
            let mut r = DeleteRecordsTopicResult::default();
            r.name = t.name.clone();
            r
        })
        .collect();
    for o in outcomes {
        let (t, partition) = slots[o.idx];
        let mut pr = DeleteRecordsPartitionResult::default();
        pr.partition_index = partition;
        pr.low_watermark = o.low_watermark;
        pr.error_code = wire_code(o.error);
        response.topics[t].partitions.push(pr);
    }
    encode_frame(ApiKey::DeleteRecords, version, correlation_id, &response)
}
