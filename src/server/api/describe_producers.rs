//! DescribeProducers (key 61), v0: the idempotent producers a partition knows, with their
//! epoch, last sequence and last timestamp.

use std::rc::Rc;

use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{ApiKey, DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::shard::message::ProducersOutcome;
use crate::shard::Shard;
use crate::types::{wire_code, TopicPartition};

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: DescribeProducersRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let image = shard.image();
    let mut slots = Vec::new();
    let mut items = Vec::new();
    let mut outcomes = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        let name = topic.name.0.as_str();
        for &p in &topic.partition_indexes {
            let idx = slots.len();
            slots.push((t, p));
            match image.topic(name) {
                Some(m) if p >= 0 && p < m.partitions => items.push((idx, TopicPartition::new(name, p))),
                _ => outcomes.push(ProducersOutcome {
                    idx,
                    error: Some(ResponseError::UnknownTopicOrPartition),
                    producers: Vec::new(),
                }),
            }
        }
    }
    outcomes.extend(shard.route_describe_producers(items).await);
    outcomes.sort_by_key(|o| o.idx);
    let mut response = DescribeProducersResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|t| {
            let mut r = TopicResponse::default();
            r.name = t.name.clone();
            r
        })
        .collect();
    for o in outcomes {
        let (t, partition) = slots[o.idx];
        let mut pr = PartitionResponse::default();
        pr.partition_index = partition;
        pr.error_code = wire_code(o.error);
        pr.active_producers = o
            .producers
            .into_iter()
            .map(|p| {
                let mut s = ProducerState::default();
                s.producer_id = ProducerId(p.producer_id);
                s.producer_epoch = i32::from(p.epoch);
                s.last_sequence = p.last_sequence;
                s.last_timestamp = p.last_timestamp;
                s.coordinator_epoch = -1;
                s.current_txn_start_offset = p.current_txn_start_offset;
                s
            })
            .collect();
        response.topics[t].partitions.push(pr);
    }
    encode_frame(ApiKey::DescribeProducers, version, correlation_id, &response)
}
