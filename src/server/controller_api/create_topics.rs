//! CreateTopics (key 19) forwarded by a broker to the active controller.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};

use super::Call;
use crate::controller::Controller;
use crate::server::api::create_topics::{new_topic, request_timeout, result};
use crate::server::api::{encode_frame, Reply};

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: CreateTopicsRequest) -> Reply {
    let timeout = request_timeout(request.timeout_ms);
    let topics = request.topics.into_iter().map(new_topic).collect();
    let outcomes = controller.create_topics_forwarded(topics, request.validate_only, timeout).await;
    let mut response = CreateTopicsResponse::default();
    response.topics = outcomes.into_iter().map(|o| result(call.version, o)).collect();
    encode_frame(ApiKey::CreateTopics, call.version, call.correlation_id, &response)
}
