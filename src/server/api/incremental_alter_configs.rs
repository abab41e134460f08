//! IncrementalAlterConfigs (key 44), v0-1: SET, DELETE, APPEND and SUBTRACT on a topic's
//! configs or on dynamic broker configs (one broker's, or the cluster-wide defaults with
//! an empty resource name), with `validate_only`. Forwarded by the control shard to the
//! active controller, which checks them with Kafka's rules and commits them; answered once
//! this node's image has them. Topic configs take effect on the running partitions.

use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::cluster::configs::{ConfigChange, ConfigOp, Refusal};
use crate::shard::Shard;

/// The request's resources as changes, or why one cannot be one.
pub fn changes(request: &IncrementalAlterConfigsRequest, me: Option<i32>) -> Vec<Result<ConfigChange, Refusal>> {
    request
        .resources
        .iter()
        .map(|r| {
            let resource = super::alter_configs::resource(r.resource_type, &r.resource_name, me)?;
            let ops = r
                .configs
                .iter()
                .map(|c| {
                    ConfigOp::from_wire(c.config_operation, c.value.as_deref())
                        .map(|op| (c.name.to_string(), op))
                        .ok_or_else(|| {
                            (
                                ResponseError::InvalidRequest,
                                format!(
                                    "Invalid operation {} (or no value) for config {}",
                                    c.config_operation,
                                    c.name.as_str()
                                ),
                            )
                        })
                })
                .collect::<Result<_, _>>()?;
            Ok(ConfigChange { resource, ops, replace: false })
        })
        .collect()
}

pub fn response(
    request: &IncrementalAlterConfigsRequest,
    outcomes: Vec<Result<(), Refusal>>,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    response.responses = request
        .resources
        .iter()
        .zip(outcomes)
        .map(|(r, o)| {
            let mut answer = AlterConfigsResourceResponse::default();
            answer.resource_type = r.resource_type;
            answer.resource_name = r.resource_name.clone();
            (answer.error_code, answer.error_message) = super::alter_configs::wire_outcome(o);
            answer
        })
        .collect();
    response
}

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: IncrementalAlterConfigsRequest) -> Reply {
    let checked = changes(&request, Some(shard.config.node_id));
    let outcomes = super::alter_configs::send(shard, checked, request.validate_only, ctx.origin()).await;
    encode_frame(ApiKey::IncrementalAlterConfigs, ctx.version, ctx.correlation_id, &response(&request, outcomes))
}
