//! Incremental fetch sessions (KIP-227), sans-IO: the shard's cache of sessions and the
//! rules that decide what a fetch reads and what its response carries.
//!
//! A client opens a session with a full fetch (session id 0, epoch 0). Its later fetches
//! name only the partitions whose fetch position or limits changed (and those to forget);
//! the broker reads every partition of the session and answers only those with something
//! new: records, an error, a divergence, or a changed high watermark, last stable offset or
//! log start. Epochs number a session's requests so a duplicated or lost request is caught
//! (INVALID_FETCH_SESSION_EPOCH); an unknown session gets FETCH_SESSION_ID_NOT_FOUND. Either
//! way the client starts over with a full fetch, so refusing is always safe.
//!
//! Sessions live on the shard of the connection that made them, each shard holding its share
//! of `max.incremental.fetch.session.cache.slots`. When the cache is full, a new session may
//! take the place of one that is stale (unused for `eviction_after`), of a consumer's when it
//! is a follower's, or of a smaller one that is not new itself; otherwise the fetch is
//! answered without a session, as Kafka does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kafka_protocol::messages::TopicName;
use kafka_protocol::ResponseError;

/// The epoch of a fetch that opens a session.
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a fetch without a session (or that closes one).
pub const FINAL_EPOCH: i32 = -1;
/// How long a session stays unused before a new one may take its place (Kafka's
/// `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`, not a setting there either).
pub const EVICTION_AFTER: Duration = Duration::from_secs(120);

/// What a fetch asks of one partition; sessions keep the last of these.
#[derive(Clone, Debug, PartialEq)]
pub struct WantedPartition {
    pub topic: TopicName,
    pub partition: i32,
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
    /// A follower's own log start.
    pub log_start_offset: i64,
}

/// What the last response sent of a partition; an incremental response repeats a partition
/// only when one of these has changed (or it has records, an error or a divergence).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SentState {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

impl SentState {
    /// Nothing sent yet: the first response always carries the partition.
    const NONE: SentState = SentState { high_watermark: -1, last_stable_offset: -1, log_start_offset: -1 };
}

/// What one partition's read found, as far as the session cares.
#[derive(Clone, Copy, Debug)]
pub struct ReadResult {
    pub state: SentState,
    pub has_records: bool,
    pub has_error: bool,
    pub diverging: bool,
}

type Key = (TopicName, i32);

#[derive(Debug)]
struct Cached {
    wanted: WantedPartition,
    sent: SentState,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next incremental fetch must carry.
    next_epoch: i32,
    /// In the order reads are made; a partition that returned records moves to the end, so
    /// a response budget spent early does not starve the same partitions every time.
    partitions: IndexMap<Key, Cached>,
    created: Instant,
    last_used: Instant,
    /// A follower's session: consumers' sessions give way to it.
    follower: bool,
}

/// How the request's session fields are to be taken.
#[derive(Debug, PartialEq)]
pub enum FetchContext {
    /// A full fetch of these partitions that neither has nor wants a session (epoch -1; a
    /// session named with it is closed first).
    Sessionless(Vec<WantedPartition>),
    /// A full fetch of these partitions that opens a session when the response is made
    /// (epoch 0).
    Full(Vec<WantedPartition>),
    /// A session's next fetch: read these partitions, answer what changed. `sent` is what
    /// the session had last sent of each, in the same order.
    Incremental { id: i32, epoch: i32, partitions: Vec<WantedPartition>, sent: Vec<SentState> },
}

#[derive(Debug)]
pub struct FetchSessionCache {
    slots: usize,
    eviction_after: Duration,
    sessions: HashMap<i32, Session>,
    /// Where the next session id search starts (ids are positive and not reused while live).
    next_id: i32,
}

impl FetchSessionCache {
    pub fn new(slots: usize, seed: i32) -> FetchSessionCache {
        FetchSessionCache {
            slots,
            eviction_after: EVICTION_AFTER,
            sessions: HashMap::new(),
            next_id: seed.rem_euclid(i32::MAX - 1) + 1,
        }
    }

    #[cfg(test)]
    fn with_eviction_after(mut self, after: Duration) -> Self {
        self.eviction_after = after;
        self
    }

    #[cfg(test)]
    fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Takes a request's session id and epoch, updating the session an incremental fetch
    /// names with its `changed` partitions and `forgotten` ones (a full fetch reads
    /// `changed` alone). Errors are the response's
    /// top-level error code (the client then starts over with a full fetch).
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        changed: Vec<WantedPartition>,
        forgotten: &[Key],
        now: Instant,
    ) -> Result<FetchContext, ResponseError> {
        match (session_id, epoch) {
            (id, FINAL_EPOCH) => {
                self.sessions.remove(&id);
                Ok(FetchContext::Sessionless(changed))
            }
            // Opening a session while naming one: Kafka closes the old one and opens anew.
            (id, INITIAL_EPOCH) => {
                self.sessions.remove(&id);
                Ok(FetchContext::Full(changed))
            }
            (0, _) => Err(ResponseError::InvalidFetchSessionEpoch),
            (id, epoch) => {
                let session = self.sessions.get_mut(&id).ok_or(ResponseError::FetchSessionIdNotFound)?;
                if epoch != session.next_epoch {
                    return Err(ResponseError::InvalidFetchSessionEpoch);
                }
                session.next_epoch = next_epoch(epoch);
                session.last_used = now;
                for key in forgotten {
                    session.partitions.shift_remove(key);
                }
                for wanted in changed {
                    let key = (wanted.topic.clone(), wanted.partition);
                    match session.partitions.get_mut(&key) {
                        Some(cached) => cached.wanted = wanted,
                        None => {
                            session.partitions.insert(key, Cached { wanted, sent: SentState::NONE });
                        }
                    }
                }
                let (partitions, sent) = session.partitions.values().map(|c| (c.wanted.clone(), c.sent)).unzip();
                Ok(FetchContext::Incremental { id, epoch, partitions, sent })
            }
        }
    }

    /// After a full fetch's reads: opens a session over its partitions if there is room
    /// (or a session may be evicted for it) and returns its id, or 0 (no session).
    pub fn open(
        &mut self,
        partitions: &[WantedPartition],
        results: &[ReadResult],
        follower: bool,
        now: Instant,
    ) -> i32 {
        if self.slots == 0 || (self.sessions.len() >= self.slots && !self.evict_for(partitions.len(), follower, now)) {
            return 0;
        }
        let id = self.fresh_id();
        let partitions = partitions
            .iter()
            .zip(results)
            .map(|(w, r)| ((w.topic.clone(), w.partition), Cached { wanted: w.clone(), sent: sent_after(r) }))
            .collect();
        self.sessions.insert(
            id,
            Session { next_epoch: next_epoch(INITIAL_EPOCH), partitions, created: now, last_used: now, follower },
        );
        id
    }

    /// After an incremental fetch's reads (`results` in the order of its `partitions`):
    /// which partitions the response carries. The session remembers what was sent and moves
    /// the partitions that returned records to the end. A session closed or evicted while
    /// the fetch waited, or already used by a newer fetch, is left alone; the answer is the
    /// same.
    pub fn finish(&mut self, id: i32, epoch: i32, sent: &[SentState], results: &[ReadResult]) -> Vec<bool> {
        let respond: Vec<bool> = sent.iter().zip(results).map(|(before, r)| must_respond(before, r)).collect();
        let Some(session) = self.sessions.get_mut(&id).filter(|s| s.next_epoch == next_epoch(epoch)) else {
            return respond;
        };
        let mut kept = IndexMap::with_capacity(session.partitions.len());
        let mut moved = Vec::new();
        for ((key, mut cached), (r, responded)) in session.partitions.drain(..).zip(results.iter().zip(&respond)) {
            if *responded {
                cached.sent = sent_after(r);
            }
            if r.has_records {
                moved.push((key, cached));
            } else {
                kept.insert(key, cached);
            }
        }
        kept.extend(moved);
        session.partitions = kept;
        respond
    }

    fn fresh_id(&mut self) -> i32 {
        loop {
            let id = self.next_id;
            self.next_id = if self.next_id == i32::MAX { 1 } else { self.next_id + 1 };
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Kafka's rules: a stale session goes first; a follower's new session may take a
    /// consumer's; a bigger new session may take a smaller one that is not new itself.
    fn evict_for(&mut self, size: usize, follower: bool, now: Instant) -> bool {
        let after = self.eviction_after;
        let stale = self
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_used) >= after)
            .min_by_key(|(_, s)| s.last_used);
        let victim = stale.map(|(id, _)| *id).or_else(|| {
            self.sessions
                .iter()
                .filter(|(_, s)| !s.follower && now.duration_since(s.created) >= after)
                .filter(|(_, s)| follower || s.partitions.len() < size)
                .min_by_key(|(_, s)| (s.partitions.len(), s.last_used))
                .map(|(id, _)| *id)
        });
        match victim {
            Some(id) => {
                self.sessions.remove(&id);
                true
            }
            None => false,
        }
    }
}

/// Epochs run 1, 2, …, i32::MAX, 1 (0 and -1 mean open and close).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

fn must_respond(before: &SentState, r: &ReadResult) -> bool {
    r.has_records || r.has_error || r.diverging || r.state != *before
}

/// What the session remembers as sent: after an error, nothing (so the partition is sent
/// again once the error is gone).
fn sent_after(r: &ReadResult) -> SentState {
    if r.has_error {
        SentState::NONE
    } else {
        r.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;

    fn wanted(topic: &str, partition: i32, offset: i64) -> WantedPartition {
        WantedPartition {
            topic: TopicName(StrBytes::from_string(topic.to_string())),
            partition,
            fetch_offset: offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
            last_fetched_epoch: -1,
            log_start_offset: -1,
        }
    }

    fn key(topic: &str, partition: i32) -> Key {
        (TopicName(StrBytes::from_string(topic.to_string())), partition)
    }

    fn quiet(hw: i64) -> ReadResult {
        ReadResult {
            state: SentState { high_watermark: hw, last_stable_offset: hw, log_start_offset: 0 },
            has_records: false,
            has_error: false,
            diverging: false,
        }
    }

    fn records(hw: i64) -> ReadResult {
        ReadResult { has_records: true, ..quiet(hw) }
    }

    /// An incremental fetch's partitions and what was last sent of them.
    fn incremental(
        cache: &mut FetchSessionCache,
        id: i32,
        epoch: i32,
        changed: Vec<WantedPartition>,
        forgotten: &[Key],
        now: Instant,
    ) -> (Vec<WantedPartition>, Vec<SentState>) {
        match cache.begin(id, epoch, changed, forgotten, now) {
            Ok(FetchContext::Incremental { partitions, sent, .. }) => (partitions, sent),
            other => panic!("expected an incremental fetch, got {other:?}"),
        }
    }

    /// Opens a session over `parts` (each at offset 0, high watermark 10).
    fn opened(cache: &mut FetchSessionCache, parts: &[(&str, i32)], now: Instant) -> i32 {
        let ps: Vec<_> = parts.iter().map(|(t, p)| wanted(t, *p, 0)).collect();
        let results = vec![quiet(10); ps.len()];
        cache.open(&ps, &results, false, now)
    }

    #[test]
    fn an_incremental_fetch_reads_every_session_partition_and_answers_only_what_changed() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(10, 7);
        assert_eq!(cache.begin(0, 0, vec![], &[], now), Ok(FetchContext::Full(vec![])));
        let id = opened(&mut cache, &[("a", 0), ("a", 1), ("b", 0)], now);
        assert!(id > 0);

        // The client moved a-1 to offset 5 and names only it.
        let (partitions, sent) = incremental(&mut cache, id, 1, vec![wanted("a", 1, 5)], &[], now);
        assert_eq!(
            partitions.iter().map(|w| (w.partition, w.fetch_offset)).collect::<Vec<_>>(),
            [(0, 0), (1, 5), (0, 0)]
        );
        // Only a-0 has something new: records and a higher watermark.
        let respond = cache.finish(id, 1, &sent, &[records(12), quiet(10), quiet(10)]);
        assert_eq!(respond, [true, false, false]);

        // Next time a-0 is read last (it returned records, so the others go first when the
        // response budget is short), and an unchanged read answers nothing.
        let (partitions, sent) = incremental(&mut cache, id, 2, vec![], &[], now);
        assert_eq!(
            partitions.iter().map(|w| (w.topic.0.to_string(), w.partition)).collect::<Vec<_>>(),
            [("a".to_string(), 1), ("b".to_string(), 0), ("a".to_string(), 0)]
        );
        assert_eq!(cache.finish(id, 2, &sent, &[quiet(10), quiet(10), quiet(12)]), [false, false, false]);
    }

    #[test]
    fn forgotten_partitions_leave_the_session_and_new_ones_join_it() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(10, 1);
        let id = opened(&mut cache, &[("a", 0), ("a", 1)], now);
        let (partitions, sent) = incremental(&mut cache, id, 1, vec![wanted("c", 3, 0)], &[key("a", 0)], now);
        assert_eq!(
            partitions.iter().map(|w| (w.topic.0.to_string(), w.partition)).collect::<Vec<_>>(),
            [("a".to_string(), 1), ("c".to_string(), 3)]
        );
        // A partition new to the session is always answered.
        assert_eq!(sent[1], SentState::NONE);
        assert!(must_respond(&sent[1], &quiet(0)));
    }

    #[test]
    fn wrong_epochs_and_unknown_sessions_are_refused_and_epoch_minus_one_closes() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(10, 1);
        let id = opened(&mut cache, &[("a", 0)], now);
        assert_eq!(cache.begin(id, 2, vec![], &[], now), Err(ResponseError::InvalidFetchSessionEpoch));
        assert_eq!(cache.begin(id + 1, 1, vec![], &[], now), Err(ResponseError::FetchSessionIdNotFound));
        assert_eq!(cache.begin(0, 3, vec![], &[], now), Err(ResponseError::InvalidFetchSessionEpoch));
        assert!(matches!(cache.begin(id, 1, vec![], &[], now), Ok(FetchContext::Incremental { .. })));
        // The same epoch twice (a retried request) is refused.
        assert_eq!(cache.begin(id, 1, vec![], &[], now), Err(ResponseError::InvalidFetchSessionEpoch));
        assert_eq!(cache.begin(id, FINAL_EPOCH, vec![], &[], now), Ok(FetchContext::Sessionless(vec![])));
        assert_eq!(cache.open_sessions(), 0);
        assert_eq!(cache.begin(id, 2, vec![], &[], now), Err(ResponseError::FetchSessionIdNotFound));
    }

    #[test]
    fn an_error_is_answered_every_time_and_the_partition_again_once_it_clears() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(10, 1);
        let id = opened(&mut cache, &[("a", 0)], now);
        let failed = ReadResult { has_error: true, ..quiet(-1) };
        for epoch in 1..=2 {
            let (_, sent) = incremental(&mut cache, id, epoch, vec![], &[], now);
            assert_eq!(cache.finish(id, epoch, &sent, &[failed]), [true]);
        }
        let (_, sent) = incremental(&mut cache, id, 3, vec![], &[], now);
        assert_eq!(cache.finish(id, 3, &sent, &[quiet(10)]), [true], "sent again after the error");
    }

    #[test]
    fn a_full_cache_takes_a_stale_session_or_a_smaller_old_one_and_never_a_new_one() {
        let start = Instant::now();
        let after = Duration::from_secs(60);
        let mut cache = FetchSessionCache::new(2, 1).with_eviction_after(after);
        let small = opened(&mut cache, &[("a", 0)], start);
        let big = opened(&mut cache, &[("a", 0), ("a", 1), ("a", 2)], start);
        // Full, and both are new: no session for anyone.
        assert_eq!(opened(&mut cache, &[("a", 0), ("a", 1), ("a", 2), ("a", 3)], start), 0);

        // Once they are old, a bigger session takes the smallest; a smaller one takes nothing.
        let later = start + after;
        assert!(cache.begin(small, 1, vec![], &[], later).is_ok());
        assert!(cache.begin(big, 1, vec![], &[], later).is_ok());
        assert_eq!(opened(&mut cache, &[("b", 0)], later), 0);
        let two = opened(&mut cache, &[("b", 0), ("b", 1)], later);
        assert!(two > 0);
        assert_eq!(cache.begin(small, 2, vec![], &[], later), Err(ResponseError::FetchSessionIdNotFound));

        // A session unused for the eviction time goes first, whatever its size.
        let much_later = later + after;
        assert!(cache.begin(two, 1, vec![], &[], much_later).is_ok());
        let one = opened(&mut cache, &[("c", 0)], much_later);
        assert!(one > 0);
        assert_eq!(cache.begin(big, 2, vec![], &[], much_later), Err(ResponseError::FetchSessionIdNotFound));
    }

    #[test]
    fn a_followers_session_takes_a_consumers_place_and_no_slots_means_no_sessions() {
        let start = Instant::now();
        let after = Duration::from_secs(60);
        let mut cache = FetchSessionCache::new(1, 1).with_eviction_after(after);
        let consumer = opened(&mut cache, &[("a", 0), ("a", 1)], start);
        let later = start + after;
        assert!(cache.begin(consumer, 1, vec![], &[], later).is_ok());
        let follower = cache.open(&[wanted("a", 0, 0)], &[quiet(1)], true, later);
        assert!(follower > 0);
        assert_eq!(cache.begin(consumer, 2, vec![], &[], later), Err(ResponseError::FetchSessionIdNotFound));

        let mut none = FetchSessionCache::new(0, 1);
        assert_eq!(none.open(&[wanted("a", 0, 0)], &[quiet(1)], false, start), 0);
    }

    #[test]
    fn epochs_wrap_past_the_largest_to_one() {
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(0), 1);
    }
}
