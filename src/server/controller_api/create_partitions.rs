//! CreatePartitions (key 37) forwarded by a broker to the active controller.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest};

use super::Call;
use crate::controller::Controller;
use crate::server::api::create_partitions::{new_partitions, response};
use crate::server::api::create_topics::request_timeout;
use crate::server::api::{encode_frame, Reply};

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: CreatePartitionsRequest) -> Reply {
    let timeout = request_timeout(request.timeout_ms);
    let outcomes =
        controller.create_partitions_forwarded(new_partitions(&request), request.validate_only, timeout).await;
    encode_frame(ApiKey::CreatePartitions, call.version, call.correlation_id, &response(outcomes))
}
