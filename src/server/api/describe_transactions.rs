//! DescribeTransactions (key 65), v0: each transactional id's state at its coordinator
//! (this broker must coordinate it: NOT_COORDINATOR otherwise; TRANSACTIONAL_ID_NOT_FOUND
//! for an id it does not know), with its producer, timeout, start and partitions.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::shard::Shard;
use crate::txn::coordinator::TxnCall;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: DescribeTransactionsRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let mut r = DescribeTransactionsResponse::default();
    for id in request.transactional_ids {
        let (reply, rx) = oneshot::channel();
        shard.route_txn(TxnCall::Describe { transactional_id: id.to_string(), reply }).await;
        let mut s = TransactionState::default();
        s.transactional_id = id;
        s.producer_id = ProducerId(-1);
        s.producer_epoch = -1;
        s.transaction_start_time_ms = -1;
        match rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable)) {
            Ok(Some(t)) => {
                s.transaction_state = StrBytes::from_static_str(t.state.name());
                s.transaction_timeout_ms = t.timeout_ms;
                s.transaction_start_time_ms = t.start_ms;
                s.producer_id = ProducerId(t.producer_id);
                s.producer_epoch = t.producer_epoch;
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, partition) in t.partitions {
                    match topics.last_mut() {
                        Some(d) if d.topic.0.as_str() == topic => d.partitions.push(partition),
                        _ => {
                            let mut d = TopicData::default();
                            d.topic = TopicName(StrBytes::from_string(topic));
                            d.partitions = vec![partition];
                            topics.push(d);
                        }
                    }
                }
                s.topics = topics;
            }
            Ok(None) => s.error_code = ResponseError::TransactionalIdNotFound.code(),
            Err(e) => s.error_code = e.code(),
        }
        r.transaction_states.push(s);
    }
    encode_frame(ApiKey::DescribeTransactions, version, correlation_id, &r)
}
