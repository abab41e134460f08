//! What a broker is for one partition (leader or follower) and, on the leader, its
//! followers' progress: the high watermark and the ISR changes to ask of the controller.
//! Sans-IO; `Partition` holds one and feeds it fetches, writes and the clock.
//!
//! Kafka's rules (ReplicaManager, Partition.scala):
//! - A follower's fetch offset says what it holds (here: what it has *synced*), so the
//!   leader takes it as the follower's log end.
//! - The high watermark is the smallest log end among the in-sync replicas, the leader's
//!   own counted as what it has written; it never moves back within a leadership. ISR
//!   additions asked for but not yet committed already count (Kafka's "maximal ISR"), so
//!   the watermark is never computed over fewer replicas than the controller may elect.
//! - A follower is caught up when a fetch reaches the leader's log end (or the log end the
//!   leader had at its previous fetch); one not caught up for `replica.lag.time.max.ms`
//!   leaves the ISR. A follower outside the ISR joins once its log end reaches the high
//!   watermark and the start of the current leader epoch.
//!
//! Beyond Kafka: a leader whose broker has not reached the controller for longer than its
//! lease, and which a possible successor has stopped fetching from, stops taking writes
//! (`may_be_deposed`): the controller has fenced it by then and may have elected that
//! successor, so anything it acknowledged now would be lost. Kafka keeps acknowledging
//! acks=1 writes there until the partition heals. While the quorum is down but followers
//! still fetch, leaders keep leading, as in Kafka.

use std::collections::BTreeMap;

use crate::types::Offset;

/// This broker's part in a partition, from the latest image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader(Leadership),
    /// Follows `leader` (-1: the partition has no leader now) in `epoch`.
    Follower {
        leader: i32,
        epoch: i32,
    },
}

/// A leader's view of its partition as the controller last decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub node: i32,
    pub epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl Leadership {
    /// Alone in the ISR: the high watermark is what the leader has written.
    pub fn solo(&self) -> bool {
        self.isr.iter().all(|b| *b == self.node)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The follower's log end (its last fetch offset); -1 until it fetches in this leadership.
    pub log_end: Offset,
    pub last_fetch_ms: i64,
    /// The leader's log end at the follower's last fetch.
    pub leader_end_at_last_fetch: Offset,
    pub last_caught_up_ms: i64,
    /// The follower's log start offset, as its last fetch said (-1: not said).
    pub log_start: Offset,
}

/// The leader's bookkeeping for one leadership (a new leader epoch starts a new one).
#[derive(Debug, Clone)]
pub struct LeaderState {
    pub leadership: Leadership,
    /// Where this leader epoch starts in the log.
    pub epoch_start: Offset,
    followers: BTreeMap<i32, Progress>,
    /// The ISR asked of the controller and not yet seen in an image, and when it was asked.
    pending_isr: Option<Vec<i32>>,
    pending_since_ms: i64,
    /// Writes are refused: see `may_be_deposed`.
    pub deposed: bool,
    /// ISR changes refused (or unanswered) in a row, for the log.
    refusals: u32,
    /// After a refusal, no change is asked before this.
    retry_at_ms: i64,
}

/// How long an ISR change may stay unanswered by an image before it is asked again.
const PENDING_ISR_TIMEOUT_MS: i64 = 5_000;
/// How long after a refused ISR change it is asked again.
const ISR_RETRY_BACKOFF_MS: i64 = 1_000;

impl LeaderState {
    /// A new leadership: followers are given `now` as their last catch-up (Kafka does the
    /// same), so none is dropped from the ISR before it had a chance to fetch.
    pub fn new(leadership: Leadership, epoch_start: Offset, now: i64) -> Self {
        let followers = leadership
            .replicas
            .iter()
            .filter(|b| **b != leadership.node)
            .map(|b| {
                (
                    *b,
                    Progress {
                        log_end: -1,
                        last_fetch_ms: now,
                        leader_end_at_last_fetch: -1,
                        last_caught_up_ms: now,
                        log_start: -1,
                    },
                )
            })
            .collect();
        Self {
            leadership,
            epoch_start,
            followers,
            pending_isr: None,
            pending_since_ms: 0,
            deposed: false,
            refusals: 0,
            retry_at_ms: 0,
        }
    }

    /// The controller committed a new ISR (same leader epoch): keep the followers' progress.
    pub fn update(&mut self, leadership: Leadership) {
        if self.pending_isr.as_ref().is_some_and(|p| *p == leadership.isr)
            || leadership.partition_epoch > self.leadership.partition_epoch
        {
            self.pending_isr = None;
            self.refusals = 0;
        }
        self.leadership = leadership;
    }

    pub fn progress(&self, replica: i32) -> Option<&Progress> {
        self.followers.get(&replica)
    }

    pub fn is_replica(&self, replica: i32) -> bool {
        self.followers.contains_key(&replica)
    }

    /// A follower fetched from `fetch_offset` while this leader's log ended at `leader_end`.
    pub fn on_fetch(&mut self, replica: i32, fetch_offset: Offset, leader_end: Offset, now: i64) {
        let Some(p) = self.followers.get_mut(&replica) else { return };
        if fetch_offset >= leader_end {
            p.last_caught_up_ms = now;
        } else if p.leader_end_at_last_fetch >= 0 && fetch_offset >= p.leader_end_at_last_fetch {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
        }
        p.log_end = fetch_offset;
        p.last_fetch_ms = now;
        p.leader_end_at_last_fetch = leader_end;
    }

    /// A follower's fetch named its log start offset.
    pub fn on_follower_log_start(&mut self, replica: i32, log_start: Offset) {
        if let Some(p) = self.followers.get_mut(&replica) {
            p.log_start = log_start;
        }
    }

    /// The smallest log start among the in-sync replicas, with `own` as the leader's (Kafka's
    /// low watermark). A follower that has not said counts as 0: nothing is known deleted there.
    pub fn low_watermark(&self, own: Offset) -> Offset {
        self.leadership
            .isr
            .iter()
            .filter(|b| **b != self.leadership.node)
            .map(|b| self.followers.get(b).map_or(0, |p| p.log_start.max(0)))
            .fold(own, Offset::min)
    }

    /// The members the high watermark waits for: the ISR and any additions asked for.
    fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let pending = self.pending_isr.iter().flatten().filter(|b| !self.leadership.isr.contains(b));
        self.leadership.isr.iter().chain(pending).copied()
    }

    /// The high watermark the replicas allow: the smallest log end over the (maximal) ISR,
    /// with `leader_written` as the leader's. `None` while a member's log end is unknown.
    pub fn high_watermark(&self, leader_written: Offset) -> Option<Offset> {
        let mut hw = leader_written;
        for b in self.maximal_isr() {
            if b == self.leadership.node {
                continue;
            }
            let end = self.followers.get(&b).map_or(-1, |p| p.log_end);
            if end < 0 {
                return None;
            }
            hw = hw.min(end);
        }
        Some(hw)
    }

    /// The ISR to ask the controller for, if it should change: followers lagging longer than
    /// `lag_max_ms` out, caught-up followers in. `None` while a change is pending or when
    /// nothing changes.
    /// Only followers `eligible` says may join (live, not fenced: Kafka asks the same of
    /// its metadata) are added.
    pub fn wanted_isr(
        &self,
        high_watermark: Offset,
        now: i64,
        lag_max_ms: i64,
        eligible: impl Fn(i32) -> bool,
    ) -> Option<Vec<i32>> {
        if self.pending_isr.is_some() && now - self.pending_since_ms < PENDING_ISR_TIMEOUT_MS || now < self.retry_at_ms
        {
            return None;
        }
        let current = &self.leadership.isr;
        let mut next: Vec<i32> = current
            .iter()
            .copied()
            .filter(|b| {
                *b == self.leadership.node
                    || self.followers.get(b).is_none_or(|p| now - p.last_caught_up_ms <= lag_max_ms)
            })
            .collect();
        for (b, p) in &self.followers {
            let caught_up = p.log_end >= high_watermark && p.log_end >= self.epoch_start;
            if !next.contains(b) && caught_up && now - p.last_caught_up_ms <= lag_max_ms && eligible(*b) {
                next.push(*b);
            }
        }
        if !next.contains(&self.leadership.node) {
            next.insert(0, self.leadership.node);
        }
        let mut sorted_next = next.clone();
        let mut sorted_current = current.clone();
        sorted_next.sort_unstable();
        sorted_current.sort_unstable();
        (sorted_next != sorted_current).then_some(next)
    }

    /// An ISR change was sent to the controller; until an image settles it, no other is.
    pub fn set_pending(&mut self, isr: Option<Vec<i32>>, now: i64) {
        self.pending_isr = isr;
        self.pending_since_ms = now;
    }

    /// The controller refused (or could not be reached): the change is no longer pending
    /// (an addition it refused must not hold the high watermark back, as the maximal ISR
    /// would), and none is asked for a second. Returns how many were refused in a row.
    pub fn retry_later(&mut self, now: i64) -> u32 {
        self.pending_isr = None;
        self.retry_at_ms = now + ISR_RETRY_BACKOFF_MS;
        self.refusals += 1;
        self.refusals
    }

    pub fn refusals(&self) -> u32 {
        self.refusals
    }

    pub fn pending(&self) -> Option<&Vec<i32>> {
        self.pending_isr.as_ref()
    }

    /// Whether another replica may lead now without this leader knowing: its broker lost
    /// the controller (`controller_lost`), and a replica the controller could elect instead
    /// (an in-sync one; with unclean election, any) has not fetched for `silence_ms`, so it
    /// may be following someone else. One still fetching from this leader is not leading.
    pub fn may_be_deposed(&self, controller_lost: bool, unclean: bool, now: i64, silence_ms: i64) -> bool {
        if !controller_lost {
            return false;
        }
        let me = self.leadership.node;
        let electable: Vec<i32> = if unclean { self.leadership.replicas.clone() } else { self.leadership.isr.clone() };
        electable
            .iter()
            .filter(|b| **b != me)
            .any(|b| self.followers.get(b).is_none_or(|p| now - p.last_fetch_ms > silence_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_cut_off_from_the_controller_is_deposed_once_a_successor_goes_quiet() {
        let mut s = leader(&[1, 2, 3]);
        s.on_fetch(2, 100, 100, 1_000);
        s.on_fetch(3, 100, 100, 1_000);
        assert!(!s.may_be_deposed(false, false, 60_000, 5_000), "the controller is reachable");
        assert!(!s.may_be_deposed(true, false, 5_000, 5_000), "both followers still fetch");
        s.on_fetch(2, 100, 100, 9_000);
        assert!(s.may_be_deposed(true, false, 9_000, 5_000), "3 has not fetched for 8 s");
        // Out of the ISR, 3 is not electable (clean elections only).
        s.update(Leadership { node: 1, epoch: 3, partition_epoch: 8, replicas: vec![1, 2, 3], isr: vec![1, 2] });
        assert!(!s.may_be_deposed(true, false, 9_000, 5_000));
        assert!(s.may_be_deposed(true, true, 9_000, 5_000), "any replica may lead after an unclean election");
        // Alone in the ISR with clean elections, nobody else can be elected.
        s.update(Leadership { node: 1, epoch: 3, partition_epoch: 9, replicas: vec![1, 2, 3], isr: vec![1] });
        assert!(!s.may_be_deposed(true, false, 60_000, 5_000));
    }

    fn leader(isr: &[i32]) -> LeaderState {
        let leadership =
            Leadership { node: 1, epoch: 3, partition_epoch: 7, replicas: vec![1, 2, 3], isr: isr.to_vec() };
        LeaderState::new(leadership, 100, 0)
    }

    #[test]
    fn the_high_watermark_waits_for_every_in_sync_follower() {
        let mut s = leader(&[1, 2, 3]);
        assert_eq!(s.high_watermark(150), None, "followers not heard from yet");
        s.on_fetch(2, 120, 150, 10);
        assert_eq!(s.high_watermark(150), None);
        s.on_fetch(3, 140, 150, 10);
        assert_eq!(s.high_watermark(150), Some(120));
        s.on_fetch(2, 150, 150, 20);
        assert_eq!(s.high_watermark(150), Some(140));
        assert_eq!(s.high_watermark(130), Some(130), "the leader's own written offset bounds it");
    }

    #[test]
    fn an_out_of_sync_follower_does_not_hold_the_watermark_back() {
        let mut s = leader(&[1, 2]);
        s.on_fetch(2, 150, 150, 10);
        assert_eq!(s.high_watermark(150), Some(150), "follower 3 is not in the ISR");
    }

    #[test]
    fn a_refused_addition_stops_holding_the_watermark_and_a_fenced_follower_is_not_added() {
        let mut s = leader(&[1, 2]);
        s.on_fetch(2, 150, 150, 1_000);
        s.on_fetch(3, 150, 150, 1_000);
        // Follower 3 caught up, but the image says it is fenced: it is not asked for.
        assert_eq!(s.wanted_isr(150, 1_000, 30_000, |b| b != 3), None);
        assert_eq!(s.wanted_isr(150, 1_000, 30_000, |_| true), Some(vec![1, 2, 3]));
        s.set_pending(Some(vec![1, 2, 3]), 1_000);
        s.on_fetch(2, 200, 200, 1_100);
        assert_eq!(s.high_watermark(200), Some(150), "the pending addition counts (maximal ISR)");
        // The controller refuses (INELIGIBLE_REPLICA, say): 3 no longer holds the watermark
        // back, and nothing is asked for a second.
        assert_eq!(s.retry_later(1_200), 1);
        assert_eq!(s.high_watermark(200), Some(200));
        assert_eq!(s.wanted_isr(200, 1_500, 30_000, |_| true), None, "backing off");
    }

    #[test]
    fn a_lagging_follower_leaves_and_a_caught_up_one_joins() {
        let mut s = leader(&[1, 2, 3]);
        s.on_fetch(2, 150, 150, 1_000);
        s.on_fetch(3, 100, 150, 1_000);
        assert_eq!(s.wanted_isr(100, 1_000, 30_000, |_| true), None, "both within the lag time");
        s.on_fetch(2, 150, 150, 40_000);
        s.on_fetch(3, 120, 150, 40_000);
        // Follower 3 reached the leader's end as of its previous fetch? No (120 < 150).
        assert_eq!(s.wanted_isr(120, 40_000, 30_000, |_| true), Some(vec![1, 2]));
        s.set_pending(Some(vec![1, 2]), 40_000);
        assert_eq!(s.wanted_isr(120, 40_000, 30_000, |_| true), None, "one change at a time");
        assert_eq!(s.wanted_isr(120, 46_000, 30_000, |_| true), Some(vec![1, 2]), "unanswered: asked again");
        let mut committed = s.leadership.clone();
        committed.isr = vec![1, 2];
        committed.partition_epoch += 1;
        s.update(committed);
        assert!(s.pending().is_none());
        s.on_fetch(3, 150, 150, 41_000);
        assert_eq!(s.wanted_isr(150, 41_000, 30_000, |_| true), Some(vec![1, 2, 3]), "caught up: back in");
    }

    #[test]
    fn a_follower_joins_only_with_records_of_this_epoch() {
        let mut s = leader(&[1]);
        s.on_fetch(2, 90, 90, 10);
        assert_eq!(s.wanted_isr(90, 10, 30_000, |_| true), None, "below the epoch start (100)");
        s.on_fetch(2, 100, 100, 20);
        assert_eq!(s.wanted_isr(100, 20, 30_000, |_| true), Some(vec![1, 2]));
        s.set_pending(Some(vec![1, 2]), 20);
        assert_eq!(s.high_watermark(120), Some(100), "a pending addition already counts");
    }

    #[test]
    fn catching_up_to_the_previous_fetch_counts() {
        let mut s = leader(&[1, 2]);
        s.on_fetch(2, 100, 150, 1_000);
        s.on_fetch(2, 150, 200, 2_000);
        assert_eq!(s.progress(2).map(|p| p.last_caught_up_ms), Some(1_000));
    }
}
