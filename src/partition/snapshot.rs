//! Producer-state snapshots: `<offset>.snapshot` files in the partition directory, a
//! CRC32C then a FlatBuffer (`schema/producer_snapshot.fbs`). Written at segment roll and at
//! a clean stop; at start the newest valid one at or below the log end is loaded and the
//! log after it replayed, so recovery reads only what came after the snapshot.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use flatbuffers::FlatBufferBuilder;

use super::producer_state::{BatchRange, ProducerEntry, ProducerStateTable};
use crate::types::Offset;

#[allow(unsafe_code, clippy::all, clippy::unwrap_used, unused_imports, mismatched_lifetime_syntaxes)]
#[path = "schema/producer_snapshot_generated.rs"]
mod generated;

use generated::weir::producers as fb;

/// Snapshots kept per partition (older ones are deleted).
pub const SNAPSHOTS_KEPT: usize = 2;

pub fn path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Open transactions: producer id -> the first offset of its transaction here.
pub type OpenTxns = std::collections::HashMap<i64, Offset>;

pub fn encode(table: &ProducerStateTable, open: &OpenTxns, offset: Offset) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let mut ids: Vec<&i64> = table.producers.keys().collect();
    ids.sort_unstable();
    let producers: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let e = &table.producers[id];
            let ranges: Vec<fb::BatchRange> = e
                .batches
                .iter()
                .map(|b| fb::BatchRange::new(b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.timestamp))
                .collect();
            let batches = Some(fbb.create_vector(&ranges));
            fb::Producer::create(
                &mut fbb,
                &fb::ProducerArgs {
                    producer_id: *id,
                    epoch: e.epoch,
                    last_timestamp: e.last_timestamp,
                    batches,
                    txn_first_offset: open.get(id).copied().unwrap_or(-1),
                    coordinator_epoch: e.coordinator_epoch,
                },
            )
        })
        .collect();
    let producers = Some(fbb.create_vector(&producers));
    let root = fb::ProducerSnapshot::create(&mut fbb, &fb::ProducerSnapshotArgs { offset, producers });
    fbb.finish(root, None);
    let body = fbb.finished_data();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A decoded snapshot: the producers, their open transactions, and the offset it covers.
pub type Snapshot = (ProducerStateTable, OpenTxns, Offset);

/// The table, open transactions and offset in a snapshot file's bytes; `None` when damaged.
pub fn decode(bytes: &[u8]) -> Option<Snapshot> {
    let (crc, body) = bytes.split_at_checked(4)?;
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return None;
    }
    let snap = fb::root_as_producer_snapshot(body).ok()?;
    let mut table = ProducerStateTable::default();
    let mut open = OpenTxns::new();
    for p in snap.producers().into_iter().flatten() {
        if p.txn_first_offset() >= 0 {
            open.insert(p.producer_id(), p.txn_first_offset());
        }
        let batches: VecDeque<BatchRange> = p
            .batches()
            .into_iter()
            .flatten()
            .map(|b| BatchRange {
                first_seq: b.first_seq(),
                last_seq: b.last_seq(),
                first_offset: b.first_offset(),
                last_offset: b.last_offset(),
                timestamp: b.timestamp(),
            })
            .collect();
        let entry = ProducerEntry {
            epoch: p.epoch(),
            batches,
            last_timestamp: p.last_timestamp(),
            coordinator_epoch: p.coordinator_epoch(),
        };
        table.producers.insert(p.producer_id(), entry);
    }
    Some((table, open, snap.offset()))
}

/// Offsets of the snapshot files in `dir`, newest first.
pub fn list(dir: &Path) -> Vec<Offset> {
    let mut offsets: Vec<Offset> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".snapshot")?.parse().ok())
        .collect();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    offsets
}

/// Loads the newest valid snapshot at or below `log_end` (a snapshot past the end belongs
/// to data lost in a crash); returns an empty table at offset 0 when there is none.
pub fn load_latest(dir: &Path, log_end: Offset) -> Snapshot {
    for offset in list(dir) {
        if offset > log_end {
            let _ = std::fs::remove_file(path(dir, offset));
            continue;
        }
        if let Some(found) = std::fs::read(path(dir, offset)).ok().and_then(|b| decode(&b)) {
            return found;
        }
        tracing::warn!(dir = %dir.display(), offset, "ignoring a damaged producer snapshot");
    }
    (ProducerStateTable::default(), OpenTxns::new(), 0)
}

/// Writes a snapshot durably (write, sync, then prune the oldest), off the executor thread.
pub fn write(dir: &Path, table: &ProducerStateTable, open: &OpenTxns, offset: Offset) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = encode(table, open, offset);
    let final_path = path(dir, offset);
    let tmp = final_path.with_extension("snapshot.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, &final_path)?;
    std::fs::File::open(dir)?.sync_all()?;
    for old in list(dir).into_iter().skip(SNAPSHOTS_KEPT) {
        let _ = std::fs::remove_file(path(dir, old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::producer_state::ProducerBatch;

    #[test]
    fn round_trip_and_damage() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(
                &ProducerBatch { producer_id: 5, epoch: 2, first_seq: i * 3, offset_delta: 2, max_timestamp: 77 },
                i as i64 * 3,
            );
        }
        t.record(&ProducerBatch { producer_id: 9, epoch: 0, first_seq: 0, offset_delta: 0, max_timestamp: 88 }, 21);
        t.record_marker(5, 2, 7, 90);
        let open = OpenTxns::from([(9, 21)]);
        let bytes = encode(&t, &open, 22);
        assert_eq!(decode(&bytes), Some((t.clone(), open, 22)));
        assert_eq!(t.producers[&5].coordinator_epoch, 7, "the last marker's coordinator epoch is kept");
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&bytes[..3]), None);
    }

    #[test]
    fn newest_valid_snapshot_at_or_below_the_end_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = ProducerStateTable::default();
        t.record(&ProducerBatch { producer_id: 1, epoch: 0, first_seq: 0, offset_delta: 0, max_timestamp: 1 }, 0);
        write(dir.path(), &t, &OpenTxns::new(), 10).expect("write");
        write(dir.path(), &ProducerStateTable::default(), &OpenTxns::new(), 20).expect("write");
        std::fs::write(path(dir.path(), 30), b"torn").expect("damaged");
        assert_eq!(load_latest(dir.path(), 25).2, 20);
        assert_eq!(load_latest(dir.path(), 15), (t, OpenTxns::new(), 10));
        assert_eq!(load_latest(dir.path(), 5).2, 0, "snapshots past the end are dropped");
        assert!(list(dir.path()).is_empty());
    }
}
