//! Fetch (key 1), v4-12, with long poll: answer as soon as `min_bytes` are available, or
//! when `max_wait_ms` runs out. A parked fetch is woken by the append itself (see
//! `Partition::watch`), not by polling.
//!
//! Sizes: each partition gets at most `partition_max_bytes`, the response at most
//! `max_bytes` (both capped by `fetch.max.bytes`), except that the first batch found is
//! always returned whole (KIP-74) so a consumer can pass a batch larger than its limits.
//! Fetch sessions (KIP-227, `fetch_sessions`): a session's fetch names only what changed
//! and its answer carries only the partitions with something new.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::{select, Either};
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::ResponseError;

use super::{encode_frame, Pending, RequestContext};
use crate::partition::Isolation;
use crate::server::fetch_sessions::{FetchContext, FetchSessionCache, ReadResult, SentState, WantedPartition};
use crate::server::request_memory::{RequestMemory, Reservation};
use crate::shard::message::{FetchItem, FetchOutcome, ReplicaFetch};
use crate::shard::Shard;
use crate::types::{wire_code, TopicPartition};

/// Longest long poll honoured (Kafka bounds it by the request timeout on the client side).
const MAX_WAIT_MS_MAX: i32 = 60_000;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: FetchRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let shard = shard.clone();
    let memory = ctx.memory.clone();
    let sessions = ctx.fetch_sessions.clone();
    Box::pin(async move {
        let (response, _reservation) = fetch(&shard, version, request, memory.as_ref(), &sessions).await;
        encode_frame(ApiKey::Fetch, version, correlation_id, &response)
    })
}

/// The response's memory, reserved from the shard's `queued.max.request.bytes` before the
/// partitions are read (the most the response may hold: the request's cap, or its
/// partitions' caps together when less), and held while it is encoded.
async fn reserve_response(memory: Option<&Rc<RequestMemory>>, max_bytes: usize) -> Reservation {
    match memory {
        Some(m) if max_bytes > 0 => m.reserve(max_bytes).await,
        _ => None,
    }
}

async fn fetch(
    shard: &Rc<Shard>,
    version: i16,
    request: FetchRequest,
    memory: Option<&Rc<RequestMemory>>,
    sessions: &RefCell<FetchSessionCache>,
) -> (FetchResponse, Reservation) {
    let mut response = FetchResponse::default();
    // A follower's fetch (KIP-392 aside, only brokers send a replica id): reads to the log
    // end, reports divergence, and waits on the log end rather than the high watermark.
    let replica_id = request.replica_id.0;
    let follower = replica_id >= 0;
    let named = wanted_partitions(&request);
    let context = if version >= 7 {
        let forgotten: Vec<(TopicName, i32)> = request
            .forgotten_topics_data
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
            .collect();
        let begun =
            sessions.borrow_mut().begin(request.session_id, request.session_epoch, named, &forgotten, Instant::now());
        match begun {
            Ok(context) => context,
            Err(error) => {
                response.error_code = error.code();
                return (response, None);
            }
        }
    } else {
        FetchContext::Sessionless(named)
    };
    let partitions = match &context {
        FetchContext::Sessionless(p) | FetchContext::Full(p) => p.as_slice(),
        FetchContext::Incremental { partitions, .. } => partitions.as_slice(),
    };

    let fetch_max = shard.config.fetch_bytes_max;
    let max_bytes = (request.max_bytes.max(0) as usize).min(fetch_max);
    let min_bytes = request.min_bytes.max(0) as usize;
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u64);
    let isolation = Isolation::from_wire(request.isolation_level);
    // Partitions that cannot be read get their error up front.
    let mut items = Vec::new();
    let mut fixed: Vec<FetchOutcome> = Vec::new();
    let image = shard.image();
    for (idx, part) in partitions.iter().enumerate() {
        let name = part.topic.0.as_str();
        let error = match image.topic(name) {
            None => Some(ResponseError::UnknownTopicOrPartition),
            Some(m) if part.partition < 0 || part.partition >= m.partitions => {
                Some(ResponseError::UnknownTopicOrPartition)
            }
            Some(m) => {
                m.state_of(part.partition).and_then(|s| leader_epoch_error(part.current_leader_epoch, s.leader_epoch))
            }
        };
        match error {
            Some(e) => fixed.push(FetchOutcome::failed(idx, e)),
            None => items.push(FetchItem {
                idx,
                tp: TopicPartition::new(name, part.partition),
                offset: part.fetch_offset,
                max_bytes: (part.partition_max_bytes.max(0) as usize).min(max_bytes),
                budget: max_bytes,
                replica: follower.then_some(ReplicaFetch {
                    replica_id,
                    last_fetched_epoch: part.last_fetched_epoch,
                    log_start_offset: part.log_start_offset,
                }),
                isolation,
            }),
        }
    }

    let response_cap = items.iter().map(|i| i.max_bytes).sum::<usize>().min(max_bytes);
    let (outcomes, reservation) = loop {
        let reservation = reserve_response(memory, response_cap).await;
        let mut outcomes = shard.route_fetch(items.clone()).await;
        outcomes.sort_by_key(|o| o.idx);
        let bytes: usize = outcomes.iter().map(|o| o.records.len()).sum();
        let errors = outcomes.iter().any(|o| o.error.is_some() || o.diverging.is_some()) || !fixed.is_empty();
        let now = Instant::now();
        let enough = if min_bytes == 0 { true } else { bytes >= min_bytes };
        if enough || errors || now >= deadline || items.is_empty() || shard.is_stopping() {
            break (outcomes, reservation);
        }
        if shard.fetch_waiters.get() >= shard.config.fetch_waiters_max {
            // At the limit of parked fetches: answer now rather than park.
            break (outcomes, reservation);
        }
        // A parked fetch holds no memory: it reserves again when it reads again.
        drop(reservation);
        let watch: Vec<(TopicPartition, i64)> = if follower {
            // The fetch offset is the log end the follower wants to pass.
            items.iter().map(|i| (i.tp.clone(), i.offset)).collect()
        } else {
            outcomes.iter().zip(&items).map(|(o, i)| (i.tp.clone(), o.high_watermark.max(i.offset))).collect()
        };
        let parked = Parked::new(shard);
        let woke =
            select(Box::pin(shard.watch_any(watch, follower)), Box::pin(glommio::timer::sleep(deadline - now))).await;
        drop(parked);
        if let Either::Right(_) = woke {
            // Timed out: one last read, so data that came at the very end is not missed.
            let reservation = reserve_response(memory, response_cap).await;
            let mut last = shard.route_fetch(items.clone()).await;
            last.sort_by_key(|o| o.idx);
            break (last, reservation);
        }
    };

    let mut all: Vec<FetchOutcome> = fixed.into_iter().chain(outcomes).collect();
    all.sort_by_key(|o| o.idx);
    // Enforce the response budget in partition order; the first data always goes (KIP-74).
    let mut used = 0usize;
    for o in all.iter_mut() {
        if o.records.is_empty() {
            continue;
        }
        if used > 0 && used + o.records.len() > max_bytes {
            o.records = Default::default();
        } else {
            used += o.records.len();
        }
    }
    debug_assert_eq!(all.len(), partitions.len(), "one outcome per partition, in order");
    let results: Vec<ReadResult> = all.iter().map(read_result).collect();
    let (session_id, included) = match &context {
        FetchContext::Sessionless(_) => (0, vec![true; all.len()]),
        FetchContext::Full(p) => {
            (sessions.borrow_mut().open(p, &results, follower, Instant::now()), vec![true; all.len()])
        }
        FetchContext::Incremental { id, epoch, sent, .. } => {
            (*id, sessions.borrow_mut().finish(*id, *epoch, sent, &results))
        }
    };
    response.session_id = session_id;
    for (o, _) in all.into_iter().zip(included).filter(|(_, included)| *included) {
        let topic = &partitions[o.idx].topic;
        if response.responses.last().map(|r| &r.topic) != Some(topic) {
            let mut r = FetchableTopicResponse::default();
            r.topic = topic.clone();
            response.responses.push(r);
        }
        let mut pd = PartitionData::default();
        pd.partition_index = partitions[o.idx].partition;
        pd.error_code = wire_code(o.error);
        pd.high_watermark = o.high_watermark;
        pd.last_stable_offset = o.last_stable_offset;
        pd.log_start_offset = o.log_start_offset;
        pd.aborted_transactions = (isolation == Isolation::ReadCommitted).then(|| {
            o.aborted
                .iter()
                .map(|a| {
                    let mut t = AbortedTransaction::default();
                    t.producer_id = ProducerId(a.producer_id);
                    t.first_offset = a.first_offset;
                    t
                })
                .collect()
        });
        pd.preferred_read_replica = (-1).into();
        if let Some((epoch, end_offset)) = o.diverging {
            pd.diverging_epoch.epoch = epoch;
            pd.diverging_epoch.end_offset = end_offset;
        }
        pd.records = Some(o.records);
        if let Some(r) = response.responses.last_mut() {
            r.partitions.push(pd);
        }
    }
    (response, reservation)
}

/// The partitions a request names, in its order; one named twice is read once, as Kafka's
/// fetch session does.
fn wanted_partitions(request: &FetchRequest) -> Vec<WantedPartition> {
    let mut seen = HashSet::new();
    let mut wanted = Vec::new();
    for topic in &request.topics {
        for part in &topic.partitions {
            if seen.insert((topic.topic.0.as_str(), part.partition)) {
                wanted.push(WantedPartition {
                    topic: topic.topic.clone(),
                    partition: part.partition,
                    fetch_offset: part.fetch_offset,
                    partition_max_bytes: part.partition_max_bytes,
                    current_leader_epoch: part.current_leader_epoch,
                    last_fetched_epoch: part.last_fetched_epoch,
                    log_start_offset: part.log_start_offset,
                });
            }
        }
    }
    wanted
}

fn read_result(o: &FetchOutcome) -> ReadResult {
    ReadResult {
        state: SentState {
            high_watermark: o.high_watermark,
            last_stable_offset: o.last_stable_offset,
            log_start_offset: o.log_start_offset,
        },
        has_records: !o.records.is_empty(),
        has_error: o.error.is_some(),
        diverging: o.diverging.is_some(),
    }
}

/// Kafka's check of the leader epoch a fetcher believes in (KIP-320): older than the
/// partition's gets FENCED_LEADER_EPOCH (the fetcher must refresh its metadata), newer
/// UNKNOWN_LEADER_EPOCH (this broker has not seen it yet); -1 skips the check.
pub fn leader_epoch_error(requested: i32, current: i32) -> Option<ResponseError> {
    match requested {
        r if r < 0 => None,
        r if r < current => Some(ResponseError::FencedLeaderEpoch),
        r if r > current => Some(ResponseError::UnknownLeaderEpoch),
        _ => None,
    }
}

/// Counts a parked fetch against `weir.fetch.waiters.max` for as long as it lives (also when
/// the fetch is dropped because its connection closed).
struct Parked<'a>(&'a Shard);

impl<'a> Parked<'a> {
    fn new(shard: &'a Shard) -> Self {
        shard.fetch_waiters.set(shard.fetch_waiters.get() + 1);
        Parked(shard)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_waiters.set(self.0.fetch_waiters.get().saturating_sub(1));
    }
}
