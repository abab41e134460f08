//! A partition's log: its segments, the tail cache, group-committed flushes, reads by offset
//! and by timestamp, and recovery at start.
//!
//! Runs on the owning data shard. State lives in a `RefCell` that is borrowed only in short
//! synchronous sections, never across an `.await`. Writes are serialised per partition by a
//! one-permit semaphore (`io`) and syncs by another (`sync_io`), so a partition's writes go
//! on while its `fdatasync` runs, and different partitions flush concurrently.
//!
//! Durability: `append` only stamps and buffers; `flush(sync)` writes buffered bytes in
//! segment order and, when asked, `fdatasync`s them. Concurrent `sync_to` callers coalesce:
//! whoever gets the permit syncs everything appended so far (group commit).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions};
use glommio::sync::Semaphore;
use thiserror::Error;
use tracing::{debug, info, warn};

use super::index::{relative, SegmentIndex};
use super::leader_epochs::{self, LeaderEpochs};
use super::open_files::{self, FileKey};
use super::segment::{self, align_down, align_up, Segment};
use crate::protocol::batch::{self, BatchHeader, BATCH_HEADER_BYTES};
use crate::types::{now_ms, Offset};

mod compaction;
pub mod retention;
pub use compaction::CompactionStats;

/// Largest single DMA write or recovery read.
const IO_CHUNK_BYTES: u64 = 1 << 20;
/// Largest aligned chunk appended batches are stamped in (a larger batch gets a chunk of its
/// own size); a partition's chunks grow to it with the data it takes (`stamped_run`).
const STAMP_CHUNK_BYTES: usize = 1 << 20;
/// Smallest read when searching for a batch on disk.
const SCAN_READ_BYTES: u64 = 64 * 1024;
/// Bounds of the space an active segment file reserves ahead of its writes. The floor a
/// log starts from is its `LogConfig::preallocate_min_bytes`, within these bounds (see
/// `weir.preallocate.budget.bytes`).
pub const PREALLOCATE_FLOOR_MIN_BYTES: u64 = 64 << 10;
pub const PREALLOCATE_FLOOR_MAX_BYTES: u64 = 1 << 20;
const PREALLOCATE_MAX_BYTES: u64 = 64 << 20;

/// Writes all of `buf` at `pos`; a short write is an error.
async fn write_whole(file: &DmaFile, buf: DmaBuffer, pos: u64) -> Result<(), LogError> {
    let want = buf.len();
    let wrote = file.write_at(buf, pos).await.map_err(gio)?;
    if wrote != want {
        return Err(LogError::Io(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {wrote} of {want} bytes"),
        )));
    }
    Ok(())
}

/// The length to reserve for a segment file that must hold `end` bytes: as much again as
/// it holds (so a small partition reserves little), within the bounds, and not past the
/// segment size. Writes inside the file's length are overwrites that io_uring completes
/// without blocking; a write that extends the file is handed to a kernel worker thread
/// (EAGAIN under IOCB_NOWAIT on ext4 and XFS), which costs two context switches per write.
fn preallocation_target(end: u64, segment_bytes: u64, floor: u64) -> u64 {
    let step = end.clamp(floor.clamp(PREALLOCATE_FLOOR_MIN_BYTES, PREALLOCATE_FLOOR_MAX_BYTES), PREALLOCATE_MAX_BYTES);
    (end + step).min(align_up(segment_bytes)).max(end)
}

/// What a write that can wait was missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Starved {
    /// Refused for lack of space (or quota), or cut short: nothing of it can be trusted to
    /// be on disk, and writing it again whole at the same place is safe.
    Space,
    /// The segment file could not be opened: the process (or system) is out of descriptors.
    /// Nothing was written.
    Descriptors,
}

fn starved_by(e: &LogError) -> Option<Starved> {
    let LogError::Io(e) = e else { return None };
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::WriteZero, _) => {
            Some(Starved::Space)
        }
        (_, Some(28 /* ENOSPC */) | Some(122 /* EDQUOT */)) => Some(Starved::Space),
        (_, Some(24 /* EMFILE */) | Some(23 /* ENFILE */)) => Some(Starved::Descriptors),
        _ => None,
    }
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange { requested: Offset, start: Offset, end: Offset },
    #[error("log I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("stored data is corrupt at {0}")]
    Corrupt(String),
}

fn gio<T>(e: glommio::GlommioError<T>) -> io::Error {
    io::Error::from(e)
}

/// Bytes `[from, to)` of `file`, read into memory of their own and handed out as they lie
/// there (no copy): the read covers the aligned blocks around the range, and the result is
/// a slice of it. Short if the file ends first.
async fn read_owned(file: &DmaFile, from: u64, to: u64) -> Result<Bytes, LogError> {
    if to <= from {
        return Ok(Bytes::new());
    }
    let start = align_down(from);
    let read = file.read_at_aligned_owned(start, (align_up(to) - start) as usize).await.map_err(gio)?;
    let skip = (from - start) as usize;
    let got = read.as_ref().len();
    if got <= skip {
        return Ok(Bytes::new());
    }
    let end = got.min(skip + (to - from) as usize);
    Ok(Bytes::from_owner(read).slice(skip..end))
}

/// Per-log settings (from the topic's configs over the broker's); replaced when they change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub index_interval_bytes: u64,
    pub tail_cache_bytes: usize,
    /// Buffered bytes that make `append` ask for a background write.
    pub write_chunk_bytes: u64,
    /// `max.compaction.lag.ms` of a compacted topic: the active segment rolls once it is
    /// this old, so that none of its records waits longer to be compacted (KIP-354).
    pub max_compaction_lag_ms: Option<i64>,
    /// The smallest reservation ahead of the writes a segment file starts with (it doubles
    /// as the file grows): the broker's preallocation budget shared by its partitions.
    pub preallocate_min_bytes: u64,
    /// `weir.log.flush.interval.bytes`: written bytes no sync covers yet that make a sync
    /// due (`sync_due`), before the periodic one.
    pub flush_interval_bytes: u64,
}

/// What `append` did with a batch.
#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// True when the caller should start a background flush (enough bytes are buffered).
    pub flush_due: bool,
    /// True when this batch started a new segment (at `base_offset`).
    pub rolled: bool,
}

/// Batches read from the log for a fetch.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub records: Bytes,
}

struct CachedBatch {
    base_offset: Offset,
    last_offset: Offset,
    bytes: Bytes,
}

/// The most recent batches of the log, for fetches at the tail without I/O.
#[derive(Default)]
struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
}

impl TailCache {
    fn push(&mut self, base_offset: Offset, last_offset: Offset, bytes: Bytes, max_bytes: usize) {
        self.bytes += bytes.len();
        self.batches.push_back(CachedBatch { base_offset, last_offset, bytes });
        while self.bytes > max_bytes {
            match self.batches.pop_front() {
                Some(b) => self.bytes -= b.bytes.len(),
                None => break,
            }
        }
    }

    /// Drops the batches below `end` (they were rewritten on disk, by compaction).
    fn forget_below(&mut self, end: Offset) {
        while self.batches.front().is_some_and(|b| b.base_offset < end) {
            if let Some(b) = self.batches.pop_front() {
                self.bytes -= b.bytes.len();
            }
        }
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch).
    fn read(&self, offset: Offset, max_bytes: usize) -> Option<Bytes> {
        let first = self.batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let i = self.batches.partition_point(|b| b.last_offset < offset);
        let head = self.batches.get(i)?;
        let mut total = head.bytes.len();
        let mut end = i + 1;
        while let Some(b) = self.batches.get(end) {
            if total + b.bytes.len() > max_bytes {
                break;
            }
            total += b.bytes.len();
            end += 1;
        }
        if end == i + 1 {
            return Some(head.bytes.clone());
        }
        let mut out = BytesMut::with_capacity(total);
        for b in self.batches.range(i..end) {
            out.extend_from_slice(&b.bytes);
        }
        Some(out.freeze())
    }

    fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }
}

struct LogState {
    segments: Vec<Segment>,
    next_offset: Offset,
    log_start_offset: Offset,
    tail: TailCache,
}

impl LogState {
    fn active(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Index of the segment holding `offset` (the last with base at or below it).
    fn segment_for(&self, offset: Offset) -> usize {
        self.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1)
    }

    fn find(&self, base_offset: Offset) -> Option<&Segment> {
        self.segments.iter().find(|s| s.base_offset == base_offset)
    }

    fn find_mut(&mut self, base_offset: Offset) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|s| s.base_offset == base_offset)
    }
}

/// A partition's log. Cheap to share within its shard (`Rc<Log>`).
pub struct Log {
    dir: PathBuf,
    /// This log's files in the shard's open-file cache (closed when the log is dropped).
    files: LogFiles,
    config: Cell<LogConfig>,
    state: RefCell<LogState>,
    /// Write permit: writes to the files go out one at a time, in order.
    io: Semaphore,
    /// Sync permit: one `fdatasync` round at a time (group commit).
    sync_io: Semaphore,
    /// Offsets below this are durable.
    synced_offset: Cell<Offset>,
    /// Offsets below this are written to files.
    written_offset: Cell<Offset>,
    /// Bytes written to the files that no sync covers yet, as far as a sync can tell: one
    /// counts as covering what was written when it began. Only decides when a sync is due.
    unsynced_bytes: Cell<u64>,
    failed: Cell<bool>,
    /// The last write failed for lack of space or of a descriptor. Nothing was lost — the
    /// data stays buffered and is written again by the next flush — but appends are
    /// refused until one succeeds.
    write_blocked: Cell<Option<Starved>>,
    /// Offsets below this were in sealed segments at the last compaction.
    cleaned_to: Cell<Offset>,
    /// The earliest delete horizon of a marker the last compaction kept (when it is due).
    next_horizon: Cell<Option<i64>>,
    /// Where each leader epoch starts (persisted before its first batch).
    epochs: RefCell<LeaderEpochs>,
}

impl Log {
    /// Opens (or creates) the log in `dir`. After an unclean stop (`clean == false`) every
    /// segment without index files is scanned, torn tails are truncated and indexes rebuilt.
    pub async fn open(dir: &Path, config: LogConfig, clean: bool) -> Result<Log, LogError> {
        let files = LogFiles::new();
        if let Some(parent) = dir.parent() {
            super::device::ensure_probed(parent).await?;
        }
        let dir_owned = dir.to_path_buf();
        let bases = glommio::executor().spawn_blocking(move || list_segments(&dir_owned)).await?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut truncated_at: Option<usize> = None;
        for (i, &base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let next_base = bases.get(i + 1).copied();
            let (seg, torn) =
                open_segment(dir, files.key(base), is_last, next_base, clean, config.index_interval_bytes).await?;
            segments.push(seg);
            if torn {
                truncated_at = Some(i);
                break;
            }
        }
        if let Some(i) = truncated_at {
            for &base in &bases[i + 1..] {
                warn!(dir = %dir.display(), base, "removing segment after a torn one");
                remove_segment_files(dir, base).await;
            }
        }
        // Retention or DeleteRecords moved the start: segments wholly below it go (a crash
        // came before they were removed), and an empty log restarts there.
        let dir_owned = dir.to_path_buf();
        let checkpointed = glommio::executor()
            .spawn_blocking(move || {
                retention::remove_leftover_deleted(&dir_owned);
                retention::load_log_start(&dir_owned)
            })
            .await?;
        if let Some(start) = checkpointed {
            while segments.first().is_some_and(|s| s.base_offset < start && s.next_offset <= start) {
                let gone = segments.remove(0);
                info!(dir = %dir.display(), base = gone.base_offset, log_start_offset = start, "removing a segment below the log start");
                files.close(gone.base_offset).await;
                remove_segment_files(dir, gone.base_offset).await;
            }
        }
        if segments.is_empty() {
            segments.push(Segment::new_empty(checkpointed.unwrap_or(0), now_ms()));
        }
        // The last segment takes appends again. Its index files, if any, stay until then:
        // they go stale with its first append (`Segment::push`), and recovery never trusts
        // the last segment's index files without the clean-shutdown marker, which a
        // running broker has removed. A partition not written before the next stop then
        // has nothing to write at it.
        let last = segments.len() - 1;
        segments[last].sealed = false;
        let next_offset = segments[last].next_offset;
        let log_start_offset = checkpointed.map_or(segments[0].base_offset, |c| c.max(segments[0].base_offset));
        let dir_owned = dir.to_path_buf();
        let mut epochs = glommio::executor().spawn_blocking(move || leader_epochs::load(&dir_owned)).await?;
        // Epochs recorded ahead of batches a crash took back start past the log end.
        if epochs.truncate_from_end(next_offset + 1) {
            let (dir_owned, stored) = (dir.to_path_buf(), epochs.clone());
            glommio::executor().spawn_blocking(move || leader_epochs::store(&dir_owned, &stored)).await?;
        }
        info!(dir = %dir.display(), segments = segments.len(), log_start_offset, next_offset, "log opened");
        Ok(Log {
            dir: dir.to_path_buf(),
            files,
            config: Cell::new(config),
            state: RefCell::new(LogState { segments, next_offset, log_start_offset, tail: TailCache::default() }),
            io: Semaphore::new(1),
            sync_io: Semaphore::new(1),
            synced_offset: Cell::new(next_offset),
            unsynced_bytes: Cell::new(0),
            written_offset: Cell::new(next_offset),
            failed: Cell::new(false),
            write_blocked: Cell::new(None),
            cleaned_to: Cell::new(0),
            next_horizon: Cell::new(None),
            epochs: RefCell::new(epochs),
        })
    }

    pub fn config(&self) -> LogConfig {
        self.config.get()
    }

    /// New settings (a topic config changed): the next append, roll and index entry use them.
    pub fn set_config(&self, config: LogConfig) {
        self.config.set(config);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn next_offset(&self) -> Offset {
        self.state.borrow().next_offset
    }

    /// Bytes of records in the log (all segments).
    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().segments.iter().map(|s| s.size).sum()
    }

    /// The base offset of the segment holding `offset` (the active one past the end).
    pub fn segment_base_of(&self, offset: Offset) -> Offset {
        let state = self.state.borrow();
        state.segments.iter().rev().find(|s| s.base_offset <= offset).map_or(0, |s| s.base_offset)
    }

    pub fn log_start_offset(&self) -> Offset {
        self.state.borrow().log_start_offset
    }

    /// Offsets below this are in the segment files (they survive a broker crash).
    pub fn written_offset(&self) -> Offset {
        self.written_offset.get()
    }

    pub fn synced_offset(&self) -> Offset {
        self.synced_offset.get()
    }

    /// Whether a write or sync failed; the partition then refuses appends.
    pub fn has_failed(&self) -> bool {
        self.failed.get()
    }

    /// Whether the last write found the filesystem full or no descriptor free (appends are
    /// refused meanwhile; the periodic sync tries again).
    pub fn is_write_blocked(&self) -> bool {
        self.write_blocked.get().is_some()
    }

    /// Segment `base`'s file, from the shard's cache or opened again (never created: a
    /// segment removed meanwhile must not come back as an empty file).
    async fn segment_file(&self, base: Offset) -> Result<Rc<DmaFile>, LogError> {
        let key = self.files.key(base);
        if let Some(file) = open_files::get(key) {
            return Ok(file);
        }
        let path = segment::log_path(&self.dir, base);
        let file = OpenOptions::new().read(true).write(true).dma_open(&path).await.map_err(gio)?;
        // Another task may have opened it while this one waited.
        if let Some(file) = open_files::get(key) {
            return Ok(file);
        }
        Ok(open_files::insert(key, file))
    }

    fn check_healthy(&self) -> Result<(), LogError> {
        if self.failed.get() {
            return Err(LogError::Io(io::Error::other("an earlier write or sync of this log failed")));
        }
        Ok(())
    }

    /// Bytes appended but not yet written to files.
    pub fn unwritten_bytes(&self) -> u64 {
        self.state.borrow().segments.iter().map(Segment::unwritten_bytes).sum()
    }

    /// Stamps `batch` (already validated) with the next offsets and the leader epoch it is
    /// appended in, and buffers it. Synchronous, so appends keep the order in which they are
    /// called. The epoch must have been begun ([`Log::begin_epoch`]).
    /// The copy is the only one: it is what the segment write sends and what fetches get.
    pub fn append(&self, batch: &[u8], log_append_time: Option<i64>, leader_epoch: i32) -> AppendInfo {
        let base_offset = self.next_offset();
        let (count_delta, mut max_timestamp) = match BatchHeader::new(batch) {
            Some(h) => (h.last_offset_delta() as i64, h.max_timestamp()),
            None => unreachable!("append is only called with validated batches"),
        };
        if let Some(now) = log_append_time {
            max_timestamp = now;
        }
        let last_offset = base_offset + count_delta;
        let mut state = self.state.borrow_mut();
        let rolled = self.roll_if_due(&mut state, batch.len() as u64, base_offset, last_offset);
        let bytes = state.active().stamp_copy(batch, STAMP_CHUNK_BYTES, |copy| {
            batch::stamp_offsets(copy, base_offset, leader_epoch);
            if let Some(now) = log_append_time {
                batch::stamp_log_append_time(copy, now);
            }
        });
        self.push_to_active(&mut state, bytes, base_offset, last_offset, max_timestamp, rolled, true)
    }

    /// Buffers one batch that is stored as it is (a replica's) at the log end.
    fn push(&self, bytes: Bytes, base_offset: Offset, last_offset: Offset, max_timestamp: i64) -> AppendInfo {
        let mut state = self.state.borrow_mut();
        let rolled = self.roll_if_due(&mut state, bytes.len() as u64, base_offset, last_offset);
        self.push_to_active(&mut state, bytes, base_offset, last_offset, max_timestamp, rolled, false)
    }

    /// Rolls the active segment if a batch of `batch_bytes` at `base_offset` is due to start
    /// a new one.
    fn roll_if_due(&self, state: &mut LogState, batch_bytes: u64, base_offset: Offset, last_offset: Offset) -> bool {
        let now = now_ms();
        let rolled = self.roll_due(state.active(), batch_bytes, last_offset, now);
        if rolled {
            state.active().sealed = true;
            state.segments.push(Segment::new_empty(base_offset, now));
            debug!(dir = %self.dir.display(), base_offset, "segment rolled");
        }
        rolled
    }

    #[allow(clippy::too_many_arguments)]
    fn push_to_active(
        &self,
        state: &mut LogState,
        bytes: Bytes,
        base_offset: Offset,
        last_offset: Offset,
        max_timestamp: i64,
        rolled: bool,
        stamped: bool,
    ) -> AppendInfo {
        let interval = self.config.get().index_interval_bytes;
        let active = state.active();
        active.push(bytes.clone(), base_offset, last_offset, max_timestamp, interval, stamped);
        let flush_due = active.size - active.written >= self.config.get().write_chunk_bytes;
        state.next_offset = last_offset + 1;
        state.tail.push(base_offset, last_offset, bytes, self.config.get().tail_cache_bytes);
        AppendInfo { base_offset, last_offset, flush_due, rolled }
    }

    /// The leader-epoch cache (see `leader_epochs`).
    pub fn epochs(&self) -> std::cell::Ref<'_, LeaderEpochs> {
        self.epochs.borrow()
    }

    /// Starts leader epoch `epoch` at the log end: recorded durably before any batch of it
    /// is appended (a leader calls this when it takes the partition).
    pub async fn begin_epoch(&self, epoch: i32) -> Result<(), LogError> {
        let at = self.next_offset();
        self.assign_epoch(epoch, at).await
    }

    async fn assign_epoch(&self, epoch: i32, start_offset: Offset) -> Result<(), LogError> {
        let mut next = self.epochs.borrow().clone();
        if !next.assign(epoch, start_offset) {
            return Ok(());
        }
        self.store_epochs(next).await
    }

    async fn store_epochs(&self, next: LeaderEpochs) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let stored = next.clone();
        glommio::executor().spawn_blocking(move || leader_epochs::store(&dir, &stored)).await?;
        *self.epochs.borrow_mut() = next;
        Ok(())
    }

    /// Removes every batch at or after `offset`: a follower's log diverged from its leader's
    /// (KIP-101). The cut is at a batch boundary (a batch holding `offset` goes too); returns
    /// the new log end. Durable when it returns, and crash-safe in between: later segments
    /// are removed and the directory synced first, then the segment holding the cut is
    /// truncated and synced, so a crash midway leaves a prefix of the old log. Callers
    /// serialise it with appends (a follower's fetcher is the only writer).
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError> {
        if offset >= self.next_offset() {
            // No batch to cut; epochs begun at or past the cut (with no batches) still go.
            let mut epochs = self.epochs.borrow().clone();
            if epochs.truncate_from_end(offset) {
                self.store_epochs(epochs).await?;
            }
            return Ok(self.next_offset());
        }
        self.flush(true).await?;
        let _write = self.io.acquire_permit(1).await.map_err(gio)?;
        let _sync = self.sync_io.acquire_permit(1).await.map_err(gio)?;
        self.check_healthy()?;
        let removed: Vec<Offset> = {
            let mut state = self.state.borrow_mut();
            let keep = state.segments.partition_point(|s| s.base_offset < offset);
            let removed = state.segments.split_off(keep.max(1)).into_iter().map(|s| s.base_offset).collect();
            state.tail.clear();
            removed
        };
        for base in removed.iter().rev() {
            remove_segment_files(&self.dir, *base).await;
        }
        let dir = self.dir.clone();
        glommio::executor().spawn_blocking(move || std::fs::File::open(dir)?.sync_all()).await?;
        let (base, file, size, index_pos) = {
            let state = self.state.borrow();
            let Some(s) = state.segments.last() else { unreachable!("a log keeps one segment") };
            let rel = relative(s.base_offset, offset.max(s.base_offset));
            (s.base_offset, s.on_disk, s.size, s.index.lookup_offset(rel) as u64)
        };
        let file = if file { Some(self.segment_file(base).await?) } else { None };
        let cut = if offset <= base {
            Some(0)
        } else {
            self.find_batch(base, index_pos, size, offset).await?.map(|(p, _)| p)
        };
        if let (Some(cut), Some(file)) = (cut, &file) {
            file.truncate(cut).await.map_err(gio)?;
            file.fdatasync().await.map_err(gio)?;
        }
        remove_index_files(&self.dir, base).await;
        drop(file);
        self.files.close(base).await;
        // Reopened as the active segment: rescanned, its index rebuilt.
        let (mut seg, _) =
            open_segment(&self.dir, self.files.key(base), true, None, false, self.config.get().index_interval_bytes)
                .await?;
        seg.sealed = false;
        let next_offset = if offset <= base { offset } else { seg.next_offset };
        if seg.size == 0 {
            // Emptied whole: the log restarts at the cut.
            seg = Segment::new_empty(next_offset, now_ms());
            remove_segment_files(&self.dir, base).await;
        }
        let restarted = {
            let mut state = self.state.borrow_mut();
            let last = state.segments.len() - 1;
            let restarted = state.segments.len() == 1 && seg.size == 0;
            if restarted {
                state.log_start_offset = next_offset;
            }
            state.segments[last] = seg;
            state.next_offset = next_offset;
            restarted
        };
        if restarted {
            // No segment file says where the log starts now: the checkpoint does.
            retention::store_log_start(&self.dir, next_offset).await?;
        }
        self.written_offset.set(next_offset);
        self.synced_offset.set(next_offset);
        self.unsynced_bytes.set(0);
        self.cleaned_to.set(self.cleaned_to.get().min(next_offset));
        let mut epochs = self.epochs.borrow().clone();
        if epochs.truncate_from_end(next_offset) {
            self.store_epochs(epochs).await?;
        }
        info!(dir = %self.dir.display(), offset, log_end = next_offset, "log truncated");
        Ok(next_offset)
    }

    /// Appends batches fetched from the leader as they are (offsets and leader epochs kept),
    /// after checking each (CRC, offsets at or past the log end). Batches this log already
    /// holds are skipped. A new epoch is recorded before its first batch. Returns the log
    /// end. Callers serialise replica appends per partition.
    pub async fn append_stored(&self, records: &Bytes) -> Result<Offset, LogError> {
        if let Some(starved) = self.write_blocked.get() {
            let message = match starved {
                Starved::Space => "disk full: appends wait for space",
                Starved::Descriptors => "too many open files: appends wait for a descriptor",
            };
            return Err(LogError::Io(io::Error::new(io::ErrorKind::StorageFull, message)));
        }
        let mut pos = 0usize;
        while pos < records.len() {
            let total = batch::validate_stored(&records[pos..])
                .map_err(|e| LogError::Corrupt(format!("{} fetched batch at byte {pos}: {e}", self.dir.display())))?;
            let (base, last, max_ts, epoch) = match BatchHeader::new(&records[pos..]) {
                Some(h) => (h.base_offset(), h.last_offset(), h.max_timestamp(), h.leader_epoch()),
                None => unreachable!("validated above"),
            };
            let next = self.next_offset();
            if last >= next {
                if base < next {
                    return Err(LogError::Corrupt(format!(
                        "{}: fetched batch {base}..={last} overlaps the log end {next}",
                        self.dir.display()
                    )));
                }
                if epoch > self.epochs.borrow().latest_epoch() {
                    self.assign_epoch(epoch, base).await?;
                }
                self.push(records.slice(pos..pos + total), base, last, max_ts);
            }
            pos += total;
        }
        Ok(self.next_offset())
    }

    fn roll_due(&self, active: &Segment, batch_bytes: u64, last_offset: Offset, now: i64) -> bool {
        if active.size == 0 {
            return false;
        }
        active.size + batch_bytes > self.config.get().segment_bytes
            || now - active.created_ms >= self.config.get().segment_ms
            || self.config.get().max_compaction_lag_ms.is_some_and(|lag| now - active.created_ms >= lag)
            || last_offset - active.base_offset >= i64::from(u32::MAX) - 1
    }

    /// Writes buffered bytes to the segment files; with `sync`, also makes them durable.
    /// Everything appended before the call is covered when it returns.
    ///
    /// Writes hold the write permit (`io`); a sync holds only the sync permit (`sync_io`)
    /// while its `fdatasync` runs, so acks=1 writes of the same partition go on meanwhile
    /// and are not queued behind a periodic or acks=all sync. Callers waiting for either
    /// permit coalesce: whoever gets it covers everything appended so far (group commit).
    ///
    /// Must not be cancelled once started (a dropped future would leave a DMA write in
    /// flight that a later flush overwrites): callers that may give up run it in a detached
    /// task (see `Partition::durable`).
    pub async fn flush(&self, sync: bool) -> Result<(), LogError> {
        if !sync {
            return self.write_buffered().await;
        }
        let target = self.next_offset();
        if self.synced_offset.get() >= target {
            return Ok(());
        }
        self.check_healthy()?;
        let _permit = self.sync_io.acquire_permit(1).await.map_err(gio)?;
        if self.synced_offset.get() >= target {
            return Ok(());
        }
        self.write_buffered().await?;
        let covered = self.written_offset.get();
        let covered_bytes = self.unsynced_bytes.get();
        // Only what is written now is claimed: later writes may or may not be covered.
        let unsynced: Vec<(Offset, u64)> = {
            let state = self.state.borrow();
            state.segments.iter().filter(|s| s.synced < s.written).map(|s| (s.base_offset, s.written)).collect()
        };
        for (base, written) in unsynced {
            // Dirty files stay in the cache: this is the descriptor the data was written with.
            let synced = match self.segment_file(base).await {
                Ok(file) => file.fdatasync().await.map_err(gio),
                Err(LogError::Io(e)) => Err(e),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            if let Err(e) = synced {
                self.failed.set(true);
                warn!(dir = %self.dir.display(), error = %e, "log sync failed; partition refuses appends");
                return Err(LogError::Io(e));
            }
            let clean = match self.state.borrow_mut().find_mut(base) {
                Some(s) => {
                    s.synced = s.synced.max(written);
                    s.synced >= s.written
                }
                None => false,
            };
            if clean {
                self.files.set_dirty(base, false);
            }
        }
        self.synced_offset.set(self.synced_offset.get().max(covered));
        self.unsynced_bytes.set(self.unsynced_bytes.get().saturating_sub(covered_bytes));
        Ok(())
    }

    /// Whether so many written bytes wait for a sync (`LogConfig::flush_interval_bytes`)
    /// that one should start now rather than at the periodic round. A sync's duration
    /// grows with what it carries, and on a shared device (a VM's virtual disk) writes
    /// queued behind it wait for all of it: acks=1 answers once stalled about 150 ms at
    /// every periodic sync of a second's worth of writes (docs/bench/studies.md).
    pub fn sync_due(&self) -> bool {
        self.unsynced_bytes.get() >= self.config.get().flush_interval_bytes
    }

    /// Writes everything appended so far to the segment files (not synced, except sealed
    /// segments, which are synced before their index files are written).
    async fn write_buffered(&self) -> Result<(), LogError> {
        let target = self.next_offset();
        if self.written_offset.get() >= target {
            return Ok(());
        }
        self.check_healthy()?;
        let _permit = self.io.acquire_permit(1).await.map_err(gio)?;
        if self.written_offset.get() >= target {
            return Ok(());
        }
        // After a failed sync nothing is retried: Linux reports an fsync error once, so a
        // second fsync "succeeding" would acknowledge data that may be lost. A write that
        // found no space (or whose file found no descriptor) is different: it is repeated
        // whole at the same place, and the data it carries stays buffered until then.
        self.check_healthy()?;
        let result = self.write_locked().await;
        match &result {
            Err(e) => match starved_by(e) {
                Some(starved) => {
                    if self.write_blocked.replace(Some(starved)) != Some(starved) {
                        match starved {
                            Starved::Space => {
                                warn!(dir = %self.dir.display(), error = %e, "disk full: the partition refuses appends until space returns; what it took is kept and written then")
                            }
                            Starved::Descriptors => {
                                warn!(dir = %self.dir.display(), error = %e, "no file descriptor free (raise `ulimit -n` or lower weir.open.files.max): the partition refuses appends until one is; what it took is kept and written then")
                            }
                        }
                    }
                }
                None => {
                    self.failed.set(true);
                    warn!(dir = %self.dir.display(), error = %e, "log write failed; partition refuses appends");
                }
            },
            Ok(()) => match self.write_blocked.take() {
                Some(Starved::Space) => {
                    info!(dir = %self.dir.display(), "space returned: the partition takes appends again")
                }
                Some(Starved::Descriptors) => {
                    info!(dir = %self.dir.display(), "a descriptor was free: the partition takes appends again")
                }
                None => {}
            },
        }
        result
    }

    async fn write_locked(&self) -> Result<(), LogError> {
        let target = self.next_offset();
        let bases: Vec<Offset> = {
            let state = self.state.borrow();
            state
                .segments
                .iter()
                .filter(|s| s.written < s.size || !s.index_files_written && s.sealed)
                .map(|s| s.base_offset)
                .collect()
        };
        for base in bases {
            self.write_segment(base).await?;
            let (on_disk, size, sealed) = match self.state.borrow().find(base) {
                Some(s) => (s.on_disk, s.size, s.sealed),
                None => continue,
            };
            if on_disk && sealed {
                let file = self.segment_file(base).await?;
                // A sealed segment never grows again: cut the padding and reserved space,
                // make it durable, then write its index files.
                file.truncate(size).await.map_err(gio)?;
                file.fdatasync().await.map_err(gio)?;
                if let Some(s) = self.state.borrow_mut().find_mut(base) {
                    let newly_synced = size.saturating_sub(s.synced);
                    self.unsynced_bytes.set(self.unsynced_bytes.get().saturating_sub(newly_synced));
                    s.synced = s.synced.max(size);
                }
                self.files.set_dirty(base, false);
                self.write_index_files(base).await?;
            }
        }
        self.written_offset.set(self.written_offset.get().max(target));
        Ok(())
    }

    /// Writes everything buffered for segment `base` (creating its file if needed).
    async fn write_segment(&self, base: Offset) -> Result<(), LogError> {
        let needs_file = matches!(self.state.borrow().find(base), Some(s) if !s.on_disk);
        if needs_file {
            let file = open_dma(&segment::log_path(&self.dir, base)).await?;
            // The new file's directory entry must be durable before its data is called synced.
            let dir = self.dir.clone();
            glommio::executor().spawn_blocking(move || std::fs::File::open(dir)?.sync_all()).await?;
            open_files::insert(self.files.key(base), file);
            if let Some(s) = self.state.borrow_mut().find_mut(base) {
                s.on_disk = true;
            }
        }
        loop {
            match self.state.borrow().find(base) {
                Some(s) if s.written < s.size => {}
                _ => return Ok(()),
            }
            let file = self.segment_file(base).await?;
            let chunk = {
                let mut state = self.state.borrow_mut();
                let Some(s) = state.find_mut(base) else { return Ok(()) };
                if s.written >= s.size {
                    return Ok(());
                }
                let pos = s.pending_pos;
                let len = (s.size - pos).min(IO_CHUNK_BYTES);
                let end = pos + align_up(len);
                // Blocks below `align_up(written)` hold written data; those above are reserved
                // (fallocated, "unwritten" to the filesystem). A direct write covering the tail
                // block and reserved blocks after it was handed by io_uring to a kernel worker
                // thread (ext4 refuses it under IOCB_NOWAIT, as traced in
                // docs/bench/studies.md): two context switches, and a worker competing with the
                // shards for the cores. So the write is split where the written blocks end, and
                // also where each stamped run starts: every part is sent as it is from the run
                // that holds it (else copied), and all complete inline.
                let (parts, froze) = s.write_parts(pos, end, align_up(s.written));
                let parts: Vec<(u64, DmaBuffer)> = parts
                    .into_iter()
                    .map(|part| {
                        let source = part.source.unwrap_or_else(|| {
                            let mut buf = file.alloc_dma_buffer(part.len as usize);
                            let bytes = buf.as_bytes_mut();
                            let skip = part.pos - pos;
                            let data = len.saturating_sub(skip).min(part.len) as usize;
                            s.copy_pending(skip as usize, &mut bytes[..data]);
                            bytes[data..].fill(0);
                            buf
                        });
                        (part.pos, source)
                    })
                    .collect();
                #[cfg(test)]
                {
                    // Whatever the sources, the write carries exactly the pending bytes.
                    let mut want = vec![0u8; (end - pos) as usize];
                    s.copy_pending(0, &mut want[..len as usize]);
                    let got: Vec<u8> = parts.iter().flat_map(|(_, b)| b.as_bytes().iter().copied()).collect();
                    assert!(got == want, "a segment write's bytes differ from the pending bytes");
                }
                let config = self.config.get();
                let reserve = (end > s.allocated)
                    .then(|| preallocation_target(end, config.segment_bytes, config.preallocate_min_bytes));
                (file, parts, pos, len, reserve, froze)
            };
            let (file, parts, pos, len, reserve, froze) = chunk;
            // From here until a sync covers it, this descriptor must stay open.
            self.files.set_dirty(base, true);
            if let Some(target) = reserve {
                // The zeros past the data read as the end of the log at recovery (see
                // `unused_space`); sealing and closing cut them off. A reservation the
                // filesystem refuses (nearly full) is only a lost optimisation: the write
                // extends the file instead, and fails by itself if the space is truly gone.
                let reserved = match file.pre_allocate(target, false).await {
                    Ok(()) => target,
                    Err(e) => {
                        debug!(dir = %self.dir.display(), target, error = %e, "segment preallocation refused; writing without it");
                        pos + align_up(len)
                    }
                };
                if let Some(s) = self.state.borrow_mut().find_mut(base) {
                    s.allocated = s.allocated.max(reserved);
                }
            }
            // All awaited to the end even if one fails: a write still in flight could land
            // after the retry of the same blocks and undo it.
            let results =
                futures::future::join_all(parts.into_iter().map(|(at, source)| write_whole(&file, source, at))).await;
            results.into_iter().collect::<Result<Vec<()>, LogError>>()?;
            let mut state = self.state.borrow_mut();
            if let Some(s) = state.find_mut(base) {
                let end = pos + len;
                // A write starts at its partial tail block: only what lies past the written
                // end is new.
                self.unsynced_bytes.set(self.unsynced_bytes.get() + end.saturating_sub(s.written));
                s.written = s.written.max(end);
                s.release_written(align_down(end));
                if let (Some(last), Some(id)) = (s.stamped.back_mut(), froze) {
                    last.thaw(id);
                }
            }
        }
    }

    async fn write_index_files(&self, base: Offset) -> Result<(), LogError> {
        let (offsets, times) = match self.state.borrow().find(base) {
            Some(s) if !s.index_files_written => (s.index.encode_offsets(), s.index.encode_times()),
            _ => return Ok(()),
        };
        write_small_file(&segment::index_path(&self.dir, base), offsets).await?;
        write_small_file(&segment::time_index_path(&self.dir, base), times).await?;
        if let Some(s) = self.state.borrow_mut().find_mut(base) {
            s.index_files_written = true;
        }
        Ok(())
    }

    /// Waits until every offset up to `last_offset` is durable, syncing if needed.
    pub async fn sync_to(&self, last_offset: Offset) -> Result<(), LogError> {
        while self.synced_offset.get() <= last_offset {
            self.flush(true).await?;
        }
        Ok(())
    }

    /// Waits until every offset up to `last_offset` is at least written to files.
    pub async fn write_to(&self, last_offset: Offset) -> Result<(), LogError> {
        while self.written_offset.get() <= last_offset {
            self.flush(false).await?;
        }
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// (always at least one whole batch, as KIP-74 asks, so consumers make progress).
    pub async fn read(&self, offset: Offset, max_bytes: usize) -> Result<ReadResult, LogError> {
        let (segment_base, start_pos, size) = {
            let state = self.state.borrow();
            if offset < state.log_start_offset || offset > state.next_offset {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    start: state.log_start_offset,
                    end: state.next_offset,
                });
            }
            if offset == state.next_offset {
                return Ok(ReadResult::default());
            }
            if let Some(records) = state.tail.read(offset, max_bytes) {
                return Ok(ReadResult { records });
            }
            let seg = &state.segments[state.segment_for(offset)];
            (seg.base_offset, seg.index.lookup_offset(relative(seg.base_offset, offset)) as u64, seg.size)
        };
        let Some((batch_pos, first_len)) = self.find_batch(segment_base, start_pos, size, offset).await? else {
            // Past this segment's last batch (a gap left by compaction): read on from the next.
            return match self.next_segment_base(offset) {
                Some(next) => Box::pin(self.read(next, max_bytes)).await,
                None => Ok(ReadResult::default()),
            };
        };
        let want = (max_bytes as u64).max(first_len).min(size - batch_pos);
        let bytes = self.read_range(segment_base, batch_pos, want).await?;
        // Keep whole batches only (the first one always fits, by `want`).
        let keep = batch::iter_batches(&bytes).map(|(pos, h)| pos + h.total_bytes().unwrap_or(0)).last().unwrap_or(0);
        Ok(ReadResult { records: bytes.slice(..keep) })
    }

    /// The base offset of the segment after the one holding `offset`.
    pub fn next_segment_base(&self, offset: Offset) -> Option<Offset> {
        let state = self.state.borrow();
        state.segments.get(state.segment_for(offset) + 1).map(|s| s.base_offset)
    }

    /// Finds the position and size of the batch holding `offset` in segment `base`,
    /// scanning from `from` (an index position at or before it).
    async fn find_batch(
        &self,
        base: Offset,
        mut from: u64,
        size: u64,
        offset: Offset,
    ) -> Result<Option<(u64, u64)>, LogError> {
        while from < size {
            let len = SCAN_READ_BYTES.min(size - from);
            let chunk = self.read_range(base, from, len).await?;
            let mut pos = 0usize;
            while let Some(h) = chunk.get(pos..).and_then(BatchHeader::new) {
                let Some(total) = h.total_bytes() else {
                    return Err(LogError::Corrupt(format!(
                        "{} segment {base} position {}",
                        self.dir.display(),
                        from + pos as u64
                    )));
                };
                if h.last_offset() >= offset {
                    return Ok(Some((from + pos as u64, total as u64)));
                }
                pos += total;
            }
            if pos == 0 && chunk.len() < BATCH_HEADER_BYTES {
                break;
            }
            from += pos as u64;
        }
        Ok(None)
    }

    /// Bytes `[from, from+len)` of segment `base`: from the file below `pending_pos`, from
    /// memory at or above it.
    async fn read_range(&self, base: Offset, from: u64, len: u64) -> Result<Bytes, LogError> {
        let to = from + len;
        let (file, pending_pos) = {
            let state = self.state.borrow();
            let Some(s) = state.find(base) else { return Ok(Bytes::new()) };
            if let Some(mem) = s.pending_range(from, to) {
                return Ok(mem);
            }
            (s.on_disk, s.pending_pos)
        };
        if !file {
            return Ok(Bytes::new());
        }
        let file = self.segment_file(base).await?;
        let disk_to = to.min(pending_pos);
        let read = read_owned(&file, from, disk_to).await?;
        if disk_to == to {
            return Ok(read);
        }
        // The tail may have been written meanwhile (pending_pos moved up): take it from
        // memory if it is still there, else from the file, which now holds it.
        let mut out = BytesMut::with_capacity(len as usize);
        out.extend_from_slice(&read);
        let copied = {
            let state = self.state.borrow();
            match state.find(base).and_then(|s| s.pending_range(disk_to, to)) {
                Some(mem) => {
                    out.extend_from_slice(&mem);
                    true
                }
                None => false,
            }
        };
        if !copied {
            let rest = file.read_at(disk_to, (to - disk_to) as usize).await.map_err(gio)?;
            out.extend_from_slice(&rest);
        }
        Ok(out.freeze())
    }

    /// Calls `visit` with the header of every batch from the one holding `from` to the end
    /// (recovery of producer state).
    pub async fn for_each_batch(&self, from: Offset, mut visit: impl FnMut(&BatchHeader<'_>)) -> Result<(), LogError> {
        let mut offset = from.max(self.log_start_offset());
        while offset < self.next_offset() {
            let read = self.read(offset, IO_CHUNK_BYTES as usize).await?;
            if read.records.is_empty() {
                break;
            }
            for (_, header) in batch::iter_batches(&read.records) {
                if header.last_offset() >= offset {
                    visit(&header);
                }
                offset = offset.max(header.last_offset() + 1);
            }
        }
        Ok(())
    }

    /// The offset and timestamp of the first record whose timestamp is at or after
    /// `timestamp`, or `None` when there is none (Kafka then answers offset -1).
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(Offset, i64)>, LogError> {
        let candidates: Vec<(Offset, Offset, u64, u64)> = {
            let state = self.state.borrow();
            state
                .segments
                .iter()
                .filter(|s| s.max_timestamp >= timestamp && s.size > 0)
                .map(|s| {
                    let rel = s.index.lookup_time(timestamp);
                    let pos = s.index.lookup_offset(rel) as u64;
                    (s.base_offset, s.base_offset + rel as i64, pos, s.size)
                })
                .collect()
        };
        for (base, start_offset, mut pos, size) in candidates {
            let Some((batch_pos, _)) = self.find_batch(base, pos, size, start_offset).await? else { continue };
            pos = batch_pos;
            while pos < size {
                let header_bytes = self.read_range(base, pos, BATCH_HEADER_BYTES as u64).await?;
                let Some(h) = BatchHeader::new(&header_bytes) else { break };
                let total = h.total_bytes().unwrap_or(0) as u64;
                if total == 0 {
                    break;
                }
                if h.max_timestamp() >= timestamp {
                    let bytes = self.read_range(base, pos, total).await?;
                    if let Some(found) = first_record_at_or_after(bytes, timestamp) {
                        return Ok(Some(found));
                    }
                }
                pos += total;
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub async fn max_timestamp_offset(&self) -> Result<Option<(Offset, i64)>, LogError> {
        let best = {
            let state = self.state.borrow();
            state.segments.iter().filter(|s| s.size > 0).max_by_key(|s| s.max_timestamp).map(|s| s.max_timestamp)
        };
        match best {
            Some(ts) if ts >= 0 => self.offset_for_timestamp(ts).await,
            _ => Ok(None),
        }
    }

    /// Writes and syncs everything, cuts the padding of the active segment and writes its
    /// index files, so the next start can skip recovery. Appends must have stopped.
    pub async fn close(&self) -> Result<(), LogError> {
        self.flush(true).await?;
        let _permit = self.io.acquire_permit(1).await.map_err(gio)?;
        let (base, file, size, unchanged) = {
            let mut state = self.state.borrow_mut();
            let active = state.active();
            active.sealed = true;
            (active.base_offset, active.on_disk, active.size, active.index_files_written)
        };
        if unchanged {
            // Nothing appended since it was opened: its file is cut and its index files current.
        } else if file {
            let file = self.segment_file(base).await?;
            file.truncate(size).await.map_err(gio)?;
            file.fdatasync().await.map_err(gio)?;
        } else {
            write_small_file(&segment::log_path(&self.dir, base), Vec::new()).await?;
        }
        if !unchanged {
            self.write_index_files(base).await?;
        }
        self.state.borrow_mut().tail.clear();
        for file in open_files::remove_log(self.files.log) {
            if let Ok(file) = Rc::try_unwrap(file) {
                file.close().await.map_err(gio)?;
            }
        }
        Ok(())
    }
}

/// Most bytes a batch may decompress to when ListOffsets looks inside it.
const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// The first record of one batch whose timestamp is at or after `timestamp` (ListOffsets
/// only, not the hot path). In a LogAppendTime batch every record has the batch's time, so
/// the batch's first offset answers without decoding. A batch that cannot be decoded within
/// [`DECOMPRESSED_BYTES_MAX`] is answered with its first offset (a consumer starting there
/// sees every record at or after the timestamp).
fn first_record_at_or_after(mut bytes: Bytes, timestamp: i64) -> Option<(Offset, i64)> {
    let (base, max_ts, log_append_time) = {
        let h = BatchHeader::new(&bytes)?;
        (h.base_offset(), h.max_timestamp(), h.is_log_append_time())
    };
    if log_append_time {
        return Some((base, max_ts));
    }
    let capped =
        |data: &mut Bytes, codec| crate::protocol::decompress::decompress_capped(data, codec, DECOMPRESSED_BYTES_MAX);
    match kafka_protocol::records::RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(capped)) {
        Ok(set) => set.records.iter().find(|r| r.timestamp >= timestamp).map(|r| (r.offset, r.timestamp)),
        Err(e) => {
            warn!(error = %e, base, "cannot look inside a stored batch; answering with its first offset");
            Some((base, max_ts))
        }
    }
}

/// A log's handle on the shard's open-file cache: its id, and its files closed when it goes.
struct LogFiles {
    log: u64,
}

impl LogFiles {
    fn new() -> Self {
        LogFiles { log: open_files::next_log_id() }
    }

    fn key(&self, base: Offset) -> FileKey {
        (self.log, base)
    }

    fn set_dirty(&self, base: Offset, dirty: bool) {
        open_files::set_dirty(self.key(base), dirty);
    }

    /// Closes segment `base`'s file, if open (its segment is removed or replaced).
    async fn close(&self, base: Offset) {
        if let Some(file) = open_files::remove(self.key(base)).and_then(|f| Rc::try_unwrap(f).ok()) {
            let _ = file.close().await;
        }
    }
}

impl Drop for LogFiles {
    fn drop(&mut self) {
        // Dropped files close in the background (glommio).
        drop(open_files::remove_log(self.log));
    }
}

async fn open_dma(path: &Path) -> Result<DmaFile, LogError> {
    Ok(OpenOptions::new().read(true).write(true).create(true).dma_open(path).await.map_err(gio)?)
}

async fn write_small_file(path: &Path, bytes: Vec<u8>) -> Result<(), LogError> {
    let file = BufferedFile::create(path).await.map_err(gio)?;
    if !bytes.is_empty() {
        file.write_at(bytes, 0).await.map_err(gio)?;
    }
    file.fdatasync().await.map_err(gio)?;
    file.close().await.map_err(gio)?;
    Ok(())
}

async fn read_small_file(path: &Path) -> Option<Vec<u8>> {
    let path = path.to_path_buf();
    glommio::executor().spawn_blocking(move || std::fs::read(path).ok()).await
}

/// The aborted-transaction index goes only with the whole segment: a segment truncated or
/// compacted keeps it (recovery reads only its entries below the producer snapshot).
async fn remove_txn_index(dir: &Path, base: Offset) {
    let p = segment::txn_index_path(dir, base);
    glommio::executor()
        .spawn_blocking(move || {
            let _ = std::fs::remove_file(p);
        })
        .await;
}

async fn remove_index_files(dir: &Path, base: Offset) {
    let paths = [segment::index_path(dir, base), segment::time_index_path(dir, base)];
    glommio::executor()
        .spawn_blocking(move || {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        })
        .await;
}

async fn remove_segment_files(dir: &Path, base: Offset) {
    remove_index_files(dir, base).await;
    remove_txn_index(dir, base).await;
    let p = segment::log_path(dir, base);
    glommio::executor()
        .spawn_blocking(move || {
            let _ = std::fs::remove_file(p);
        })
        .await;
}

/// Base offsets of the segments in `dir`, sorted; creates `dir` if missing.
fn list_segments(dir: &Path) -> io::Result<Vec<Offset>> {
    std::fs::create_dir_all(dir)?;
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<Offset>() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Opens one segment file. Returns the segment and whether its tail was torn (truncated).
async fn open_segment(
    dir: &Path,
    key: FileKey,
    is_last: bool,
    next_base: Option<Offset>,
    clean: bool,
    interval: u64,
) -> Result<(Segment, bool), LogError> {
    let base = key.1;
    let path = segment::log_path(dir, base);
    let file = open_dma(&path).await?;
    let file_size = file.file_size().await.map_err(gio)?;
    let mut seg = Segment::new_empty(base, now_ms());
    let index_bytes = read_small_file(&segment::index_path(dir, base)).await;
    let time_bytes = read_small_file(&segment::time_index_path(dir, base)).await;
    let relative_end = next_base.map(|n| (n - base) as u64).unwrap_or(u64::from(u32::MAX));
    let loaded = match (index_bytes, time_bytes) {
        (Some(o), Some(t)) if clean || !is_last => SegmentIndex::decode(&o, &t, file_size.max(1), relative_end),
        _ => None,
    };
    let scan_from = match loaded {
        Some(index) => {
            // Trusted: synced before its index files were written. Scan only past the last
            // index entry, to learn the next offset and the largest timestamp.
            let from = index.offsets.last().map(|e| e.position as u64).unwrap_or(0);
            // The batch at the last entry starts at this offset; the scan checks it does.
            seg.next_offset = base + index.offsets.last().map(|e| i64::from(e.relative_offset)).unwrap_or(0);
            seg.max_timestamp = index.times.last().map(|e| e.timestamp).unwrap_or(-1);
            seg.index = index;
            seg.index_files_written = true;
            from
        }
        None => 0,
    };
    let valid = scan_segment(&file, &mut seg, scan_from, file_size, interval).await?;
    let torn = valid < file_size && !unused_space(&file, valid, file_size).await?;
    if torn {
        warn!(segment = %path.display(), valid_bytes = valid, file_bytes = file_size, "truncating torn tail");
    } else if valid < file_size {
        debug!(segment = %path.display(), valid_bytes = valid, file_bytes = file_size, "cutting preallocated space");
    }
    if valid < file_size {
        file.truncate(valid).await.map_err(gio)?;
        file.fdatasync().await.map_err(gio)?;
    }
    if !seg.index_files_written && !is_last {
        // A sealed segment whose index files were missing or damaged: rebuilt in memory,
        // written again (after a sync) by the next flush.
        seg.sealed = true;
    }
    seg.size = valid;
    seg.written = valid;
    seg.synced = valid;
    seg.allocated = valid;
    seg.bytes_since_index = interval;
    seg.pending_pos = align_down(valid);
    if seg.pending_pos < valid {
        let tail = file.read_at(seg.pending_pos, (valid - seg.pending_pos) as usize).await.map_err(gio)?;
        seg.pending.push_back(Bytes::copy_from_slice(&tail));
    }
    seg.on_disk = true;
    open_files::insert(key, file);
    Ok((seg, torn))
}

/// True when the file holds only zeros from `valid` to the end of that block: space
/// reserved ahead of the writes, not a torn batch. Writes to one log are issued in order
/// and one at a time, so nothing acknowledged can follow an unwritten block.
async fn unused_space(file: &DmaFile, valid: u64, file_size: u64) -> Result<bool, LogError> {
    let len = (align_up(valid + 1) - valid).min(file_size - valid);
    let bytes = file.read_at(valid, len as usize).await.map_err(gio)?;
    Ok(bytes.iter().all(|&b| b == 0))
}

/// Reads batches from `from` to the end of the file, checking each (CRC, offsets going up,
/// within the segment) and indexing those past the last index entry every `interval` bytes.
/// Returns the end of the last valid batch.
async fn scan_segment(
    file: &DmaFile,
    seg: &mut Segment,
    from: u64,
    file_size: u64,
    interval: u64,
) -> Result<u64, LogError> {
    let mut pos = from;
    let mut expected_next = seg.next_offset;
    let indexed_to = seg.index.offsets.last().map(|e| e.position as u64);
    let mut since_index = interval;
    let mut want = IO_CHUNK_BYTES;
    while pos < file_size {
        let len = want.min(file_size - pos);
        let chunk = file.read_at(pos, len as usize).await.map_err(gio)?;
        let mut at = 0usize;
        while let Some(h) = chunk.get(at..).and_then(BatchHeader::new) {
            let Some(total) = h.total_bytes() else { return Ok(pos + at as u64) };
            if total > chunk.len() - at {
                break; // continues past this chunk
            }
            let position = pos + at as u64;
            // Offsets go up; compacted segments have gaps.
            let in_order = h.base_offset() >= expected_next;
            if batch::validate_stored(&chunk[at..at + total]).is_err() || !in_order {
                return Ok(position);
            }
            if since_index >= interval && indexed_to.is_none_or(|p| position > p) {
                seg.index.add(
                    relative(seg.base_offset, h.base_offset()),
                    position as u32,
                    h.max_timestamp().max(seg.max_timestamp),
                );
                since_index = 0;
            }
            since_index += total as u64;
            seg.next_offset = h.last_offset() + 1;
            expected_next = seg.next_offset;
            seg.max_timestamp = seg.max_timestamp.max(h.max_timestamp());
            at += total;
        }
        if at == 0 {
            // Not even one batch fits in what was read: read its whole length, if the file has it.
            let need = BatchHeader::new(&chunk).and_then(|h| h.total_bytes()).map(|t| t as u64);
            match need {
                Some(need) if need > len && pos + need <= file_size => {
                    want = need;
                    continue;
                }
                _ => return Ok(pos),
            }
        }
        want = IO_CHUNK_BYTES;
        pos += at as u64;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::tests::make_batch;
    use kafka_protocol::records::Compression;

    pub(super) fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 16 * 1024,
            segment_ms: i64::MAX / 2,
            index_interval_bytes: 1024,
            tail_cache_bytes: 0,
            write_chunk_bytes: 8 * 1024,
            max_compaction_lag_ms: None,
            preallocate_min_bytes: PREALLOCATE_FLOOR_MAX_BYTES,
            flush_interval_bytes: u64::MAX,
        }
    }

    use crate::test_support::run_on_executor as run;

    fn offsets_in(bytes: &Bytes) -> Vec<(Offset, Offset)> {
        batch::iter_batches(bytes).map(|(_, h)| (h.base_offset(), h.last_offset())).collect()
    }

    pub(super) async fn append_n(log: &Log, n: usize, records: usize) {
        for _ in 0..n {
            let b = make_batch(records, 200, Compression::None);
            log.append(&b, None, 0);
        }
    }

    /// Every append written on its own: most writes rewrite the tail block and some go on
    /// into reserved blocks, so they go out split in two (`write_segment`). What is read back
    /// after a reopen (from the file) is what was appended.
    #[test]
    fn writes_that_cross_into_reserved_blocks_store_every_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let big = LogConfig { segment_bytes: 1 << 20, ..config() };
            let log = Log::open(&path, big, false).await.expect("open");
            let mut appended = BytesMut::new();
            for i in 0..80 {
                // Mostly ~300 B batches, and now and then one of several blocks.
                let records = if i % 17 == 16 { 30 } else { 1 };
                let at = log.next_offset();
                append_n(&log, 1, records).await;
                appended.extend_from_slice(&log.read(at, 1 << 20).await.expect("in memory").records);
                log.sync_to(log.next_offset() - 1).await.expect("sync");
            }
            let end = log.next_offset();
            log.close().await.expect("close");
            let log = Log::open(&path, big, true).await.expect("reopen");
            assert_eq!(log.next_offset(), end);
            let stored = log.read(0, 4 << 20).await.expect("read").records;
            assert!(appended.len() > 4 * segment::ALIGN as usize, "several blocks written");
            assert_eq!(&stored[..], &appended[..]);
            // From the file at every batch, whatever its alignment: read by blocks, handed
            // out as a slice of the block-aligned read.
            for (pos, h) in batch::iter_batches(&appended) {
                let total = h.total_bytes().expect("whole batch");
                let one = log.read(h.base_offset(), 1).await.expect("read one").records;
                assert_eq!(&one[..], &appended[pos..pos + total], "batch at {pos}");
            }
            log.close().await.expect("close");
        });
    }

    #[test]
    fn append_read_roll_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, config(), false).await.expect("open");
            append_n(&log, 100, 3).await; // ~70 KiB: several segments of 16 KiB
            assert_eq!(log.next_offset(), 300);
            log.sync_to(299).await.expect("sync");
            assert!(log.state.borrow().segments.len() > 3, "rolled by size");
            // A fetch at an offset inside a batch returns that whole batch first.
            let r = log.read(151, 1).await.expect("read");
            assert_eq!(offsets_in(&r.records), vec![(150, 152)]);
            let r = log.read(0, 64 * 1024).await.expect("read");
            let got = offsets_in(&r.records);
            assert_eq!(got.first(), Some(&(0, 2)));
            assert!(got.windows(2).all(|w| w[1].0 == w[0].1 + 1), "contiguous");
            assert!(matches!(log.read(301, 100).await, Err(LogError::OffsetOutOfRange { .. })));
            assert!(log.read(300, 100).await.expect("at end").records.is_empty());
            log.close().await.expect("close");
            // Clean reopen: indexes loaded from files, same content.
            let log = Log::open(&path, config(), true).await.expect("reopen");
            assert_eq!(log.next_offset(), 300);
            let r = log.read(299, 10).await.expect("read");
            assert_eq!(offsets_in(&r.records), vec![(297, 299)]);
            append_n(&log, 1, 1).await;
            assert_eq!(log.next_offset(), 301);
            log.close().await.expect("close");
        });
    }

    #[test]
    fn reservations_start_at_the_floor_and_double() {
        let gib = 1 << 30;
        assert_eq!(preallocation_target(4096, gib, 64 << 10), 4096 + (64 << 10));
        assert_eq!(preallocation_target(4096, gib, 1 << 20), 4096 + (1 << 20));
        assert_eq!(preallocation_target(4096, gib, 1), 4096 + (64 << 10), "the floor has a floor");
        assert_eq!(preallocation_target(4096, gib, 1 << 30), 4096 + (1 << 20), "and a ceiling");
        assert_eq!(preallocation_target(8 << 20, gib, 64 << 10), 16 << 20, "a grown file doubles");
        assert_eq!(preallocation_target(900 << 20, gib, 64 << 10), (900 << 20) + (64 << 20));
        assert_eq!(
            preallocation_target(20 << 10, 16 << 10, 64 << 10),
            20 << 10,
            "never past the segment, never below end"
        );
    }

    #[test]
    fn preallocated_space_is_not_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, config(), false).await.expect("open");
            append_n(&log, 60, 3).await; // several 16 KiB segments
            log.sync_to(179).await.expect("sync");
            let bases: Vec<Offset> = log.state.borrow().segments.iter().map(|s| s.base_offset).collect();
            assert!(bases.len() >= 3, "rolled: {bases:?}");
            let active = segment::log_path(&path, bases[bases.len() - 1]);
            let active_size = log.state.borrow().segments.last().map(|s| s.size).unwrap_or(0);
            assert!(std::fs::metadata(&active).expect("stat").len() > active_size, "space reserved ahead");
            drop(log); // a crash
                       // A sealed segment whose zero tail was not cut yet when the broker died.
            let sealed = segment::log_path(&path, bases[1]);
            let sealed_len = std::fs::metadata(&sealed).expect("stat").len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&sealed)
                .expect("open")
                .set_len(sealed_len + (1 << 20))
                .expect("extend");
            std::fs::remove_file(segment::index_path(&path, bases[1])).expect("drop index");
            let log = Log::open(&path, config(), false).await.expect("recover");
            assert_eq!(log.next_offset(), 180, "every segment kept");
            let bases_after: Vec<Offset> = log.state.borrow().segments.iter().map(|s| s.base_offset).collect();
            assert_eq!(bases_after, bases);
            let mut next = 0;
            while next < 180 {
                let r = log.read(next, 1 << 20).await.expect("read");
                let got = offsets_in(&r.records);
                assert_eq!(got.first().map(|o| o.0), Some(next), "contiguous from {next}");
                next = got.last().map(|o| o.1 + 1).unwrap_or(180);
            }
            assert_eq!(std::fs::metadata(&sealed).expect("stat").len(), sealed_len, "zeros cut");
            append_n(&log, 1, 1).await;
            log.sync_to(180).await.expect("sync");
            log.close().await.expect("close");
        });
    }

    #[test]
    fn writes_go_on_while_a_sync_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log =
                Rc::new(Log::open(&path, LogConfig { segment_bytes: 1 << 30, ..config() }, false).await.expect("open"));
            append_n(&log, 10, 2).await;
            let syncing = {
                let log = log.clone();
                glommio::spawn_local(async move { log.sync_to(19).await })
            };
            glommio::yield_if_needed().await;
            // Appended while the sync may be in flight: written without waiting for it.
            append_n(&log, 10, 2).await;
            log.write_to(39).await.expect("write");
            assert!(log.written_offset() >= 40);
            syncing.await.expect("sync");
            assert!(log.synced_offset() >= 20, "the sync covers what was appended before it");
            assert!(log.synced_offset() <= log.written_offset(), "never claims unwritten data");
            log.sync_to(39).await.expect("sync all");
            assert_eq!(log.synced_offset(), 40);
            let r = log.read(0, 1 << 20).await.expect("read");
            assert_eq!(offsets_in(&r.records).len(), 20);
        });
    }

    /// A sync is due once `flush_interval_bytes` of written data wait for one: counted by
    /// what the writes add past the written end (small writes rewrite their partial tail
    /// block, which must not count again), across segment rolls, and reset by a sync.
    #[test]
    fn sync_is_due_after_flush_interval_bytes_of_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let cfg = LogConfig { segment_bytes: 64 * 1024, flush_interval_bytes: 32 * 1024, ..config() };
            let log = Log::open(&path, cfg, false).await.expect("open");
            let batch_len = make_batch(2, 200, Compression::None).len() as u64;
            let mut appended = 0u64;
            let mut written_when_due = None;
            for i in 0..200 {
                append_n(&log, 1, 2).await;
                appended += batch_len;
                log.write_to(log.next_offset() - 1).await.expect("write");
                if log.sync_due() {
                    written_when_due = Some(appended);
                    break;
                }
                assert!(appended < 32 * 1024, "not due after {appended} bytes in {i} writes");
            }
            let due_at = written_when_due.expect("due within 200 writes");
            assert!(due_at < 32 * 1024 + batch_len, "due as soon as 32 KiB were written, not at {due_at}");
            log.flush(true).await.expect("sync");
            assert!(!log.sync_due(), "a sync covers what was written before it");
            assert_eq!(log.synced_offset(), log.next_offset());
            // Across a roll: the sealed segment's own sync counts as a sync.
            while log.state.borrow().segments.len() < 3 {
                append_n(&log, 1, 2).await;
                log.write_to(log.next_offset() - 1).await.expect("write");
                if log.sync_due() {
                    log.flush(true).await.expect("sync");
                }
            }
            assert!(log.unsynced_bytes.get() < 32 * 1024);
            log.flush(true).await.expect("sync");
            assert_eq!(log.unsynced_bytes.get(), 0, "nothing waits after a sync with no writes beside it");
            log.close().await.expect("close");
        });
    }

    /// Batches appended while writes of the same segment are in flight (and so while the
    /// stamped run's partial block is under a write, `stamped_run`) reach the file whole:
    /// after a crash every synced record reads back from the file with its value.
    #[test]
    fn appends_during_writes_in_flight_reach_the_file_intact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let config = LogConfig { segment_bytes: 64 * 1024, tail_cache_bytes: 0, ..config() };
            let log = Rc::new(Log::open(&path, config, false).await.expect("open"));
            let mut values: Vec<Vec<u8>> = Vec::new();
            let mut writes = Vec::new();
            for i in 0..400usize {
                let (count, size, fill) = (i % 3 + 1, (i * 37) % 1500 + 1, i as u8);
                log.append(&sample_batch_with(count, size, fill), None, 0);
                values.extend(std::iter::repeat_n(vec![fill; size], count));
                if i % 3 == 0 {
                    let log = log.clone();
                    writes.push(glommio::spawn_local(async move { log.flush(false).await }));
                }
                if i % 5 == 0 {
                    glommio::yield_if_needed().await;
                    glommio::executor().yield_task_queue_now().await;
                }
            }
            for w in writes {
                w.await.expect("write");
            }
            log.sync_to(values.len() as i64 - 1).await.expect("sync");
            {
                // Written out: sealed segments hold no stamped memory, the active one its last run.
                let state = log.state.borrow();
                assert!(state.segments.len() > 2, "the test rolls segments");
                let (active, sealed) = state.segments.split_last().expect("segments");
                assert!(sealed.iter().all(|s| s.stamped.is_empty()), "a sealed segment keeps stamped runs");
                assert!(active.stamped.len() <= 1, "the active segment keeps runs it no longer needs");
            }
            drop(log);
            // Crash (no close), then recover from the files alone.
            let log = Log::open(&path, config, false).await.expect("recover");
            assert_eq!(log.next_offset() as usize, values.len(), "every synced record recovered");
            check_values(&log, values.len(), &values, 0).await;
        });
    }

    #[test]
    fn recovery_truncates_torn_and_corrupt_tails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, LogConfig { segment_bytes: 1 << 30, ..config() }, false).await.expect("open");
            append_n(&log, 10, 2).await;
            log.sync_to(19).await.expect("sync");
            drop(log); // a crash: no close, padding left after the last batch
            let seg = segment::log_path(&path, 0);
            let good_len = {
                let bytes = std::fs::read(&seg).expect("read");
                batch::iter_batches(&bytes).map(|(p, h)| p + h.total_bytes().unwrap_or(0)).last().unwrap_or(0)
            };
            // Torn tail: half a batch after the good ones.
            let extra = make_batch(2, 200, Compression::None);
            let mut bytes = std::fs::read(&seg).expect("read");
            bytes.truncate(good_len);
            bytes.extend_from_slice(&extra[..extra.len() / 2]);
            std::fs::write(&seg, &bytes).expect("write");
            let log = Log::open(&path, config(), false).await.expect("recover");
            assert_eq!(log.next_offset(), 20);
            drop(log);
            assert_eq!(std::fs::metadata(&seg).expect("stat").len(), good_len as u64);
            // Corrupt tail: flip a byte inside the last batch; it is cut, the rest kept.
            let mut bytes = std::fs::read(&seg).expect("read");
            let last = bytes.len() - 5;
            bytes[last] ^= 0x55;
            std::fs::write(&seg, &bytes).expect("write");
            let log = Log::open(&path, config(), false).await.expect("recover");
            assert_eq!(log.next_offset(), 18, "the corrupt last batch (offsets 18-19) is dropped");
            let r = log.read(0, 1 << 20).await.expect("read");
            assert_eq!(offsets_in(&r.records).len(), 9);
        });
    }

    /// A small reproducible generator (xorshift64*): the seed is printed, and
    /// `WEIR_SEED=<n>` replays a run.
    struct Rng(u64);
    impl Rng {
        fn from_env() -> Self {
            let seed = std::env::var("WEIR_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
            eprintln!("log crash test seed: WEIR_SEED={seed}");
            Rng(seed.max(1))
        }
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Random appends, writes, syncs and rolls, then a crash that leaves a random torn or
    /// garbage tail after what was synced, then recovery: everything synced must come back
    /// with the same offsets and bytes, and the log must take appends again. Repeated.
    #[test]
    fn seeded_crash_and_recover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let mut rng = Rng::from_env();
        let seed_rng = Rng(rng.next());
        run(move || async move {
            let mut rng = seed_rng;
            // Every record value ever appended, by offset; entries below `durable` must survive.
            let mut values: Vec<Vec<u8>> = Vec::new();
            for round in 0..8 {
                let log =
                    Log::open(&path, LogConfig { segment_bytes: 32 * 1024, ..config() }, false).await.expect("open");
                let recovered = log.next_offset() as usize;
                assert!(recovered <= values.len(), "round {round}: recovered more than was written");
                values.truncate(recovered);
                let mut durable = recovered;
                for _ in 0..rng.below(60) + 1 {
                    let count = rng.below(4) as usize + 1;
                    let size = rng.below(2_000) as usize + 1;
                    let fill = rng.next() as u8;
                    let batch = sample_batch_with(count, size, fill);
                    log.append(&batch, None, 0);
                    values.extend(std::iter::repeat_n(vec![fill; size], count));
                    match rng.below(10) {
                        0 => {
                            log.sync_to(values.len() as i64 - 1).await.expect("sync");
                            durable = values.len();
                        }
                        1 => log.flush(false).await.expect("write"),
                        _ => {}
                    }
                }
                // Crash: no close. Then damage what lies past the synced bytes of the last segment.
                let (base, synced) = {
                    let state = log.state.borrow();
                    let last = state.segments.last().expect("a segment");
                    (last.base_offset, last.synced)
                };
                drop(log);
                let file = segment::log_path(&path, base);
                if let Ok(len) = std::fs::metadata(&file).map(|m| m.len()) {
                    let f = std::fs::OpenOptions::new().write(true).open(&file).expect("open segment");
                    match rng.below(3) {
                        0 if len > synced => f.set_len(synced + rng.below(len - synced)).expect("tear"),
                        1 => {
                            use std::os::unix::fs::FileExt;
                            let junk: Vec<u8> = (0..rng.below(5_000)).map(|_| rng.next() as u8).collect();
                            f.write_all_at(&junk, len).expect("garbage");
                        }
                        _ => {}
                    }
                }
                // Recover and check every durable record.
                let log =
                    Log::open(&path, LogConfig { segment_bytes: 32 * 1024, ..config() }, false).await.expect("recover");
                let end = log.next_offset() as usize;
                assert!(end >= durable, "round {round}: synced offsets {durable} lost (recovered to {end})");
                // Every recovered record (synced or not) must be one that was appended there.
                assert!(end <= values.len(), "round {round}: recovered offsets nobody wrote");
                check_values(&log, end, &values, round).await;
                log.close().await.expect("close");
                values.truncate(end);
            }
        });
    }

    /// Every record below `end` has the value appended at its offset.
    async fn check_values(log: &Log, end: usize, values: &[Vec<u8>], round: usize) {
        let mut offset = 0i64;
        while (offset as usize) < end {
            let mut bytes = log.read(offset, 64 * 1024).await.expect("read").records;
            assert!(!bytes.is_empty(), "round {round}: nothing at offset {offset}");
            while !bytes.is_empty() {
                let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).expect("decode");
                for r in set.records {
                    if r.offset >= offset && (r.offset as usize) < end {
                        let want = Some(&values[r.offset as usize][..]);
                        assert_eq!(r.value.as_deref(), want, "round {round} offset {}", r.offset);
                    }
                    offset = offset.max(r.offset + 1);
                }
            }
        }
    }

    fn sample_batch_with(count: usize, size: usize, fill: u8) -> Bytes {
        let b = make_batch(count, size, Compression::None);
        // Same layout as make_batch, values all `fill`: rebuild through the encoder.
        let records: Vec<kafka_protocol::records::Record> = {
            let mut bytes = b.clone();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).expect("decode");
            set.records
                .into_iter()
                .map(|mut r| {
                    r.value = Some(Bytes::from(vec![fill; size]));
                    r
                })
                .collect()
        };
        let mut buf = BytesMut::new();
        kafka_protocol::records::RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &kafka_protocol::records::RecordEncodeOptions { version: 2, compression: Compression::None },
        )
        .expect("encode");
        buf.freeze()
    }

    #[test]
    fn rolls_by_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, LogConfig { segment_ms: 20, ..config() }, false).await.expect("open");
            append_n(&log, 2, 1).await;
            glommio::timer::sleep(std::time::Duration::from_millis(30)).await;
            append_n(&log, 1, 1).await;
            let bases: Vec<Offset> = log.state.borrow().segments.iter().map(|s| s.base_offset).collect();
            assert_eq!(bases, vec![0, 2]);
            log.sync_to(2).await.expect("sync");
            assert!(segment::index_path(&path, 0).exists(), "sealed segment got its index files");
        });
    }

    #[test]
    fn a_compacted_topic_rolls_at_its_max_compaction_lag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log =
                Log::open(&path, LogConfig { max_compaction_lag_ms: Some(20), ..config() }, false).await.expect("open");
            append_n(&log, 2, 1).await;
            glommio::timer::sleep(std::time::Duration::from_millis(30)).await;
            append_n(&log, 1, 1).await;
            let bases: Vec<Offset> = log.state.borrow().segments.iter().map(|s| s.base_offset).collect();
            assert_eq!(bases, vec![0, 2], "the active segment rolled so that its records can be compacted");
        });
    }

    #[test]
    fn damaged_index_files_are_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, config(), false).await.expect("open");
            append_n(&log, 60, 2).await;
            log.close().await.expect("close");
            std::fs::write(segment::index_path(&path, 0), b"garbage").expect("damage");
            let log = Log::open(&path, config(), false).await.expect("reopen");
            assert_eq!(log.next_offset(), 120);
            let r = log.read(7, 1).await.expect("read");
            assert_eq!(offsets_in(&r.records), vec![(6, 7)]);
        });
    }

    #[test]
    fn offsets_by_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, config(), false).await.expect("open");
            // make_batch stamps records 1_700_000_000_000 + i within each batch.
            append_n(&log, 40, 4).await;
            assert_eq!(log.offset_for_timestamp(1_700_000_000_002).await.expect("ts"), Some((2, 1_700_000_000_002)));
            assert_eq!(log.offset_for_timestamp(0).await.expect("ts"), Some((0, 1_700_000_000_000)));
            assert_eq!(log.offset_for_timestamp(1_800_000_000_000).await.expect("ts"), None);
            assert_eq!(log.max_timestamp_offset().await.expect("max"), Some((3, 1_700_000_000_003)));
        });
    }

    #[test]
    fn large_batches_recover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let cfg = LogConfig { segment_bytes: 1 << 30, write_chunk_bytes: 1 << 20, ..config() };
            let log = Log::open(&path, cfg, false).await.expect("open");
            for _ in 0..3 {
                let b = make_batch(2, 700 * 1024, Compression::None); // 1.4 MiB: larger than a read chunk
                log.append(&b, None, 0);
            }
            log.sync_to(5).await.expect("sync");
            drop(log);
            let log = Log::open(&path, cfg, false).await.expect("recover");
            assert_eq!(log.next_offset(), 6);
            let r = log.read(4, 1).await.expect("read");
            assert_eq!(offsets_in(&r.records), vec![(4, 5)]);
        });
    }

    #[test]
    fn truncation_cuts_at_batch_boundaries_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, config(), false).await.expect("open");
            log.begin_epoch(0).await.expect("epoch 0");
            append_n(&log, 50, 3).await; // several 16 KiB segments, offsets 0..150
            log.begin_epoch(2).await.expect("epoch 2");
            for _ in 0..10 {
                let b = make_batch(3, 200, Compression::None);
                log.append(&b, None, 2);
            }
            log.sync_to(179).await.expect("sync");
            let segments_before = log.state.borrow().segments.len();
            assert!(segments_before > 2);
            assert_eq!(log.epochs().end_offset_for(0, 180), (0, 150));
            // Inside a batch: the whole batch goes.
            assert_eq!(log.truncate_to(100).await.expect("truncate"), 99);
            assert_eq!(log.next_offset(), 99);
            assert!(log.state.borrow().segments.len() < segments_before);
            assert_eq!(log.epochs().latest_epoch(), 0, "epoch 2 started past the cut");
            let r = log.read(90, 64 * 1024).await.expect("read");
            assert_eq!(offsets_in(&r.records).last(), Some(&(96, 98)));
            assert!(matches!(log.read(100, 10).await, Err(LogError::OffsetOutOfRange { .. })));
            // Appends go on from the cut, in a new epoch.
            log.begin_epoch(3).await.expect("epoch 3");
            append_n(&log, 2, 3).await;
            log.sync_to(104).await.expect("sync");
            drop(log);
            let log = Log::open(&path, config(), false).await.expect("reopen");
            assert_eq!(log.next_offset(), 105);
            assert_eq!(log.epochs().end_offset_for(0, 105), (0, 99));
            assert_eq!(log.epochs().latest_epoch(), 3);
            let r = log.read(0, 1 << 20).await.expect("read");
            let got = offsets_in(&r.records);
            assert!(got.windows(2).all(|w| w[1].0 == w[0].1 + 1), "contiguous after the cut");
            // Truncating to the start empties the log.
            assert_eq!(log.truncate_to(0).await.expect("truncate all"), 0);
            assert!(log.read(0, 100).await.expect("empty").records.is_empty());
        });
    }

    #[test]
    fn stored_batches_keep_their_offsets_and_epochs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (leader_dir, follower_dir) = (dir.path().join("leader"), dir.path().join("follower"));
        run(move || async move {
            let leader = Log::open(&leader_dir, config(), false).await.expect("open");
            leader.begin_epoch(4).await.expect("epoch");
            append_n(&leader, 5, 2).await; // epoch 0 stamped by append_n
            for _ in 0..3 {
                let b = make_batch(2, 100, Compression::None);
                leader.append(&b, None, 4);
            }
            let fetched = leader.read(0, 1 << 20).await.expect("read").records;
            let follower = Log::open(&follower_dir, config(), false).await.expect("open");
            assert_eq!(follower.append_stored(&fetched.slice(..)).await.expect("append"), 16);
            assert_eq!(follower.append_stored(&fetched).await.expect("again: skipped"), 16);
            assert_eq!(follower.epochs().latest_epoch(), 4);
            assert_eq!(follower.epochs().end_offset_for(0, 16), (0, 10));
            let copy = follower.read(0, 1 << 20).await.expect("read").records;
            assert_eq!(copy, fetched, "byte for byte");
            let mut bad = BytesMut::from(&fetched[..]);
            let last = bad.len() - 1;
            bad[last] ^= 0xff;
            let other = Log::open(&dir.path().join("other"), config(), false).await.expect("open");
            assert!(matches!(other.append_stored(&bad.freeze()).await, Err(LogError::Corrupt(_))));
        });
    }

    /// Random appends in rising leader epochs, syncs, truncations (a follower's divergence)
    /// and crashes (no close): after each recovery everything synced or truncated to is
    /// there with its bytes, and every batch's leader epoch is the one the epoch checkpoint
    /// gives its offset. Replay with WEIR_SEED.
    #[test]
    fn seeded_truncations_and_epochs_survive_crashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let mut rng = Rng::from_env();
        let seed_rng = Rng(rng.next());
        run(move || async move {
            let mut rng = seed_rng;
            let cfg = LogConfig { segment_bytes: 32 * 1024, ..config() };
            let mut values: Vec<Vec<u8>> = Vec::new();
            let mut epoch = 0;
            for round in 0..8 {
                let log = Log::open(&path, cfg, false).await.expect("open");
                let recovered = log.next_offset() as usize;
                assert!(recovered <= values.len(), "round {round}: recovered more than was written");
                values.truncate(recovered);
                let mut durable = recovered;
                epoch += 1;
                log.begin_epoch(epoch).await.expect("epoch");
                for _ in 0..rng.below(60) + 1 {
                    match rng.below(12) {
                        0 => {
                            log.sync_to(values.len() as i64 - 1).await.expect("sync");
                            durable = values.len();
                        }
                        1 if !values.is_empty() => {
                            let to = rng.below(values.len() as u64 + 1) as i64;
                            let cuts = (to as usize) < values.len();
                            let end = log.truncate_to(to).await.expect("truncate") as usize;
                            assert!(end <= to as usize, "round {round}: cut at a batch boundary at or below {to}");
                            values.truncate(end);
                            // A cut syncs what it keeps; a truncation past the end is a no-op.
                            durable = if cuts { end } else { durable.min(end) };
                        }
                        2 => {
                            epoch += 1;
                            log.begin_epoch(epoch).await.expect("new epoch");
                        }
                        _ => {
                            if log.epochs().latest_epoch() < 0 {
                                // Truncated to nothing: a new epoch before appending again.
                                epoch += 1;
                                log.begin_epoch(epoch).await.expect("epoch");
                            }
                            let count = rng.below(4) as usize + 1;
                            let size = rng.below(2_000) as usize + 1;
                            let fill = rng.next() as u8;
                            let batch = sample_batch_with(count, size, fill);
                            log.append(&batch, None, log.epochs().latest_epoch());
                            values.extend(std::iter::repeat_n(vec![fill; size], count));
                        }
                    }
                }
                drop(log);
                let log = Log::open(&path, cfg, false).await.expect("recover");
                let end = log.next_offset() as usize;
                assert!(end >= durable && end <= values.len(), "round {round}: recovered to {end}, durable {durable}");
                let epochs = log.epochs().clone();
                assert!(epochs.entries().iter().all(|e| e.start_offset <= end as i64), "round {round}: {epochs:?}");
                let mut wrong_epoch = Vec::new();
                log.for_each_batch(0, |h| {
                    let in_force = epochs.entries().iter().rev().find(|e| e.start_offset <= h.base_offset());
                    if in_force.map(|e| e.epoch) != Some(h.leader_epoch()) {
                        wrong_epoch.push((h.base_offset(), h.leader_epoch()));
                    }
                })
                .await
                .expect("scan");
                assert!(
                    wrong_epoch.is_empty(),
                    "round {round}: batches not in their epoch: {wrong_epoch:?} ({epochs:?})"
                );
                check_values(&log, end, &values, round).await;
                values.truncate(end);
                log.close().await.expect("close");
            }
        });
    }
}
