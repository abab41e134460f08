//! SyncGroup (key 14), v0-5: the leader hands in the assignment (opaque to the broker),
//! which is stored in `__consumer_offsets` before any member receives its part.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::{ApiKey, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{encode_frame, ready, Pending, Reply, RequestContext};
use crate::group::coordinator::GroupCall;
use crate::group::state::{SyncOutcome, SyncRequest};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: SyncGroupRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    if request.group_id.is_empty() {
        return ready(response(version, correlation_id, SyncOutcome::failed(ResponseError::InvalidGroupId)));
    }
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|i| i.to_string()),
        generation: request.generation_id,
        protocol_type: request.protocol_type.map(|p| p.to_string()),
        protocol: request.protocol_name.map(|p| p.to_string()),
        assignments: request.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
    };
    let (reply, rx) = oneshot::channel();
    shard.route_group(GroupCall::Sync { group: request.group_id.to_string(), request: sync, reply }).await;
    Box::pin(async move {
        let outcome = rx.await.unwrap_or_else(|_| SyncOutcome::failed(ResponseError::CoordinatorNotAvailable));
        response(version, correlation_id, outcome)
    })
}

fn response(version: i16, correlation_id: i32, o: SyncOutcome) -> Reply {
    let mut r = SyncGroupResponse::default();
    r.error_code = o.error;
    if version >= 5 {
        r.protocol_type = o.protocol_type.map(StrBytes::from_string);
        r.protocol_name = o.protocol.map(StrBytes::from_string);
    }
    r.assignment = o.assignment;
    encode_frame(ApiKey::SyncGroup, version, correlation_id, &r)
}
