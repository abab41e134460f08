//! AddPartitionsToTxn (key 24), v0-3, from transactional producers: the partitions join
//! the producer's transaction (beginning it) before the producer sends data for them. The
//! coordinator answers once the change is durable in `__transaction_state`. Partitions of
//! unknown topics get UNKNOWN_TOPIC_OR_PARTITION and the rest OPERATION_NOT_ATTEMPTED, as
//! in Kafka. (v4+ is Kafka's broker-to-broker verification of KIP-890; a Weir leader asks
//! its coordinator directly, see Produce.)

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey};
use kafka_protocol::ResponseError;

use super::{encode_frame, ready, Pending, RequestContext};
use crate::shard::Shard;
use crate::txn::coordinator::TxnCall;
use crate::types::wire_code;

/// The error each partition of the request gets.
type PartitionError = dyn Fn(&(String, i32)) -> Option<ResponseError>;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: AddPartitionsToTxnRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let image = shard.image();
    let partitions: Vec<(String, i32)> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
        .collect();
    let unknown = |(t, p): &(String, i32)| !image.topic(t).is_some_and(|m| (0..m.partitions).contains(p));
    let answer = move |codes: Box<PartitionError>| {
        let mut r = AddPartitionsToTxnResponse::default();
        r.results_by_topic_v3_and_below = request
            .v3_and_below_topics
            .iter()
            .map(|t| {
                let mut rt = AddPartitionsToTxnTopicResult::default();
                rt.name = t.name.clone();
                rt.results_by_partition = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut rp = AddPartitionsToTxnPartitionResult::default();
                        rp.partition_index = *p;
                        rp.partition_error_code = wire_code(codes(&(t.name.0.to_string(), *p)));
                        rp
                    })
                    .collect();
                rt
            })
            .collect();
        encode_frame(ApiKey::AddPartitionsToTxn, version, correlation_id, &r)
    };
    if partitions.iter().any(unknown) {
        let image = shard.image();
        return ready(answer(Box::new(move |tp| {
            Some(if !image.topic(&tp.0).is_some_and(|m| (0..m.partitions).contains(&tp.1)) {
                ResponseError::UnknownTopicOrPartition
            } else {
                ResponseError::OperationNotAttempted
            })
        })));
    }
    let (reply, rx) = oneshot::channel();
    shard
        .route_txn(TxnCall::AddPartitions {
            transactional_id: request.v3_and_below_transactional_id.to_string(),
            producer_id: request.v3_and_below_producer_id.0,
            epoch: request.v3_and_below_producer_epoch,
            partitions,
            reply,
        })
        .await;
    Box::pin(async move {
        let error = rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable)).err();
        // PRODUCER_FENCED is known to clients from v2 on.
        let error = error.map(|e| crate::txn::fenced_for(e, version >= 2));
        answer(Box::new(move |_| error))
    })
}
