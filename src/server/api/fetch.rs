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
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use futures::future::{select, Either};
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::ResponseError;

use super::{encode_frame_parts, Pending, RequestContext};
use crate::cluster::image::owner_of_named;
use crate::partition::Isolation;
use crate::server::fetch_sessions::{
    self, FetchContext, FetchSessionCache, Interest, ReadResult, SentState, SessionRead, WantedPartition,
};
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
        // The stored batches go out as they are, not copied into the frame.
        let records = response.responses.iter().flat_map(|t| &t.partitions).filter_map(|p| p.records.clone());
        encode_frame_parts(ApiKey::Fetch, version, correlation_id, &response, records.collect::<Vec<_>>())
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

/// One partition this fetch reads: what the client wants of it and, in a session, its slot
/// and what the session last sent of it.
struct Part {
    wanted: WantedPartition,
    session: Option<SessionRead>,
}

impl Part {
    fn of_session(read: SessionRead) -> Part {
        Part { wanted: read.wanted.clone(), session: Some(read) }
    }

    /// A session's interest hears of this partition's changes: no need to watch or re-read it.
    fn listened(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.listening)
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
    let image_epoch = shard.image().epoch;
    let named = wanted_partitions(&request);
    let context = if version >= 7 {
        let forgotten: Vec<(TopicName, i32)> = request
            .forgotten_topics_data
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
            .collect();
        let begun = sessions.borrow_mut().begin(
            request.session_id,
            request.session_epoch,
            named,
            &forgotten,
            Instant::now(),
            image_epoch,
        );
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
    let (mut parts, session, interest) = match context {
        FetchContext::Sessionless(p) | FetchContext::Full(p) => {
            (p.into_iter().map(|wanted| Part { wanted, session: None }).collect::<Vec<_>>(), None, None)
        }
        FetchContext::Incremental { id, epoch, reads, interest } => {
            (reads.into_iter().map(Part::of_session).collect::<Vec<_>>(), Some((id, epoch)), interest)
        }
    };
    if let (Some((id, _)), Some(interest)) = (session, &interest) {
        listen(shard, sessions, id, interest, &mut parts);
    }

    let fetch_max = shard.config.fetch_bytes_max;
    let max_bytes = (request.max_bytes.max(0) as usize).min(fetch_max);
    let min_bytes = request.min_bytes.max(0) as usize;
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u64);
    let reader =
        Reader { shard, follower, replica_id, isolation: Isolation::from_wire(request.isolation_level), max_bytes };
    let response_cap = |parts: &[Part]| {
        parts
            .iter()
            .map(|p| (p.wanted.partition_max_bytes.max(0) as usize).min(max_bytes))
            .sum::<usize>()
            .min(max_bytes)
    };

    let mut outcomes: Vec<Option<FetchOutcome>> = Vec::new();
    let mut to_read: Vec<usize> = (0..parts.len()).collect();
    let reservation = loop {
        let reservation = reserve_response(memory, response_cap(&parts)).await;
        outcomes.resize_with(parts.len(), || None);
        for o in reader.read(&parts, &to_read).await {
            let idx = o.idx;
            outcomes[idx] = Some(o);
        }
        let read = || outcomes.iter().flatten();
        let bytes: usize = read().map(|o| o.records.len()).sum();
        let errors = read().any(|o| o.error.is_some() || o.diverging.is_some());
        let now = Instant::now();
        let enough = if min_bytes == 0 { true } else { bytes >= min_bytes };
        // A session's fetch waits on its interest even when it had nothing to read.
        let nothing_to_wait_for = parts.is_empty() && interest.is_none();
        if enough || errors || now >= deadline || nothing_to_wait_for || shard.is_stopping() {
            break reservation;
        }
        if shard.fetch_waiters.get() >= shard.config.fetch_waiters_max {
            // At the limit of parked fetches: answer now rather than park.
            break reservation;
        }
        // What is not listened to is watched, as the partitions of a fetch without a session.
        let watch: Vec<(TopicPartition, i64)> = parts
            .iter()
            .zip(&outcomes)
            .filter(|(p, _)| !p.listened())
            .map(|(p, o)| {
                let tp = TopicPartition::new(p.wanted.topic.0.as_str(), p.wanted.partition);
                // A follower waits for the log end to pass its fetch offset; a consumer for
                // the high watermark to pass what it saw.
                let seen = o.as_ref().filter(|_| !follower).map_or(p.wanted.fetch_offset, |o| o.high_watermark);
                (tp, seen.max(p.wanted.fetch_offset))
            })
            .collect();
        // A parked fetch holds no memory: what it read is read again when it wakes.
        drop(reservation);
        let holding: Vec<usize> =
            (0..parts.len()).filter(|&i| outcomes[i].as_ref().is_some_and(|o| !o.records.is_empty())).collect();
        for &i in &holding {
            outcomes[i] = None;
        }
        let parked = Parked::new(shard);
        let changed = async {
            match &interest {
                Some(i) => {
                    let _ = i.next_change().await;
                }
                None => futures::future::pending::<()>().await,
            }
        };
        let watched = async {
            if watch.is_empty() {
                futures::future::pending::<()>().await
            } else {
                shard.watch_any(watch, follower).await
            }
        };
        let woke = select(
            Box::pin(select(Box::pin(changed), Box::pin(watched))),
            Box::pin(glommio::timer::sleep(deadline - now)),
        )
        .await;
        drop(parked);
        // Read again: what changed (or, on the timeout, one last look so data that came at the
        // very end is not missed), what is not listened to, and what was let go.
        to_read = holding;
        if let (Some((id, _)), Some(interest)) = (session, &interest) {
            let known: HashMap<u32, usize> =
                parts.iter().enumerate().filter_map(|(i, p)| p.session.as_ref().map(|s| (s.slot, i))).collect();
            let mut added = Vec::new();
            let changed = interest.take();
            for read in sessions.borrow_mut().reads_of(id, changed) {
                match known.get(&read.slot) {
                    Some(&i) => to_read.push(i),
                    None => added.push(Part::of_session(read)),
                }
            }
            for part in added {
                to_read.push(parts.len());
                parts.push(part);
            }
            listen(shard, sessions, id, interest, &mut parts);
        }
        to_read.extend((0..parts.len()).filter(|&i| !parts[i].listened()));
        to_read.sort_unstable();
        to_read.dedup();
        if let Either::Right(_) = woke {
            let reservation = reserve_response(memory, response_cap(&parts)).await;
            outcomes.resize_with(parts.len(), || None);
            for o in reader.read(&parts, &to_read).await {
                let idx = o.idx;
                outcomes[idx] = Some(o);
            }
            break reservation;
        }
    };

    let mut all: Vec<FetchOutcome> = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let read = crate::invariant!(o.is_some(), "fetch part {i} was never read");
            o.filter(|_| read).unwrap_or_else(|| FetchOutcome::failed(i, ResponseError::UnknownServerError))
        })
        .collect();
    debug_assert_eq!(all.len(), parts.len(), "one outcome per partition, in order");
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
    let results: Vec<ReadResult> =
        all.iter().zip(&parts).map(|(o, p)| read_result(o, &p.wanted, reader.isolation)).collect();
    let (session_id, included) = match session {
        None if request.session_epoch == fetch_sessions::INITIAL_EPOCH && version >= 7 => {
            let wanted: Vec<WantedPartition> = parts.iter().map(|p| p.wanted.clone()).collect();
            let id = sessions.borrow_mut().open(&wanted, &results, follower, Instant::now(), image_epoch);
            (id, vec![true; all.len()])
        }
        None => (0, vec![true; all.len()]),
        Some((id, epoch)) => {
            let reads: Vec<SessionRead> = parts.iter().filter_map(|p| p.session.clone()).collect();
            (id, sessions.borrow_mut().finish(id, epoch, &reads, &results))
        }
    };
    response.session_id = session_id;
    let answered = all.into_iter().zip(included).filter(|(_, included)| *included).map(|(o, _)| o);
    response.responses = topic_responses(&parts, answered, reader.isolation);
    (response, reservation)
}

/// The response's topics, in the order of `parts`, each with its answered partitions.
fn topic_responses(
    parts: &[Part],
    answered: impl Iterator<Item = FetchOutcome>,
    isolation: Isolation,
) -> Vec<FetchableTopicResponse> {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for o in answered {
        let wanted = &parts[o.idx].wanted;
        if topics.last().map(|r| &r.topic) != Some(&wanted.topic) {
            let mut r = FetchableTopicResponse::default();
            r.topic = wanted.topic.clone();
            topics.push(r);
        }
        let mut pd = PartitionData::default();
        pd.partition_index = wanted.partition;
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
        if let Some(r) = topics.last_mut() {
            r.partitions.push(pd);
        }
    }
    topics
}

/// Starts the session's interest listening to the parts on this shard that it does not
/// listen to yet (before they are read, so no change after the read goes unheard). Parts
/// other shards own are read every time instead.
fn listen(
    shard: &Rc<Shard>,
    sessions: &RefCell<FetchSessionCache>,
    id: i32,
    interest: &Rc<Interest>,
    parts: &mut [Part],
) {
    let shards = shard.data_shards();
    for part in parts.iter_mut() {
        let Some(read) = part.session.as_mut().filter(|r| !r.listening) else { continue };
        // Another shard's partition is read every time: no name to build for it.
        if owner_of_named(part.wanted.topic.0.as_str(), part.wanted.partition, shards) != shard.id {
            continue;
        }
        let tp = TopicPartition::new(part.wanted.topic.0.as_str(), part.wanted.partition);
        if let Some(partition) = shard.partition(&tp) {
            let weak: Weak<Interest> = Rc::downgrade(interest);
            partition.listen(weak, read.slot);
            read.listening = true;
            sessions.borrow_mut().listening(id, read.slot);
        }
    }
}

/// Reads parts: the image's errors first, then the owning shards'.
struct Reader<'a> {
    shard: &'a Rc<Shard>,
    follower: bool,
    replica_id: i32,
    isolation: Isolation,
    max_bytes: usize,
}

impl Reader<'_> {
    /// The outcomes of `parts[i]` for each `i` in `which` (each with `idx` = `i`).
    async fn read(&self, parts: &[Part], which: &[usize]) -> Vec<FetchOutcome> {
        let image = self.shard.image();
        let mut out = Vec::with_capacity(which.len());
        let mut items = Vec::with_capacity(which.len());
        for &idx in which {
            let part = &parts[idx].wanted;
            let name = part.topic.0.as_str();
            let error = match image.topic(name) {
                None => Some(ResponseError::UnknownTopicOrPartition),
                Some(m) if part.partition < 0 || part.partition >= m.partitions => {
                    Some(ResponseError::UnknownTopicOrPartition)
                }
                Some(m) => m
                    .state_of(part.partition)
                    .and_then(|s| leader_epoch_error(part.current_leader_epoch, s.leader_epoch)),
            };
            match error {
                Some(e) => out.push(FetchOutcome::failed(idx, e)),
                None => items.push(FetchItem {
                    idx,
                    tp: TopicPartition::new(name, part.partition),
                    offset: part.fetch_offset,
                    max_bytes: (part.partition_max_bytes.max(0) as usize).min(self.max_bytes),
                    budget: self.max_bytes,
                    replica: self.follower.then_some(ReplicaFetch {
                        replica_id: self.replica_id,
                        last_fetched_epoch: part.last_fetched_epoch,
                        log_start_offset: part.log_start_offset,
                    }),
                    isolation: self.isolation,
                }),
            }
        }
        if !items.is_empty() {
            out.extend(self.shard.route_fetch(items).await);
        }
        out
    }
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

fn read_result(o: &FetchOutcome, wanted: &WantedPartition, isolation: Isolation) -> ReadResult {
    let end = match isolation {
        Isolation::ReadUncommitted => o.high_watermark,
        Isolation::ReadCommitted => o.last_stable_offset,
    };
    ReadResult {
        behind: end > wanted.fetch_offset,
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
