//! Log compaction (`cleanup.policy=compact`): sealed segments are rewritten keeping, for
//! each key, only its latest record; a tombstone (null value) stays for
//! `delete.retention.ms` and then goes too. Offsets are kept, so a compacted segment has
//! gaps; reads and recovery step over them. The active segment is never rewritten.
//!
//! Transactions, as Kafka's cleaner treats them: nothing from the first offset of a
//! transaction still open is cleaned; an aborted transaction's records go whole and never
//! supersede anything; a committed one's records count like any other. A marker stays while
//! a record of its transaction does; then it is stamped with a delete horizon
//! (`delete.retention.ms` from that pass, KIP-534) and goes at the first pass after it, so a
//! consumer that read the transaction's last records still finds its marker.
//!
//! Crash safety: the cleaned segment is written beside the old one and synced, the old
//! segment's index files are removed, then the cleaned file is renamed over the old one
//! (and the directory synced). A crash at any point leaves either the old or the new
//! segment, each complete; one without index files is rescanned at start.

use std::collections::{HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};
use tracing::{debug, info};

use super::{gio, remove_index_files, LogError};
use crate::protocol::batch::{self, ControlType};
use crate::storage::index::{relative, SegmentIndex};
use crate::storage::segment::{self, align_down};
use crate::types::Offset;

/// Bytes read at once while building the key map.
const MAP_READ_BYTES: usize = 1 << 20;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_rewritten: usize,
    pub records_removed: usize,
    pub markers_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Abort markers in the cleaned segments whose transaction has no record left (stamped
    /// or removed): the aborted-transaction index need not name them any more, and must not
    /// once the marker is gone (a consumer would skip the producer's later batches).
    pub spent_aborts: Vec<Offset>,
}

/// What one read of the whole log tells the cleaner.
#[derive(Default)]
struct LogScan {
    /// The offset of each key's latest record that counts (not transactional, or committed).
    latest: HashMap<Bytes, Offset>,
    /// Base offsets of the data batches of aborted transactions.
    aborted_batches: HashSet<Offset>,
    /// For each marker's offset, its transaction's records: (offset, timestamp if a tombstone).
    marker_records: HashMap<Offset, Vec<(Offset, Option<i64>)>>,
    /// The offsets of abort markers.
    aborts: HashSet<Offset>,
    /// The first offset of the oldest transaction still open: nothing from here is cleaned.
    first_unstable: Option<Offset>,
}

impl LogScan {
    /// A record that counts for its key: the latest one so far unless a later one came
    /// first (a committed transaction's records count at its marker).
    fn counts(&mut self, key: Option<Bytes>, offset: Offset) {
        if let Some(key) = key {
            let latest = self.latest.entry(key).or_insert(offset);
            *latest = (*latest).max(offset);
        }
    }
}

/// A transaction seen in the scan whose marker has not come yet.
#[derive(Default)]
struct OpenTxn {
    first: Offset,
    batches: Vec<Offset>,
    /// (key, offset, timestamp if a tombstone).
    records: Vec<(Option<Bytes>, Offset, Option<i64>)>,
}

/// What the cleaner removes from a segment.
struct Cleaning<'a> {
    latest: &'a HashMap<Bytes, Offset>,
    aborted_batches: &'a HashSet<Offset>,
    /// Markers none of whose transaction's records stay.
    spent_markers: &'a HashSet<Offset>,
    now: i64,
    delete_retention_ms: i64,
}

/// One cleaned segment.
struct Cleaned {
    content: Bytes,
    records_removed: usize,
    markers_removed: usize,
    /// Whether anything differs from the segment as it was (a marker stamped, too).
    changed: bool,
    /// The earliest delete horizon of a marker kept.
    next_horizon: Option<i64>,
}

impl super::Log {
    /// Whether sealed data was added since the last pass, or a marker's delete horizon has
    /// passed (worth compacting again).
    pub fn compaction_due(&self, now: i64) -> bool {
        let state = self.state.borrow();
        let sealed_end = state.segments.iter().rev().nth(1).map(|s| s.next_offset).unwrap_or(0);
        sealed_end > self.cleaned_to.get() || self.next_horizon.get().is_some_and(|h| h <= now)
    }

    /// Compacts the sealed, fully synced segments, oldest first, up to the first one with a
    /// record younger than `min_lag_ms` (`min.compaction.lag.ms`: a record stays as written
    /// at least that long) or one that holds part of a transaction still open. `now` and
    /// `delete_retention_ms` decide which tombstones have been kept long enough (by their
    /// record timestamps) and the delete horizons of markers.
    pub async fn compact(
        &self,
        now: i64,
        delete_retention_ms: i64,
        min_lag_ms: i64,
    ) -> Result<CompactionStats, LogError> {
        self.check_healthy()?;
        let scan = self.scan_for_cleaning().await?;
        let surviving: HashSet<Offset> = scan.latest.values().copied().collect();
        let spent_markers: HashSet<Offset> = scan
            .marker_records
            .iter()
            .filter(|(_, records)| {
                records.iter().all(|(offset, tombstone)| {
                    !surviving.contains(offset)
                        || tombstone.is_some_and(|t| now.saturating_sub(t) >= delete_retention_ms)
                })
            })
            .map(|(marker, _)| *marker)
            .collect();
        let cleaning = Cleaning {
            latest: &scan.latest,
            aborted_batches: &scan.aborted_batches,
            spent_markers: &spent_markers,
            now,
            delete_retention_ms,
        };
        let _permit = self.io.acquire_permit(1).await.map_err(gio)?;
        let stable_end = scan.first_unstable.unwrap_or(Offset::MAX);
        let candidates: Vec<(Offset, u64)> = {
            let state = self.state.borrow();
            let sealed = &state.segments[..state.segments.len() - 1];
            sealed
                .iter()
                .take_while(|s| {
                    s.synced == s.size
                        && now.saturating_sub(s.max_timestamp) >= min_lag_ms
                        && s.next_offset <= stable_end
                })
                .map(|s| (s.base_offset, s.size))
                .collect()
        };
        let mut stats = CompactionStats::default();
        let mut cleaned_to = self.cleaned_to.get();
        let mut next_horizon: Option<i64> = None;
        for (base, size) in candidates {
            let old = self.read_range(base, 0, size).await?;
            let cleaned = clean_segment(&old, &cleaning)?;
            cleaned_to = cleaned_to.max(self.state.borrow().find(base).map(|s| s.next_offset).unwrap_or(0));
            next_horizon = next_horizon.into_iter().chain(cleaned.next_horizon).min();
            if !cleaned.changed {
                continue;
            }
            self.replace_segment(base, cleaned.content.clone()).await?;
            stats.segments_rewritten += 1;
            stats.records_removed += cleaned.records_removed;
            stats.markers_removed += cleaned.markers_removed;
            stats.bytes_before += size;
            stats.bytes_after += cleaned.content.len() as u64;
        }
        self.cleaned_to.set(cleaned_to);
        self.next_horizon.set(next_horizon);
        stats.spent_aborts =
            spent_markers.iter().copied().filter(|m| scan.aborts.contains(m) && *m < cleaned_to).collect();
        stats.spent_aborts.sort_unstable();
        if stats.segments_rewritten > 0 {
            info!(
                dir = %self.dir.display(),
                segments_rewritten = stats.segments_rewritten,
                records_removed = stats.records_removed,
                markers_removed = stats.markers_removed,
                bytes_before = stats.bytes_before,
                bytes_after = stats.bytes_after,
                "log compacted"
            );
        }
        Ok(stats)
    }

    /// Reads the whole log once: each key's latest record that counts, and what became of
    /// each transaction.
    async fn scan_for_cleaning(&self) -> Result<LogScan, LogError> {
        let mut scan = LogScan::default();
        let mut open: HashMap<i64, OpenTxn> = HashMap::new();
        let mut offset = self.log_start_offset();
        let end = self.next_offset();
        while offset < end {
            let read = self.read(offset, MAP_READ_BYTES).await?.records;
            let Some(next) = batch::iter_batches(&read).map(|(_, h)| h.last_offset() + 1).last() else {
                // A gap up to the next segment: continue there.
                match self.next_segment_base(offset) {
                    Some(next) => {
                        offset = next;
                        continue;
                    }
                    None => break,
                }
            };
            for (pos, h) in batch::iter_batches(&read) {
                if let Some(kind) = h.control_type() {
                    if kind == ControlType::Abort {
                        scan.aborts.insert(h.base_offset());
                    }
                    let Some(txn) = open.remove(&h.producer_id()) else {
                        // Its records are gone already (or it had none here).
                        scan.marker_records.insert(h.base_offset(), Vec::new());
                        continue;
                    };
                    let mut records = Vec::new();
                    match kind {
                        ControlType::Abort => scan.aborted_batches.extend(txn.batches),
                        ControlType::Commit => {
                            for (key, offset, tombstone) in txn.records {
                                scan.counts(key, offset);
                                records.push((offset, tombstone));
                            }
                        }
                    }
                    scan.marker_records.insert(h.base_offset(), records);
                    continue;
                }
                if h.is_control() {
                    continue;
                }
                let total = h.total_bytes().unwrap_or(0);
                let mut bytes = read.slice(pos..pos + total);
                let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| LogError::Corrupt(e.to_string()))?;
                if h.is_transactional() {
                    let txn = open
                        .entry(h.producer_id())
                        .or_insert_with(|| OpenTxn { first: h.base_offset(), ..OpenTxn::default() });
                    txn.batches.push(h.base_offset());
                    txn.records.extend(
                        set.records.into_iter().map(|r| (r.key, r.offset, r.value.is_none().then_some(r.timestamp))),
                    );
                    continue;
                }
                for r in set.records {
                    scan.counts(r.key, r.offset);
                }
            }
            offset = next;
        }
        scan.first_unstable = open.values().map(|t| t.first).min();
        Ok(scan)
    }
    /// Swaps segment `base` for `content` (same offsets, fewer records), durably.
    async fn replace_segment(&self, base: Offset, content: Bytes) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let log_path = segment::log_path(&dir, base);
        let cleaned_path = log_path.with_extension("log.cleaned");
        let to_write = content.clone();
        let path = cleaned_path.clone();
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&path)?;
                std::io::Write::write_all(&mut f, &to_write)?;
                f.sync_all()
            })
            .await?;
        // Old index files first: a crash from here on rescans whichever segment is there.
        remove_index_files(&dir, base).await;
        let dir2 = dir.clone();
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                std::fs::File::open(&dir2)?.sync_all()?;
                std::fs::rename(&cleaned_path, &log_path)?;
                std::fs::File::open(&dir2)?.sync_all()
            })
            .await?;
        // The cached descriptor is the old file's: the next read opens the new one.
        self.files.close(base).await;
        let interval = self.config.get().index_interval_bytes;
        let mut index = SegmentIndex::default();
        let mut since_index = interval;
        let mut next_offset = base;
        let mut max_timestamp = -1;
        for (pos, h) in batch::iter_batches(&content) {
            if since_index >= interval {
                index.add(relative(base, h.base_offset()), pos as u32, h.max_timestamp().max(max_timestamp));
                since_index = 0;
            }
            since_index += h.total_bytes().unwrap_or(0) as u64;
            next_offset = h.last_offset() + 1;
            max_timestamp = max_timestamp.max(h.max_timestamp());
        }
        let size = content.len() as u64;
        {
            let mut state = self.state.borrow_mut();
            let Some(s) = state.find_mut(base) else { return Ok(()) };
            s.size = size;
            s.written = size;
            s.synced = size;
            s.pending_pos = align_down(size);
            s.pending = [Bytes::copy_from_slice(&content[s.pending_pos as usize..])].into();
            s.index = index;
            s.bytes_since_index = since_index;
            s.next_offset = s.next_offset.max(next_offset);
            s.max_timestamp = max_timestamp;
            s.index_files_written = false;
            let end = s.next_offset;
            // Fetches at the tail must not serve the records just removed.
            state.tail.forget_below(end);
        }
        self.write_index_files(base).await?;
        debug!(dir = %dir.display(), base, bytes = size, "segment replaced by its compacted copy");
        Ok(())
    }
}

/// One segment with superseded records, expired tombstones, aborted transactions and
/// markers past their delete horizon removed (and markers that became spent stamped).
fn clean_segment(segment: &[u8], cleaning: &Cleaning<'_>) -> Result<Cleaned, LogError> {
    let mut out = BytesMut::with_capacity(segment.len());
    let mut cleaned =
        Cleaned { content: Bytes::new(), records_removed: 0, markers_removed: 0, changed: false, next_horizon: None };
    for (pos, h) in batch::iter_batches(segment) {
        let total = h.total_bytes().unwrap_or(0);
        let raw = &segment[pos..pos + total];
        if h.is_control() {
            if !cleaning.spent_markers.contains(&h.base_offset()) {
                out.extend_from_slice(raw);
                continue;
            }
            let horizon = match h.delete_horizon() {
                Some(horizon) if horizon <= cleaning.now => {
                    cleaned.markers_removed += 1;
                    cleaned.changed = true;
                    continue;
                }
                Some(horizon) => {
                    out.extend_from_slice(raw);
                    horizon
                }
                None => {
                    let horizon = cleaning.now.saturating_add(cleaning.delete_retention_ms);
                    let start = out.len();
                    out.extend_from_slice(raw);
                    batch::stamp_delete_horizon(&mut out[start..], horizon);
                    cleaned.changed = true;
                    horizon
                }
            };
            cleaned.next_horizon = cleaned.next_horizon.into_iter().chain([horizon]).min();
            continue;
        }
        if h.is_transactional() && cleaning.aborted_batches.contains(&h.base_offset()) {
            cleaned.records_removed += h.record_count().max(0) as usize;
            cleaned.changed = true;
            continue;
        }
        let compression = match h.compression() {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        };
        let mut bytes = Bytes::copy_from_slice(raw);
        let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| LogError::Corrupt(e.to_string()))?;
        let count = set.records.len();
        let mut kept: Vec<_> = set
            .records
            .into_iter()
            .filter(|r| {
                let newest = r.key.as_ref().is_some_and(|k| cleaning.latest.get(k) == Some(&r.offset));
                let tombstone_expired =
                    r.value.is_none() && cleaning.now.saturating_sub(r.timestamp) >= cleaning.delete_retention_ms;
                newest && !tombstone_expired
            })
            .collect();
        cleaned.records_removed += count - kept.len();
        if kept.len() == count {
            out.extend_from_slice(raw);
            continue;
        }
        cleaned.changed = true;
        if kept.is_empty() {
            continue;
        }
        // Sequences that keep one batch over the gaps, with the batch's first sequence as
        // before for idempotent batches and -1 otherwise.
        let first = kept[0].offset;
        for r in &mut kept {
            let delta = (r.offset - first) as i32;
            r.sequence = if h.producer_id() >= 0 { h.base_sequence().wrapping_add(delta) } else { delta - 1 };
        }
        RecordBatchEncoder::encode(&mut out, &kept, &RecordEncodeOptions { version: 2, compression })
            .map_err(|e| LogError::Corrupt(format!("cannot re-encode a compacted batch: {e}")))?;
    }
    cleaned.content = out.freeze();
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Log;
    use kafka_protocol::records::{Record, TimestampType};

    use crate::storage::log::tests::config;

    /// Runs a test's body on a glommio executor of its own.
    fn on_executor<F: std::future::Future<Output = ()> + 'static>(body: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .spawn(body)
            .expect("executor")
            .join()
            .expect("join");
    }

    /// A batch of keyed records (`None` value: tombstone) with 100-byte values.
    fn keyed(keys: &[(u32, bool)], timestamp: i64) -> BytesMut {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, (k, alive))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp,
                key: Some(Bytes::from(format!("key-{k}"))),
                value: alive.then(|| Bytes::from(vec![b'v'; 100])),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions { version: 2, compression: Compression::None },
        )
        .expect("encode");
        buf
    }

    /// Every (offset, key, has value) in the log, read from the start.
    async fn contents(log: &Log) -> Vec<(Offset, String, bool)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.next_offset() {
            let mut bytes = log.read(offset, 1 << 20).await.expect("read").records;
            if bytes.is_empty() {
                break;
            }
            while !bytes.is_empty() {
                let set = RecordBatchDecoder::decode(&mut bytes).expect("decode");
                for r in set.records {
                    let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).to_string();
                    out.push((r.offset, key, r.value.is_some()));
                    offset = r.offset + 1;
                }
            }
        }
        out
    }

    /// `keyed`, as a transactional batch of `producer_id`.
    fn transactional(keys: &[(u32, bool)], timestamp: i64, producer_id: i64) -> BytesMut {
        let mut b = keyed(keys, timestamp);
        b[43..51].copy_from_slice(&producer_id.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[22] |= 0x10;
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn marker(producer_id: i64, kind: batch::ControlType) -> BytesMut {
        batch::control_batch(producer_id, 0, 0, kind, 1000).expect("marker")
    }

    /// Enough records of other keys (each twice) to seal the segments before them.
    fn fill(log: &Log) {
        for _ in 0..2 {
            for k in 100..400u32 {
                log.append(&keyed(&[(k, true)], 1000), None, 0);
            }
        }
    }

    fn offsets(records: &[(Offset, String, bool)], below: Offset) -> Vec<Offset> {
        records.iter().map(|r| r.0).filter(|o| *o < below).collect()
    }

    #[test]
    fn aborted_records_go_committed_ones_count_and_spent_markers_go_after_their_horizon() {
        on_executor(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = Log::open(dir.path(), config(), true).await.expect("open");
            log.append(&keyed(&[(1, true)], 1000), None, 0); // 0
            log.append(&transactional(&[(1, true)], 1000, 7), None, 0); // 1: aborted
            log.append(&marker(7, batch::ControlType::Abort), None, 0); // 2
            log.append(&transactional(&[(2, true)], 1000, 8), None, 0); // 3: committed, latest
            log.append(&marker(8, batch::ControlType::Commit), None, 0); // 4
            log.append(&transactional(&[(3, true)], 1000, 9), None, 0); // 5: committed, superseded
            log.append(&marker(9, batch::ControlType::Commit), None, 0); // 6
            log.append(&keyed(&[(3, true)], 1000), None, 0); // 7
            fill(&log);
            log.sync_to(log.next_offset() - 1).await.expect("sync");

            let stats = log.compact(100_000, 1_000_000, 0).await.expect("compact");
            let after = contents(&log).await;
            assert_eq!(
                offsets(&after, 8),
                vec![0, 2, 3, 4, 6, 7],
                "the aborted record and the superseded committed one go; every marker stays for now"
            );
            assert!(stats.records_removed >= 2 + 600 - 300, "{stats:?}");
            assert_eq!(stats.markers_removed, 0);
            let horizons: Vec<(Offset, Option<i64>)> = {
                let read = log.read(0, 1 << 20).await.expect("read").records;
                batch::iter_batches(&read)
                    .filter(|(_, h)| h.is_control())
                    .map(|(_, h)| (h.base_offset(), h.delete_horizon()))
                    .collect()
            };
            assert_eq!(
                horizons,
                vec![(2, Some(1_100_000)), (4, None), (6, Some(1_100_000))],
                "markers with nothing left of their transaction get a delete horizon"
            );
            assert!(!log.compaction_due(1_099_999));
            assert!(log.compaction_due(1_100_000), "a horizon passing makes a pass due");

            let stats = log.compact(1_100_000, 1_000_000, 0).await.expect("compact");
            assert_eq!(stats.markers_removed, 2, "{stats:?}");
            assert_eq!(offsets(&contents(&log).await, 8), vec![0, 3, 4, 7]);
            assert!(!log.compaction_due(2_000_000));
            log.close().await.expect("close");
        });
    }

    #[test]
    fn nothing_from_an_open_transaction_on_is_cleaned() {
        on_executor(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = Log::open(dir.path(), config(), true).await.expect("open");
            log.append(&keyed(&[(1, true)], 1000), None, 0); // 0
            log.append(&keyed(&[(1, true)], 1000), None, 0); // 1
            log.append(&transactional(&[(1, true)], 1000, 7), None, 0); // 2: open
            fill(&log);
            log.sync_to(log.next_offset() - 1).await.expect("sync");
            let before = contents(&log).await;
            let stats = log.compact(100_000, 1_000_000, 0).await.expect("compact");
            assert_eq!(stats, CompactionStats::default(), "the first segment holds an open transaction");
            assert_eq!(contents(&log).await, before);
            // Committed: now everything stable is cleaned, the committed value counting.
            log.append(&marker(7, batch::ControlType::Commit), None, 0);
            fill(&log);
            log.sync_to(log.next_offset() - 1).await.expect("sync");
            log.compact(100_000, 1_000_000, 0).await.expect("compact");
            assert_eq!(offsets(&contents(&log).await, 3), vec![2]);
            log.close().await.expect("close");
        });
    }

    #[test]
    fn min_compaction_lag_keeps_young_segments_as_written() {
        on_executor(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = Log::open(dir.path(), config(), true).await.expect("open");
            // Old records (time 1000), then young ones (time 9000) of the same keys.
            for ts in [1000, 9000] {
                for _ in 0..5 {
                    for k in 0..20u32 {
                        log.append(&keyed(&[(k, true)], ts), None, 0);
                    }
                }
            }
            for k in 100..250u32 {
                log.append(&keyed(&[(k, true)], 9500), None, 0);
            }
            log.sync_to(log.next_offset() - 1).await.expect("sync");
            let before = contents(&log).await;
            // At 10_000 with a 5 s lag only segments whose records are all from 5000 or
            // earlier may be rewritten: every young record stays.
            log.compact(10_000, 1_000_000, 5_000).await.expect("compact");
            let after = contents(&log).await;
            let young = |rs: &[(Offset, String, bool)]| rs.iter().filter(|r| r.0 >= 100).count();
            assert_eq!(young(&after), young(&before), "records younger than the lag stay");
            assert!(after.len() < before.len(), "older, superseded records went");
            assert!(log.compaction_due(0), "the young segments wait for a later pass");
            // Later, they go too.
            log.compact(100_000, 1_000_000, 5_000).await.expect("compact");
            assert!(!log.compaction_due(0));
            log.close().await.expect("close");
        });
    }

    #[test]
    fn keeps_the_latest_record_per_key_and_survives_reopen() {
        on_executor(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = Log::open(dir.path(), config(), true).await.expect("open");
            // 20 keys written 10 times over (several segments), then key 3 deleted.
            for round in 0..10 {
                for k in 0..20u32 {
                    log.append(&keyed(&[(k, true)], 1000 + round), None, 0);
                }
            }
            log.append(&keyed(&[(3, false), (4, true)], 5000), None, 0);
            // Fill past a segment so the tombstone is sealed too.
            for k in 100..250u32 {
                log.append(&keyed(&[(k, true)], 6000), None, 0);
            }
            log.sync_to(log.next_offset() - 1).await.expect("sync");
            let before = contents(&log).await;
            assert!(log.compaction_due(0));
            let stats = log.compact(10_000, 1_000_000, 0).await.expect("compact");
            assert!(stats.segments_rewritten > 0 && stats.records_removed >= 180, "{stats:?}");
            let after = contents(&log).await;
            // The latest value of every key, at its original offset; the tombstone kept.
            let mut expected: std::collections::BTreeMap<String, (Offset, bool)> = Default::default();
            for (o, k, v) in &before {
                expected.insert(k.clone(), (*o, *v));
            }
            let mut got: Vec<(Offset, String, bool)> = after.clone();
            got.sort();
            let mut want: Vec<(Offset, String, bool)> =
                expected.iter().map(|(k, (o, v))| (*o, k.clone(), *v)).collect();
            want.sort();
            assert_eq!(got, want);
            assert!(after.contains(&(
                before.iter().find(|r| r.1 == "key-3" && !r.2).expect("tombstone").0,
                "key-3".into(),
                false
            )));
            assert!(!log.compaction_due(0));
            // A read at an offset compacted away returns the next record.
            let gap = (0..log.next_offset()).find(|o| !after.iter().any(|r| r.0 == *o)).expect("a gap");
            let read = log.read(gap, 1).await.expect("read");
            assert!(!read.records.is_empty());
            log.close().await.expect("close");
            drop(log);
            // Unclean reopen: every segment rescanned, gaps and all.
            for e in std::fs::read_dir(dir.path()).expect("dir").flatten() {
                if e.path().extension().is_some_and(|x| x == "index" || x == "timeindex") {
                    std::fs::remove_file(e.path()).expect("rm");
                }
            }
            let log = Log::open(dir.path(), config(), false).await.expect("reopen");
            assert_eq!(contents(&log).await, after);
            // Later, expired tombstones go as well.
            for k in 300..450u32 {
                log.append(&keyed(&[(k, true)], 7000), None, 0);
            }
            log.sync_to(log.next_offset() - 1).await.expect("sync");
            log.compact(5000 + 1_000_000, 1_000_000, 0).await.expect("compact");
            assert!(!contents(&log).await.iter().any(|r| r.1 == "key-3"));
        });
    }
}
