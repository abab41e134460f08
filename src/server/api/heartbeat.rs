//! Heartbeat (key 12), v0-4: keeps a member's session alive; REBALANCE_IN_PROGRESS tells
//! it to rejoin.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, ready, Pending, Reply, RequestContext};
use crate::group::coordinator::GroupCall;
use crate::shard::Shard;
use crate::types::wire_code;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: HeartbeatRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    if request.group_id.is_empty() {
        return ready(response(version, correlation_id, Some(ResponseError::InvalidGroupId)));
    }
    let (reply, rx) = oneshot::channel();
    shard
        .route_group(GroupCall::Heartbeat {
            group: request.group_id.to_string(),
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.map(|i| i.to_string()),
            generation: request.generation_id,
            reply,
        })
        .await;
    Box::pin(async move {
        let error = rx.await.unwrap_or(Some(ResponseError::CoordinatorNotAvailable));
        response(version, correlation_id, error)
    })
}

fn response(version: i16, correlation_id: i32, error: Option<ResponseError>) -> Reply {
    let mut r = HeartbeatResponse::default();
    r.error_code = wire_code(error);
    encode_frame(ApiKey::Heartbeat, version, correlation_id, &r)
}
