//! CreatePartitions (key 37), v0-3: grows topics. Forwarded by the control shard to the
//! active controller, which validates with Kafka's rules (the count only grows; explicit
//! assignments name each new partition's brokers), places the new partitions and commits;
//! answered once this node's image has them, or at the request's timeout.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::create_topics::request_timeout;
use super::{encode_frame, Reply, RequestContext};
use crate::shard::message::{ControlRequest, NewPartitions, TopicOutcome};
use crate::shard::Shard;
use crate::types::wire_code;

/// The topics of a request, as the controller takes them.
pub fn new_partitions(request: &CreatePartitionsRequest) -> Vec<NewPartitions> {
    request
        .topics
        .iter()
        .map(|t| NewPartitions {
            name: t.name.0.to_string(),
            count: t.count,
            assignments: t
                .assignments
                .as_ref()
                .map(|a| a.iter().map(|p| p.broker_ids.iter().map(|b| b.0).collect()).collect()),
        })
        .collect()
}

/// The response to topic outcomes.
pub fn response(outcomes: Vec<TopicOutcome>) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    response.results = outcomes
        .into_iter()
        .map(|o| {
            let mut r = CreatePartitionsTopicResult::default();
            r.name = TopicName(StrBytes::from_string(o.name));
            r.error_code = wire_code(o.error);
            r.error_message = o.error_message.map(StrBytes::from_string);
            r
        })
        .collect();
    response
}

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: CreatePartitionsRequest) -> Reply {
    let topics = new_partitions(&request);
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let (reply, rx) = oneshot::channel();
    let timeout = request_timeout(request.timeout_ms);
    let asked = ControlRequest::CreatePartitions {
        topics,
        origin: ctx.origin(),
        validate_only: request.validate_only,
        timeout,
        reply,
    };
    let mut outcomes = match shard.send_control(asked).await {
        Ok(()) => rx.await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    if outcomes.len() != names.len() {
        outcomes = names
            .into_iter()
            .map(|name| TopicOutcome { name, error: Some(ResponseError::NotController), ..Default::default() })
            .collect();
    }
    encode_frame(ApiKey::CreatePartitions, ctx.version, ctx.correlation_id, &response(outcomes))
}
