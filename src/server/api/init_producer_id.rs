//! InitProducerId (key 22), v0-4, for idempotent producers: a new producer id with epoch 0
//! from this shard's block of ids (reserved durably by the control shard, so ids never
//! repeat across restarts). As Kafka does without a transactional id, a request that names
//! its current id and epoch (v3+, KIP-360) also just gets a fresh id.
//! Transactional ids are refused: transactions are not implemented.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: InitProducerIdRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if request.transactional_id.is_some() {
        response.error_code = ResponseError::InvalidRequest.code();
        tracing::debug!("InitProducerId with a transactional id refused: transactions are not implemented");
    } else {
        match shard.next_producer_id().await {
            Some(id) => {
                response.producer_id = ProducerId(id);
                response.producer_epoch = 0;
            }
            None => response.error_code = ResponseError::CoordinatorNotAvailable.code(),
        }
    }
    encode_frame(ApiKey::InitProducerId, version, correlation_id, &response)
}
