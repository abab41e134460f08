//! OffsetForLeaderEpoch (key 23), v2-4: where a leader epoch ended on the partition's
//! leader (KIP-101, KIP-320). Consumers ask it after a leader change to check that their
//! position is still in the log; a follower would too (Weir's followers learn it from
//! Fetch's diverging epoch instead, as KIP-595 has them).

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::fetch::leader_epoch_error;
use super::{encode_frame, Reply, RequestContext};
use crate::shard::message::{EpochEndItem, EpochEndOutcome};
use crate::shard::Shard;
use crate::types::{wire_code, TopicPartition};

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: OffsetForLeaderEpochRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let image = shard.image();
    let mut slots = Vec::new();
    let mut items = Vec::new();
    let mut outcomes = Vec::new();
    let mut seen = HashSet::new();
    for (t, topic) in request.topics.iter().enumerate() {
        let name = topic.topic.0.as_str();
        let meta = image.topic(name);
        for part in &topic.partitions {
            let idx = slots.len();
            slots.push((t, part.partition));
            let error = match meta {
                _ if !seen.insert((name, part.partition)) => Some(ResponseError::InvalidRequest),
                Some(m) if part.partition >= 0 && part.partition < m.partitions => m
                    .state_of(part.partition)
                    .and_then(|s| leader_epoch_error(part.current_leader_epoch, s.leader_epoch)),
                _ => Some(ResponseError::UnknownTopicOrPartition),
            };
            match error {
                Some(e) => outcomes.push(EpochEndOutcome::failed(idx, e)),
                None => items.push(EpochEndItem {
                    idx,
                    tp: TopicPartition::new(name, part.partition),
                    leader_epoch: part.leader_epoch,
                }),
            }
        }
    }
    outcomes.extend(shard.route_epoch_ends(items).await);
    outcomes.sort_by_key(|o| o.idx);
    let mut response = OffsetForLeaderEpochResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|t| {
            let mut r = OffsetForLeaderTopicResult::default();
            r.topic = t.topic.clone();
            r
        })
        .collect();
    for o in outcomes {
        let (t, partition) = slots[o.idx];
        let mut e = EpochEndOffset::default();
        e.partition = partition;
        e.error_code = wire_code(o.error);
        e.leader_epoch = o.leader_epoch;
        e.end_offset = o.end_offset;
        response.topics[t].partitions.push(e);
    }
    encode_frame(ApiKey::OffsetForLeaderEpoch, version, correlation_id, &response)
}
