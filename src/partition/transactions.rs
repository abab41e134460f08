//! Transactions as one partition sees them (Kafka's `ProducerStateManager` transaction part
//! and `TransactionIndex`): which producers have a transaction open here and where it began,
//! the last stable offset (LSO) that read_committed consumers may not pass, and the aborted
//! transactions a read_committed fetch must tell the consumer to skip. Sans-IO: the
//! partition feeds it the batches it appends (or replays) and its high watermark.
//!
//! A transaction is *open* from its first data batch to its marker (a control batch the
//! coordinator has written), and *completing* from the marker until the high watermark passes
//! the marker: until then its records are unstable and the LSO stays at its first offset, as
//! in Kafka, so a consumer never reads a transaction's data before its outcome is replicated.
//!
//! Aborted transactions persist as one `<base>.txnindex` file per segment in Kafka's layout
//! (34-byte entries: version i16 = 0, producer id, first offset, last offset = the marker's,
//! last stable offset at the abort), written when the segment is sealed and at a clean stop;
//! recovery reads them and rebuilds what came after the producer snapshot from the log.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::protocol::batch::ControlType;
use crate::types::Offset;

/// One aborted transaction: its producer, its first record's offset and its marker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    /// The abort marker's offset (Kafka's `lastOffset`).
    pub last_offset: Offset,
    /// The LSO when the marker was appended.
    pub last_stable_offset: Offset,
}

/// Bytes of one entry in a `.txnindex` file.
const ENTRY_BYTES: usize = 34;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionTxns {
    /// Producer id -> the first offset of its open transaction here.
    open: HashMap<i64, Offset>,
    /// Transactions with their marker appended, not yet below the high watermark: marker
    /// offset -> first offset.
    completing: BTreeMap<Offset, Offset>,
    /// Every aborted transaction still in the log, in marker order.
    aborted: Vec<AbortedTxn>,
}

impl PartitionTxns {
    /// A transactional data batch of `producer_id` at `base_offset`: opens its transaction
    /// here if none is open.
    pub fn on_data(&mut self, producer_id: i64, base_offset: Offset) {
        self.open.entry(producer_id).or_insert(base_offset);
    }

    /// A marker of `producer_id` at `marker_offset`: its open transaction (if any) completes;
    /// an abort is recorded (and returned) for read_committed fetches. `high_watermark` is
    /// where consumers stand now (for the entry's LSO).
    pub fn on_marker(
        &mut self,
        producer_id: i64,
        marker_offset: Offset,
        kind: ControlType,
        high_watermark: Offset,
    ) -> Option<AbortedTxn> {
        let lso = self.last_stable_offset(high_watermark);
        let first = self.open.remove(&producer_id)?;
        self.completing.insert(marker_offset, first);
        (kind == ControlType::Abort).then(|| {
            let txn =
                AbortedTxn { producer_id, first_offset: first, last_offset: marker_offset, last_stable_offset: lso };
            self.aborted.push(txn);
            txn
        })
    }

    /// The first offset of `producer_id`'s open transaction here.
    pub fn open_since(&self, producer_id: i64) -> Option<Offset> {
        self.open.get(&producer_id).copied()
    }

    /// Open transactions: (producer id, first offset), by first offset.
    pub fn open_transactions(&self) -> Vec<(i64, Offset)> {
        let mut out: Vec<(i64, Offset)> = self.open.iter().map(|(p, o)| (*p, *o)).collect();
        out.sort_by_key(|(p, o)| (*o, *p));
        out
    }

    /// The last stable offset: the first offset of the oldest transaction that is open or
    /// whose marker is not yet below `high_watermark`, and at most the high watermark.
    /// Forgets the completing transactions the high watermark has passed.
    pub fn last_stable_offset(&mut self, high_watermark: Offset) -> Offset {
        while let Some((&marker, _)) = self.completing.first_key_value() {
            if marker >= high_watermark {
                break;
            }
            self.completing.pop_first();
        }
        let open = self.open.values().copied().min();
        let completing = self.completing.values().copied().min();
        [open, completing].into_iter().flatten().fold(high_watermark, Offset::min)
    }

    /// The aborted transactions a read_committed fetch of `[from, to)` must carry: those
    /// that end at or after `from` and begin before `to` (Kafka's `collectAbortedTxns`).
    pub fn aborted_between(&self, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        self.aborted.iter().filter(|t| t.last_offset >= from && t.first_offset < to).copied().collect()
    }

    /// The aborted transactions whose markers lie in `[from, to)` (one segment's index).
    pub fn aborted_in_segment(&self, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        self.aborted.iter().filter(|t| t.last_offset >= from && t.last_offset < to).copied().collect()
    }

    /// Takes aborted transactions read from index files: those below `below` (what the log
    /// replay after a snapshot at `below` will not find again), without duplicates.
    pub fn load_aborted(&mut self, mut found: Vec<AbortedTxn>, below: Offset) {
        found.retain(|t| t.last_offset < below);
        found.sort_by_key(|t| t.last_offset);
        found.dedup_by_key(|t| t.last_offset);
        self.aborted = found;
    }

    /// Takes the open transactions of a producer snapshot.
    pub fn load_open(&mut self, open: impl IntoIterator<Item = (i64, Offset)>) {
        self.open = open.into_iter().collect();
    }

    /// Forgets the aborted transactions whose markers are at `markers` (the cleaner removed
    /// their records).
    pub fn forget_aborted(&mut self, markers: &[Offset]) {
        self.aborted.retain(|t| !markers.contains(&t.last_offset));
    }

    /// The log now starts at `log_start`: aborted transactions wholly before it go.
    pub fn forget_below(&mut self, log_start: Offset) {
        self.aborted.retain(|t| t.last_offset >= log_start);
    }
}

pub fn encode_index(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for t in entries {
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&t.producer_id.to_be_bytes());
        out.extend_from_slice(&t.first_offset.to_be_bytes());
        out.extend_from_slice(&t.last_offset.to_be_bytes());
        out.extend_from_slice(&t.last_stable_offset.to_be_bytes());
    }
    out
}

/// The entries of an index file; a torn tail (a partial entry) or an unknown version ends it.
pub fn decode_index(bytes: &[u8]) -> Vec<AbortedTxn> {
    let i64_at = |b: &[u8], at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        i64::from_be_bytes(a)
    };
    bytes
        .chunks_exact(ENTRY_BYTES)
        .take_while(|e| e[0..2] == [0, 0])
        .map(|e| AbortedTxn {
            producer_id: i64_at(e, 2),
            first_offset: i64_at(e, 10),
            last_offset: i64_at(e, 18),
            last_stable_offset: i64_at(e, 26),
        })
        .collect()
}

/// Every aborted transaction in the partition directory's index files. Blocking.
pub fn read_indexes(dir: &Path) -> Vec<AbortedTxn> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "txnindex") {
            if let Ok(bytes) = std::fs::read(&path) {
                out.extend(decode_index(&bytes));
            }
        }
    }
    out
}

/// Writes one segment's index (removes it when there is nothing to say). Blocking; synced,
/// because the producer snapshot written after it relies on it being there.
pub fn write_index(dir: &Path, base: Offset, entries: &[AbortedTxn]) -> std::io::Result<()> {
    let path = crate::storage::segment::txn_index_path(dir, base);
    if entries.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let tmp = path.with_extension("txnindex.tmp");
    std::fs::write(&tmp, encode_index(entries))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lso_stops_at_the_oldest_open_or_unreplicated_transaction() {
        let mut t = PartitionTxns::default();
        assert_eq!(t.last_stable_offset(10), 10);
        t.on_data(1, 10);
        t.on_data(1, 12); // a later batch of the same transaction
        t.on_data(2, 11);
        assert_eq!(t.last_stable_offset(15), 10);
        assert_eq!(t.on_marker(1, 15, ControlType::Commit, 15), None);
        // Producer 1's marker is not yet below the high watermark: still unstable.
        assert_eq!(t.last_stable_offset(15), 10);
        assert_eq!(t.last_stable_offset(16), 11, "then producer 2's open transaction holds it");
        let aborted = t.on_marker(2, 16, ControlType::Abort, 16).expect("an abort is recorded");
        assert_eq!((aborted.first_offset, aborted.last_offset, aborted.last_stable_offset), (11, 16, 11));
        assert_eq!(t.last_stable_offset(16), 11);
        assert_eq!(t.last_stable_offset(17), 17);
        // A marker for a producer with nothing open here completes nothing.
        assert_eq!(t.on_marker(3, 17, ControlType::Abort, 18), None);
        assert_eq!(t.last_stable_offset(18), 18);
    }

    #[test]
    fn a_fetch_carries_the_aborts_it_overlaps() {
        let mut t = PartitionTxns::default();
        t.on_data(1, 0);
        t.on_marker(1, 5, ControlType::Abort, 5);
        t.on_data(2, 6);
        t.on_marker(2, 9, ControlType::Abort, 9);
        let ids = |v: Vec<AbortedTxn>| v.into_iter().map(|a| a.producer_id).collect::<Vec<_>>();
        assert_eq!(ids(t.aborted_between(0, 3)), vec![1]);
        assert_eq!(ids(t.aborted_between(5, 7)), vec![1, 2]);
        assert_eq!(ids(t.aborted_between(6, 100)), vec![2]);
        assert_eq!(ids(t.aborted_between(10, 100)), Vec::<i64>::new());
        assert_eq!(ids(t.aborted_in_segment(0, 6)), vec![1]);
        t.forget_below(6);
        assert_eq!(ids(t.aborted_between(0, 100)), vec![2]);
    }

    #[test]
    fn index_files_round_trip_and_stop_at_a_torn_tail() {
        let entries = vec![
            AbortedTxn { producer_id: 4, first_offset: 1, last_offset: 7, last_stable_offset: 1 },
            AbortedTxn { producer_id: 5, first_offset: 8, last_offset: 9, last_stable_offset: 8 },
        ];
        let mut bytes = encode_index(&entries);
        assert_eq!(bytes.len(), 68);
        assert_eq!(decode_index(&bytes), entries);
        bytes.extend_from_slice(&[0, 0, 1]);
        assert_eq!(decode_index(&bytes), entries);
        let mut t = PartitionTxns::default();
        let mut doubled = entries.clone();
        doubled.extend(entries.clone());
        t.load_aborted(doubled, 9);
        assert_eq!(t.aborted_between(0, 100), vec![entries[0]], "entries at or past the snapshot are replayed");
    }
}
