//! DeleteTopics (key 20), v1-6: by name, or by topic id from v6. Forwarded by the control
//! shard to the active controller; answered once this node's image no longer has them.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::shard::message::{ControlRequest, TopicOutcome, TopicRef};
use crate::shard::Shard;
use crate::types::wire_code;

/// The topics a request names, by name or (v6+) by id.
pub fn topic_refs(version: i16, request: DeleteTopicsRequest) -> Vec<TopicRef> {
    if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| match t.name {
                Some(n) => TopicRef::Name(n.0.to_string()),
                None => TopicRef::Id(t.topic_id),
            })
            .collect()
    } else {
        request.topic_names.into_iter().map(|n| TopicRef::Name(n.0.to_string())).collect()
    }
}

/// The response to topic outcomes.
pub fn response(outcomes: Vec<TopicOutcome>) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    response.responses = outcomes
        .into_iter()
        .map(|o| {
            let mut r = DeletableTopicResult::default();
            r.name = (!o.name.is_empty()).then(|| TopicName(StrBytes::from_string(o.name)));
            r.topic_id = o.topic_id;
            r.error_code = wire_code(o.error);
            r.error_message = o.error_message.map(StrBytes::from_string);
            r
        })
        .collect();
    response
}

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: DeleteTopicsRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let timeout = super::create_topics::request_timeout(request.timeout_ms);
    let refs = topic_refs(version, request);
    let count = refs.len();
    let fallback: Vec<TopicOutcome> = refs
        .iter()
        .map(|r| match r {
            TopicRef::Name(n) => {
                TopicOutcome { name: n.clone(), error: Some(ResponseError::NotController), ..Default::default() }
            }
            TopicRef::Id(id) => {
                TopicOutcome { topic_id: *id, error: Some(ResponseError::NotController), ..Default::default() }
            }
        })
        .collect();
    let (reply, rx) = oneshot::channel();
    let mut outcomes = match shard
        .send_control(ControlRequest::DeleteTopics { topics: refs, origin: ctx.origin(), timeout, reply })
        .await
    {
        Ok(()) => rx.await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    if outcomes.len() != count {
        outcomes = fallback;
    }
    encode_frame(ApiKey::DeleteTopics, version, correlation_id, &response(outcomes))
}
