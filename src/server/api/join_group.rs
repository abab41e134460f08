//! JoinGroup (key 11), v0-9: joins a member to its group on the coordinator shard; the
//! answer waits until the rebalance completes. v4+: a new dynamic member is first sent
//! back with MEMBER_ID_REQUIRED and its id (KIP-394); v9 tells a rejoining static leader
//! to skip the assignment (KIP-814).

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{encode_frame, ready, Pending, RequestContext};
use crate::group::coordinator::GroupCall;
use crate::group::state::{JoinOutcome, JoinRequest};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: JoinGroupRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let member_id = request.member_id.to_string();
    if request.group_id.is_empty() {
        let outcome = JoinOutcome::failed(ResponseError::InvalidGroupId, &member_id);
        return ready(response(version, correlation_id, outcome));
    }
    let join = JoinRequest {
        version,
        member_id: member_id.clone(),
        instance_id: request.group_instance_id.map(|i| i.to_string()),
        client_id: ctx.client_id.to_string(),
        client_host: ctx.client_host(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 { request.session_timeout_ms } else { request.rebalance_timeout_ms },
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
    };
    let (reply, rx) = oneshot::channel();
    shard.route_group(GroupCall::Join { group: request.group_id.to_string(), request: join, reply }).await;
    Box::pin(async move {
        let outcome =
            rx.await.unwrap_or_else(|_| JoinOutcome::failed(ResponseError::CoordinatorNotAvailable, &member_id));
        response(version, correlation_id, outcome)
    })
}

fn response(version: i16, correlation_id: i32, o: JoinOutcome) -> super::Reply {
    let mut r = JoinGroupResponse::default();
    r.error_code = o.error;
    r.generation_id = o.generation;
    if version >= 7 {
        r.protocol_type = o.protocol_type.map(StrBytes::from_string);
        r.protocol_name = o.protocol.map(StrBytes::from_string);
    } else {
        r.protocol_name = Some(StrBytes::from_string(o.protocol.unwrap_or_default()));
    }
    r.leader = StrBytes::from_string(o.leader);
    r.skip_assignment = version >= 9 && o.skip_assignment;
    r.member_id = StrBytes::from_string(o.member_id);
    r.members = o
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = StrBytes::from_string(id);
            m.group_instance_id = if version >= 5 { instance.map(StrBytes::from_string) } else { None };
            m.metadata = metadata;
            m
        })
        .collect();
    encode_frame(ApiKey::JoinGroup, version, correlation_id, &r)
}
