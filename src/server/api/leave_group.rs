//! LeaveGroup (key 13), v0-5: one member (v0-2) or several at once (v3+, KIP-345, by
//! member id or by static instance id). Their partitions move at once: the group rebalances.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{ApiKey, LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, ready, Pending, Reply, RequestContext};
use crate::group::coordinator::{GroupCall, PerItem};
use crate::shard::Shard;
use crate::types::wire_code;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: LeaveGroupRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    if request.group_id.is_empty() {
        return ready(response(version, correlation_id, &request, Err(ResponseError::InvalidGroupId)));
    }
    let (reply, rx) = oneshot::channel();
    shard.route_group(GroupCall::Leave { group: request.group_id.to_string(), members, reply }).await;
    Box::pin(async move {
        let codes = rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable));
        response(version, correlation_id, &request, codes)
    })
}

fn response(version: i16, correlation_id: i32, request: &LeaveGroupRequest, codes: PerItem) -> Reply {
    let mut r = LeaveGroupResponse::default();
    match codes {
        Err(e) => r.error_code = e.code(),
        Ok(codes) if version < 3 => r.error_code = wire_code(codes.first().copied().flatten()),
        Ok(codes) => {
            r.members = request
                .members
                .iter()
                .zip(codes)
                .map(|(m, code)| {
                    let mut mr = MemberResponse::default();
                    mr.member_id = m.member_id.clone();
                    mr.group_instance_id = m.group_instance_id.clone();
                    mr.error_code = wire_code(code);
                    mr
                })
                .collect();
        }
    }
    encode_frame(ApiKey::LeaveGroup, version, correlation_id, &r)
}
