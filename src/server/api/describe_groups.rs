//! DescribeGroups (key 15), v0-5: state, protocol and members of each group; member
//! metadata and assignments only while the group is Stable, as Kafka does. An unknown
//! group is reported Dead.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{ApiKey, DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::group::coordinator::GroupCall;
use crate::shard::Shard;

/// Kafka's "authorized operations not requested" value.
const OPERATIONS_OMITTED: i32 = i32::MIN;
/// With no authorizer, every group operation is allowed: READ, DELETE, DESCRIBE.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: DescribeGroupsRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let mut waits = Vec::with_capacity(request.groups.len());
    for group in &request.groups {
        let (reply, rx) = oneshot::channel();
        if group.is_empty() {
            let _ = reply.send(Err(ResponseError::InvalidGroupId));
        } else {
            shard.route_group(GroupCall::Describe { group: group.to_string(), reply }).await;
        }
        waits.push((group.clone(), rx));
    }
    let operations =
        if request.include_authorized_operations && version >= 3 { GROUP_OPERATIONS } else { OPERATIONS_OMITTED };
    let mut response = DescribeGroupsResponse::default();
    for (group_id, rx) in waits {
        let mut d = DescribedGroup::default();
        d.group_id = group_id;
        d.authorized_operations = operations;
        match rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable)) {
            Err(e) => d.error_code = e.code(),
            Ok(None) => d.group_state = StrBytes::from_static_str("Dead"),
            Ok(Some(g)) => {
                d.group_state = StrBytes::from_static_str(g.state);
                d.protocol_type = StrBytes::from_string(g.protocol_type);
                d.protocol_data = StrBytes::from_string(g.protocol);
                d.members = g
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = StrBytes::from_string(m.member_id);
                        dm.group_instance_id =
                            if version >= 4 { m.instance_id.map(StrBytes::from_string) } else { None };
                        dm.client_id = StrBytes::from_string(m.client_id);
                        dm.client_host = StrBytes::from_string(m.client_host);
                        dm.member_metadata = m.subscription;
                        dm.member_assignment = m.assignment;
                        dm
                    })
                    .collect();
            }
        }
        response.groups.push(d);
    }
    encode_frame(ApiKey::DescribeGroups, version, correlation_id, &response)
}
