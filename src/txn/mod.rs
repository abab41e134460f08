//! Transactions, Kafka's protocol: the per-id state machine (`state`) and the records that
//! make it durable in `__transaction_state` (`records`), both pure; and the coordinator
//! (`coordinator`), the service that runs them on the shard leading the id's
//! `__transaction_state` partition, beside the group coordinator. What a transaction leaves
//! in the partitions it wrote (markers, the last stable offset, aborted transactions) is
//! `partition::transactions`'.

pub mod coordinator;
pub mod records;
pub mod state;

/// The internal topic holding the transaction coordinator's state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// What a fenced producer is told: PRODUCER_FENCED (KIP-588, Kafka 2.7), or for request
/// versions from before it INVALID_PRODUCER_EPOCH, as Kafka answers them.
pub fn fenced_for(error: kafka_protocol::ResponseError, knows_producer_fenced: bool) -> kafka_protocol::ResponseError {
    match error {
        kafka_protocol::ResponseError::ProducerFenced if !knows_producer_fenced => {
            kafka_protocol::ResponseError::InvalidProducerEpoch
        }
        other => other,
    }
}
