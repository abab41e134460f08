//! AllocateProducerIds (key 67): a block of producer ids for a broker, reserved durably by
//! the active controller.

use std::rc::Rc;

use kafka_protocol::messages::{AllocateProducerIdsRequest, AllocateProducerIdsResponse, ApiKey, ProducerId};

use super::Call;
use crate::controller::Controller;
use crate::server::api::{encode_frame, Reply};

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: AllocateProducerIdsRequest) -> Reply {
    let mut response = AllocateProducerIdsResponse::default();
    match controller.allocate_producer_ids_forwarded(request.broker_id.0, request.broker_epoch).await {
        Ok((start, end)) => {
            response.producer_id_start = ProducerId(start);
            response.producer_id_len = (end - start) as i32;
        }
        Err(error) => {
            response.error_code = error.code();
            response.producer_id_start = ProducerId(-1);
        }
    }
    encode_frame(ApiKey::AllocateProducerIds, call.version, call.correlation_id, &response)
}
