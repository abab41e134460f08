//! AddOffsetsToTxn (key 25), v0-3: the consumer group's `__consumer_offsets` partition joins
//! the producer's transaction, so the offsets it commits there (TxnOffsetCommit) get the
//! transaction's marker. Answered once durable in `__transaction_state`.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey};
use kafka_protocol::ResponseError;

use super::{encode_frame, ready, Pending, RequestContext};
use crate::group::coordinator::offsets_partition;
use crate::group::records::partition_for;
use crate::group::OFFSETS_TOPIC;
use crate::shard::Shard;
use crate::txn::coordinator::TxnCall;
use crate::types::TopicPartition;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: AddOffsetsToTxnRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let answer = move |error: Option<ResponseError>| {
        let mut r = AddOffsetsToTxnResponse::default();
        // PRODUCER_FENCED is known to clients from v2 on.
        r.error_code = error.map_or(0, |e| crate::txn::fenced_for(e, version >= 2).code());
        encode_frame(ApiKey::AddOffsetsToTxn, version, correlation_id, &r)
    };
    if request.group_id.is_empty() {
        return ready(answer(Some(ResponseError::InvalidGroupId)));
    }
    // Before `__consumer_offsets` exists (the group's FindCoordinator creates it), its
    // partition is the one it will have: Kafka places by the configured partition count.
    let tp = offsets_partition(&shard.image(), request.group_id.as_str()).unwrap_or_else(|| {
        let partition = partition_for(request.group_id.as_str(), shard.config.offsets_partitions);
        TopicPartition::new(OFFSETS_TOPIC, partition)
    });
    let (reply, rx) = oneshot::channel();
    shard
        .route_txn(TxnCall::AddPartitions {
            transactional_id: request.transactional_id.to_string(),
            producer_id: request.producer_id.0,
            epoch: request.producer_epoch,
            partitions: vec![(tp.topic.clone(), tp.partition)],
            reply,
        })
        .await;
    Box::pin(async move { answer(rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable)).err()) })
}
