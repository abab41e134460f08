//! EndTxn (key 26), v0-3: commit or abort the producer's transaction. Answered once the
//! decision (PrepareCommit or PrepareAbort) is durable in `__transaction_state`; the markers
//! follow, written by the coordinator, and the transaction completes when every partition
//! has its marker (the producer's next transaction waits for that: CONCURRENT_TRANSACTIONS).

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{encode_frame, Pending, RequestContext};
use crate::shard::Shard;
use crate::txn::coordinator::TxnCall;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: EndTxnRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let (reply, rx) = oneshot::channel();
    shard
        .route_txn(TxnCall::End {
            transactional_id: request.transactional_id.to_string(),
            producer_id: request.producer_id.0,
            epoch: request.producer_epoch,
            commit: request.committed,
            reply,
        })
        .await;
    Box::pin(async move {
        let error = rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable)).err();
        let mut r = EndTxnResponse::default();
        // PRODUCER_FENCED is known to clients from v2 on.
        r.error_code = error.map_or(0, |e| crate::txn::fenced_for(e, version >= 2).code());
        r.producer_id = ProducerId(-1);
        r.producer_epoch = -1;
        encode_frame(ApiKey::EndTxn, version, correlation_id, &r)
    })
}
