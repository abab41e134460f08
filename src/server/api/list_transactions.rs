//! ListTransactions (key 66), v0-1: the transactional ids this broker coordinates, filtered
//! by state (Kafka's names; unknown names are echoed back in `unknown_state_filters`), by
//! producer id, and (v1, KIP-994) to transactions running longer than a duration.

use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ApiKey, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::{encode_frame, Reply, RequestContext};
use crate::shard::Shard;
use crate::txn::state::TxnState;
use crate::types::now_ms;

const STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: ListTransactionsRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let mut r = ListTransactionsResponse::default();
    let states: Vec<&str> = request.state_filters.iter().map(|s| s.as_str()).collect();
    r.unknown_state_filters =
        request.state_filters.iter().filter(|f| !STATES.iter().any(|s| s.name() == f.as_str())).cloned().collect();
    let producers: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let now = now_ms();
    let min_duration = if version >= 1 { request.duration_filter } else { -1 };
    for t in shard.list_all_txns().await {
        if !states.is_empty() && !states.contains(&t.state.name()) {
            continue;
        }
        if !producers.is_empty() && !producers.contains(&t.producer_id) {
            continue;
        }
        if min_duration >= 0 && (t.start_ms < 0 || now.saturating_sub(t.start_ms) <= min_duration) {
            continue;
        }
        let mut s = TransactionState::default();
        s.transactional_id = TransactionalId(StrBytes::from_string(t.transactional_id));
        s.producer_id = ProducerId(t.producer_id);
        s.transaction_state = StrBytes::from_static_str(t.state.name());
        r.transaction_states.push(s);
    }
    encode_frame(ApiKey::ListTransactions, version, correlation_id, &r)
}
