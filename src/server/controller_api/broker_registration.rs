//! BrokerRegistration (key 62): a broker registers with the active controller, which
//! commits the registration (fenced) and answers its broker epoch.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, BrokerRegistrationRequest, BrokerRegistrationResponse};
use kafka_protocol::ResponseError;

use super::Call;
use crate::cluster::records::BrokerRegistration;
use crate::controller::Controller;
use crate::server::api::{encode_frame, Reply};

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: BrokerRegistrationRequest) -> Reply {
    let mut response = BrokerRegistrationResponse::default();
    response.broker_epoch = -1;
    // The client listener is what clients are told about; a broker lists only that one.
    match request.listeners.first() {
        None => response.error_code = ResponseError::InvalidRequest.code(),
        Some(listener) => {
            let registration = BrokerRegistration {
                id: request.broker_id.0,
                epoch: 0,
                incarnation: request.incarnation_id,
                host: listener.host.to_string(),
                port: listener.port,
                rack: request.rack.map(|r| r.to_string()),
            };
            match controller.register_broker(request.cluster_id.as_str(), registration, false).await {
                Ok(epoch) => response.broker_epoch = epoch,
                Err((error, message)) => {
                    tracing::warn!(broker = request.broker_id.0, %message, "broker registration refused");
                    response.error_code = error.code();
                }
            }
        }
    }
    encode_frame(ApiKey::BrokerRegistration, call.version, call.correlation_id, &response)
}
