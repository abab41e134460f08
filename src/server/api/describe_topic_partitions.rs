//! DescribeTopicPartitions (key 75), v0 (KIP-966; Kafka 3.7+ admin clients describe topics
//! with it): each topic's id and partitions — leader, leader epoch, replicas, ISR, offline
//! replicas — paged. Topics are answered in name order, all of them when none are named;
//! an answer carries at most `response_partition_limit` partitions (and at most
//! `max.request.partition.size.limit`), and `next_cursor` says where the next request
//! starts. Weir has no eligible-leader replicas (ELR): those lists are empty.

use std::rc::Rc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::metadata::{INTERNAL_TOPICS, TOPIC_OPERATIONS};
use super::{encode_frame, Reply, RequestContext};
use crate::cluster::{MetadataImage, TopicMeta};
use crate::shard::Shard;
use crate::types::TopicPartition;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: DescribeTopicPartitionsRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let image = shard.image();
    let mut names: Vec<String> = if request.topics.is_empty() {
        image.topics.keys().cloned().collect()
    } else {
        request.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort_unstable();
    names.dedup();
    let mut response = DescribeTopicPartitionsResponse::default();
    let (from_topic, mut from_partition) = match &request.cursor {
        Some(c) => (c.topic_name.0.to_string(), c.partition_index.max(0)),
        None => (String::new(), 0),
    };
    if request.cursor.is_some() && !request.topics.is_empty() && !names.contains(&from_topic) {
        // Kafka's answer for a cursor outside the asked topics.
        let mut t = DescribeTopicPartitionsResponseTopic::default();
        t.error_code = ResponseError::InvalidRequest.code();
        t.name = Some(TopicName(StrBytes::from_string(from_topic)));
        response.topics.push(t);
        return encode_frame(ApiKey::DescribeTopicPartitions, version, correlation_id, &response);
    }
    let mut budget = request.response_partition_limit.clamp(1, shard.config.max_request_partition_size_limit);
    for name in names.into_iter().filter(|n| *n >= from_topic) {
        let Some(meta) = image.topic(&name) else {
            let mut t = DescribeTopicPartitionsResponseTopic::default();
            t.error_code = ResponseError::UnknownTopicOrPartition.code();
            t.name = Some(TopicName(StrBytes::from_string(name)));
            response.topics.push(t);
            continue;
        };
        if budget == 0 {
            response.next_cursor = Some(cursor(&name, 0));
            break;
        }
        let start = if name == from_topic { from_partition.min(meta.partitions) } else { 0 };
        from_partition = 0;
        let end = meta.partitions.min(start.saturating_add(budget));
        response.topics.push(topic_entry(&image, meta, start, end));
        budget -= end - start;
        if end < meta.partitions {
            response.next_cursor = Some(cursor(&name, end));
            break;
        }
    }
    encode_frame(ApiKey::DescribeTopicPartitions, version, correlation_id, &response)
}

fn cursor(topic: &str, partition: i32) -> Cursor {
    let mut c = Cursor::default();
    c.topic_name = TopicName(StrBytes::from_string(topic.to_string()));
    c.partition_index = partition;
    c
}

/// Partitions `[start, end)` of a topic.
fn topic_entry(image: &MetadataImage, meta: &TopicMeta, start: i32, end: i32) -> DescribeTopicPartitionsResponseTopic {
    let mut t = DescribeTopicPartitionsResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(meta.name.clone())));
    t.topic_id = meta.id;
    t.is_internal = INTERNAL_TOPICS.contains(&meta.name.as_str());
    t.topic_authorized_operations = TOPIC_OPERATIONS;
    t.partitions = (start..end)
        .map(|p| {
            let replicas = meta.replicas_of(p);
            let state = meta.state_of(p);
            let leader = image.leader(&TopicPartition::new(meta.name.clone(), p));
            let mut part = DescribeTopicPartitionsResponsePartition::default();
            part.partition_index = p;
            part.leader_id = BrokerId(leader.unwrap_or(-1));
            part.leader_epoch = state.map_or(-1, |s| s.leader_epoch.max(0));
            part.replica_nodes = replicas.iter().map(|b| BrokerId(*b)).collect();
            part.isr_nodes = state.map(|s| s.isr.iter().map(|b| BrokerId(*b)).collect()).unwrap_or_default();
            part.eligible_leader_replicas = Some(Vec::new());
            part.last_known_elr = Some(Vec::new());
            part.offline_replicas = replicas.iter().filter(|b| !image.is_live(**b)).map(|b| BrokerId(*b)).collect();
            if leader.is_none() {
                part.error_code = ResponseError::LeaderNotAvailable.code();
            }
            part
        })
        .collect();
    t
}
