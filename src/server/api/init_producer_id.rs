//! InitProducerId (key 22), v0-4. Without a transactional id: a new producer id with epoch 0
//! from this shard's block of ids (reserved durably by the control shard, so ids never
//! repeat across restarts); as Kafka does, a request that names its current id and epoch
//! (v3+, KIP-360) also just gets a fresh id. With one: the id's transaction coordinator
//! bumps the epoch (fencing earlier instances, aborting a transaction they left open) and
//! answers once that is durable in `__transaction_state`.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::shard::Shard;
use crate::txn::coordinator::TxnCall;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: InitProducerIdRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    let answer = match request.transactional_id.as_ref().filter(|id| !id.is_empty()) {
        Some(id) => transactional(shard, id.to_string(), &request).await,
        None => shard.next_producer_id().await.map(|id| (id, 0)).ok_or(ResponseError::CoordinatorNotAvailable),
    };
    match answer {
        Ok((id, epoch)) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = epoch;
        }
        // PRODUCER_FENCED is known to clients from v4 on.
        Err(e) => response.error_code = crate::txn::fenced_for(e, version >= 4).code(),
    }
    encode_frame(ApiKey::InitProducerId, version, correlation_id, &response)
}

async fn transactional(
    shard: &Rc<Shard>,
    transactional_id: String,
    request: &InitProducerIdRequest,
) -> Result<(i64, i16), ResponseError> {
    // The coordinator needs a fresh id when the transactional id is new (or its epochs are
    // exhausted); taken here from the shard's block, and simply unused otherwise.
    let fresh_producer_id = shard.next_producer_id().await.ok_or(ResponseError::CoordinatorNotAvailable)?;
    let expected = (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    let (reply, rx) = oneshot::channel();
    shard
        .route_txn(TxnCall::InitProducerId {
            transactional_id,
            timeout_ms: request.transaction_timeout_ms,
            expected,
            fresh_producer_id,
            reply,
        })
        .await;
    rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
}
