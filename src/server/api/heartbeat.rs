//! Heartbeat (key 12), v0-4: keeps a member's session alive; REBALANCE_IN_PROGRESS tells
//! it to rejoin.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, ready, Pending, Reply};
use crate::shard::groups::GroupCall;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, version: i16, correlation_id: i32, request: HeartbeatRequest) -> Pending {
    if request.group_id.is_empty() {
        return ready(response(version, correlation_id, ResponseError::InvalidGroupId.code()));
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
        let code = rx.await.unwrap_or(ResponseError::CoordinatorNotAvailable.code());
        response(version, correlation_id, code)
    })
}

fn response(version: i16, correlation_id: i32, error_code: i16) -> Reply {
    let mut r = HeartbeatResponse::default();
    r.error_code = error_code;
    encode_frame(ApiKey::Heartbeat, version, correlation_id, &r)
}
