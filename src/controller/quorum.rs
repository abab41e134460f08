//! The controller quorum's Raft node: raft-rs's [`RawNode`] over [`RaftStorage`], driven
//! without I/O of its own. The owner calls [`Quorum::tick`] on a timer, [`Quorum::step`] for
//! each message from a peer, [`Quorum::propose`] for metadata records, and then
//! [`Quorum::process_ready`], which persists what Raft asks (entries, hard state,
//! snapshots; fsynced) and hands back the messages to send and the committed entries to
//! apply, in order. Sending and applying are the owner's.
//!
//! Order, as raft-rs requires: entries and hard state are durable before the messages that
//! depend on them (votes, acknowledgements) are handed out; committed entries are handed
//! out once, in index order; the no-op entry a new leader appends is skipped.
//!
//! Runs on the control shard, owned by the controller (borrowed in short synchronous
//! sections, never across an `.await`).

use raft::eraftpb::{Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole, Storage};

use super::raft_storage::{RaftStorage, RaftStorageError};

/// Raft timing, in ticks of the owner's timer.
#[derive(Debug, Clone, Copy)]
pub struct QuorumTiming {
    /// How long a leader waits to hear from a majority before it steps down (check quorum).
    pub election_ticks: usize,
    /// A follower that hears nothing from the leader for a random time in
    /// `[min_election_ticks, max_election_ticks)` starts an election.
    pub min_election_ticks: usize,
    pub max_election_ticks: usize,
    pub heartbeat_ticks: usize,
}

impl QuorumTiming {
    /// Fixed timing: elections after `election_ticks` to twice that.
    #[cfg(test)]
    pub const fn fixed(election_ticks: usize, heartbeat_ticks: usize) -> QuorumTiming {
        QuorumTiming {
            election_ticks,
            min_election_ticks: election_ticks,
            max_election_ticks: 2 * election_ticks,
            heartbeat_ticks,
        }
    }
}

/// What a voter knows of the quorum, for DescribeQuorum and `weir cluster status`.
#[derive(Debug, Clone, Default)]
pub struct QuorumStatus {
    pub leader: Option<u64>,
    pub term: u64,
    pub commit: u64,
    /// Per voter (the leader's view; others know only their own): Raft id and log end.
    pub voters: Vec<(u64, Option<u64>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("this node is not the quorum's leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("the proposal was dropped: {0}")]
    Dropped(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error(transparent)]
    Storage(#[from] RaftStorageError),
}

/// What one ready cycle hands the owner.
#[derive(Debug, Default)]
pub struct Progress {
    /// Messages for peers, to send now (their preconditions are durable).
    pub messages: Vec<Message>,
    /// A snapshot to install in the state machine before `committed` (a far-behind node).
    pub snapshot: Option<Snapshot>,
    /// Committed entries with data, in index order: apply each once.
    pub committed: Vec<Entry>,
}

/// A proposal's place in the log: it took effect if the entry applied at `index` has `term`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Proposal {
    pub index: u64,
    pub term: u64,
}

pub struct Quorum {
    node: RawNode<RaftStorage>,
}

impl Quorum {
    /// A node `id` of the quorum in `storage` (whose voters are the quorum's). Entries
    /// committed but not covered by the storage's snapshot come back from the first
    /// `process_ready`, so the owner rebuilds its state from the snapshot, then them.
    pub fn new(id: u64, storage: RaftStorage, timing: QuorumTiming) -> Result<Quorum, QuorumError> {
        let applied = storage.snapshot_index();
        Quorum::resume(id, storage, timing, applied)
    }

    /// Node `id` reopened from `storage` for an owner whose state already has every entry up
    /// to `applied`: only the committed entries after it come back from `process_ready`.
    /// `applied` is kept between the snapshot and the commit index the disk holds (an owner
    /// applies only what was committed durably).
    pub fn resume(id: u64, storage: RaftStorage, timing: QuorumTiming, applied: u64) -> Result<Quorum, QuorumError> {
        let floor = storage.snapshot_index();
        let applied = applied.clamp(floor, storage.hard_state().commit.max(floor));
        let config = raft::Config {
            id,
            election_tick: timing.election_ticks,
            min_election_tick: timing.min_election_ticks,
            max_election_tick: timing.max_election_ticks,
            heartbeat_tick: timing.heartbeat_ticks,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        config.validate()?;
        let logger = slog::Logger::root(super::slog_bridge::TracingDrain, slog::o!());
        Ok(Quorum { node: RawNode::new(&config, storage, &logger)? })
    }

    /// Advances the logical clock; returns whether there may be work for `process_ready`.
    pub fn tick(&mut self) -> bool {
        self.node.tick()
    }

    /// Starts an election now (a lone voter becomes leader at once).
    pub fn campaign(&mut self) -> Result<(), QuorumError> {
        Ok(self.node.campaign()?)
    }

    /// A message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), QuorumError> {
        Ok(self.node.step(message)?)
    }

    /// A leader tells the followers its commit index now (heartbeats carry it), so their
    /// images follow a commit within a round trip rather than at the next heartbeat.
    pub fn broadcast_commit(&mut self) {
        if self.node.raft.state == StateRole::Leader {
            self.node.ping();
        }
    }

    pub fn id(&self) -> u64 {
        self.node.raft.id
    }

    /// Whether this node leads and has committed an entry of its own term, so everything
    /// committed before it is applied: only then may it decide on the applied state.
    pub fn is_active_leader(&self) -> bool {
        let log = &self.node.raft.raft_log;
        self.node.raft.state == StateRole::Leader && log.term(log.committed).ok() == Some(self.node.raft.term)
    }

    pub fn status(&self) -> QuorumStatus {
        let raft = &self.node.raft;
        let leading = raft.state == StateRole::Leader;
        let mut voters: Vec<(u64, Option<u64>)> = raft
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .map(|id| {
                let end = if id == raft.id {
                    Some(raft.raft_log.last_index())
                } else if leading {
                    raft.prs().get(id).map(|p| p.matched)
                } else {
                    None
                };
                (id, end)
            })
            .collect();
        voters.sort_unstable();
        QuorumStatus { leader: self.leader(), term: raft.term, commit: raft.raft_log.committed, voters }
    }

    /// Appends `data` as a new entry if this node leads; it takes effect once applied.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Proposal, QuorumError> {
        if self.node.raft.state != StateRole::Leader {
            return Err(QuorumError::NotLeader { leader: self.leader() });
        }
        let before = self.node.raft.raft_log.last_index();
        self.node.propose(Vec::new(), data).map_err(|e| QuorumError::Dropped(e.to_string()))?;
        let index = self.node.raft.raft_log.last_index();
        crate::invariant!(index == before + 1, "a proposal appended {} entries", index - before);
        Ok(Proposal { index, term: self.node.raft.term })
    }

    #[cfg(test)]
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    pub fn leader(&self) -> Option<u64> {
        Some(self.node.raft.leader_id).filter(|id| *id != raft::INVALID_ID)
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The term of the entry at `index`, if the log still has it.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        self.node.store().term(index).ok()
    }

    pub fn storage(&self) -> &RaftStorage {
        self.node.store()
    }

    /// Whether Raft has something for `process_ready`.
    pub fn has_ready(&self) -> bool {
        self.node.has_ready()
    }

    /// Persists what Raft has ready and returns what to send and apply. The owner must
    /// apply `committed` (synchronously) before the next call.
    pub fn process_ready(&mut self) -> Result<Progress, QuorumError> {
        let mut progress = Progress::default();
        if !self.node.has_ready() {
            return Ok(progress);
        }
        let mut ready = self.node.ready();
        // A leader's messages may go out while it persists its own entries (Raft §10.2.1).
        progress.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.node.mut_store().persist_snapshot(snapshot.clone())?;
            progress.snapshot = Some(snapshot);
        }
        keep_data(&mut progress.committed, ready.take_committed_entries());
        if !ready.entries().is_empty() {
            self.node.mut_store().persist_entries(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.node.mut_store().persist_hard_state(hs)?;
        }
        progress.messages.extend(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().persist_commit(commit)?;
        }
        progress.messages.extend(light.take_messages());
        keep_data(&mut progress.committed, light.take_committed_entries());
        self.node.advance_apply();
        Ok(progress)
    }

    /// Takes a snapshot at the applied `index` with the state machine's `data`, compacting
    /// the log before it.
    pub fn snapshot(&mut self, index: u64, data: Vec<u8>) -> Result<(), QuorumError> {
        let term = self.term_of(index).ok_or_else(|| QuorumError::Dropped(format!("no entry {index} to snapshot")))?;
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = term;
        snapshot.data = data.into();
        self.node.mut_store().persist_snapshot(snapshot)?;
        Ok(())
    }
}

/// Keeps the entries that carry metadata: a new leader's empty entry and configuration
/// changes (membership is static) carry none.
fn keep_data(into: &mut Vec<Entry>, entries: Vec<Entry>) {
    into.extend(entries.into_iter().filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty()));
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use super::*;

    const TIMING: QuorumTiming = QuorumTiming::fixed(10, 2);

    /// Nodes on an in-memory network: every message is delivered, in order, unless its
    /// destination is down.
    struct Cluster {
        dirs: Vec<tempfile::TempDir>,
        nodes: BTreeMap<u64, Quorum>,
        applied: BTreeMap<u64, Vec<Vec<u8>>>,
        wire: VecDeque<Message>,
    }

    impl Cluster {
        fn new(n: u64) -> Cluster {
            let voters: Vec<u64> = (1..=n).collect();
            let mut c =
                Cluster { dirs: Vec::new(), nodes: BTreeMap::new(), applied: BTreeMap::new(), wire: VecDeque::new() };
            for id in 1..=n {
                let dir = tempfile::tempdir().expect("tempdir");
                let storage = RaftStorage::open(&dir.path().join("raft"), &voters).expect("storage");
                c.nodes.insert(id, Quorum::new(id, storage, TIMING).expect("node"));
                c.applied.insert(id, Vec::new());
                c.dirs.push(dir);
            }
            c
        }

        /// Restarts node `id` from its storage (what a kill -9 leaves).
        fn restart(&mut self, id: u64) {
            let voters: Vec<u64> = (1..=self.dirs.len() as u64).collect();
            let path = self.dirs[(id - 1) as usize].path().join("raft");
            self.nodes.remove(&id);
            let storage = RaftStorage::open(&path, &voters).expect("storage");
            self.applied.insert(id, Vec::new());
            self.nodes.insert(id, Quorum::new(id, storage, TIMING).expect("node"));
        }

        fn settle(&mut self) {
            for _ in 0..1000 {
                let mut moved = false;
                for (id, node) in self.nodes.iter_mut() {
                    let progress = node.process_ready().expect("ready");
                    moved |= !progress.messages.is_empty() || !progress.committed.is_empty();
                    self.wire.extend(progress.messages);
                    let applied = self.applied.get_mut(id).expect("node");
                    applied.extend(progress.committed.into_iter().map(|e| e.data.to_vec()));
                }
                while let Some(m) = self.wire.pop_front() {
                    moved = true;
                    if let Some(node) = self.nodes.get_mut(&m.to) {
                        let _ = node.step(m);
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("the cluster did not settle");
        }

        fn tick_until_leader(&mut self) -> u64 {
            for _ in 0..200 {
                for node in self.nodes.values_mut() {
                    node.tick();
                }
                self.settle();
                let leaders: Vec<u64> = self.nodes.iter().filter(|(_, n)| n.is_leader()).map(|(id, _)| *id).collect();
                if leaders.len() == 1 {
                    return leaders[0];
                }
            }
            panic!("no leader elected");
        }
    }

    #[test]
    fn a_lone_voter_leads_and_commits_at_once() {
        let mut c = Cluster::new(1);
        c.nodes.get_mut(&1).expect("node").campaign().expect("campaign");
        c.settle();
        let p = c.nodes.get_mut(&1).expect("node").propose(b"r1".to_vec()).expect("propose");
        c.settle();
        assert_eq!(c.applied[&1], vec![b"r1".to_vec()]);
        assert_eq!(c.nodes[&1].term_of(p.index), Some(p.term));
    }

    #[test]
    fn three_voters_elect_one_leader_and_replicate_in_order() {
        let mut c = Cluster::new(3);
        let leader = c.tick_until_leader();
        for i in 0..5u8 {
            c.nodes.get_mut(&leader).expect("leader").propose(vec![i]).expect("propose");
        }
        c.settle();
        // Followers learn the commit index with the next heartbeat.
        for _ in 0..TIMING.heartbeat_ticks {
            c.nodes.get_mut(&leader).expect("leader").tick();
        }
        c.settle();
        let want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i]).collect();
        for id in 1..=3 {
            assert_eq!(c.applied[&id], want, "node {id}");
        }
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        assert!(matches!(
            c.nodes.get_mut(&follower).expect("node").propose(vec![9]),
            Err(QuorumError::NotLeader { leader: Some(l) }) if l == leader
        ));
    }

    #[test]
    fn a_restarted_leader_keeps_what_was_committed_and_a_new_leader_takes_over() {
        let mut c = Cluster::new(3);
        let first = c.tick_until_leader();
        c.nodes.get_mut(&first).expect("leader").propose(b"kept".to_vec()).expect("propose");
        c.settle();
        // The leader dies; the others elect a new one, which has the committed entry.
        c.nodes.remove(&first);
        let second = c.tick_until_leader();
        assert_ne!(first, second);
        c.nodes.get_mut(&second).expect("leader").propose(b"after".to_vec()).expect("propose");
        c.settle();
        // The old leader comes back from its disk and catches up.
        c.restart(first);
        for _ in 0..3 * TIMING.heartbeat_ticks {
            for n in c.nodes.values_mut() {
                n.tick();
            }
            c.settle();
        }
        assert_eq!(c.applied[&first], vec![b"kept".to_vec(), b"after".to_vec()]);
    }

    #[test]
    fn a_voter_whose_disk_fails_reports_it_instead_of_acknowledging() {
        let mut c = Cluster::new(3);
        let leader = c.tick_until_leader();
        let broken = (1..=3).find(|id| *id != leader).expect("a follower");
        c.nodes.get_mut(&broken).expect("node").node.mut_store().lose_disk().expect("reopen read-only");
        c.nodes.get_mut(&leader).expect("leader").propose(b"after".to_vec()).expect("propose");
        // Deliver the leader's append; the broken follower cannot persist it, so its ready
        // cycle fails and it acknowledges nothing (its owner stops the quorum there).
        let messages = c.nodes.get_mut(&leader).expect("leader").process_ready().expect("ready").messages;
        let to_broken: Vec<Message> = messages.into_iter().filter(|m| m.to == broken).collect();
        assert!(!to_broken.is_empty(), "the leader appends to every follower");
        for m in to_broken {
            c.nodes.get_mut(&broken).expect("node").step(m).expect("step");
        }
        let failed = c.nodes.get_mut(&broken).expect("node").process_ready();
        assert!(matches!(failed, Err(QuorumError::Storage(_))), "{failed:?}");
        // The other two are a majority and commit without it.
        c.nodes.remove(&broken);
        c.settle();
        for _ in 0..TIMING.heartbeat_ticks {
            c.nodes.get_mut(&leader).expect("leader").tick();
        }
        c.settle();
        for id in (1..=3).filter(|id| *id != broken) {
            assert_eq!(c.applied[&id], vec![b"after".to_vec()], "node {id}");
        }
    }

    #[test]
    fn a_lone_voter_resumed_after_a_storage_failure_replays_nothing_it_applied() {
        let mut c = Cluster::new(1);
        c.nodes.get_mut(&1).expect("node").campaign().expect("campaign");
        c.settle();
        let first = c.nodes.get_mut(&1).expect("node").propose(b"r1".to_vec()).expect("propose");
        c.settle();
        c.nodes.get_mut(&1).expect("node").node.mut_store().lose_disk().expect("reopen read-only");
        c.nodes.get_mut(&1).expect("node").propose(b"lost".to_vec()).expect("propose");
        let failed = c.nodes.get_mut(&1).expect("node").process_ready();
        assert!(matches!(failed, Err(QuorumError::Storage(_))), "{failed:?}");
        // The owner reopens the node from what the disk holds, saying what it has applied.
        let storage = RaftStorage::open(&c.dirs[0].path().join("raft"), &[1]).expect("storage");
        c.nodes.insert(1, Quorum::resume(1, storage, TIMING, first.index).expect("node"));
        c.nodes.get_mut(&1).expect("node").campaign().expect("campaign");
        c.settle();
        c.nodes.get_mut(&1).expect("node").propose(b"r2".to_vec()).expect("propose");
        c.settle();
        assert_eq!(c.applied[&1], vec![b"r1".to_vec(), b"r2".to_vec()], "r1 not applied twice, the lost entry gone");
    }

    #[test]
    fn a_snapshot_compacts_the_log_and_survives_restart() {
        let mut c = Cluster::new(1);
        c.nodes.get_mut(&1).expect("node").campaign().expect("campaign");
        c.settle();
        let mut last = None;
        for i in 0..10u8 {
            last = Some(c.nodes.get_mut(&1).expect("node").propose(vec![i]).expect("propose"));
            c.settle();
        }
        let last = last.expect("proposed");
        c.nodes.get_mut(&1).expect("node").snapshot(last.index, b"state".to_vec()).expect("snapshot");
        c.restart(1);
        c.settle();
        let node = &c.nodes[&1];
        assert_eq!(node.storage().snapshot_index(), last.index);
        assert_eq!(node.storage().snapshot_data(), b"state");
        assert!(c.applied[&1].is_empty(), "nothing after the snapshot to replay");
    }
}
