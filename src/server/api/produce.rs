//! Produce (key 0), v3-11, plus answers to v0-2 (advertised from v0 as Kafka does; their
//! message sets are magic 0/1, refused with UNSUPPORTED_FOR_MESSAGE_FORMAT).
//!
//! Each partition's batch is checked here (magic 2, lengths, CRC32C, one batch per
//! partition, size) on the receiving shard, then routed to its owner, which appends it
//! before this handler returns (so pipelined requests keep their order) and answers once
//! `acks` is met: acks=0 after the append, acks=1 once written to the segment file (it
//! survives a broker crash), acks=all once synced (it survives a machine crash).

use std::collections::BTreeSet;
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::channel::oneshot;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ApiKey, BrokerId, ProduceRequest, ProduceResponse, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tracing::debug;

use super::{create_topics, encode_frame, ready, Pending, Reply, RequestContext, RequestError};
use crate::group::OFFSETS_TOPIC;
use crate::protocol::batch;
use crate::shard::brokers::by_topic;
use crate::shard::message::{ProduceItem, ProduceOutcome};
use crate::shard::Shard;
use crate::txn::coordinator::{txn_partition, TxnCall};
use crate::txn::TRANSACTION_STATE_TOPIC;
use crate::types::{wire_code, Acks, TopicPartition};

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, mut body: Bytes) -> Result<Pending, RequestError> {
    if ctx.version < 3 {
        return Ok(ready(handle_legacy(ctx.version, ctx.correlation_id, &mut body)?));
    }
    Ok(produce(shard, ctx, ctx.decode(&mut body)?).await)
}

async fn produce(shard: &Rc<Shard>, ctx: &RequestContext, request: ProduceRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let acks = Acks::from_wire(request.acks);
    let image = shard.image();
    let broker_batch_max = shard.effective_config().batch_bytes_max;
    // Where each partition's answer goes: (topic index, partition index).
    let mut slots = Vec::new();
    let mut items = Vec::new();
    let mut early = Vec::new();
    let mut missing = BTreeSet::new();
    for (t, topic) in request.topic_data.iter().enumerate() {
        let name = topic.name.0.as_str();
        let meta = image.topic(name);
        let batch_max = meta
            .and_then(|m| m.configs.get("max.message.bytes"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(broker_batch_max);
        for (p, part) in topic.partition_data.iter().enumerate() {
            let idx = slots.len();
            slots.push((t, p));
            if acks.is_none() {
                early.push(ProduceOutcome::failed(idx, ResponseError::InvalidRequiredAcks));
                continue;
            }
            if name == OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC {
                // Only the coordinators write there (Kafka: "Cannot append to internal topic").
                early.push(ProduceOutcome::failed(idx, ResponseError::InvalidTopicException));
                continue;
            }
            match meta {
                Some(m) if part.index >= 0 && part.index < m.partitions => {}
                Some(_) => {
                    early.push(ProduceOutcome::failed(idx, ResponseError::UnknownTopicOrPartition));
                    continue;
                }
                None => {
                    missing.insert(name.to_string());
                    early.push(ProduceOutcome::failed(idx, ResponseError::UnknownTopicOrPartition));
                    continue;
                }
            }
            let Some(records) = &part.records else {
                early.push(ProduceOutcome::failed(idx, ResponseError::InvalidRecord));
                continue;
            };
            if let Err(e) = batch::validate_produced(records, batch_max) {
                debug!(topic = name, partition = part.index, error = %e, "produce batch refused");
                early.push(ProduceOutcome::failed(idx, e.error()));
                continue;
            }
            items.push(ProduceItem { idx, tp: TopicPartition::new(name, part.index), batch: records.clone() });
        }
    }
    if shard.config.auto_create_topics && !missing.is_empty() {
        let valid: Vec<String> =
            missing.into_iter().filter(|n| crate::controller::valid_topic_name(n).is_ok()).collect();
        if !valid.is_empty() {
            let (shard, origin) = (shard.clone(), ctx.origin());
            glommio::spawn_local(async move {
                create_topics::auto_create(&shard, valid, origin).await;
            })
            .detach();
        }
    }
    let items =
        verify_transactional(shard, request.transactional_id.as_ref().map(|t| t.as_str()), items, &mut early).await;
    let durable = match acks {
        Some(acks) if !items.is_empty() => Some(shard.route_produce(acks, request.timeout_ms, items).await),
        _ => None,
    };
    let image = shard.image();
    let node_id = shard.config.node_id;
    Box::pin(async move {
        let mut outcomes = early;
        if let Some(durable) = durable {
            outcomes.extend(durable.await);
        }
        if acks == Some(Acks::None) {
            return match outcomes.iter().find_map(|o| o.error) {
                // Kafka closes the connection so an acks=0 producer learns of the failure.
                Some(e) => Reply::Close(format!("acks=0 produce failed with error {}", e.code())),
                None => Reply::Nothing,
            };
        }
        outcomes.sort_by_key(|o| o.idx);
        let mut response = ProduceResponse::default();
        response.responses = request
            .topic_data
            .iter()
            .map(|t| {
                let mut r = TopicProduceResponse::default();
                r.name = t.name.clone();
                r
            })
            .collect();
        let mut leaders_named = BTreeSet::new();
        for o in outcomes {
            let (t, p) = slots[o.idx];
            let mut pr = PartitionProduceResponse::default();
            pr.index = request.topic_data[t].partition_data[p].index;
            pr.error_code = wire_code(o.error);
            // KIP-951 (v10+): name the current leader, so the client need not ask Metadata.
            // Never this broker: a leader refusing writes (deposed) does not know who leads.
            if version >= 10 && o.error == Some(ResponseError::NotLeaderOrFollower) {
                let tp = TopicPartition::new(request.topic_data[t].name.0.to_string(), pr.index);
                if let Some(leader) = image.leader(&tp).filter(|l| *l != node_id) {
                    pr.current_leader.leader_id = BrokerId(leader);
                    pr.current_leader.leader_epoch = image.partition_state(&tp).map_or(0, |s| s.leader_epoch.max(0));
                    leaders_named.insert(leader);
                }
            }
            // KIP-467 (v8+): which records were refused, and why.
            if version >= 8 {
                pr.record_errors = o
                    .record_errors
                    .iter()
                    .map(|&i| {
                        let mut e = BatchIndexAndErrorMessage::default();
                        e.batch_index = i;
                        e.batch_index_error_message = o.error_message.map(StrBytes::from_static_str);
                        e
                    })
                    .collect();
                pr.error_message = o.error_message.map(StrBytes::from_static_str);
            }
            pr.base_offset = o.base_offset;
            pr.log_append_time_ms = o.log_append_time_ms;
            pr.log_start_offset = o.log_start_offset;
            response.responses[t].partition_responses.push(pr);
        }
        response.node_endpoints = leaders_named
            .into_iter()
            .filter_map(|id| image.brokers.get(&id))
            .map(|b| {
                let mut e = NodeEndpoint::default();
                e.node_id = BrokerId(b.registration.id);
                e.host = StrBytes::from_string(b.registration.host.clone());
                e.port = i32::from(b.registration.port);
                e
            })
            .collect();
        encode_frame(ApiKey::Produce, version, correlation_id, &response)
    })
}

/// KIP-890's check before transactional data is taken: every partition a transactional
/// batch goes to must be in the producer's open transaction, as its coordinator says; a late
/// retry of a batch whose transaction already ended is refused (INVALID_TXN_STATE) instead of
/// opening a transaction no one will end. A transactional batch without a transactional id
/// is INVALID_RECORD. Done before the append (the handler awaits it, so a connection's
/// requests keep their order): through the coordinator's shard when it is on this broker,
/// with AddPartitionsToTxn v4 (`verify_only`) when it is on another. As in Kafka, the
/// coordinator's retriable errors reach the producer as NOT_ENOUGH_REPLICAS, which every
/// producer retries, and PRODUCER_FENCED as INVALID_PRODUCER_EPOCH. Every transactional
/// request is checked (Kafka checks only a partition's first batch of a transaction).
async fn verify_transactional(
    shard: &Rc<Shard>,
    transactional_id: Option<&str>,
    items: Vec<ProduceItem>,
    early: &mut Vec<ProduceOutcome>,
) -> Vec<ProduceItem> {
    let producer = |item: &ProduceItem| {
        batch::BatchHeader::new(&item.batch)
            .filter(|h| h.is_transactional())
            .map(|h| (h.producer_id(), h.producer_epoch()))
    };
    if !items.iter().any(|i| producer(i).is_some()) {
        return items;
    }
    let Some(id) = transactional_id.filter(|id| !id.is_empty()) else {
        let (refused, kept): (Vec<ProduceItem>, Vec<ProduceItem>) =
            items.into_iter().partition(|i| producer(i).is_some());
        early.extend(refused.iter().map(|i| ProduceOutcome::failed(i.idx, ResponseError::InvalidRecord)));
        return kept;
    };
    // One producer per request (a client's batches all carry its id and epoch).
    let Some((producer_id, epoch)) = items.iter().find_map(producer) else { return items };
    let asked: Vec<usize> = (0..items.len()).filter(|&n| producer(&items[n]).is_some()).collect();
    let partitions: Vec<(String, i32)> =
        asked.iter().map(|&n| (items[n].tp.topic.clone(), items[n].tp.partition)).collect();
    let image = shard.image();
    let answers = match txn_partition(&image, id).and_then(|tp| image.leader(&tp)) {
        Some(node) if node == shard.config.node_id => {
            let (reply, rx) = oneshot::channel();
            let call = TxnCall::Verify { transactional_id: id.to_string(), producer_id, epoch, partitions, reply };
            shard.route_txn(call).await;
            rx.await.unwrap_or_else(|_| vec![Some(ResponseError::NotCoordinator); asked.len()])
        }
        Some(node) => verify_remote(shard, node, id, producer_id, epoch, &partitions).await,
        None => vec![Some(ResponseError::CoordinatorNotAvailable); asked.len()],
    };
    let refused: std::collections::HashMap<usize, ResponseError> =
        asked.into_iter().zip(answers).filter_map(|(n, e)| Some((n, for_producer(e?)))).collect();
    let mut kept = Vec::with_capacity(items.len());
    for (n, item) in items.into_iter().enumerate() {
        match refused.get(&n) {
            Some(e) => {
                debug!(topic = %item.tp.topic, partition = item.tp.partition, producer_id, error = ?e, "transactional batch refused: the partition is not in the producer's open transaction");
                early.push(ProduceOutcome::failed(item.idx, *e));
            }
            None => kept.push(item),
        }
    }
    kept
}

/// Asks the coordinator on broker `node` whether `partitions` are in the producer's open
/// transaction (AddPartitionsToTxn v4, `verify_only`); one answer per partition.
async fn verify_remote(
    shard: &Rc<Shard>,
    node: i32,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Vec<Option<ResponseError>> {
    let topics = by_topic(partitions.iter().map(|(topic, partition)| (topic.as_str(), *partition)));
    let mut transaction = AddPartitionsToTxnTransaction::default();
    transaction.transactional_id = TransactionalId(StrBytes::from_string(transactional_id.to_string()));
    transaction.producer_id = ProducerId(producer_id);
    transaction.producer_epoch = epoch;
    transaction.verify_only = true;
    transaction.topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = AddPartitionsToTxnTopic::default();
            t.name = TopicName(StrBytes::from_string(name.to_string()));
            t.partitions = partitions;
            t
        })
        .collect();
    let mut request = AddPartitionsToTxnRequest::default();
    request.transactions = vec![transaction];
    let response = match shard.brokers.call(&shard.image(), node, &request, Some(4)).await {
        Ok(r) => r,
        Err(e) => {
            debug!(coordinator = node, error = %e, "cannot verify a transactional batch with its coordinator");
            return vec![Some(ResponseError::CoordinatorNotAvailable); partitions.len()];
        }
    };
    if let Some(e) = ResponseError::try_from_code(response.error_code) {
        return vec![Some(e); partitions.len()];
    }
    let result = response.results_by_transaction.iter().find(|r| r.transactional_id.as_str() == transactional_id);
    partitions
        .iter()
        .map(|(topic, partition)| {
            let code = result
                .and_then(|r| r.topic_results.iter().find(|t| t.name.0.as_str() == topic))
                .and_then(|t| t.results_by_partition.iter().find(|p| p.partition_index == *partition))
                .map(|p| p.partition_error_code);
            match code {
                Some(code) => ResponseError::try_from_code(code),
                None => Some(ResponseError::UnknownServerError),
            }
        })
        .collect()
}

/// A coordinator's verdict as a producer understands it (KIP-890).
fn for_producer(e: ResponseError) -> ResponseError {
    match e {
        ResponseError::NotCoordinator
        | ResponseError::CoordinatorNotAvailable
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::ConcurrentTransactions => ResponseError::NotEnoughReplicas,
        ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        other => other,
    }
}

/// Produce v0-2, which kafka-protocol does not decode: read the topic/partition layout by
/// hand and answer every partition with UNSUPPORTED_FOR_MESSAGE_FORMAT.
pub fn handle_legacy(version: i16, correlation_id: i32, body: &mut Bytes) -> Result<Reply, RequestError> {
    let malformed =
        || RequestError::Malformed { api: ApiKey::Produce, version, reason: "truncated legacy produce request".into() };
    let need = |b: &Bytes, n: usize| if b.remaining() >= n { Ok(()) } else { Err(malformed()) };
    need(body, 10)?;
    let acks = body.get_i16();
    let _timeout = body.get_i32();
    let topic_count = body.get_i32();
    let mut topics = Vec::new();
    for _ in 0..topic_count.max(0) {
        need(body, 2)?;
        let name_len = body.get_i16().max(0) as usize;
        need(body, name_len + 4)?;
        let name = body.split_to(name_len);
        let partition_count = body.get_i32();
        let mut partitions = Vec::new();
        for _ in 0..partition_count.max(0) {
            need(body, 8)?;
            let partition = body.get_i32();
            let set_len = body.get_i32().max(0) as usize;
            need(body, set_len)?;
            body.advance(set_len);
            partitions.push(partition);
        }
        topics.push((name, partitions));
    }
    if acks == 0 {
        return Ok(Reply::Close("acks=0 produce with a legacy (magic 0/1) message set".into()));
    }
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    buf.put_i32(topics.len() as i32);
    for (name, partitions) in &topics {
        buf.put_i16(name.len() as i16);
        buf.put_slice(name);
        buf.put_i32(partitions.len() as i32);
        for p in partitions {
            buf.put_i32(*p);
            buf.put_i16(ResponseError::UnsupportedForMessageFormat.code());
            buf.put_i64(-1);
            if version >= 2 {
                buf.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        buf.put_i32(0);
    }
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(Reply::Frame(buf))
}
