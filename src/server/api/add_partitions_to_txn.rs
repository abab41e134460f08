//! AddPartitionsToTxn (key 24). v0-3, from transactional producers: the partitions join
//! the producer's transaction (beginning it) before the producer sends data for them. The
//! coordinator answers once the change is durable in `__transaction_state`. Partitions of
//! unknown topics get UNKNOWN_TOPIC_OR_PARTITION and the rest OPERATION_NOT_ATTEMPTED, as
//! in Kafka. v4, between brokers only (CLUSTER_AUTHORIZATION_FAILED for anyone else, as
//! Kafka answers without ClusterAction): several transactions at once, each either added
//! or, with `verify_only`, checked (KIP-890: a partition leader asks whether a
//! transactional batch's partition is in the producer's open transaction; see Produce).

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey};
use kafka_protocol::ResponseError;

use super::{encode_frame, ready, Pending, RequestContext};
use crate::shard::brokers::from_broker;
use crate::shard::Shard;
use crate::txn::coordinator::TxnCall;
use crate::types::wire_code;

/// The error each partition of the request gets.
type PartitionError = dyn Fn(&(String, i32)) -> Option<ResponseError>;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: AddPartitionsToTxnRequest) -> Pending {
    if ctx.version >= 4 {
        return batched(shard, ctx, request).await;
    }
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
        r.results_by_topic_v3_and_below =
            topic_results(&request.v3_and_below_topics, |topic, p| codes(&(topic.to_string(), p)));
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

/// v4: each transaction's partitions added, or checked (`verify_only`), by its coordinator
/// on this broker; a transaction coordinated elsewhere gets NOT_COORDINATOR.
async fn batched(shard: &Rc<Shard>, ctx: &RequestContext, request: AddPartitionsToTxnRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    if !from_broker(ctx.client_id.as_str()) {
        tracing::warn!(peer = ?ctx.peer, client_id = %ctx.client_id.as_str(), "AddPartitionsToTxn v4 refused: only brokers send it");
        let mut r = AddPartitionsToTxnResponse::default();
        r.error_code = wire_code(Some(ResponseError::ClusterAuthorizationFailed));
        return ready(encode_frame(ApiKey::AddPartitionsToTxn, version, correlation_id, &r));
    }
    let image = shard.image();
    let mut answers = Vec::with_capacity(request.transactions.len());
    for t in &request.transactions {
        let partitions: Vec<(String, i32)> =
            t.topics.iter().flat_map(|tp| tp.partitions.iter().map(move |p| (tp.name.0.to_string(), *p))).collect();
        let transactional_id = t.transactional_id.to_string();
        let (producer_id, epoch) = (t.producer_id.0, t.producer_epoch);
        let (reply, rx) = oneshot::channel::<Vec<Option<ResponseError>>>();
        if partitions.iter().any(|(topic, p)| !image.topic(topic).is_some_and(|m| (0..m.partitions).contains(p))) {
            let codes = partitions
                .iter()
                .map(|(topic, p)| {
                    Some(if image.topic(topic).is_some_and(|m| (0..m.partitions).contains(p)) {
                        ResponseError::OperationNotAttempted
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    })
                })
                .collect();
            let _ = reply.send(codes);
        } else if t.verify_only {
            shard.route_txn(TxnCall::Verify { transactional_id, producer_id, epoch, partitions, reply }).await;
        } else {
            let count = partitions.len();
            let (added, added_rx) = oneshot::channel();
            shard
                .route_txn(TxnCall::AddPartitions { transactional_id, producer_id, epoch, partitions, reply: added })
                .await;
            glommio::spawn_local(async move {
                let error = added_rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable)).err();
                let _ = reply.send(vec![error; count]);
            })
            .detach();
        }
        answers.push(rx);
    }
    Box::pin(async move {
        let mut r = AddPartitionsToTxnResponse::default();
        for (t, rx) in request.transactions.iter().zip(answers) {
            let codes = rx.await.unwrap_or_default();
            r.results_by_transaction.push(transaction_result(t, &codes));
        }
        encode_frame(ApiKey::AddPartitionsToTxn, version, correlation_id, &r)
    })
}

/// One transaction's answer: `codes` in the order of its topics' partitions (missing ones
/// are COORDINATOR_NOT_AVAILABLE).
fn transaction_result(t: &AddPartitionsToTxnTransaction, codes: &[Option<ResponseError>]) -> AddPartitionsToTxnResult {
    let mut codes = codes.iter();
    let mut result = AddPartitionsToTxnResult::default();
    result.transactional_id = t.transactional_id.clone();
    result.topic_results =
        topic_results(&t.topics, |_, _| codes.next().copied().unwrap_or(Some(ResponseError::CoordinatorNotAvailable)));
    result
}

/// Each partition of `topics` with the error `code` gives it, in the request's order.
fn topic_results(
    topics: &[AddPartitionsToTxnTopic],
    mut code: impl FnMut(&str, i32) -> Option<ResponseError>,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|topic| {
            let mut rt = AddPartitionsToTxnTopicResult::default();
            rt.name = topic.name.clone();
            rt.results_by_partition = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = AddPartitionsToTxnPartitionResult::default();
                    rp.partition_index = *p;
                    rp.partition_error_code = wire_code(code(topic.name.0.as_str(), *p));
                    rp
                })
                .collect();
            rt
        })
        .collect()
}
