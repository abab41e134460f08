//! Log compaction (`cleanup.policy=compact`): sealed segments are rewritten keeping, for
//! each key, only its latest record; a tombstone (null value) stays for
//! `delete.retention.ms` and then goes too. Offsets are kept, so a compacted segment has
//! gaps; reads and recovery step over them. The active segment is never rewritten.
//!
//! Crash safety: the cleaned segment is written beside the old one and synced, the old
//! segment's index files are removed, then the cleaned file is renamed over the old one
//! (and the directory synced). A crash at any point leaves either the old or the new
//! segment, each complete; one without index files is rescanned at start.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};
use tracing::{debug, info};

use super::{gio, remove_index_files, LogError};
use crate::protocol::batch;
use crate::storage::index::{relative, SegmentIndex};
use crate::storage::segment::{self, align_down};
use crate::types::Offset;

/// Bytes read at once while building the key map.
const MAP_READ_BYTES: usize = 1 << 20;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_rewritten: usize,
    pub records_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl super::Log {
    /// Whether sealed data was added since the last pass (worth compacting again).
    pub fn compaction_due(&self) -> bool {
        let state = self.state.borrow();
        let sealed_end = state.segments.iter().rev().nth(1).map(|s| s.next_offset).unwrap_or(0);
        sealed_end > self.cleaned_to.get()
    }

    /// Compacts the sealed, fully synced segments, oldest first, up to the first one with a
    /// record younger than `min_lag_ms` (`min.compaction.lag.ms`: a record stays as written
    /// at least that long). `now` and `delete_retention_ms` decide which tombstones have
    /// been kept long enough (by their record timestamps).
    pub async fn compact(
        &self,
        now: i64,
        delete_retention_ms: i64,
        min_lag_ms: i64,
    ) -> Result<CompactionStats, LogError> {
        self.check_healthy()?;
        let latest = self.latest_offsets_by_key().await?;
        let _permit = self.io.acquire_permit(1).await.map_err(gio)?;
        let candidates: Vec<(Offset, u64)> = {
            let state = self.state.borrow();
            let sealed = &state.segments[..state.segments.len() - 1];
            sealed
                .iter()
                .take_while(|s| s.synced == s.size && now.saturating_sub(s.max_timestamp) >= min_lag_ms)
                .map(|s| (s.base_offset, s.size))
                .collect()
        };
        let mut stats = CompactionStats::default();
        let mut cleaned_to = self.cleaned_to.get();
        for (base, size) in candidates {
            let old = self.read_range(base, 0, size).await?;
            let (cleaned, removed) = clean_segment(&old, &latest, now, delete_retention_ms)?;
            cleaned_to = cleaned_to.max(self.state.borrow().find(base).map(|s| s.next_offset).unwrap_or(0));
            if removed == 0 {
                continue;
            }
            self.replace_segment(base, cleaned.clone()).await?;
            stats.segments_rewritten += 1;
            stats.records_removed += removed;
            stats.bytes_before += size;
            stats.bytes_after += cleaned.len() as u64;
        }
        self.cleaned_to.set(cleaned_to);
        if stats.segments_rewritten > 0 {
            info!(dir = %self.dir.display(), ?stats, "log compacted");
        }
        Ok(stats)
    }

    /// The offset of the latest record of every key in the log.
    async fn latest_offsets_by_key(&self) -> Result<HashMap<Bytes, Offset>, LogError> {
        let mut latest = HashMap::new();
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
            let mut bytes = read;
            while !bytes.is_empty() {
                let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| LogError::Corrupt(e.to_string()))?;
                // Transactional records (and markers) never supersede anything: an aborted
                // one must not hide the value before it (see `clean_segment`).
                for r in set.records.into_iter().filter(|r| !r.transactional) {
                    if let Some(key) = r.key {
                        latest.insert(key, r.offset);
                    }
                }
            }
            offset = next;
        }
        Ok(latest)
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
        }
        self.write_index_files(base).await?;
        debug!(dir = %dir.display(), base, bytes = size, "segment replaced by its compacted copy");
        Ok(())
    }
}

/// The batches of one segment with superseded records (and expired tombstones) removed;
/// returns the new content and how many records went.
fn clean_segment(
    segment: &[u8],
    latest: &HashMap<Bytes, Offset>,
    now: i64,
    delete_retention_ms: i64,
) -> Result<(Bytes, usize), LogError> {
    let mut out = BytesMut::with_capacity(segment.len());
    let mut removed = 0;
    for (pos, h) in batch::iter_batches(segment) {
        let total = h.total_bytes().unwrap_or(0);
        let raw = &segment[pos..pos + total];
        if h.is_transactional() {
            // Transactional batches and their markers stay whole: the partition's open and
            // aborted transactions, read_committed fetches and the group coordinator's
            // replay of transactional offsets depend on them. (Kafka's cleaner removes
            // aborted records and, after `delete.retention.ms`, markers; Weir does not yet.)
            out.extend_from_slice(raw);
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
                let newest = r.key.as_ref().is_some_and(|k| latest.get(k) == Some(&r.offset));
                let tombstone_expired = r.value.is_none() && now.saturating_sub(r.timestamp) >= delete_retention_ms;
                r.control || (newest && !tombstone_expired)
            })
            .collect();
        removed += count - kept.len();
        if kept.len() == count {
            out.extend_from_slice(raw);
            continue;
        }
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
    Ok((out.freeze(), removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Log;
    use kafka_protocol::records::{Record, TimestampType};

    use crate::storage::log::tests::config;

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

    /// `keyed`, as a transactional batch of producer 7.
    fn transactional(keys: &[(u32, bool)], timestamp: i64) -> BytesMut {
        let mut b = keyed(keys, timestamp);
        b[43..51].copy_from_slice(&7i64.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[22] |= 0x10;
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn transactional_batches_and_markers_stay_and_supersede_nothing() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .spawn(|| async {
                let dir = tempfile::tempdir().expect("tempdir");
                let log = Log::open(dir.path(), config(), true).await.expect("open");
                log.append(keyed(&[(1, true)], 1000), None, 0);
                log.append(transactional(&[(1, true)], 1000), None, 0);
                let marker = batch::control_batch(7, 0, 0, batch::ControlType::Abort, 1000).expect("marker");
                log.append(marker, None, 0);
                // Enough later records of other keys (each twice) to seal the segments above.
                for _ in 0..2 {
                    for k in 100..400u32 {
                        log.append(keyed(&[(k, true)], 1000), None, 0);
                    }
                }
                log.sync_to(log.next_offset() - 1).await.expect("sync");
                log.compact(100_000, 1_000_000, 0).await.expect("compact");
                let after = contents(&log).await;
                let first: Vec<_> = after.iter().take(3).map(|r| r.0).collect();
                assert_eq!(first, vec![0, 1, 2], "key-1's value, its aborted rewrite and the marker all stay");
                assert!(after.len() < 3 + 600, "the rest was compacted");
                log.close().await.expect("close");
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn min_compaction_lag_keeps_young_segments_as_written() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .spawn(|| async {
                let dir = tempfile::tempdir().expect("tempdir");
                let log = Log::open(dir.path(), config(), true).await.expect("open");
                // Old records (time 1000), then young ones (time 9000) of the same keys.
                for ts in [1000, 9000] {
                    for _ in 0..5 {
                        for k in 0..20u32 {
                            log.append(keyed(&[(k, true)], ts), None, 0);
                        }
                    }
                }
                for k in 100..250u32 {
                    log.append(keyed(&[(k, true)], 9500), None, 0);
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
                assert!(log.compaction_due(), "the young segments wait for a later pass");
                // Later, they go too.
                log.compact(100_000, 1_000_000, 5_000).await.expect("compact");
                assert!(!log.compaction_due());
                log.close().await.expect("close");
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn keeps_the_latest_record_per_key_and_survives_reopen() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .spawn(|| async {
                let dir = tempfile::tempdir().expect("tempdir");
                let log = Log::open(dir.path(), config(), true).await.expect("open");
                // 20 keys written 10 times over (several segments), then key 3 deleted.
                for round in 0..10 {
                    for k in 0..20u32 {
                        log.append(keyed(&[(k, true)], 1000 + round), None, 0);
                    }
                }
                log.append(keyed(&[(3, false), (4, true)], 5000), None, 0);
                // Fill past a segment so the tombstone is sealed too.
                for k in 100..250u32 {
                    log.append(keyed(&[(k, true)], 6000), None, 0);
                }
                log.sync_to(log.next_offset() - 1).await.expect("sync");
                let before = contents(&log).await;
                assert!(log.compaction_due());
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
                assert!(!log.compaction_due());
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
                    log.append(keyed(&[(k, true)], 7000), None, 0);
                }
                log.sync_to(log.next_offset() - 1).await.expect("sync");
                log.compact(5000 + 1_000_000, 1_000_000, 0).await.expect("compact");
                assert!(!contents(&log).await.iter().any(|r| r.1 == "key-3"));
            })
            .expect("executor")
            .join()
            .expect("join");
    }
}
