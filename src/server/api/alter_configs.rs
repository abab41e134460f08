//! AlterConfigs (key 33), v0-2, Kafka's older way to change configs: each resource's
//! dynamic configs become exactly those given (any not named are removed). Otherwise as
//! IncrementalAlterConfigs: forwarded to the active controller, checked, committed.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::create_topics::request_timeout;
use super::{encode_frame, Reply, RequestContext};
use crate::cluster::configs::{ConfigChange, ConfigOp, Refusal};
use crate::cluster::records::ConfigResource;
use crate::protocol::envelope::ClientOrigin;
use crate::shard::message::ControlRequest;
use crate::shard::Shard;

/// The resource a request names. A broker changes only its own configs and the cluster
/// defaults (`me`: this broker; `None` on the controller, which takes any).
pub fn resource(resource_type: i8, name: &str, me: Option<i32>) -> Result<ConfigResource, Refusal> {
    match ConfigResource::from_wire(resource_type, name) {
        Some(ConfigResource::Broker(Some(id))) if me.is_some_and(|me| me != id) => Err((
            ResponseError::InvalidRequest,
            format!("Unexpected broker id, expected {} or empty string, but received {name}", me.unwrap_or(-1)),
        )),
        Some(resource) => Ok(resource),
        None if resource_type == ConfigResource::BROKER => {
            Err((ResponseError::InvalidRequest, format!("Unexpected broker id {name:?}")))
        }
        None => Err((ResponseError::InvalidRequest, format!("Unsupported resource type {resource_type}"))),
    }
}

/// The request's resources as changes, or why one cannot be one.
pub fn changes(request: &AlterConfigsRequest, me: Option<i32>) -> Vec<Result<ConfigChange, Refusal>> {
    request
        .resources
        .iter()
        .map(|r| {
            let resource = resource(r.resource_type, &r.resource_name, me)?;
            let ops = r
                .configs
                .iter()
                .map(|c| {
                    let op = c.value.as_ref().map_or(ConfigOp::Delete, |v| ConfigOp::Set(v.to_string()));
                    (c.name.to_string(), op)
                })
                .collect();
            Ok(ConfigChange { resource, ops, replace: true })
        })
        .collect()
}

/// An outcome as both alter APIs answer it: error code and message.
pub fn wire_outcome(outcome: Result<(), Refusal>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((error, message)) => (error.code(), Some(StrBytes::from_string(message))),
    }
}

pub fn response(request: &AlterConfigsRequest, outcomes: Vec<Result<(), Refusal>>) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    response.responses = request
        .resources
        .iter()
        .zip(outcomes)
        .map(|(r, o)| {
            let mut answer = AlterConfigsResourceResponse::default();
            answer.resource_type = r.resource_type;
            answer.resource_name = r.resource_name.clone();
            (answer.error_code, answer.error_message) = wire_outcome(o);
            answer
        })
        .collect();
    response
}

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: AlterConfigsRequest) -> Reply {
    let checked = changes(&request, Some(shard.config.node_id));
    let outcomes = send(shard, checked, request.validate_only, ctx.origin()).await;
    encode_frame(ApiKey::AlterConfigs, ctx.version, ctx.correlation_id, &response(&request, outcomes))
}

/// Sends the valid changes to the control shard (one request, so they commit together);
/// the others keep their refusal.
pub(super) async fn send(
    shard: &Rc<Shard>,
    checked: Vec<Result<ConfigChange, Refusal>>,
    validate_only: bool,
    origin: Option<ClientOrigin>,
) -> Vec<Result<(), Refusal>> {
    let valid: Vec<ConfigChange> = checked.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
    let count = valid.len();
    let answered = if count == 0 {
        Vec::new()
    } else {
        let (reply, rx) = oneshot::channel();
        let asked =
            ControlRequest::AlterConfigs { changes: valid, origin, validate_only, timeout: request_timeout(0), reply };
        match shard.send_control(asked).await {
            Ok(()) => rx.await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    };
    let mut answered = if answered.len() == count {
        answered
    } else {
        vec![Err((ResponseError::NotController, "the controller did not answer".to_string())); count]
    }
    .into_iter();
    checked.into_iter().map(|c| c.and_then(|_| answered.next().unwrap_or(Ok(())))).collect()
}
