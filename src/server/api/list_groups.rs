//! ListGroups (key 16), v0-5: every group on every data shard's coordinator, filtered by
//! state (v4+) and type (v5+; all of ours are "classic").

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{encode_frame, Reply, RequestContext};
use crate::shard::Shard;

const GROUP_TYPE: &str = "classic";

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: ListGroupsRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let wanted =
        |filter: &[StrBytes], value: &str| filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value));
    let mut response = ListGroupsResponse::default();
    response.groups = shard
        .list_all_groups()
        .await
        .into_iter()
        .filter(|g| wanted(&request.states_filter, g.state) && wanted(&request.types_filter, GROUP_TYPE))
        .map(|g| {
            let mut l = ListedGroup::default();
            l.group_id = GroupId(StrBytes::from_string(g.group_id));
            l.protocol_type = StrBytes::from_string(g.protocol_type);
            if version >= 4 {
                l.group_state = StrBytes::from_static_str(g.state);
            }
            if version >= 5 {
                l.group_type = StrBytes::from_static_str(GROUP_TYPE);
            }
            l
        })
        .collect();
    encode_frame(ApiKey::ListGroups, version, correlation_id, &response)
}
