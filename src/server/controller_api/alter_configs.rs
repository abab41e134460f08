//! AlterConfigs (key 33) forwarded by a broker to the active controller.

use std::rc::Rc;

use kafka_protocol::messages::{AlterConfigsRequest, ApiKey};

use super::Call;
use crate::controller::Controller;
use crate::server::api::alter_configs::{changes, response};
use crate::server::api::create_topics::request_timeout;
use crate::server::api::{encode_frame, Reply};

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: AlterConfigsRequest) -> Reply {
    let outcomes = forward(controller, changes(&request, None), request.validate_only).await;
    encode_frame(ApiKey::AlterConfigs, call.version, call.correlation_id, &response(&request, outcomes))
}

/// Commits the valid changes together; the others keep their refusal.
pub async fn forward(
    controller: &Rc<Controller>,
    checked: Vec<Result<crate::cluster::configs::ConfigChange, crate::cluster::configs::Refusal>>,
    validate_only: bool,
) -> Vec<crate::controller::ConfigOutcome> {
    let valid: Vec<_> = checked.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
    let mut answered = controller.alter_configs_forwarded(valid, validate_only, request_timeout(0)).await.into_iter();
    checked.into_iter().map(|c| c.and_then(|_| answered.next().unwrap_or(Ok(())))).collect()
}
