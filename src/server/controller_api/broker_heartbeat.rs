//! BrokerHeartbeat (key 63): keeps a broker's session; the answer says whether it is caught
//! up, fenced, and (after a controlled-shutdown request) whether it may stop.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, BrokerHeartbeatRequest, BrokerHeartbeatResponse};

use super::Call;
use crate::controller::{Controller, Heartbeat};
use crate::server::api::{encode_frame, Reply};

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: BrokerHeartbeatRequest) -> Reply {
    let mut response = BrokerHeartbeatResponse::default();
    response.is_fenced = true;
    let beat = controller
        .broker_heartbeat(Heartbeat {
            broker: request.broker_id.0,
            epoch: request.broker_epoch,
            metadata_offset: request.current_metadata_offset,
            want_fence: request.want_fence,
            want_shut_down: request.want_shut_down,
        })
        .await;
    match beat {
        Ok(beat) => {
            response.is_caught_up = beat.caught_up;
            response.is_fenced = beat.fenced;
            response.should_shut_down = beat.shut_down;
        }
        Err(error) => response.error_code = error.code(),
    }
    encode_frame(ApiKey::BrokerHeartbeat, call.version, call.correlation_id, &response)
}
