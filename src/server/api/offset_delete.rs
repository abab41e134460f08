//! OffsetDelete (key 47), v0: removes a group's committed offsets for partitions it no
//! longer consumes (tombstones in `__consumer_offsets`). A consumer group keeps the offsets
//! of topics its members subscribe to (GROUP_SUBSCRIBED_TO_TOPIC per partition); a group of
//! another kind must be empty (NON_EMPTY_GROUP); an unknown group is GROUP_ID_NOT_FOUND.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{ApiKey, OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::group::coordinator::GroupCall;
use crate::shard::Shard;
use crate::types::wire_code;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: OffsetDeleteRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), p.partition_index)))
        .collect();
    let answer = if request.group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        let (reply, rx) = oneshot::channel();
        let group = request.group_id.to_string();
        shard.route_group(GroupCall::DeleteOffsets { group, partitions: partitions.clone(), reply }).await;
        rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
    };
    let mut response = OffsetDeleteResponse::default();
    match answer {
        Err(e) => response.error_code = e.code(),
        Ok(codes) => {
            let mut codes = codes.into_iter();
            for t in &request.topics {
                let mut rt = OffsetDeleteResponseTopic::default();
                rt.name = t.name.clone();
                for p in &t.partitions {
                    let mut rp = OffsetDeleteResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = wire_code(codes.next().flatten());
                    rt.partitions.push(rp);
                }
                response.topics.push(rt);
            }
        }
    }
    encode_frame(ApiKey::OffsetDelete, version, correlation_id, &response)
}
