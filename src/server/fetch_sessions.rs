//! Incremental fetch sessions (KIP-227), sans-IO: the shard's cache of sessions and the
//! rules that decide what a fetch reads and what its response carries.
//!
//! A client opens a session with a full fetch (session id 0, epoch 0). Its later fetches
//! name only the partitions whose fetch position or limits changed (and those to forget),
//! and are answered with only the partitions that have something new: records, an error, a
//! divergence, or a changed high watermark, last stable offset or log start. Epochs number
//! a session's requests so a duplicated or lost request is caught
//! (INVALID_FETCH_SESSION_EPOCH); an unknown session gets FETCH_SESSION_ID_NOT_FOUND. Either
//! way the client starts over with a full fetch, so refusing is always safe.
//!
//! A fetch that has nothing new costs nothing per partition: a consumer's session listens
//! to its partitions on this shard ([`Interest`], told by the partition of every change),
//! so an incremental fetch reads only the partitions that changed since the last, those it
//! names, and the unsettled ones (new, in error, with data the client has not taken, or
//! owned by another shard, which has no listener yet). Everything is read again when the
//! metadata image changed (leadership, deletions) and at least every [`FULL_READ_EVERY`],
//! for what no listener hears of (the log start moved by retention). A parked fetch waits
//! on the interest, not on a watch per partition.
//!
//! Sessions live on the shard of the connection that made them, each shard holding its share
//! of `max.incremental.fetch.session.cache.slots`. When the cache is full, a new session may
//! take the place of one that is stale (unused for `eviction_after`), of a consumer's when it
//! is a follower's, or of a smaller one that is not new itself; otherwise the fetch is
//! answered without a session, as Kafka does.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use kafka_protocol::messages::TopicName;
use kafka_protocol::ResponseError;

use crate::partition::ChangeListener;

/// The epoch of a fetch that opens a session.
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a fetch without a session (or that closes one).
pub const FINAL_EPOCH: i32 = -1;
/// How long a session stays unused before a new one may take its place (Kafka's
/// `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`, not a setting there either).
pub const EVICTION_AFTER: Duration = Duration::from_secs(120);
/// A session reads every partition at least this often, whatever its listeners heard.
pub const FULL_READ_EVERY: Duration = Duration::from_secs(1);

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
    /// There is data at or past the fetch offset (up to the high watermark, or the last
    /// stable offset for read_committed): the client has not taken it all yet.
    pub behind: bool,
}

type Key = (TopicName, i32);

/// A consumer session's interest in its partitions on this shard: the slots that changed
/// since it last looked, and the parked fetch to wake.
#[derive(Debug, Default)]
pub struct Interest {
    changed: RefCell<HashSet<u32>>,
    waker: RefCell<Option<oneshot::Sender<()>>>,
}

impl ChangeListener for Interest {
    fn changed(&self, slot: u32) {
        self.changed.borrow_mut().insert(slot);
        if let Some(waker) = self.waker.borrow_mut().take() {
            let _ = waker.send(());
        }
    }
}

impl Interest {
    /// The slots that changed since the last look.
    pub fn take(&self) -> HashSet<u32> {
        std::mem::take(&mut *self.changed.borrow_mut())
    }

    /// Resolves once a partition changed (at once if one has since the last look).
    pub fn next_change(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.changed.borrow().is_empty() {
            *self.waker.borrow_mut() = Some(tx);
        } else {
            let _ = tx.send(());
        }
        rx
    }
}

#[derive(Debug)]
struct Cached {
    wanted: WantedPartition,
    sent: SentState,
    /// Read order: a partition that returned records goes to the back, so a response
    /// budget spent early does not starve the same partitions every time.
    order: u64,
    /// This session's interest listens to the partition (it is on this shard).
    listening: bool,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next incremental fetch must carry.
    next_epoch: i32,
    /// Partitions by slot (the number their listener reports); `None` once forgotten.
    slots: Vec<Option<Cached>>,
    free: Vec<u32>,
    by_key: HashMap<Key, u32>,
    /// Slots read at every fetch: new, in error, behind, or not listened to.
    unsettled: BTreeSet<u32>,
    next_order: u64,
    /// `None` for a follower's session, which reads everything every time.
    interest: Option<Rc<Interest>>,
    /// The metadata image every partition was last read under.
    image_epoch: u64,
    last_full_read: Instant,
    created: Instant,
    last_used: Instant,
    follower: bool,
}

impl Session {
    fn insert(&mut self, wanted: WantedPartition, sent: SentState) -> u32 {
        let key = (wanted.topic.clone(), wanted.partition);
        let order = self.next_order;
        self.next_order += 1;
        let cached = Cached { wanted, sent, order, listening: false };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(cached);
                slot
            }
            None => {
                self.slots.push(Some(cached));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_key.insert(key, slot);
        self.unsettled.insert(slot);
        slot
    }

    fn forget(&mut self, key: &Key) {
        if let Some(slot) = self.by_key.remove(key) {
            self.slots[slot as usize] = None;
            self.unsettled.remove(&slot);
            self.free.push(slot);
        }
    }

    /// The reads for `slots` (live ones), in read order.
    fn reads(&self, slots: impl IntoIterator<Item = u32>) -> Vec<SessionRead> {
        let mut reads: Vec<(u64, SessionRead)> = slots
            .into_iter()
            .filter_map(|slot| {
                let c = self.slots.get(slot as usize)?.as_ref()?;
                Some((c.order, SessionRead { slot, wanted: c.wanted.clone(), sent: c.sent, listening: c.listening }))
            })
            .collect();
        reads.sort_by_key(|(order, _)| *order);
        reads.into_iter().map(|(_, r)| r).collect()
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// One partition an incremental fetch reads.
#[derive(Clone, Debug)]
pub struct SessionRead {
    pub slot: u32,
    pub wanted: WantedPartition,
    /// What the session last sent of it.
    pub sent: SentState,
    /// The session's interest already listens to it.
    pub listening: bool,
}

/// How the request's session fields are to be taken.
#[derive(Debug)]
pub enum FetchContext {
    /// A full fetch of these partitions that neither has nor wants a session (epoch -1; a
    /// session named with it is closed first).
    Sessionless(Vec<WantedPartition>),
    /// A full fetch of these partitions that opens a session when the response is made
    /// (epoch 0).
    Full(Vec<WantedPartition>),
    /// A session's next fetch: read these partitions (a consumer's: only those that may have
    /// changed), answer what changed.
    Incremental { id: i32, epoch: i32, reads: Vec<SessionRead>, interest: Option<Rc<Interest>> },
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
    /// `changed` alone). `image_epoch` is the metadata image's: when it moved, a session
    /// reads all its partitions. Errors are the response's top-level error code (the client
    /// then starts over with a full fetch).
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        changed: Vec<WantedPartition>,
        forgotten: &[Key],
        now: Instant,
        image_epoch: u64,
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
                    session.forget(key);
                }
                let mut chosen: BTreeSet<u32> = BTreeSet::new();
                for wanted in changed {
                    let key = (wanted.topic.clone(), wanted.partition);
                    let slot = match session.by_key.get(&key) {
                        Some(&slot) => {
                            if let Some(c) = session.slots[slot as usize].as_mut() {
                                c.wanted = wanted;
                            }
                            slot
                        }
                        None => session.insert(wanted, SentState::NONE),
                    };
                    chosen.insert(slot);
                }
                let changes = session.interest.as_ref().map(|i| i.take());
                let everything = session.follower
                    || image_epoch != session.image_epoch
                    || now.duration_since(session.last_full_read) >= FULL_READ_EVERY;
                let reads = if everything {
                    if image_epoch != session.image_epoch {
                        // Partitions may have been replaced (a new leadership): listen anew.
                        for c in session.slots.iter_mut().flatten() {
                            c.listening = false;
                        }
                    }
                    session.image_epoch = image_epoch;
                    session.last_full_read = now;
                    session.reads(session.by_key.values().copied().collect::<Vec<_>>())
                } else {
                    chosen.extend(changes.into_iter().flatten());
                    chosen.extend(session.unsettled.iter().copied());
                    session.reads(chosen)
                };
                Ok(FetchContext::Incremental { id, epoch, reads, interest: session.interest.clone() })
            }
        }
    }

    /// While an incremental fetch is parked: the reads for `slots`, which its interest heard
    /// change (none if the session is gone).
    pub fn reads_of(&self, id: i32, slots: HashSet<u32>) -> Vec<SessionRead> {
        self.sessions.get(&id).map(|s| s.reads(slots)).unwrap_or_default()
    }

    /// The session's interest now listens to the partition in `slot`.
    pub fn listening(&mut self, id: i32, slot: u32) {
        if let Some(c) =
            self.sessions.get_mut(&id).and_then(|s| s.slots.get_mut(slot as usize)).and_then(Option::as_mut)
        {
            c.listening = true;
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
        image_epoch: u64,
    ) -> i32 {
        if self.slots == 0 || (self.sessions.len() >= self.slots && !self.evict_for(partitions.len(), follower, now)) {
            return 0;
        }
        let id = self.fresh_id();
        let mut session = Session {
            next_epoch: next_epoch(INITIAL_EPOCH),
            slots: Vec::with_capacity(partitions.len()),
            free: Vec::new(),
            by_key: HashMap::with_capacity(partitions.len()),
            unsettled: BTreeSet::new(),
            next_order: 0,
            interest: (!follower).then(|| Rc::new(Interest::default())),
            image_epoch,
            last_full_read: now,
            created: now,
            last_used: now,
            follower,
        };
        for (w, r) in partitions.iter().zip(results) {
            // Every partition starts unsettled: the next fetch reads it and starts listening.
            session.insert(w.clone(), sent_after(r));
        }
        self.sessions.insert(id, session);
        id
    }

    /// After an incremental fetch's `reads` (with their `results`, in the same order):
    /// which of them the response carries. The session remembers what was sent, which
    /// partitions stay unsettled, and moves those that returned records to the back. A
    /// session closed or evicted while the fetch waited, or already used by a newer fetch,
    /// is left alone; the answer is the same.
    pub fn finish(&mut self, id: i32, epoch: i32, reads: &[SessionRead], results: &[ReadResult]) -> Vec<bool> {
        let respond: Vec<bool> = reads.iter().zip(results).map(|(read, r)| must_respond(&read.sent, r)).collect();
        let Some(session) = self.sessions.get_mut(&id).filter(|s| s.next_epoch == next_epoch(epoch)) else {
            return respond;
        };
        for ((read, r), responded) in reads.iter().zip(results).zip(&respond) {
            let Some(cached) = session.slots.get_mut(read.slot as usize).and_then(Option::as_mut) else { continue };
            if *responded {
                cached.sent = sent_after(r);
            }
            if r.has_records {
                cached.order = session.next_order;
                session.next_order += 1;
            }
            if r.has_error || r.diverging || r.behind || !cached.listening {
                session.unsettled.insert(read.slot);
            } else {
                session.unsettled.remove(&read.slot);
            }
        }
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
                .filter(|(_, s)| follower || s.len() < size)
                .min_by_key(|(_, s)| (s.len(), s.last_used))
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
            behind: false,
        }
    }

    fn records(hw: i64) -> ReadResult {
        ReadResult { has_records: true, ..quiet(hw) }
    }

    /// Opens a consumer's session over `parts` (each at offset 0, high watermark 10).
    fn opened(cache: &mut FetchSessionCache, parts: &[(&str, i32)], now: Instant) -> i32 {
        let ps: Vec<_> = parts.iter().map(|(t, p)| wanted(t, *p, 0)).collect();
        let results = vec![quiet(10); ps.len()];
        cache.open(&ps, &results, false, now, 0)
    }

    /// An incremental fetch (image epoch 0): what it reads, and the session's interest.
    fn incremental(
        cache: &mut FetchSessionCache,
        id: i32,
        epoch: i32,
        changed: Vec<WantedPartition>,
        forgotten: &[Key],
        now: Instant,
    ) -> (Vec<SessionRead>, Option<Rc<Interest>>) {
        match cache.begin(id, epoch, changed, forgotten, now, 0) {
            Ok(FetchContext::Incremental { reads, interest, .. }) => (reads, interest),
            other => panic!("expected an incremental fetch, got {other:?}"),
        }
    }

    fn named(reads: &[SessionRead]) -> Vec<(String, i32)> {
        reads.iter().map(|r| (r.wanted.topic.0.to_string(), r.wanted.partition)).collect()
    }

    fn pairs(v: &[(&str, i32)]) -> Vec<(String, i32)> {
        v.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    /// The first incremental fetch reads everything and starts listening to all of it.
    fn settle(cache: &mut FetchSessionCache, id: i32, now: Instant) -> (Vec<SessionRead>, Rc<Interest>) {
        let (reads, interest) = incremental(cache, id, 1, vec![], &[], now);
        for r in &reads {
            cache.listening(id, r.slot);
        }
        let results: Vec<_> = reads.iter().map(|_| quiet(10)).collect();
        assert!(cache.finish(id, 1, &reads, &results).iter().all(|r| !r), "nothing new since the opening");
        (reads, interest.expect("a consumer's session listens"))
    }

    #[test]
    fn an_incremental_fetch_reads_only_what_changed_and_answers_only_what_is_new() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(10, 7);
        assert!(matches!(cache.begin(0, 0, vec![], &[], now, 0), Ok(FetchContext::Full(p)) if p.is_empty()));
        let id = opened(&mut cache, &[("a", 0), ("a", 1), ("b", 0)], now);
        assert!(id > 0);
        let (all, interest) = settle(&mut cache, id, now);
        assert_eq!(named(&all), pairs(&[("a", 0), ("a", 1), ("b", 0)]));

        // Nothing changed, nothing named: nothing is read.
        let (reads, _) = incremental(&mut cache, id, 2, vec![], &[], now);
        assert!(reads.is_empty());
        assert!(cache.finish(id, 2, &reads, &[]).is_empty());

        // a-0 took a write; the client moved a-1 on. Those two are read; a-0 is answered.
        interest.changed(all[0].slot);
        let (reads, _) = incremental(&mut cache, id, 3, vec![wanted("a", 1, 5)], &[], now);
        assert_eq!(named(&reads), pairs(&[("a", 0), ("a", 1)]));
        assert_eq!(reads[1].wanted.fetch_offset, 5);
        assert_eq!(cache.finish(id, 3, &reads, &[records(12), quiet(10)]), [true, false]);

        // Read again in full (the image moved): a-0 returned records, so it is read last.
        let Ok(FetchContext::Incremental { reads, .. }) = cache.begin(id, 4, vec![], &[], now, 1) else {
            panic!("incremental")
        };
        assert_eq!(named(&reads), pairs(&[("a", 1), ("b", 0), ("a", 0)]));
        assert_eq!(cache.finish(id, 4, &reads, &[quiet(10), quiet(10), quiet(12)]), [false, false, false]);
    }

    #[test]
    fn a_parked_fetch_wakes_on_a_change_and_reads_just_that() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(10, 7);
        let id = opened(&mut cache, &[("a", 0), ("a", 1)], now);
        let (all, interest) = settle(&mut cache, id, now);
        let (reads, _) = incremental(&mut cache, id, 2, vec![], &[], now);
        assert!(reads.is_empty());
        let mut woken = interest.next_change();
        assert_eq!(woken.try_recv(), Ok(None), "parked");
        interest.changed(all[1].slot);
        assert_eq!(woken.try_recv(), Ok(Some(())), "woken by the change");
        assert_eq!(named(&cache.reads_of(id, interest.take())), pairs(&[("a", 1)]));
        assert!(interest.take().is_empty(), "taken");
    }

    #[test]
    fn unsettled_partitions_are_read_every_time() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(10, 1);
        let id = opened(&mut cache, &[("a", 0), ("a", 1), ("a", 2)], now);
        // a-0 is not listened to (another shard owns it), a-1 is behind, a-2 failed.
        let (reads, _) = incremental(&mut cache, id, 1, vec![], &[], now);
        cache.listening(id, reads[1].slot);
        cache.listening(id, reads[2].slot);
        let behind = ReadResult { behind: true, ..quiet(10) };
        let failed = ReadResult { has_error: true, ..quiet(-1) };
        assert_eq!(cache.finish(id, 1, &reads, &[quiet(10), behind, failed]), [false, false, true]);
        for epoch in 2..=3 {
            let (reads, _) = incremental(&mut cache, id, epoch, vec![], &[], now);
            assert_eq!(named(&reads), pairs(&[("a", 0), ("a", 1), ("a", 2)]));
            // The error is answered every time.
            assert_eq!(cache.finish(id, epoch, &reads, &[quiet(10), behind, failed]), [false, false, true]);
        }
        // Caught up and the error gone: only the unlistened partition is still read; the
        // one that failed is answered again.
        let (reads, _) = incremental(&mut cache, id, 4, vec![], &[], now);
        assert_eq!(cache.finish(id, 4, &reads, &[quiet(10), quiet(10), quiet(10)]), [false, false, true]);
        let (reads, _) = incremental(&mut cache, id, 5, vec![], &[], now);
        assert_eq!(named(&reads), pairs(&[("a", 0)]));
    }

    #[test]
    fn everything_is_read_again_every_full_read_interval() {
        let start = Instant::now();
        let mut cache = FetchSessionCache::new(10, 1);
        let id = opened(&mut cache, &[("a", 0), ("a", 1)], start);
        settle(&mut cache, id, start);
        let (reads, _) = incremental(&mut cache, id, 2, vec![], &[], start);
        assert!(reads.is_empty());
        let (reads, _) = incremental(&mut cache, id, 3, vec![], &[], start + FULL_READ_EVERY);
        assert_eq!(reads.len(), 2);
    }

    #[test]
    fn forgotten_partitions_leave_the_session_and_new_ones_join_it() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(10, 1);
        let id = opened(&mut cache, &[("a", 0), ("a", 1)], now);
        let (all, interest) = settle(&mut cache, id, now);
        // Forgotten, a-0 is no longer read, not even when it changes.
        let (reads, _) = incremental(&mut cache, id, 2, vec![], &[key("a", 0)], now);
        assert!(reads.is_empty());
        interest.changed(all[0].slot);
        let (reads, _) = incremental(&mut cache, id, 3, vec![], &[], now);
        assert!(reads.is_empty(), "{reads:?}");
        // A partition new to the session is read and always answered.
        let (reads, _) = incremental(&mut cache, id, 4, vec![wanted("c", 3, 0)], &[], now);
        assert_eq!(named(&reads), pairs(&[("c", 3)]));
        assert_eq!(reads[0].sent, SentState::NONE);
        assert_eq!(cache.finish(id, 4, &reads, &[quiet(0)]), [true]);
    }

    #[test]
    fn wrong_epochs_and_unknown_sessions_are_refused_and_epoch_minus_one_closes() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(10, 1);
        let id = opened(&mut cache, &[("a", 0)], now);
        let begin = |c: &mut FetchSessionCache, id, epoch| c.begin(id, epoch, vec![], &[], now, 0).map(|_| ());
        assert_eq!(begin(&mut cache, id, 2), Err(ResponseError::InvalidFetchSessionEpoch));
        assert_eq!(begin(&mut cache, id + 1, 1), Err(ResponseError::FetchSessionIdNotFound));
        assert_eq!(begin(&mut cache, 0, 3), Err(ResponseError::InvalidFetchSessionEpoch));
        assert_eq!(begin(&mut cache, id, 1), Ok(()));
        // The same epoch twice (a retried request) is refused.
        assert_eq!(begin(&mut cache, id, 1), Err(ResponseError::InvalidFetchSessionEpoch));
        assert!(matches!(cache.begin(id, FINAL_EPOCH, vec![], &[], now, 0), Ok(FetchContext::Sessionless(_))));
        assert_eq!(cache.open_sessions(), 0);
        assert_eq!(begin(&mut cache, id, 2), Err(ResponseError::FetchSessionIdNotFound));
    }

    #[test]
    fn a_full_cache_takes_a_stale_session_or_a_smaller_old_one_and_never_a_new_one() {
        let start = Instant::now();
        let after = Duration::from_secs(60);
        let mut cache = FetchSessionCache::new(2, 1).with_eviction_after(after);
        let begin = |c: &mut FetchSessionCache, id, epoch, at| c.begin(id, epoch, vec![], &[], at, 0).map(|_| ());
        let small = opened(&mut cache, &[("a", 0)], start);
        let big = opened(&mut cache, &[("a", 0), ("a", 1), ("a", 2)], start);
        // Full, and both are new: no session for anyone.
        assert_eq!(opened(&mut cache, &[("a", 0), ("a", 1), ("a", 2), ("a", 3)], start), 0);

        // Once they are old, a bigger session takes the smallest; a smaller one takes nothing.
        let later = start + after;
        assert!(begin(&mut cache, small, 1, later).is_ok());
        assert!(begin(&mut cache, big, 1, later).is_ok());
        assert_eq!(opened(&mut cache, &[("b", 0)], later), 0);
        let two = opened(&mut cache, &[("b", 0), ("b", 1)], later);
        assert!(two > 0);
        assert_eq!(begin(&mut cache, small, 2, later), Err(ResponseError::FetchSessionIdNotFound));

        // A session unused for the eviction time goes first, whatever its size.
        let much_later = later + after;
        assert!(begin(&mut cache, two, 1, much_later).is_ok());
        let one = opened(&mut cache, &[("c", 0)], much_later);
        assert!(one > 0);
        assert_eq!(begin(&mut cache, big, 2, much_later), Err(ResponseError::FetchSessionIdNotFound));
    }

    #[test]
    fn a_followers_session_reads_everything_and_takes_a_consumers_place() {
        let start = Instant::now();
        let after = Duration::from_secs(60);
        let mut cache = FetchSessionCache::new(1, 1).with_eviction_after(after);
        let consumer = opened(&mut cache, &[("a", 0), ("a", 1)], start);
        let later = start + after;
        assert!(cache.begin(consumer, 1, vec![], &[], later, 0).is_ok());
        let follower = cache.open(&[wanted("a", 0, 0)], &[quiet(1)], true, later, 0);
        assert!(follower > 0);
        assert!(matches!(cache.begin(consumer, 2, vec![], &[], later, 0), Err(ResponseError::FetchSessionIdNotFound)));
        for epoch in 1..=2 {
            let Ok(FetchContext::Incremental { reads, interest, .. }) =
                cache.begin(follower, epoch, vec![], &[], later, 0)
            else {
                panic!("incremental")
            };
            assert!(interest.is_none());
            assert_eq!(cache.finish(follower, epoch, &reads, &[quiet(1)]), [false]);
        }

        let mut none = FetchSessionCache::new(0, 1);
        assert_eq!(none.open(&[wanted("a", 0, 0)], &[quiet(1)], false, start, 0), 0);
    }

    #[test]
    fn epochs_wrap_past_the_largest_to_one() {
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(0), 1);
    }
}
