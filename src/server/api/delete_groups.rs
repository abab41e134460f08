//! DeleteGroups (key 42), v0-2: removes empty groups and their committed offsets
//! (tombstones in `__consumer_offsets`). A group with members gets NON_EMPTY_GROUP.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{ApiKey, DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::group::coordinator::GroupCall;
use crate::shard::Shard;
use crate::types::wire_code;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: DeleteGroupsRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let mut waits = Vec::with_capacity(request.groups_names.len());
    for group in request.groups_names {
        let (reply, rx) = oneshot::channel();
        if group.is_empty() {
            let _ = reply.send(Some(ResponseError::InvalidGroupId));
        } else {
            shard.route_group(GroupCall::Delete { group: group.to_string(), reply }).await;
        }
        waits.push((group, rx));
    }
    let mut response = DeleteGroupsResponse::default();
    for (group_id, rx) in waits {
        let mut r = DeletableGroupResult::default();
        r.group_id = group_id;
        r.error_code = wire_code(rx.await.unwrap_or(Some(ResponseError::CoordinatorNotAvailable)));
        response.results.push(r);
    }
    encode_frame(ApiKey::DeleteGroups, version, correlation_id, &response)
}
