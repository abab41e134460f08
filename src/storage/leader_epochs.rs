//! The leader-epoch cache of a partition (KIP-101): for every leader epoch, the first offset
//! appended in it. A follower whose log diverged from the leader's (an old leader's records
//! the new leader never had) finds where to truncate from it, and the leader answers from it
//! where each epoch ended (Fetch's diverging epoch, OffsetForLeaderEpoch).
//!
//! Sans-IO; persisted as `leader-epoch-checkpoint` in the partition directory, in Kafka's
//! text format (`0`, the entry count, then `epoch start_offset` per line). The file is
//! written *before* the first batch of a new epoch is appended, so after a crash it may
//! name an epoch with no records (harmless: it ends where it starts) but never miss one;
//! entries past the recovered log end are dropped when the log opens.

use std::path::{Path, PathBuf};

use crate::types::Offset;

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: Offset,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    /// Epochs and start offsets both strictly increasing.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochs {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch, or -1 when none is known.
    pub fn latest_epoch(&self) -> i32 {
        self.entries.last().map_or(-1, |e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether the cache changed (and
    /// must be persisted). An epoch older than the newest is ignored; a newer one that
    /// starts at or before an existing entry's offset replaces those entries (they were
    /// empty, or truncated away).
    pub fn assign(&mut self, epoch: i32, start_offset: Offset) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if epoch <= last.epoch {
                return false;
            }
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry { epoch, start_offset });
        true
    }

    /// Kafka's `endOffsetFor(epoch)`: the largest epoch at or below `epoch` and the offset
    /// where it ended (the next epoch's start, or `log_end` for the newest). An epoch older
    /// than every known one ends where the oldest known starts (`(epoch, that start)`);
    /// `(-1, -1)` (undefined) for an epoch newer than every known one, or none known.
    pub fn end_offset_for(&self, epoch: i32, log_end: Offset) -> (i32, Offset) {
        let Some(latest) = self.entries.last() else { return (-1, -1) };
        if epoch < 0 {
            return (-1, -1);
        }
        if epoch == latest.epoch {
            return (epoch, log_end);
        }
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        let Some(higher) = self.entries.get(i) else { return (-1, -1) };
        match i.checked_sub(1).map(|f| self.entries[f]) {
            Some(floor) => (floor.epoch, higher.start_offset),
            None => (epoch, higher.start_offset),
        }
    }

    /// Drops entries that start at or after `offset` (the log was truncated to it).
    /// Returns whether anything changed.
    pub fn truncate_from_end(&mut self, offset: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < offset);
        before != self.entries.len()
    }

    pub fn encode(&self) -> String {
        let mut out = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out
    }

    pub fn decode(text: &str) -> Option<LeaderEpochs> {
        let mut lines = text.lines();
        if lines.next()?.trim() != "0" {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut cache = LeaderEpochs::default();
        for _ in 0..count {
            let mut parts = lines.next()?.split_whitespace();
            let epoch = parts.next()?.parse().ok()?;
            let start_offset = parts.next()?.parse().ok()?;
            let ordered = cache.entries.last().is_none_or(|l| l.epoch < epoch && l.start_offset <= start_offset);
            if !ordered {
                return None;
            }
            cache.entries.push(EpochEntry { epoch, start_offset });
        }
        Some(cache)
    }
}

pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Loads the checkpoint (empty when there is none; `Err` when it is damaged).
pub fn load(dir: &Path) -> std::io::Result<LeaderEpochs> {
    match std::fs::read_to_string(checkpoint_path(dir)) {
        Ok(text) => LeaderEpochs::decode(&text).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{CHECKPOINT_FILE} in {} is damaged", dir.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LeaderEpochs::default()),
        Err(e) => Err(e),
    }
}

/// Writes the checkpoint durably: a temporary file, synced, renamed over the old one, and
/// the directory synced. Blocking: run it off the executor thread.
pub fn store(dir: &Path, cache: &LeaderEpochs) -> std::io::Result<()> {
    super::replace_file_durably(dir, CHECKPOINT_FILE, cache.encode().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafka() {
        let mut c = LeaderEpochs::default();
        assert_eq!(c.end_offset_for(0, 10), (-1, -1), "nothing known");
        assert!(c.assign(0, 0));
        assert!(c.assign(2, 10));
        assert!(!c.assign(1, 12), "an older epoch is ignored");
        assert!(!c.assign(2, 15), "the same epoch keeps its first offset");
        assert!(c.assign(5, 30));
        assert_eq!(c.latest_epoch(), 5);
        assert_eq!(c.end_offset_for(0, 40), (0, 10));
        assert_eq!(c.end_offset_for(1, 40), (0, 10), "epoch 1 never led: epoch 0's end");
        assert_eq!(c.end_offset_for(2, 40), (2, 30));
        assert_eq!(c.end_offset_for(4, 40), (2, 30));
        assert_eq!(c.end_offset_for(5, 40), (5, 40), "the newest epoch ends at the log end");
        assert_eq!(c.end_offset_for(9, 40), (-1, -1), "newer than every known epoch: undefined");
        let mut late = LeaderEpochs::default();
        late.assign(3, 20);
        assert_eq!(late.end_offset_for(1, 40), (1, 20), "older than every known epoch: ends where the oldest starts");
    }

    #[test]
    fn a_new_epoch_at_an_old_offset_replaces_empty_entries() {
        let mut c = LeaderEpochs::default();
        c.assign(1, 5);
        c.assign(3, 8);
        assert!(c.assign(4, 8), "epoch 3 had no records");
        assert_eq!(c.entries(), &[EpochEntry { epoch: 1, start_offset: 5 }, EpochEntry { epoch: 4, start_offset: 8 }]);
        assert!(c.truncate_from_end(6));
        assert_eq!(c.entries(), &[EpochEntry { epoch: 1, start_offset: 5 }]);
        assert!(!c.truncate_from_end(6));
    }

    #[test]
    fn checkpoint_round_trips_and_refuses_damage() {
        let mut c = LeaderEpochs::default();
        c.assign(0, 0);
        c.assign(3, 100);
        assert_eq!(LeaderEpochs::decode(&c.encode()), Some(c.clone()));
        assert_eq!(c.encode(), "0\n2\n0 0\n3 100\n");
        assert_eq!(LeaderEpochs::decode("0\n2\n0 0\n"), None, "fewer entries than counted");
        assert_eq!(LeaderEpochs::decode("0\n2\n3 0\n1 5\n"), None, "epochs out of order");
        assert_eq!(LeaderEpochs::decode("1\n0\n"), None, "unknown version");
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("none yet"), LeaderEpochs::default());
        store(dir.path(), &c).expect("store");
        assert_eq!(load(dir.path()).expect("load"), c);
        std::fs::write(checkpoint_path(dir.path()), "garbage").expect("write");
        assert!(load(dir.path()).is_err());
    }
}
