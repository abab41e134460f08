//! TxnOffsetCommit (key 28), v0-3: offsets a transactional producer commits for a consumer
//! group. The group coordinator writes them to `__consumer_offsets` in the producer's
//! transaction; they count (OffsetFetch shows them) only once the transaction's commit
//! marker reaches that partition, and never if it aborts. v3 carries the member and
//! generation, checked as OffsetCommit checks them (KIP-447). As with data (KIP-890), the
//! offsets are taken only while the group's offsets partition is in the producer's open
//! transaction.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, ready, Pending, Reply, RequestContext};
use crate::group::coordinator::{offsets_partition, CommitRequest, GroupCall, PerItem};
use crate::group::records::OffsetValue;
use crate::shard::Shard;
use crate::txn::coordinator::{txn_partition, TxnCall};
use crate::types::{now_ms, wire_code};

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: TxnOffsetCommitRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    if request.group_id.is_empty() {
        return ready(response(version, correlation_id, &request, Err(ResponseError::InvalidGroupId)));
    }
    let now = now_ms();
    let offsets = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                let value = OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                    commit_timestamp: now,
                };
                (t.name.0.to_string(), p.partition_index, value)
            })
        })
        .collect();
    // Before v3 the request names no member: the commit is checked like one from outside
    // group management.
    let (member_id, generation) =
        if version >= 3 { (request.member_id.to_string(), request.generation_id) } else { (String::new(), -1) };
    if let Err(e) = verify(shard, &request).await {
        return ready(response(version, correlation_id, &request, Err(e)));
    }
    let (reply, rx) = oneshot::channel();
    shard
        .route_group(GroupCall::TxnCommit {
            group: request.group_id.to_string(),
            producer_id: request.producer_id.0,
            producer_epoch: request.producer_epoch,
            request: CommitRequest {
                member_id,
                instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
                generation,
                offsets,
            },
            reply,
        })
        .await;
    Box::pin(async move {
        let codes = rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable));
        response(version, correlation_id, &request, codes)
    })
}

/// KIP-890 for offsets: the group's offsets partition must be in the producer's open
/// transaction (AddOffsetsToTxn came first), as its coordinator says; asked when that
/// coordinator is on this broker.
async fn verify(shard: &Rc<Shard>, request: &TxnOffsetCommitRequest) -> Result<(), ResponseError> {
    if request.producer_id.0 < 0 {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    let image = shard.image();
    let id = request.transactional_id.as_str();
    let local = txn_partition(&image, id).and_then(|tp| image.leader(&tp)) == Some(shard.config.node_id);
    let Some(tp) = offsets_partition(&image, request.group_id.as_str()).filter(|_| local) else { return Ok(()) };
    let (reply, rx) = oneshot::channel();
    shard
        .route_txn(TxnCall::Verify {
            transactional_id: id.to_string(),
            producer_id: request.producer_id.0,
            epoch: request.producer_epoch,
            partitions: vec![(tp.topic, tp.partition)],
            reply,
        })
        .await;
    match rx.await.map(|v| v.into_iter().next().flatten()) {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => Err(ResponseError::CoordinatorNotAvailable),
    }
}

fn response(version: i16, correlation_id: i32, request: &TxnOffsetCommitRequest, codes: PerItem) -> Reply {
    let mut codes = match codes {
        Ok(codes) => codes.into_iter(),
        Err(e) => vec![Some(e); request.topics.iter().map(|t| t.partitions.len()).sum()].into_iter(),
    };
    let mut r = TxnOffsetCommitResponse::default();
    r.topics = request
        .topics
        .iter()
        .map(|t| {
            let mut rt = TxnOffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = TxnOffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    let error = codes.next().unwrap_or(Some(ResponseError::UnknownServerError));
                    // PRODUCER_FENCED is known to clients from v3 on; below v2 clients take
                    // COORDINATOR_LOAD_IN_PROGRESS as fatal (Kafka answers them
                    // COORDINATOR_NOT_AVAILABLE instead, KAFKA-9656).
                    let error = error.map(|e| match e {
                        ResponseError::CoordinatorLoadInProgress if version < 2 => {
                            ResponseError::CoordinatorNotAvailable
                        }
                        e => crate::txn::fenced_for(e, version >= 3),
                    });
                    rp.error_code = wire_code(error);
                    rp
                })
                .collect();
            rt
        })
        .collect();
    encode_frame(ApiKey::TxnOffsetCommit, version, correlation_id, &r)
}
