//! DeleteTopics (key 20) forwarded by a broker to the active controller.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest};

use super::Call;
use crate::controller::Controller;
use crate::server::api::create_topics::request_timeout;
use crate::server::api::delete_topics::{response, topic_refs};
use crate::server::api::{encode_frame, Reply};

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: DeleteTopicsRequest) -> Reply {
    let timeout = request_timeout(request.timeout_ms);
    let refs = topic_refs(call.version, request);
    let outcomes = controller.delete_topics_forwarded(refs, timeout).await;
    encode_frame(ApiKey::DeleteTopics, call.version, call.correlation_id, &response(outcomes))
}
