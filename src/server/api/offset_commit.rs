//! OffsetCommit (key 8), v2-9: writes a group's committed offsets to `__consumer_offsets`
//! and answers once they are synced. Members commit under their generation; a consumer
//! that assigns its own partitions commits with generation -1 to a group without members.
//! (The v2-4 retention time is ignored, as Kafka 2.1+ does: `offsets.retention.minutes`.)

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, ready, Pending, Reply, RequestContext};
use crate::group::coordinator::{CommitRequest, GroupCall, PerItem};
use crate::group::records::OffsetValue;
use crate::shard::Shard;
use crate::types::{now_ms, wire_code};

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: OffsetCommitRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let count = request.topics.iter().map(|t| t.partitions.len()).sum();
    if request.group_id.is_empty() {
        return ready(response(version, correlation_id, &request, Err(ResponseError::InvalidGroupId)));
    }
    let now = now_ms();
    let mut offsets = Vec::with_capacity(count);
    for t in &request.topics {
        for p in &t.partitions {
            let value = OffsetValue {
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                commit_timestamp: now,
            };
            offsets.push((t.name.0.to_string(), p.partition_index, value));
        }
    }
    let (reply, rx) = oneshot::channel();
    shard
        .route_group(GroupCall::Commit {
            group: request.group_id.to_string(),
            request: CommitRequest {
                member_id: request.member_id.to_string(),
                instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
                generation: request.generation_id_or_member_epoch,
                offsets,
            },
            reply,
        })
        .await;
    Box::pin(async move {
        let codes = rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable));
        response(version, correlation_id, &request, codes)
    })
}

fn response(version: i16, correlation_id: i32, request: &OffsetCommitRequest, codes: PerItem) -> Reply {
    let mut codes = match codes {
        Ok(codes) => codes.into_iter(),
        Err(e) => vec![Some(e); request.topics.iter().map(|t| t.partitions.len()).sum()].into_iter(),
    };
    let mut r = OffsetCommitResponse::default();
    r.topics = request
        .topics
        .iter()
        .map(|t| {
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = OffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = wire_code(codes.next().unwrap_or(Some(ResponseError::UnknownServerError)));
                    rp
                })
                .collect();
            rt
        })
        .collect();
    encode_frame(ApiKey::OffsetCommit, version, correlation_id, &r)
}
