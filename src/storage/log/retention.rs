//! Retention: the oldest whole segments go once they are older than `retention.ms` or the
//! log is larger than `retention.bytes` (Kafka's rules, `UnifiedLog.deleteOldSegments`):
//! - by time, a segment goes when its largest record timestamp is `retention.ms` old;
//! - by size, the oldest segments go while the log stays at or above `retention.bytes`
//!   without them;
//! - oldest first, stopping at the first segment that stays; never past the high
//!   watermark (a consumer or follower may still need what is not committed);
//! - the active segment too, when every record in it has expired: a new, empty one takes
//!   its place at the log end (an idle topic's data expires as well).
//!
//! The new log start offset is checkpointed durably (`log-start-offset`) before any file is
//! removed, so after a crash mid-deletion the next open finishes the job and never moves
//! the start back; a log left with no segment restarts empty at that offset. Removed
//! segments are renamed `*.deleted` first and unlinked `file.delete.delay.ms` later; a read
//! that found one before it went keeps its open file and finishes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::{remove_index_files, segment, Log, LogError, Segment};
use crate::types::{now_ms, Offset};

/// The log start offset's checkpoint file in a partition's directory.
pub const LOG_START_FILE: &str = "log-start-offset";

/// How much of a log to keep (negative: no limit), as a topic's configs say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `retention.ms`
    pub ms: i64,
    /// `retention.bytes`
    pub bytes: i64,
    /// `file.delete.delay.ms`: how long a removed segment's files stay as `*.deleted`.
    pub file_delete_delay_ms: u64,
}

/// What retention needs to know of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStat {
    pub base_offset: Offset,
    /// One past its last offset.
    pub next_offset: Offset,
    pub size: u64,
    /// Largest record timestamp (-1: none).
    pub max_timestamp: i64,
    /// Whether all of it is written and synced (only such segments may go).
    pub durable: bool,
}

/// Why segments go (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Time,
    Size,
}

/// How many of the oldest `segments` (the last one is the active segment) retention
/// removes now, and why. `upper` is the high watermark: nothing at or past it goes.
pub fn expired(segments: &[SegmentStat], policy: &Retention, now: i64, upper: Offset) -> (usize, Option<Reason>) {
    let may_go = |s: &SegmentStat| s.durable && s.size > 0 && s.next_offset <= upper;
    let mut by_time = 0;
    if policy.ms >= 0 {
        by_time = segments
            .iter()
            .take_while(|s| may_go(s) && s.max_timestamp >= 0 && now.saturating_sub(s.max_timestamp) > policy.ms)
            .count();
    }
    let mut by_size = 0;
    if policy.bytes >= 0 {
        let total: u64 = segments.iter().map(|s| s.size).sum();
        let mut excess = total.saturating_sub(policy.bytes as u64);
        // Kafka never removes the active segment for size.
        let sealed = &segments[..segments.len().saturating_sub(1)];
        for s in sealed {
            if !may_go(s) || s.size > excess {
                break;
            }
            excess -= s.size;
            by_size += 1;
        }
    }
    if by_time == 0 && by_size == 0 {
        (0, None)
    } else if by_time >= by_size {
        (by_time, Some(Reason::Time))
    } else {
        (by_size, Some(Reason::Size))
    }
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub segments: usize,
    pub bytes: u64,
    pub log_start_offset: Offset,
}

impl Log {
    /// Removes what `policy` no longer keeps below `high_watermark`; returns what went.
    pub async fn apply_retention(
        &self,
        policy: &Retention,
        now: i64,
        high_watermark: Offset,
    ) -> Result<Removed, LogError> {
        self.check_healthy()?;
        if expired(&self.segment_stats(), policy, now, high_watermark).0 == 0 {
            return Ok(Removed::default());
        }
        // The write permit: nothing is being written out while segments go. Appends still
        // come (into memory), so the choice is made again under it.
        let _write = self.io.acquire_permit(1).await.map_err(super::gio)?;
        let stats = self.segment_stats();
        let (count, reason) = expired(&stats, policy, now, high_watermark);
        if count == 0 {
            return Ok(Removed::default());
        }
        let new_start = stats.get(count).map_or(stats[count - 1].next_offset, |s| s.base_offset);
        let removed = self.move_start_locked(new_start, policy.file_delete_delay_ms).await?;
        let by = match reason {
            Some(Reason::Time) => "retention.ms",
            Some(Reason::Size) | None => "retention.bytes",
        };
        info!(
            dir = %self.dir.display(),
            by,
            segments = removed.segments,
            bytes = removed.bytes,
            log_start_offset = new_start,
            "retention removed segments"
        );
        Ok(removed)
    }

    /// Moves the log start up to `offset` (DeleteRecords; at most the log end): checkpointed,
    /// then the segments wholly below it go. Returns what went; nothing when the start is
    /// already there.
    pub async fn advance_start(&self, offset: Offset, file_delete_delay_ms: u64) -> Result<Removed, LogError> {
        self.check_healthy()?;
        let _write = self.io.acquire_permit(1).await.map_err(super::gio)?;
        let offset = offset.min(self.next_offset());
        if offset <= self.log_start_offset() {
            return Ok(Removed { log_start_offset: self.log_start_offset(), ..Removed::default() });
        }
        let removed = self.move_start_locked(offset, file_delete_delay_ms).await?;
        info!(dir = %self.dir.display(), segments = removed.segments, log_start_offset = offset, "log start moved");
        Ok(removed)
    }

    /// The start moves to `new_start` (at most the log end; the caller holds the write
    /// permit): the active segment is rolled first if all of it is below, the start is
    /// checkpointed, then the segments wholly below it are retired.
    async fn move_start_locked(&self, new_start: Offset, delay_ms: u64) -> Result<Removed, LogError> {
        {
            let mut state = self.state.borrow_mut();
            let end = state.next_offset;
            let active = state.active();
            if active.base_offset < new_start && active.next_offset <= new_start && active.size > 0 {
                // In the same step as the check: appends from here on go to a new segment.
                active.sealed = true;
                state.segments.push(Segment::new_empty(end, now_ms()));
            }
        }
        store_log_start(&self.dir, new_start).await?;
        let removed: Vec<Segment> = {
            let mut state = self.state.borrow_mut();
            state.log_start_offset = new_start;
            let below = state.segments.iter().take_while(|s| s.base_offset < new_start && s.next_offset <= new_start);
            let count = below.count().min(state.segments.len() - 1);
            state.segments.drain(..count).collect()
        };
        self.cleaned_to.set(self.cleaned_to.get().max(new_start));
        let bytes = removed.iter().map(|s| s.size).sum();
        let bases: Vec<Offset> = removed.iter().map(|s| s.base_offset).collect();
        for s in removed {
            self.files.close(s.base_offset).await;
        }
        retire_segments(&self.dir, &bases, delay_ms).await;
        Ok(Removed { segments: bases.len(), bytes, log_start_offset: new_start })
    }

    /// Drops the whole log and starts it empty at `offset` (a follower whose fetch offset is
    /// below its leader's log start: Kafka's "truncate fully and start at"). The start is
    /// checkpointed first, so a crash leaves either the old log or the new start.
    pub async fn restart_at(&self, offset: Offset) -> Result<(), LogError> {
        self.flush(true).await?;
        let _write = self.io.acquire_permit(1).await.map_err(super::gio)?;
        let _sync = self.sync_io.acquire_permit(1).await.map_err(super::gio)?;
        self.check_healthy()?;
        store_log_start(&self.dir, offset).await?;
        let removed: Vec<Segment> = {
            let mut state = self.state.borrow_mut();
            state.tail.clear();
            state.next_offset = offset;
            state.log_start_offset = offset;
            std::mem::replace(&mut state.segments, vec![Segment::new_empty(offset, now_ms())])
        };
        self.written_offset.set(offset);
        self.synced_offset.set(offset);
        self.cleaned_to.set(offset);
        let bases: Vec<Offset> = removed.iter().map(|s| s.base_offset).collect();
        for s in removed {
            self.files.close(s.base_offset).await;
        }
        retire_segments(&self.dir, &bases, 0).await;
        self.store_epochs(super::LeaderEpochs::default()).await?;
        info!(dir = %self.dir.display(), offset, "log restarted empty at the leader's log start");
        Ok(())
    }

    fn segment_stats(&self) -> Vec<SegmentStat> {
        let state = self.state.borrow();
        state
            .segments
            .iter()
            .map(|s| SegmentStat {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size: s.size,
                // Records without timestamps (-1): the segment's age, as Kafka falls back to the
                // file's modification time.
                max_timestamp: if s.max_timestamp >= 0 { s.max_timestamp } else { s.created_ms },
                durable: s.written >= s.size && s.synced >= s.size,
            })
            .collect()
    }
}

/// Renames the segments' files to `*.deleted` (so a restart never takes them for log) and
/// unlinks them after `delay_ms`, in the background.
async fn retire_segments(dir: &Path, bases: &[Offset], delay_ms: u64) {
    for &base in bases {
        remove_index_files(dir, base).await;
        super::remove_txn_index(dir, base).await;
    }
    let paths: Vec<PathBuf> = bases.iter().map(|b| segment::log_path(dir, *b)).collect();
    let renamed = glommio::executor()
        .spawn_blocking({
            let paths = paths.clone();
            move || -> Vec<PathBuf> {
                paths
                    .iter()
                    .filter_map(|p| {
                        let to = deleted_path(p);
                        std::fs::rename(p, &to).ok().map(|_| to)
                    })
                    .collect()
            }
        })
        .await;
    let unlink = move || {
        for p in &renamed {
            if let Err(e) = std::fs::remove_file(p) {
                warn!(path = %p.display(), error = %e, "could not remove a retired segment file");
            }
        }
    };
    if delay_ms == 0 {
        glommio::executor().spawn_blocking(unlink).await;
    } else {
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
            glommio::executor().spawn_blocking(unlink).await;
        })
        .detach();
    }
}

fn deleted_path(p: &Path) -> PathBuf {
    let mut name = p.as_os_str().to_owned();
    name.push(".deleted");
    PathBuf::from(name)
}

/// Files a previous run retired but did not get to unlink. Blocking.
pub fn remove_leftover_deleted(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|n| n.ends_with(".deleted")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The checkpointed log start offset (`None`: never moved).
pub fn load_log_start(dir: &Path) -> std::io::Result<Option<Offset>> {
    match std::fs::read_to_string(dir.join(LOG_START_FILE)) {
        Ok(text) => text.trim().parse::<Offset>().map(Some).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{LOG_START_FILE} in {} is damaged", dir.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checkpoints the log start offset durably.
pub async fn store_log_start(dir: &Path, offset: Offset) -> Result<(), LogError> {
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || {
            crate::storage::replace_file_durably(&dir, LOG_START_FILE, format!("{offset}\n").as_bytes())
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::config;
    use super::*;
    use crate::protocol::batch::{self, BatchHeader};
    use crate::test_support::run_on_executor as run;

    /// `n` synced batches of three 200-byte records.
    async fn append_n(log: &Log, n: usize) {
        super::super::tests::append_n(log, n, 3).await;
        log.sync_to(log.next_offset() - 1).await.expect("sync");
    }

    fn first_offset(records: &bytes::Bytes) -> Option<Offset> {
        batch::iter_batches(records).next().map(|(_, h)| BatchHeader::base_offset(&h))
    }

    #[test]
    fn size_retention_moves_the_start_durably_and_reads_follow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, config(), false).await.expect("open");
            append_n(&log, 100).await; // ~70 KiB in 16 KiB segments
            let before = log.segment_stats();
            let total: u64 = before.iter().map(|s| s.size).sum();
            let keep = Retention { ms: -1, bytes: (total / 2) as i64, file_delete_delay_ms: 0 };
            let removed = log.apply_retention(&keep, now_ms(), log.next_offset()).await.expect("retention");
            assert!(removed.segments >= 1, "{removed:?}");
            let after = log.segment_stats();
            assert_eq!(after.len(), before.len() - removed.segments);
            assert_eq!(log.log_start_offset(), after[0].base_offset);
            assert!(after.iter().map(|s| s.size).sum::<u64>() >= total / 2);
            assert!(matches!(log.read(0, 100).await, Err(LogError::OffsetOutOfRange { .. })));
            let start = log.log_start_offset();
            assert_eq!(first_offset(&log.read(start, 100).await.expect("read").records), Some(start));
            assert!(!segment::log_path(&path, 0).exists(), "the oldest segment's file is gone");
            // Nothing moves below the high watermark: a limit of 0 removes nothing past it.
            let none = log.apply_retention(&Retention { bytes: 0, ..keep }, now_ms(), start).await.expect("noop");
            assert_eq!(none.segments, 0);
            log.close().await.expect("close");
            let log = Log::open(&path, config(), false).await.expect("reopen");
            assert_eq!(log.log_start_offset(), start);
            assert_eq!(log.next_offset(), 300);
        });
    }

    #[test]
    fn an_expired_log_keeps_its_end_through_restarts_and_crashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, config(), false).await.expect("open");
            append_n(&log, 30).await;
            let all = Retention { ms: 0, bytes: -1, file_delete_delay_ms: 0 };
            // Timestamps of make_batch are in the past of this `now`.
            let removed = log.apply_retention(&all, i64::MAX / 2, log.next_offset()).await.expect("retention");
            assert!(removed.segments >= 2, "{removed:?}");
            assert_eq!((log.log_start_offset(), log.next_offset()), (90, 90));
            assert!(log.read(90, 100).await.expect("at end").records.is_empty());
            // No segment file is left to say where the log ends: after a crash (no clean
            // close) the checkpoint does.
            drop(log);
            let log = Log::open(&path, config(), false).await.expect("reopen");
            assert_eq!((log.log_start_offset(), log.next_offset()), (90, 90));
            append_n(&log, 1).await;
            assert_eq!(first_offset(&log.read(90, 100).await.expect("read").records), Some(90));
            log.close().await.expect("close");
        });
    }

    #[test]
    fn a_crash_between_the_checkpoint_and_the_removal_is_finished_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, config(), false).await.expect("open");
            append_n(&log, 100).await;
            let bases: Vec<Offset> = log.segment_stats().iter().map(|s| s.base_offset).collect();
            log.close().await.expect("close");
            // The checkpoint says the start moved to the third segment; its files are all there.
            store_log_start(&path, bases[2]).await.expect("checkpoint");
            std::fs::write(path.join("00000000000000000000.log.deleted"), b"left over").expect("leftover");
            let log = Log::open(&path, config(), false).await.expect("reopen");
            assert_eq!(log.log_start_offset(), bases[2]);
            assert_eq!(log.segment_stats()[0].base_offset, bases[2]);
            assert!(!segment::log_path(&path, bases[0]).exists() && !segment::log_path(&path, bases[1]).exists());
            assert!(!path.join("00000000000000000000.log.deleted").exists());
            assert_eq!(log.next_offset(), 300);
            log.close().await.expect("close");
        });
    }

    fn seg(base: Offset, next: Offset, size: u64, ts: i64) -> SegmentStat {
        SegmentStat { base_offset: base, next_offset: next, size, max_timestamp: ts, durable: true }
    }

    fn policy(ms: i64, bytes: i64) -> Retention {
        Retention { ms, bytes, file_delete_delay_ms: 0 }
    }

    #[test]
    fn by_time_the_oldest_expired_segments_go_in_order() {
        let segs = [seg(0, 10, 100, 1_000), seg(10, 20, 100, 5_000), seg(20, 30, 100, 2_000), seg(30, 35, 50, 9_000)];
        // 1_000 and 2_000 are expired at 7_000 with 4_500 ms, but 5_000 is not: stop there.
        assert_eq!(expired(&segs, &policy(4_500, -1), 7_000, 100), (1, Some(Reason::Time)));
        assert_eq!(expired(&segs, &policy(1_000, -1), 7_000, 100), (3, Some(Reason::Time)));
        assert_eq!(expired(&segs, &policy(-1, -1), 100_000, 100), (0, None), "no limit");
        // Everything expired: the active segment goes too.
        assert_eq!(expired(&segs, &policy(10, -1), 100_000, 100), (4, Some(Reason::Time)));
        // Never at or past the high watermark.
        assert_eq!(expired(&segs, &policy(10, -1), 100_000, 25), (2, Some(Reason::Time)));
    }

    #[test]
    fn by_size_the_log_stays_at_or_above_the_limit_and_the_active_segment_stays() {
        let segs = [seg(0, 10, 100, 1), seg(10, 20, 100, 1), seg(20, 30, 100, 1), seg(30, 35, 50, 1)];
        assert_eq!(expired(&segs, &policy(-1, 350), 2, 100), (0, None));
        assert_eq!(expired(&segs, &policy(-1, 250), 2, 100), (1, Some(Reason::Size)));
        assert_eq!(expired(&segs, &policy(-1, 149), 2, 100), (2, Some(Reason::Size)), "150 bytes stay");
        assert_eq!(expired(&segs, &policy(-1, 50), 2, 100), (3, Some(Reason::Size)));
        assert_eq!(expired(&segs, &policy(-1, 0), 2, 100), (3, Some(Reason::Size)), "never the active one");
    }

    #[test]
    fn both_limits_take_the_larger_cut_and_unsynced_segments_stay() {
        let mut segs =
            [seg(0, 10, 100, 1_000), seg(10, 20, 100, 1_000), seg(20, 30, 100, 9_000), seg(30, 35, 50, 9_500)];
        assert_eq!(expired(&segs, &policy(5_000, 150), 10_000, 100), (2, Some(Reason::Time)));
        assert_eq!(expired(&segs, &policy(5_000, 50), 10_000, 100), (3, Some(Reason::Size)));
        segs[1].durable = false;
        assert_eq!(expired(&segs, &policy(5_000, 50), 10_000, 100), (1, Some(Reason::Time)));
        let empty = [seg(0, 0, 0, -1)];
        assert_eq!(expired(&empty, &policy(0, 0), 10_000, 100), (0, None), "an empty log keeps its segment");
    }
}
