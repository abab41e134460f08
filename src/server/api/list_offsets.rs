//! ListOffsets (key 2), v1-10: latest (-1), earliest (-2), largest timestamp (-3),
//! earliest on local disk (-4, v8+: the log start, all segments are local), latest in
//! tiered storage (-5, v9+: none) or the first offset at or after a timestamp; a record at or
//! past the high watermark is no answer (-1), as in Kafka. Never parks: every answer is
//! immediate, so v10's `timeout_ms` has nothing to bound.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::partition::Isolation;
use crate::shard::message::{ListOffsetsItem, ListOffsetsOutcome};
use crate::shard::Shard;
use crate::types::{wire_code, OffsetSpec, TopicPartition};

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: ListOffsetsRequest) -> Reply {
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
            let current_epoch = meta.and_then(|m| m.state_of(part.partition_index)).map_or(-1, |s| s.leader_epoch);
            let error = error.or_else(|| super::fetch::leader_epoch_error(part.current_leader_epoch, current_epoch));
            let spec = OffsetSpec::from_wire(part.timestamp);
            match (error, spec) {
                (Some(e), _) => outcomes.push(ListOffsetsOutcome::failed(idx, e)),
                (None, None) => outcomes.push(ListOffsetsOutcome::failed(idx, ResponseError::InvalidRequest)),
                (None, Some(spec)) => items.push(ListOffsetsItem {
                    idx,
                    tp: TopicPartition::new(name, part.partition_index),
                    spec,
                    isolation: Isolation::from_wire(request.isolation_level),
                }),
            }
        }
    }
    if !items.is_empty() {
        outcomes.extend(shard.route_list_offsets(items).await);
    }
    outcomes.sort_by_key(|o| o.idx);
    let mut response = ListOffsetsResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|t| {
            let mut r = ListOffsetsTopicResponse::default();
            r.name = t.name.clone();
            r
        })
        .collect();
    for o in outcomes {
        let (t, partition) = slots[o.idx];
        let mut pr = ListOffsetsPartitionResponse::default();
        pr.partition_index = partition;
        pr.error_code = wire_code(o.error);
        pr.offset = o.offset;
        pr.timestamp = o.timestamp;
        // The partition's current leader epoch (Kafka gives the epoch of the record found;
        // clients use it only to validate positions with OffsetForLeaderEpoch).
        let epoch = image
            .topic(request.topics[t].name.0.as_str())
            .and_then(|m| m.state_of(partition))
            .map_or(-1, |s| s.leader_epoch.max(0));
        pr.leader_epoch = if version >= 4 && o.error.is_none() && o.offset >= 0 { epoch } else { -1 };
        response.topics[t].partitions.push(pr);
    }
    encode_frame(ApiKey::ListOffsets, version, correlation_id, &response)
}
