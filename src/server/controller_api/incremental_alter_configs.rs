//! IncrementalAlterConfigs (key 44) forwarded by a broker to the active controller.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, IncrementalAlterConfigsRequest};

use super::alter_configs::forward;
use super::Call;
use crate::controller::Controller;
use crate::server::api::incremental_alter_configs::{changes, response};
use crate::server::api::{encode_frame, Reply};

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: IncrementalAlterConfigsRequest) -> Reply {
    let outcomes = forward(controller, changes(&request, None), request.validate_only).await;
    encode_frame(ApiKey::IncrementalAlterConfigs, call.version, call.correlation_id, &response(&request, outcomes))
}
